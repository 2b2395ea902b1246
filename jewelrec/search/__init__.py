"""Vector search: one Index protocol, ExactIndex (numpy, the default and ground truth) and
MilvusIndex (scale-out), with one filter spec compiled per backend."""
