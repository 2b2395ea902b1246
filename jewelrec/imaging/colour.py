"""A colour signature of the piece: what ImageNet features are partly blind to.

Gold, silver and rose gold differ mostly in hue and saturation, which CNN features trained for
object classes tend to ignore. A coarse HSV histogram of the foreground pixels (12 hues x 4
saturations x 4 values), square-rooted so cosine similarity behaves like the Hellinger kernel,
is appended to the CNN embedding. Measured on the demo catalog's held-out views: metal
precision@10 0.850 -> 0.936 at weight 0.5, recall@10 0.678 -> 0.707.

The foreground is the mask the framing already found (imaging/focus.py), read over the framed
image, when the caller has it: segmenting the framed piece again cost as much as framing it.
Its rim is left out (`_interior`). Measured on two synthetic demo catalogs (500 products,
seeds 0 and 7; each held-out view ranked against the other views of its type by the default
embedder, whitening fitted on those views): the framing's mask as it is gave metal
precision@10 0.2 points lower than segmenting again, the mask less its rim 0.8 points higher
(0.824 -> 0.833, 0.890 -> 0.897) and recall@10 1.0-1.6 points higher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from jewelrec.imaging import components
from jewelrec.imaging.segment import foreground_mask

HUE_BINS, SATURATION_BINS, VALUE_BINS = 12, 4, 4
SIGNATURE_DIM = HUE_BINS * SATURATION_BINS * VALUE_BINS
WORKING_SIZE = 96  # the histogram needs no detail; small keeps it ~2 ms per image
MIN_FOREGROUND_PIXELS = 20


def colour_signature(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(SIGNATURE_DIM,) float32 unit vector for an RGB uint8 image. `mask`: the piece's
    foreground over the image as the framing found it (imaging/focus.py `Framed.mask`, any
    resolution); None: the image is segmented here (2 ms of the 2.5 this costs)."""
    small = Image.fromarray(np.ascontiguousarray(image)).resize((WORKING_SIZE, WORKING_SIZE))
    if mask is None:
        mask = foreground_mask(np.asarray(small))
    else:
        mask = _resampled(np.asarray(mask, dtype=bool), WORKING_SIZE)
    mask = _interior(mask)
    hsv = np.asarray(small.convert("HSV")).reshape(-1, 3)[mask.reshape(-1)].astype(np.int64)
    hue = hsv[:, 0] * HUE_BINS // 256
    saturation = hsv[:, 1] * SATURATION_BINS // 256
    value = hsv[:, 2] * VALUE_BINS // 256
    bins = (hue * SATURATION_BINS + saturation) * VALUE_BINS + value
    histogram = np.bincount(bins, minlength=SIGNATURE_DIM).astype(np.float32)
    signature = np.sqrt(histogram / histogram.sum())
    return signature / max(float(np.linalg.norm(signature)), 1e-12)


def colour_signatures(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
) -> np.ndarray:
    """(N, SIGNATURE_DIM) float32; `masks` (one per image, or None) as `colour_signature`'s."""
    if masks is None:
        masks = [None] * len(images)
    return np.stack([colour_signature(image, mask)
                     for image, mask in zip(images, masks, strict=True)]).astype(np.float32)


def _interior(mask: np.ndarray) -> np.ndarray:
    """The piece's pixels less their rim (eroded by one pixel, 4-neighbours) when enough are
    left; the whole photo when no clear piece is there. Rim pixels blend the metal with the
    backdrop: leaving them out raised metal precision@10 on two demo catalogs by 0.8 points."""
    inner = components.erode(mask)
    if inner.sum() >= MIN_FOREGROUND_PIXELS:
        return inner
    if mask.sum() >= MIN_FOREGROUND_PIXELS:
        return mask  # a thin piece (a chain) is nearly all rim: keep it whole
    return np.ones(mask.shape, dtype=bool)  # no clear piece: describe the whole photo


def _resampled(mask: np.ndarray, side: int) -> np.ndarray:
    """A mask covering the image on any grid -> side x side, each cell read at its centre."""
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"a piece mask is a non-empty 2-d array, got shape {mask.shape}")
    ys = ((np.arange(side) + 0.5) * (mask.shape[0] / side)).astype(np.intp)
    xs = ((np.arange(side) + 0.5) * (mask.shape[1] / side)).astype(np.intp)
    return mask[ys[:, None], xs[None, :]]
