"""Several pieces in one photo: find each, type it, order them most salient first.

Shoppers photograph sets (a necklace with its earrings, rings side by side) and worn jewelry. No
pretrained detector can be installed here, so pieces are found from what the home already has,
in two steps that each have a module:

- where pieces may be (jewelrec/models/piece_candidates.py): segmentation objects on a clean
  backdrop, edge regions and the type head's class-activation maps where none stands out, twins
  side by side as possible pairs;
- which of them are pieces (jewelrec/models/piece_decision.py): each candidate typed by the type
  head on its crop, pairs joined, scored, non-maximum suppressed, most salient first.

This module is the entry point callers import (`find_pieces`, `Piece`, `iou`). Measured by
benchmarks/pieces.py. Query-path dependencies only: numpy, Pillow, onnxruntime (through the
backbone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from jewelrec.errors import ImageError, NotReadyError
from jewelrec.imaging import segment
from jewelrec.imaging.segment import Box
from jewelrec.models.piece_candidates import (
    Candidate,
    cam_candidates,
    cam_unions,
    class_maps,
    edge_labels,
    edge_objects,
    iou,
    object_candidates,
    with_edges,
)
from jewelrec.models.piece_decision import (
    Context,
    Piece,
    Typer,
    decide_busy,
    decide_clean,
    query_view,
)

if TYPE_CHECKING:
    from jewelrec.models.backbone import Backbone

__all__ = ["MAX_PIECES", "Piece", "find_pieces", "iou", "query_view"]

MAX_PIECES = 4
# A photo whose every channel varies less than this (in 0-255 levels) shows nothing: a blank
# frame. Its activation maps are the network's padding, which gave three "pieces" at 100%.
FLAT_STD = 2.0


def find_pieces(
    image: Image.Image | np.ndarray,
    classifier: Any,
    *,
    max_pieces: int = MAX_PIECES,
    backbone: Backbone | None = None,
    segmentation: segment.Segmentation | None = None,
) -> list[Piece]:
    """The pieces in a photo, most salient first; at least one (the framed piece or the photo).

    `classifier` is the home's type classifier (`predict_proba(images)`, `classes`); activation
    maps also need its linear `head` and a backbone (`backbone=`, else the classifier's own
    `backbone`, else a default one). `segmentation`: the photo's (`segment_photo`), when the
    caller frames the same photo too. Raises ImageError for an unusable image, ValueError for a
    bad `max_pieces`, NotReadyError for an untrained classifier.
    """
    img = _rgb(image)
    if isinstance(max_pieces, bool) or not isinstance(max_pieces, int) or max_pieces < 1:
        raise ValueError(f"max_pieces must be a whole number >= 1, got {max_pieces!r}")
    classes = list(getattr(classifier, "classes", []) or [])
    if not classes:
        raise NotReadyError("finding pieces needs a trained type classifier (it has no classes)")
    h, w = img.shape[:2]
    objects = (segmentation if segmentation is not None else segment.objects_and_mask(img))[0]
    clean = bool(objects)  # a clean backdrop: the objects are the pieces' parts
    edges = edge_labels(img)
    cams, missed = None, []
    if clean:
        objects, missed = with_edges(objects, edges, img)
    else:
        objects = edge_objects(edges, img)
        flat = float(img.reshape(-1, img.shape[-1]).std(axis=0).max()) < FLAT_STD
        cams = None if flat else class_maps(img, classifier, classes, backbone)
    candidates = object_candidates(objects, missed, img, framed=clean) if objects else []
    if not clean:
        regions = cam_candidates(cams, classes, w, h) if cams is not None else []
        candidates += regions + cam_unions(candidates, regions)
        candidates.append(Candidate(Box(0, 0, w, h), "whole"))
    typer = Typer(img, candidates, classifier, len(classes), alone=clean and not missed)
    context = Context(classes, w, h, cams)
    decide = decide_clean if clean else decide_busy
    return typer.settle(decide(candidates, typer, context)[:max_pieces], context)


def segment_photo(image: Image.Image | np.ndarray) -> segment.Segmentation:
    """The photo's segmentation (imaging/segment.py `objects_and_mask`), for a caller that
    both finds the pieces and frames the photo: a query segments it once (ImageError for an
    unusable image, as `find_pieces`)."""
    return segment.objects_and_mask(_rgb(image))


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image or such an array; ImageError for anything else."""
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ImageError(f"the photo is empty ({image.width}x{image.height} pixels)")
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or not image.size:
            raise ImageError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} "
                             f"{image.shape}")
        return np.ascontiguousarray(image)
    raise ImageError(f"expected a photo (a PIL image), got {type(image).__name__}")
