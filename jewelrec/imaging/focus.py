"""Where to look in a photo: the caller's box, or the piece itself.

The index and the query path both call `frame_piece` (or `focus_on_piece`, its image and box), so
catalog images and shopper photos are framed the same way. The frame is the union of every clear
object at least a fraction of the largest one's size, so an earring pair stays a pair and a chain
with a pendant stays whole. The foreground mask the framing segmented comes with the frame, so
the colour signature (imaging/colour.py) describes the piece without segmenting it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jewelrec.imaging.segment import Box, Segmentation, crop, objects, objects_and_mask

COMPANION_AREA_FRACTION = 0.15
MARGIN = 0.08


@dataclass(frozen=True)
class Framed:
    """A framed photo: what the models see, where it lies, and the piece's foreground."""

    image: np.ndarray  # RGB uint8, the frame's pixels
    box: Box | None  # where `image` lies in the photo (None: the whole photo)
    # True on the piece, over the whole of `image` on a coarser grid (cell (r, c) of an (m, n)
    # mask covers image rows r*H/m..(r+1)*H/m, columns likewise); all False when nothing stood
    # out; None when the framing segmented nothing (a caller's box, or auto framing off)
    mask: np.ndarray | None = None


def piece_box(img: np.ndarray) -> Box | None:
    """Bounding box of the jewelry in a photo, or None when nothing stands out."""
    h, w = img.shape[:2]
    return _piece_box([box for box, _ in objects(img)], w, h)


def _piece_box(boxes: Sequence[Box], w: int, h: int) -> Box | None:
    """The union of the clear objects (largest first) with a margin; None when there are none
    or it would cover nearly the whole photo."""
    if not boxes:
        return None
    largest = boxes[0].area
    keep = [b for b in boxes if b.area >= COMPANION_AREA_FRACTION * largest]
    union = Box(
        min(b.x0 for b in keep),
        min(b.y0 for b in keep),
        max(b.x1 for b in keep),
        max(b.y1 for b in keep),
    )
    union = union.expand(MARGIN, w, h)
    if union.area >= 0.95 * w * h:
        return None
    return union


def frame_piece(img: np.ndarray, box: Box | None = None, *, auto: bool = True,
                segmentation: Segmentation | None = None) -> Framed:
    """Crop to the caller's box, else (when `auto`) to the piece, with the piece's mask.
    `segmentation`: `objects_and_mask(img)` when the caller has it already (a query's piece
    finder segmented the same photo), so it is not computed twice."""
    h, w = img.shape[:2]
    if box is not None:
        box = box.crop_in(w, h)
        return Framed(crop(img, box), box)
    if not auto:
        return Framed(img, None)
    found, mask, factor = segmentation if segmentation is not None else objects_and_mask(img)
    union = _piece_box([b for b, _ in found], w, h)
    region = union if union is not None else Box(0, 0, w, h)
    framed = crop(img, union) if union is not None else img
    return Framed(framed, union, _mask_over(mask, factor, region))


def focus_on_piece(
    img: np.ndarray, box: Box | None = None, *, auto: bool = True
) -> tuple[np.ndarray, Box | None]:
    """Crop to the caller's box, else (when `auto`) to the piece; returns the image and the box."""
    framed = frame_piece(img, box, auto=auto)
    return framed.image, framed.box


def _mask_over(mask: np.ndarray, factor: int, region: Box) -> np.ndarray:
    """The small copy's mask (photo pixel (y, x) in cell (y // factor, x // factor)) read at
    the centres of a grid of about its own resolution over `region` of the photo."""
    rows = max(1, -(-region.height // factor))
    cols = max(1, -(-region.width // factor))
    ys = (region.y0 + (np.arange(rows) + 0.5) * (region.height / rows)) // factor
    xs = (region.x0 + (np.arange(cols) + 0.5) * (region.width / cols)) // factor
    ys = np.minimum(ys.astype(np.intp), mask.shape[0] - 1)
    xs = np.minimum(xs.astype(np.intp), mask.shape[1] - 1)
    return mask[ys[:, None], xs[None, :]]
