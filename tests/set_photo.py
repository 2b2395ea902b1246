"""A shopper photo of a set for tests: two catalog pieces of the tiny demo catalog (a necklace
and a ring) cut out of their photos and laid side by side on one light backdrop."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from jewelrec.imaging.io import load_image
from jewelrec.imaging.segment import foreground_mask

SET_TYPES = ("necklace", "ring")  # left to right
SIDE = 256  # each piece gets a SIDE x SIDE cell
GAP = 24
BACKDROP = (250, 250, 250)


def _first_image(catalog: Path, ptype: str) -> np.ndarray:
    with (catalog / "catalog.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["type"] == ptype)
    return load_image(catalog / row["image"].split("|")[0])


def _cut(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The piece's pixels and its mask, cropped to the mask."""
    mask = foreground_mask(image)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("no piece stands out in the catalog photo")
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return image[box], mask[box]


def set_photo(catalog: Path) -> tuple[bytes, list[tuple[str, tuple[int, int, int, int]]]]:
    """PNG bytes of the set, and each piece's (type, x0, y0, x1, y1 box where it was laid)."""
    canvas = np.empty((SIDE, GAP + len(SET_TYPES) * (SIDE + GAP), 3), np.uint8)
    canvas[:] = BACKDROP
    laid = []
    for i, ptype in enumerate(SET_TYPES):
        piece, mask = _cut(_first_image(catalog, ptype))
        h, w = mask.shape
        y, x = (SIDE - h) // 2, GAP + i * (SIDE + GAP) + (SIDE - w) // 2
        canvas[y : y + h, x : x + w][mask] = piece[mask]
        laid.append((ptype, (x, y, x + w, y + h)))
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, format="PNG")
    return out.getvalue(), laid
