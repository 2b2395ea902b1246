"""Several pieces in one photo: find each, type it, order them most salient first.

Shoppers photograph sets (a necklace with its earrings, rings side by side) and worn jewelry. No
pretrained detector can be installed here, so pieces are found from what the home already has:

1. On a clean backdrop, the foreground segmentation (jewelrec/imaging/segment.py) gives the
   separate objects; small fragments lying inside a larger object's box join it, and two alike
   objects side by side that the type head calls earrings are ONE piece (a pair).
2. Where no backdrop stands out (a worn or lifestyle photo), class-activation maps of the type
   head over the backbone's last feature map (per type: the head's weights dotted with the
   feature at each cell, minus the mean over types) give regions each type sees.

Every candidate is cropped and typed by the type head (one batched `predict_proba` call),
scored (confidence x the square root of its share of the photo), non-maximum suppressed, and at
most `max_pieces` are kept. A photo always gives at least one piece: the framed whole piece, or
the whole photo. Query-path dependencies only: numpy, Pillow, onnxruntime (through the backbone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from jewelrec.errors import ImageError, NotReadyError
from jewelrec.imaging import components
from jewelrec.imaging.segment import (
    DEFAULT_MARGIN,
    Box,
    _alike_side_by_side,
    _objects,
    _union,
)

if TYPE_CHECKING:
    from jewelrec.models.backbone import Backbone

MAX_PIECES = 4
PAIR_TYPES = ("earring",)  # a type whose pieces come as two alike objects side by side
FRAGMENT_SHARE = 0.2  # an object with fewer foreground pixels than this share of a larger
# object, centred inside that object's box, is a fragment of it (a pendant, a clasp)
MIN_PIECE_CONFIDENCE = 0.5  # a second piece must be typed at least this surely...
MIN_PIECE_SHARE = 0.01  # ...and its box cover at least this share of the photo
BOX_MARGIN = 0.02  # a piece's box: its object's box grown by this share of its longer side (the
# crop it is typed on keeps segment.py's wider DEFAULT_MARGIN, for context)
NMS_IOU = 0.5  # a candidate overlapping a better one more than this is the same piece
CAM_SIDE = 320  # the longer side the photo is scaled to for the activation maps (multiple of 32)
CAM_LEVEL = 0.5  # a type's map is cut at this fraction of its maximum
CAM_MIN_PROBABILITY = 0.05  # types less likely than this on the whole photo get no map
CAM_REGIONS_PER_TYPE = 3


@dataclass(frozen=True)
class Piece:
    """One piece found in a photo."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original photo's pixels, half-open
    type: str  # the type head's answer on the piece's crop
    confidence: float  # its probability (0..1)
    score: float  # saliency used for ordering (most salient first)

    def to_dict(self) -> dict:
        """The JSON shape the API and `recommend --json` answer with."""
        return {"box": [int(v) for v in self.box], "type": self.type,
                "confidence": round(float(self.confidence), 4)}


@dataclass
class _Candidate:
    box: Box  # the piece's box, as answered
    source: str  # "object", "pair", "framed", "cam", "whole"
    cam_type: str | None = None
    crop: Box | None = None  # what the type head sees (default: the box)


def find_pieces(
    image: Image.Image | np.ndarray,
    classifier: Any,
    *,
    max_pieces: int = MAX_PIECES,
    backbone: Backbone | None = None,
) -> list[Piece]:
    """The pieces in a photo, most salient first; at least one (the framed piece or the photo).

    `classifier` is the home's type classifier (`predict_proba(images)`, `classes`); activation
    maps also need its linear `head` and a backbone (`backbone=`, else the classifier's, else
    the process's default). Raises ImageError for an unusable image, ValueError for a bad
    `max_pieces`, NotReadyError for an untrained classifier.
    """
    img = _rgb(image)
    if isinstance(max_pieces, bool) or not isinstance(max_pieces, int) or max_pieces < 1:
        raise ValueError(f"max_pieces must be a whole number >= 1, got {max_pieces!r}")
    classes = list(getattr(classifier, "classes", []) or [])
    if not classes:
        raise NotReadyError("finding pieces needs a trained type classifier (it has no classes)")
    h, w = img.shape[:2]
    whole = Box(0, 0, w, h)
    objects = _objects(img)
    if objects:
        candidates = _object_candidates(objects, w, h)
    else:
        candidates = _cam_candidates(img, classifier, classes, backbone)
    candidates.append(_Candidate(whole, "whole"))
    crops = [c.crop or c.box for c in candidates]
    probabilities = _type_crops(img, crops, classifier, len(classes))
    if objects:
        return _decide_objects(candidates, probabilities, classes, w, h, max_pieces)
    return _decide_cams(candidates, probabilities, classes, w, h, max_pieces)


