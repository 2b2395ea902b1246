"""Image handling shared by every stage: safe loading (`io`) and finding the piece (`segment`)."""
