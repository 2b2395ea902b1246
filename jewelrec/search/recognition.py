"""Is the photo jewelry from this shop at all? A threshold taken from the catalog itself.

At `jewelrec index` time we measure how close each catalog image is to its nearest OTHER
product (cosine in the embedding space). A shopper's photo of jewelry is normally at least as
close to some catalog piece as the catalog's own pieces are to each other; a cat, a coffee cup
or a blank frame is not. The threshold is the 1st percentile of those nearest-other-product
similarities, but never below half their median: in a small catalog a few lonely pieces would
otherwise drag the low percentile down to where anything passes.

Where it is measured: an embedder that offers `recognition_features(images)` (its backbone's
own features, before any projection learned on the catalog) is measured in that space, on a
seeded reference sample of the catalog's images stored with the index version; otherwise in
the index's embedding space. The space matters. Measured with 900 real photos of 3/4 of the
shared shops as the catalog and 213 photos of the other shops as queries: in the whitened
embedding the threshold (0.17) recognised every one of 10 non-jewelry images (blank frames, a
cat, coffee, a rocket...); in the raw backbone features (threshold 0.44 on a 512-image
reference) it rejected all 16 non-jewelry images tried and recognised 202 of the 213 real
photos (95%).

Below the threshold the answer says so, and still lists the closest pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.home import Home
from jewelrec.search import versions
from jewelrec.search.index import l2_normalise

PERCENTILE = 1.0
MEDIAN_FRACTION = 0.5
MAX_SAMPLE = 2048  # catalog images measured (a seeded sample beyond this: O(sample x rows))
REFERENCE_SIZE = 512  # catalog images kept as the reference in the backbone's feature space
REFERENCE_FILE = "recognition.npy"
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


def recognition_meta(
    vectors: np.ndarray, product_ids: Sequence[str], *, space: str = "embedding"
) -> dict[str, Any]:
    """What `jewelrec index` records: the threshold (None when the catalog has fewer than two
    products, so nothing to compare), the space it was measured in and its figures."""
    nearest = nearest_other_product(vectors, product_ids)
    if len(nearest) == 0:
        return {"recognition_threshold": None}
    low = float(np.percentile(nearest, PERCENTILE))
    median = float(np.median(nearest))
    return {
        "recognition_threshold": round(max(low, MEDIAN_FRACTION * median), 6),
        "recognition": {
            "space": space,
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


def recognition_features(embedder: Any, images: Sequence[np.ndarray]) -> np.ndarray | None:
    """The embedder's own backbone features for recognition (unit rows), or None when it
    offers none (then recognition uses its embedding)."""
    own = getattr(embedder, "recognition_features", None)
    return None if own is None else l2_normalise(own(images))


def reference_sample(product_ids: Sequence[str], seed: int = 0) -> list[int]:
    """Positions of a seeded sample of at most REFERENCE_SIZE catalog images: one image per
    product first, so that products with many photos do not crowd the sample."""
    order = np.random.default_rng(seed).permutation(len(product_ids))
    firsts: list[int] = []
    others: list[int] = []
    seen: set[str] = set()
    for i in order:
        (others if product_ids[i] in seen else firsts).append(int(i))
        seen.add(product_ids[i])
    return sorted([*firsts, *others][:REFERENCE_SIZE])


def measure_catalog(
    home: Home,
    embedder: Any,
    names: Sequence[str],
    product_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    embedder_id: str,
    auto_crop: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """(What `jewelrec index` records in the meta, the reference features to store with the
    version or None). `names[i]` is the image of row i, `vectors` the index's rows;
    `embedder_id` names the embedder's files, for the feature cache."""
    if getattr(embedder, "recognition_features", None) is None:
        return recognition_meta(vectors, product_ids), None
    from jewelrec.indexing import EmbeddingCache, embed_images, framing_tag

    picked = reference_sample(product_ids)
    wanted = [names[i] for i in picked]

    class Features:  # embed_images' contract, in the recognition space
        @staticmethod
        def embed(
            images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
        ) -> np.ndarray:
            return recognition_features(embedder, images)  # the network's: no mask needed

    found = embed_images(
        home, Features(), wanted, cache=EmbeddingCache(home, "recognition", embedder_id,
                                                         framing_tag(auto_crop)),
        auto_crop=auto_crop, progress=progress,
    )
    kept = [i for i in picked if names[i] in found]
    reference = l2_normalise(np.stack([found[names[i]] for i in kept])) if kept else None
    if reference is None:
        return recognition_meta(vectors, product_ids), None
    meta = recognition_meta(reference, [product_ids[i] for i in kept], space="backbone")
    return meta, reference if meta["recognition_threshold"] is not None else None


def save_reference(folder: Path, reference: np.ndarray) -> None:
    with open(folder / REFERENCE_FILE, "wb") as fh:
        np.save(fh, np.ascontiguousarray(reference, dtype=np.float32), allow_pickle=False)


def load_reference(home: Home, version: str, meta: Mapping[str, Any]) -> np.ndarray | None:
    """The reference features index `version` holds (None when its recognition used the
    embedding space)."""
    if (meta.get("recognition") or {}).get("space") != "backbone":
        return None
    with versions.damaged_as_not_ready(home, version):
        return np.load(versions.version_dir(home, version) / REFERENCE_FILE, allow_pickle=False)


def best_similarity(reference: np.ndarray, features: np.ndarray) -> float | None:
    return float((reference @ features).max()) if len(reference) else None