# -- candidates ---------------------------------------------------------------------------------


def _object_candidates(objects: list[tuple[Box, int]], w: int, h: int) -> list[_Candidate]:
    """Groups of segmentation objects (fragments joined), alike side-by-side pairs, and the
    framed whole (all objects together)."""
    groups = _join_fragments(objects)

    def candidate(box: Box, source: str, pair: str | None = None) -> _Candidate:
        return _Candidate(box.expand(BOX_MARGIN, w, h), source, pair,
                          box.expand(DEFAULT_MARGIN, w, h))

    out = [candidate(box, "object") for box, _ in groups]
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if _alike_side_by_side(groups[i], groups[j]):
                out.append(candidate(_union(groups[i][0], groups[j][0]), "pair", f"{i},{j}"))
    framed = groups[0][0]
    for box, _ in groups[1:]:
        framed = _union(framed, box)
    out.append(candidate(framed, "framed"))
    return out


def _join_fragments(objects: list[tuple[Box, int]]) -> list[tuple[Box, int]]:
    """Objects with small fragments merged into the larger object whose box holds their centre,
    largest box first."""
    groups = [list(o) for o in sorted(objects, key=lambda o: o[1], reverse=True)]
    kept: list[list] = []
    for box, pixels in groups:
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        host = next((g for g in kept if pixels < FRAGMENT_SHARE * g[1]
                     and g[0].x0 <= cx < g[0].x1 and g[0].y0 <= cy < g[0].y1), None)
        if host is None:
            kept.append([box, pixels])
        else:
            host[0], host[1] = _union(host[0], box), host[1] + pixels
    kept.sort(key=lambda g: (g[0].area, g[1]), reverse=True)
    return [(box, pixels) for box, pixels in kept]


def _cam_candidates(
    img: np.ndarray, classifier: Any, classes: list[str], backbone: Backbone | None
) -> list[_Candidate]:
    """Regions each likely type's activation map lights up (none without a linear head)."""
    head = getattr(classifier, "head", None)
    if head is None or len(classes) < 2 or not hasattr(head, "coef"):
        return []
    backbone = backbone or getattr(classifier, "backbone", None) or _default_backbone()
    h, w = img.shape[:2]
    maps = _feature_map(img, backbone)  # (C, mh, mw)
    coef = np.asarray(head.coef, np.float32) / np.asarray(head.scale, np.float32)  # (K, C)
    cams = np.einsum("kc,chw->khw", coef, maps)
    cams = cams - cams.mean(axis=0, keepdims=True)  # what sets each type apart from the others
    overall = _softmax(cams.mean(axis=(1, 2)))
    mh, mw = maps.shape[1:]
    out = []
    for k, name in enumerate(classes):
        cam = cams[k]
        top = float(cam.max())
        if top <= 0 or overall[k] < CAM_MIN_PROBABILITY:
            continue
        labels, count = components.label(cam >= CAM_LEVEL * top)
        regions = []
        for index, slices in enumerate(components.bounding_boxes(labels, count), start=1):
            if slices is None:
                continue
            rows, cols = slices
            regions.append((float(cam[labels == index].sum()), rows, cols))
        regions.sort(key=lambda r: r[0], reverse=True)
        for _, rows, cols in regions[:CAM_REGIONS_PER_TYPE]:
            box = Box(
                int(cols.start * w / mw), int(rows.start * h / mh),
                int(np.ceil(cols.stop * w / mw)), int(np.ceil(rows.stop * h / mh)),
            ).clip(w, h)
            if box.width and box.height:
                out.append(_Candidate(box, "cam", cam_type=name))
    return out


def _feature_map(img: np.ndarray, backbone: Backbone) -> np.ndarray:
    """The backbone's last feature map (1280, h, w) of the whole photo, its aspect kept."""
    from jewelrec.models.backbone import PIXEL_MEAN, PIXEL_SCALE, SIZE_STEP

    h, w = img.shape[:2]
    scale = CAM_SIDE / max(h, w)
    size = (max(SIZE_STEP, round(w * scale / SIZE_STEP) * SIZE_STEP),
            max(SIZE_STEP, round(h * scale / SIZE_STEP) * SIZE_STEP))
    resized = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR), np.float32)
    batch = ((resized - PIXEL_MEAN) / PIXEL_SCALE).transpose(2, 0, 1)[None]
    maps, _ = backbone.run(np.ascontiguousarray(batch))
    return np.asarray(maps[0], np.float32)


