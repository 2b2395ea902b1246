"""Is the photo jewelry from this shop at all? A threshold taken from the catalog itself.

At `jewelrec index` time we measure how close each catalog image is to its nearest OTHER
product (cosine in the embedding space). A shopper's photo of jewelry is normally at least as
close to some catalog piece as the catalog's own pieces are to each other; a cat, a coffee cup
or a blank frame is not. The threshold is the 1st percentile of those nearest-other-product
similarities, but never below half their median: in a small catalog a few lonely pieces would
otherwise drag the low percentile down to where anything passes.

This is a signal from the embedding only: it catches photos unlike the whole catalog, not
every non-jewelry photo (a busy photo can resemble some piece as much as pieces resemble each
other). Below the threshold the answer says so, and still lists the closest pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jewelrec.search.index import l2_normalise

PERCENTILE = 1.0
MEDIAN_FRACTION = 0.5
MAX_SAMPLE = 2048  # catalog images measured (a seeded sample beyond this: O(sample x rows))
CHUNK_VALUES = 1 << 24  # similarities computed at once (64 MB of float32)


def nearest_other_product(
    vectors: np.ndarray, product_ids: Sequence[str], *, sample: int = MAX_SAMPLE, seed: int = 0
) -> np.ndarray:
    """Cosine of each (sampled) image to its nearest image of another product; images whose
    product is the catalog's only one are left out."""
    vectors = l2_normalise(vectors)
    _, codes = np.unique(np.asarray(product_ids, dtype=str), return_inverse=True)
    n = len(vectors)
    rows = np.arange(n)
    if n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    step = max(1, CHUNK_VALUES // max(1, n))
    nearest = []
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sims = vectors[chunk] @ vectors.T
        sims[codes[chunk][:, None] == codes[None, :]] = -np.inf
        nearest.append(sims.max(axis=1))
    found = np.concatenate(nearest) if nearest else np.empty(0, dtype=np.float32)
    return found[np.isfinite(found)]


def recognition_meta(vectors: np.ndarray, product_ids: Sequence[str]) -> dict[str, Any]:
    """What `jewelrec index` records: the threshold (None when the catalog has fewer than two
    products, so nothing to compare) and the figures it came from."""
    nearest = nearest_other_product(vectors, product_ids)
    if len(nearest) == 0:
        return {"recognition_threshold": None}
    low = float(np.percentile(nearest, PERCENTILE))
    median = float(np.median(nearest))
    return {
        "recognition_threshold": round(max(low, MEDIAN_FRACTION * median), 6),
        "recognition": {
            "rule": f"max(p{PERCENTILE:g}, {MEDIAN_FRACTION:g} x median) of each catalog "
            "image's cosine to its nearest other product",
            "percentile": round(low, 6),
            "median": round(median, 6),
            "images_measured": len(nearest),
        },
    }


def is_recognised(best_similarity: float | None, threshold: float | None) -> bool:
    """True unless the photo's best similarity to the catalog falls below the threshold."""
    if threshold is None or best_similarity is None:
        return True
    return best_similarity >= threshold
