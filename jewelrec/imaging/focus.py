"""Where to look in a photo: the caller's box, or the piece itself.

The index and the query path both call `focus_on_piece`, so catalog images and shopper photos are
framed the same way. The frame is the union of every clear object at least a fraction of the
largest one's size, so an earring pair stays a pair and a chain with a pendant stays whole.
"""

from __future__ import annotations

import numpy as np

from jewelrec.imaging.segment import Box, crop, object_boxes

COMPANION_AREA_FRACTION = 0.15
MARGIN = 0.08


def piece_box(img: np.ndarray) -> Box | None:
    """Bounding box of the jewelry in a photo, or None when nothing stands out."""
    boxes = object_boxes(img)
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
    h, w = img.shape[:2]
    union = union.expand(MARGIN, w, h)
    if union.area >= 0.95 * w * h:
        return None
    return union


def focus_on_piece(
    img: np.ndarray, box: Box | None = None, *, auto: bool = True
) -> tuple[np.ndarray, Box | None]:
    """Crop to the caller's box, else (when `auto`) to the piece; returns the image and the box."""
    h, w = img.shape[:2]
    if box is not None:
        box = box.crop_in(w, h)
        return crop(img, box), box
    if auto:
        found = piece_box(img)
        if found is not None:
            return crop(img, found), found
    return img, None