def _default_backbone() -> Backbone:
    """The one place a backbone is made when neither the caller nor the classifier has one: a
    private one (no home known: torch, or ONNX exported to a temporary folder for bulk runs)."""
    from jewelrec.models.backbone import Backbone

    return Backbone()


# -- typing and deciding ------------------------------------------------------------------------


def _type_crops(img: np.ndarray, boxes: Sequence[Box], classifier: Any, k: int) -> np.ndarray:
    crops = [np.ascontiguousarray(img[b.y0 : b.y1, b.x0 : b.x1]) for b in boxes]
    probabilities = np.asarray(classifier.predict_proba(crops), np.float32)
    if probabilities.shape != (len(crops), k):
        raise ValueError(f"the type classifier answered shape {probabilities.shape} "
                         f"for {len(crops)} crops of {k} types")
    return probabilities


def _piece(box: Box, probabilities: np.ndarray, classes: list[str], w: int, h: int) -> Piece:
    best = int(np.argmax(probabilities))
    confidence = float(probabilities[best])
    share = box.area / float(w * h)
    return Piece(box.as_tuple(), classes[best], confidence, confidence * share ** 0.5)


def _is_pair_type(name: str) -> bool:
    return any(word in name.lower() for word in PAIR_TYPES)


def _decide_objects(
    candidates: list[_Candidate], probabilities: np.ndarray, classes: list[str],
    w: int, h: int, max_pieces: int,
) -> list[Piece]:
    """Pieces from segmentation groups: earring pairs merged, unsure small parts dropped."""
    objects = [i for i, c in enumerate(candidates) if c.source == "object"]
    framed = next(i for i, c in enumerate(candidates) if c.source == "framed")
    if len(objects) == 1:
        return [_piece(candidates[framed].box, probabilities[framed], classes, w, h)]
    members = {i: {i} for i in objects}
    for i, c in enumerate(candidates):
        if c.source != "pair":
            continue
        a, b = (objects[int(x)] for x in c.cam_type.split(","))
        pair_says = _is_pair_type(classes[int(np.argmax(probabilities[i]))])
        parts_say = all(_is_pair_type(classes[int(np.argmax(probabilities[x]))]) for x in (a, b))
        if (pair_says or parts_say) and a in members and b in members:
            members[i] = members.pop(a) | members.pop(b)
    pieces = []
    for i in members:
        piece = _piece(candidates[i].box, probabilities[i], classes, w, h)
        pieces.append(piece)
    pieces.sort(key=lambda p: p.score, reverse=True)
    main, rest = pieces[0], pieces[1:]
    rest = [p for p in rest if p.confidence >= MIN_PIECE_CONFIDENCE
            and _share(p.box, w, h) >= MIN_PIECE_SHARE]
    if not rest:
        return [_piece(candidates[framed].box, probabilities[framed], classes, w, h)]
    return _nms([main, *rest])[:max_pieces]


def _decide_cams(
    candidates: list[_Candidate], probabilities: np.ndarray, classes: list[str],
    w: int, h: int, max_pieces: int,
) -> list[Piece]:
    """Pieces from activation-map regions whose crop the head types as the map's own type."""
    whole = _piece(candidates[-1].box, probabilities[-1], classes, w, h)
    pieces = []
    for c, p in zip(candidates[:-1], probabilities[:-1], strict=True):
        piece = _piece(c.box, p, classes, w, h)
        if piece.type == c.cam_type and piece.confidence >= MIN_PIECE_CONFIDENCE:
            pieces.append(piece)
    if len({p.type for p in pieces}) < 2:
        return [whole]  # one type seen: the photo shows one piece, framed by the photo
    pieces.sort(key=lambda p: p.score, reverse=True)
    return _nms(pieces)[:max_pieces]


def _nms(pieces: list[Piece]) -> list[Piece]:
    kept: list[Piece] = []
    for piece in pieces:
        if all(_iou(piece.box, k.box) <= NMS_IOU for k in kept):
            kept.append(piece)
    return kept


def _share(box: tuple[int, int, int, int], w: int, h: int) -> float:
    return (box[2] - box[0]) * (box[3] - box[1]) / float(w * h)


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    return _iou(a, b)


def _iou(a: Sequence[int], b: Sequence[int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


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
