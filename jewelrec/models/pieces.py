"""Several pieces in one photo: find each, type it, order them most salient first.

Shoppers photograph sets (a necklace with its earrings, rings side by side) and worn jewelry. No
pretrained detector can be installed here, so pieces are found from what the home already has:

1. On a clean backdrop, the foreground segmentation (jewelrec/imaging/segment.py) gives the
   separate objects. Objects one edge region links (a thin chain the mask lost between a pendant
   and its clasp) are one object, small fragments inside a larger object's box join it, and edge
   regions the mask missed altogether (a faint silver piece) are candidates too.
2. Where no backdrop stands out (a worn or lifestyle photo), the objects are edge regions (sharp,
   contrasted colour edges: metal, facets, beads), and class-activation maps of the type head
   over the backbone's last feature map (per type: the head's weights dotted with the feature at
   each cell, minus the mean over types) both check them (a piece must lie where its type's map
   is positive) and propose regions no object covers.
3. Twins side by side (boxes of one size, thumbnails that correlate) that the head calls earrings
   are ONE piece, a pair; two different rings side by side stay two.

Candidates (each object, each pair, all objects framed together, each map region, the whole
photo) are cropped as squares and typed by the type head, scored (confidence x the square root of
its share of the photo), non-maximum suppressed, and at most `max_pieces` are kept. A photo always
gives at least one piece: on a clean backdrop with one plausible piece, all its objects framed
together (today's framing); else the whole photo.

Typing is what costs (a backbone pass per crop), so only the crops a decision reads are typed,
batched per step: the two of a pair the head calls earrings are not typed alone, a map region
where an object piece lies already is not typed. A candidate that frames every object on a clean
backdrop (the lone piece, a pair that is all there is) is typed on exactly the pixels the query
types (`query_view`), and each piece carries the pixels it was typed on (`Piece.view`), which a
query searching it types again: the backbone's feature memory answers those, so a one-piece photo
costs the segmentation and no extra pass (benchmarks/pieces_overhead.py).
Measured by benchmarks/pieces.py. Query-path dependencies only: numpy, Pillow, onnxruntime
(through the backbone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from jewelrec.errors import ImageError, NotReadyError
from jewelrec.imaging import components, segment
from jewelrec.imaging.focus import piece_box
from jewelrec.imaging.segment import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_AREA_FRACTION,
    Box,
    alike_side_by_side,
    otsu,
    shrink,
    shrink_factor,
    union,
)

if TYPE_CHECKING:
    from jewelrec.models.backbone import Backbone

MAX_PIECES = 4
PAIR_TYPES = ("earring",)  # a type whose pieces come as two alike objects side by side
FRAGMENT_SHARE = 0.2  # an object with fewer foreground pixels than this share of a larger
# object, centred inside that object's box, is a fragment of it (a pendant, a clasp)
MIN_PIECE_CONFIDENCE = 0.5  # a second piece must be typed at least this surely...
MIN_PIECE_SHARE = 0.01  # ...and its box cover at least this share of the photo
BOX_MARGIN = 0.0  # a piece's box: its object's box grown by this share of its longer side (the
# crop it is typed on keeps segment.py's wider DEFAULT_MARGIN, for context)
NMS_IOU = 0.5  # a candidate overlapping a better one more than this is the same piece
NMS_INSIDE = 0.6  # a piece this much inside a more salient one of its type is part of it
TWIN_SIZE = 0.85  # the two of a pair: box areas within this ratio...
TWIN_SIMILARITY = 0.75  # ...and thumbnails (grey or edge energy) correlating at least this much
TWIN_THUMBNAIL = 24  # pixels a side
TWIN_EDGE_SIDE = 128  # edge energy is measured on a copy at most this large
EDGE_BLUR = 2  # radius (small-copy pixels) the edge energy is averaged over
EDGE_MIN_ENERGY = 24.0  # below this colour-gradient energy nothing is an edge (a flat photo)
EDGE_MAX_COVER = 0.35  # edges over more of the photo than this: texture everywhere, no objects
EDGE_MIN_AREA = DEFAULT_MIN_AREA_FRACTION
MAX_EDGE_OBJECTS = 8  # the largest edge objects become candidates (each costs a typed crop)
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
    # the pixels the type head saw (x0, y0, x1, y1): a query searching this piece types the
    # same pixels, so the backbone's feature memory answers it without a second pass
    view: tuple[int, int, int, int] | None = None

    def to_dict(self) -> dict:
        """The JSON shape the API and `recommend --json` answer with."""
        return {"box": [int(v) for v in self.box], "type": self.type,
                "confidence": round(float(self.confidence), 4)}


@dataclass
class _Candidate:
    box: Box  # the piece's box, as answered
    source: str  # "object", "pair", "framed", "cam", "union", "whole"
    cam_type: str | None = None  # the type whose activation map proposed it
    crop: Box | None = None  # what the type head sees (default: the box)
    parts: tuple[int, ...] = ()  # the objects a "pair" or "union" candidate joins


def find_pieces(
    image: Image.Image | np.ndarray,
    classifier: Any,
    *,
    max_pieces: int = MAX_PIECES,
    backbone: Backbone | None = None,
) -> list[Piece]:
    """The pieces in a photo, most salient first; at least one (the framed piece or the photo).

    `classifier` is the home's type classifier (`predict_proba(images)`, `classes`); activation
    maps also need its linear `head` and a backbone (`backbone=`, else the classifier's own
    `backbone`, else a default one). Raises ImageError for an unusable image, ValueError for a bad
    `max_pieces`, NotReadyError for an untrained classifier.
    """
    img = _rgb(image)
    if isinstance(max_pieces, bool) or not isinstance(max_pieces, int) or max_pieces < 1:
        raise ValueError(f"max_pieces must be a whole number >= 1, got {max_pieces!r}")
    classes = list(getattr(classifier, "classes", []) or [])
    if not classes:
        raise NotReadyError("finding pieces needs a trained type classifier (it has no classes)")
    h, w = img.shape[:2]
    objects = segment.objects(img)
    clean = bool(objects)  # a clean backdrop: the objects are the pieces' parts
    edges = _edge_labels(img)
    cams, missed = None, []
    if clean:
        objects, missed = _with_edges(objects, edges, img)
    else:
        objects = _edge_objects(edges, img)
        cams = _class_maps(img, classifier, classes, backbone)
    candidates = _object_candidates(objects, missed, img, framed=clean) if objects else []
    if not clean:
        regions = _cam_candidates(cams, classes, w, h) if cams is not None else []
        candidates += regions + _cam_unions(candidates, regions)
        candidates.append(_Candidate(Box(0, 0, w, h), "whole"))
    typer = _Typer(img, candidates, classifier, len(classes), alone=clean and not missed)
    context = _Context(classes, w, h, cams)
    if clean:
        return _decide_clean(candidates, typer, context)[:max_pieces]
    return _decide_busy(candidates, typer, context)[:max_pieces]


# -- candidates ---------------------------------------------------------------------------------


def _object_candidates(objects: list[tuple[Box, int]], missed: list[tuple[Box, int]],
                       img: np.ndarray, *, framed: bool) -> list[_Candidate]:
    """Groups of objects (fragments joined), twins side by side (a pair?), and with `framed`
    the framed whole (the `objects` together; `missed` ones, found by their edges only, stay
    out of it)."""
    h, w = img.shape[:2]
    groups = _join_fragments(objects)
    whole = groups[0][0]
    for box, _ in groups[1:]:
        whole = union(whole, box)
    groups += _join_fragments(missed) if missed else []

    def candidate(box: Box, source: str, parts: tuple[int, ...] = ()) -> _Candidate:
        return _Candidate(box.expand(BOX_MARGIN, w, h), source,
                          crop=box.expand(DEFAULT_MARGIN, w, h), parts=parts)

    out = [candidate(box, "object") for box, _ in groups]
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if (alike_side_by_side(groups[i], groups[j]) and not _between(groups, i, j)
                    and _twins(img, groups[i][0], groups[j][0])):
                out.append(candidate(union(groups[i][0], groups[j][0]), "pair", (i, j)))
    if framed:
        out.append(candidate(whole, "framed"))
    return out


def _twins(img: np.ndarray, a: Box, b: Box) -> bool:
    """Whether two objects look like the two of a pair: boxes of nearly one size, and small
    copies (grey levels, or edge energy where a busy background blurs the grey) that correlate,
    one of them mirrored or not. On synthetic sets: pairs mostly 0.75-1.0, different rings side
    by side mostly below 0.75 or of other sizes."""
    if min(a.area, b.area) < TWIN_SIZE * max(a.area, b.area):
        return False

    def thumbnails(box: Box) -> list[np.ndarray]:
        crop = Image.fromarray(img[box.y0 : box.y1, box.x0 : box.x1])
        side = (TWIN_THUMBNAIL, TWIN_THUMBNAIL)
        small = crop.copy()
        small.thumbnail((TWIN_EDGE_SIDE, TWIN_EDGE_SIDE))  # edges of a copy: cheap on any photo
        edges = Image.fromarray(_edge_energy(np.asarray(small)))
        out = []
        for plane in (crop.convert("L"), edges):
            small = np.asarray(plane.resize(side, Image.BILINEAR), np.float32)
            small = small - small.mean()
            out.append(small / max(float(np.linalg.norm(small)), 1e-6))
        return out

    similarity = max(max(float((x * y).sum()), float((x * y[:, ::-1]).sum()))
                     for x, y in zip(thumbnails(a), thumbnails(b), strict=True))
    return similarity >= TWIN_SIMILARITY


def _between(groups: list[tuple[Box, int]], i: int, j: int) -> bool:
    """Whether another object stands in the gap between objects i and j (then they are pieces
    of a row, not a pair)."""
    left, right = sorted((groups[i][0], groups[j][0]), key=lambda b: b.x0)
    top, bottom = min(left.y0, right.y0), max(left.y1, right.y1)
    return any(left.x1 <= (box.x0 + box.x1) / 2 <= right.x0 and box.y0 < bottom and box.y1 > top
               for k, (box, _) in enumerate(groups) if k not in (i, j))


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
            host[0], host[1] = union(host[0], box), host[1] + pixels
    kept.sort(key=lambda g: (g[0].area, g[1]), reverse=True)
    return [(box, pixels) for box, pixels in kept]


_Edges = tuple[np.ndarray, int, int]  # labels on a small copy, their count, the shrink factor


def _edge_objects(edges: _Edges | None, img: np.ndarray) -> list[tuple[Box, int]]:
    """Objects where no clean backdrop stands out: jewelry is drawn by sharp, contrasted edges
    (metal highlights, facets, beads) that smooth surfaces (skin, wood, fabric out of focus) lack.
    The largest MAX_EDGE_OBJECTS edge objects, in the photo's pixels, largest box first."""
    if edges is None:
        return []
    labels, count, factor = edges
    pixels = np.bincount(labels.ravel(), minlength=count + 1)
    h, w = img.shape[:2]
    found = []
    for index, slices in enumerate(components.bounding_boxes(labels, count), start=1):
        if slices is None or pixels[index] < EDGE_MIN_AREA * labels.size:
            continue
        found.append((_photo_box(slices, factor, w, h), int(pixels[index])))
    found.sort(key=lambda item: item[1], reverse=True)
    found = found[:MAX_EDGE_OBJECTS]
    found.sort(key=lambda item: (item[0].area, item[1]), reverse=True)
    return found


def _edge_labels(img: np.ndarray) -> _Edges | None:
    """Connected edge regions on a small copy: (labels, count, shrink factor), None when edges
    are nowhere or everywhere. Edge energy is the colour gradient, averaged over EDGE_BLUR
    pixels and thresholded with Otsu."""
    factor = shrink_factor(img)
    energy = Image.fromarray(_edge_energy(shrink(img, factor)))
    energy = np.asarray(energy.filter(ImageFilter.BoxBlur(EDGE_BLUR)), np.float32)
    mask = energy > max(otsu(energy), EDGE_MIN_ENERGY)
    if not 0 < mask.mean() <= EDGE_MAX_COVER:
        return None
    labels, count = components.label(components.dilate(mask, iterations=1))
    return labels, count, factor


def _edge_energy(img: np.ndarray) -> np.ndarray:
    """Colour-gradient magnitude (RGB distance to the right and lower neighbours), uint8."""
    pixels = img.astype(np.float32)
    dx = np.sqrt((np.diff(pixels, axis=1, append=pixels[:, -1:]) ** 2).sum(axis=2))
    dy = np.sqrt((np.diff(pixels, axis=0, append=pixels[-1:]) ** 2).sum(axis=2))
    return np.clip(dx + dy, 0, 255).astype(np.uint8)


def _photo_box(slices: tuple[slice, slice], factor: int, w: int, h: int) -> Box:
    """An edge region's box in the photo's pixels, less the EDGE_BLUR + 1 small-copy pixels
    the blur and the dilation added on every side."""
    rows, cols = slices
    inset = EDGE_BLUR + 1
    x0, x1 = cols.start + inset, cols.stop - inset
    y0, y1 = rows.start + inset, rows.stop - inset
    if x1 <= x0:
        x0, x1 = cols.start, cols.stop
    if y1 <= y0:
        y0, y1 = rows.start, rows.stop
    return Box(x0 * factor, y0 * factor, min(w, x1 * factor), min(h, y1 * factor))


def _with_edges(
    objects: list[tuple[Box, int]], edges: _Edges | None, img: np.ndarray
) -> tuple[list[tuple[Box, int]], list[tuple[Box, int]]]:
    """Segmentation objects that one edge region links (a thin chain the mask lost between a
    pendant and its clasp) joined into one object, boxed with that region; plus edge objects
    the mask missed altogether (a faint silver piece), apart. Largest box first."""
    if edges is None:
        return objects, []
    labels, count, factor = edges
    h, w = img.shape[:2]
    regions = components.bounding_boxes(labels, count)
    joined: dict[int, list] = {}
    out = []
    for box, pixels in objects:
        inside = labels[box.y0 // factor : -(-box.y1 // factor),
                        box.x0 // factor : -(-box.x1 // factor)]
        votes = np.bincount(inside.ravel(), minlength=count + 1)[1:]
        if not votes.any():
            out.append((box, pixels))
            continue
        region = int(votes.argmax()) + 1
        if region in joined:
            joined[region][0] = union(joined[region][0], box)
            joined[region][1] += pixels
        else:
            joined[region] = [box, pixels]
    for region, (box, pixels) in joined.items():
        if regions[region - 1] is not None:
            box = union(box, _photo_box(regions[region - 1], factor, w, h))
        out.append((box, pixels))
    out.sort(key=lambda item: (item[0].area, item[1]), reverse=True)
    missed = [(box, pixels) for box, pixels in _edge_objects(edges, img)
              if all(_inside(box.as_tuple(), known.as_tuple()) < 0.5 and
                     _inside(known.as_tuple(), box.as_tuple()) < 0.5 for known, _ in out)]
    return out, missed


@dataclass
class _Maps:
    """Per-type class-activation maps (K, mh, mw): each type's score minus the mean over types."""

    maps: np.ndarray

    def support(self, k: int, box: Box, w: int, h: int) -> float:
        """Mean of type k's map over the cells the box covers (> 0: the type is seen there)."""
        _, mh, mw = self.maps.shape
        r0, r1 = int(box.y0 * mh / h), max(int(box.y0 * mh / h) + 1, -(-box.y1 * mh // h))
        c0, c1 = int(box.x0 * mw / w), max(int(box.x0 * mw / w) + 1, -(-box.x1 * mw // w))
        return float(self.maps[k, r0:r1, c0:c1].mean())


def _class_maps(
    img: np.ndarray, classifier: Any, classes: list[str], backbone: Backbone | None
) -> _Maps | None:
    """The type head's class-activation maps over the backbone's last feature map (None without
    a linear head: then pieces are not checked against them)."""
    head = getattr(classifier, "head", None)
    if head is None or len(classes) < 2 or not hasattr(head, "coef"):
        return None
    backbone = backbone or getattr(classifier, "backbone", None) or _default_backbone()
    features = _feature_map(img, backbone)  # (C, mh, mw)
    coef = np.asarray(head.coef, np.float32) / np.asarray(head.scale, np.float32)  # (K, C)
    cams = np.einsum("kc,chw->khw", coef, features)
    return _Maps(cams - cams.mean(axis=0, keepdims=True))


def _cam_candidates(cams: _Maps, classes: list[str], w: int, h: int) -> list[_Candidate]:
    """Regions each type's activation map lights up (its strongest CAM_REGIONS_PER_TYPE)."""
    maps = cams.maps
    _, mh, mw = maps.shape
    overall = _softmax(maps.mean(axis=(1, 2)))
    out = []
    for k, name in enumerate(classes):
        cam = maps[k]
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


def _cam_unions(candidates: list[_Candidate], regions: list[_Candidate]) -> list[_Candidate]:
    """For each activation-map region holding several objects, the objects together (a chain
    whose edges broke into arms): typed with the rest, kept where the head agrees."""
    objects = [c for c in candidates if c.source == "object"]
    out = []
    for region in regions:
        parts = tuple(i for i, c in enumerate(objects)
                      if _inside(c.box.as_tuple(), region.box.as_tuple()) >= 0.5)
        if len(parts) < 2:
            continue
        box, crop = objects[parts[0]].box, objects[parts[0]].crop or objects[parts[0]].box
        for i in parts[1:]:
            box, crop = union(box, objects[i].box), union(crop, objects[i].crop or box)
        if all(c.parts != parts for c in out):
            out.append(_Candidate(box, "union", region.cam_type, crop, parts))
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


def _square(box: Box, w: int, h: int) -> Box:
    """The square (as far as the photo allows) centred on the box: the type head centre-crops
    a square, which would cut the ends off a wide earring pair or a long chain."""
    side = max(box.width, box.height)
    sw, sh = min(side, w), min(side, h)
    x0 = min(max(0, (box.x0 + box.x1 - sw) // 2), w - sw)
    y0 = min(max(0, (box.y0 + box.y1 - sh) // 2), h - sh)
    return Box(x0, y0, x0 + sw, y0 + sh)


def query_view(img: np.ndarray, classifier: Any) -> Box:
    """The pixels a query types when the photo is one piece (recommend.py's `typing_view`): the
    whole photo for a head that wants the context (`whole_photo`), else the piece as
    imaging/focus.py frames it (the whole photo when nothing stands out)."""
    h, w = img.shape[:2]
    if not getattr(classifier, "whole_photo", False):
        box = piece_box(img)
        if box is not None:
            return box
    return Box(0, 0, w, h)


class _Typer:
    """The head's probabilities for the candidates, computed when a decision first needs them
    (each `need`: one batched `predict_proba` call over the crops not typed yet).

    A candidate is typed on the square around its crop (the head centre-crops a square, which
    would cut the ends off a wide pair or a long chain), the whole photo as it is. With `alone`
    (a clean backdrop, every object framed together), a candidate that frames all the objects
    (the framed piece; the only object; a pair that is all there is) is typed on exactly the
    pixels the query then types (`query_view`), so the backbone's feature memory (keyed by
    pixels and framing) answers the query's own pass: a photo of one piece costs no extra pass.
    """

    def __init__(self, img: np.ndarray, candidates: Sequence[_Candidate], classifier: Any,
                 k: int, *, alone: bool) -> None:
        self.img, self.candidates, self.classifier, self.k = img, candidates, classifier, k
        framed = next((c.crop for c in candidates if c.source == "framed"), None)
        self.framed = framed if alone else None
        self.rows: dict[Box, np.ndarray] = {}  # by the box typed: candidates may share one
        self._query_view: Box | None = None

    def view(self, i: int) -> Box:
        """The box candidate i is typed on."""
        c = self.candidates[i]
        h, w = self.img.shape[:2]
        if c.source == "whole":
            return Box(0, 0, w, h)
        if self.framed is not None and (c.crop or c.box) == self.framed:
            if self._query_view is None:
                self._query_view = query_view(self.img, self.classifier)
            return self._query_view
        return _square(c.crop or c.box, w, h)

    def need(self, indices: Iterable[int]) -> None:
        """Type the candidates among `indices` not typed yet, in one call."""
        boxes = list(dict.fromkeys(b for b in map(self.view, indices) if b not in self.rows))
        if not boxes:
            return
        crops = [np.ascontiguousarray(self.img[b.y0 : b.y1, b.x0 : b.x1]) for b in boxes]
        probabilities = np.asarray(self.classifier.predict_proba(crops), np.float32)
        if probabilities.shape != (len(crops), self.k):
            raise ValueError(f"the type classifier answered shape {probabilities.shape} "
                             f"for {len(crops)} crops of {self.k} types")
        self.rows.update(zip(boxes, probabilities, strict=True))

    def __getitem__(self, i: int) -> np.ndarray:
        self.need([i])
        return self.rows[self.view(i)]


@dataclass
class _Context:
    classes: list[str]
    w: int
    h: int
    cams: _Maps | None

    def piece(self, box: Box, probabilities: np.ndarray, view: Box) -> Piece:
        best = int(np.argmax(probabilities))
        confidence = float(probabilities[best])
        share = box.area / float(self.w * self.h)
        return Piece(box.as_tuple(), self.classes[best], confidence, confidence * share ** 0.5,
                     view.as_tuple())

    def plausible(self, piece: Piece) -> bool:
        """Typed surely enough, large enough, and (where maps are at hand) seen by its type's
        activation map."""
        if piece.confidence < MIN_PIECE_CONFIDENCE or _share(piece.box, self.w, self.h) < \
                MIN_PIECE_SHARE:
            return False
        if self.cams is None:
            return True
        return self.cams.support(self.classes.index(piece.type), Box(*piece.box),
                                 self.w, self.h) > 0


def _says_pair(row: np.ndarray, context: _Context) -> bool:
    """Whether the head's answer is a type that comes as a pair."""
    return _is_pair_type(context.classes[int(np.argmax(row))])


def _is_pair_type(name: str) -> bool:
    return any(word in name.lower() for word in PAIR_TYPES)


def _object_pieces(
    candidates: list[_Candidate], typer: _Typer, context: _Context
) -> list[Piece]:
    """One piece per group of objects, alike side-by-side pairs the head calls earrings (together
    or each alone) merged; most salient first. The two of a pair the head calls earrings
    together are not typed alone."""
    objects = [i for i, c in enumerate(candidates) if c.source == "object"]
    members = {i: {i} for i in objects}
    pairs = [i for i, c in enumerate(candidates) if c.source == "pair"]
    typer.need(pairs)
    typer.need([objects[x] for i in pairs if not _says_pair(typer[i], context)
                for x in candidates[i].parts])
    for i in sorted(pairs, key=lambda i: -typer[i].max()):  # surest pairs first
        a, b = (objects[x] for x in candidates[i].parts)
        if a in members and b in members and (
                _says_pair(typer[i], context) or all(_says_pair(typer[x], context)
                                                     for x in (a, b))):
            members[i] = members.pop(a) | members.pop(b)
    unions = [i for i, c in enumerate(candidates) if c.source == "union"]
    typer.need(unions + [objects[x] for i in unions for x in candidates[i].parts])
    for i in sorted(unions, key=lambda i: -typer[i].max()):
        parts = [objects[x] for x in candidates[i].parts]
        k = int(np.argmax(typer[i]))
        if (all(x in members for x in parts) and context.classes[k] == candidates[i].cam_type
                and typer[i][k] >= np.mean([typer[x].max() for x in parts])):
            members[i] = set().union(*(members.pop(x) for x in parts))
    typer.need(members)
    pieces = [context.piece(candidates[i].box, typer[i], typer.view(i)) for i in members]
    return sorted(pieces, key=lambda p: p.score, reverse=True)


def _decide_clean(candidates: list[_Candidate], typer: _Typer, context: _Context) -> list[Piece]:
    """On a clean backdrop: the most salient piece always; others when plausible; a lone piece
    is framed with all its fragments (today's framing)."""
    pieces = _object_pieces(candidates, typer, context)
    rest = [p for p in pieces[1:] if context.plausible(p)]
    if not rest:
        framed = next(i for i, c in enumerate(candidates) if c.source == "framed")
        return [context.piece(candidates[framed].box, typer[framed], typer.view(framed))]
    return _nms([pieces[0], *rest])


def _decide_busy(candidates: list[_Candidate], typer: _Typer, context: _Context) -> list[Piece]:
    """Without a clean backdrop: edge objects (those one map region holds joined where the head
    agrees) and activation-map regions that are plausible pieces (a map region only where no
    object piece lies); else the whole photo."""
    pieces = [p for p in _object_pieces(candidates, typer, context) if context.plausible(p)]
    cams = [i for i, c in enumerate(candidates) if c.source == "cam" and not any(
        _overlaps(candidates[i].box.as_tuple(), p.box) for p in pieces)]
    typer.need(cams)  # the map regions where no piece lies yet, in one call
    for i in cams:
        c = candidates[i]
        piece = context.piece(c.box, typer[i], typer.view(i))
        if piece.type != c.cam_type or not context.plausible(piece):
            continue
        if any(_overlaps(p.box, piece.box) for p in pieces):
            continue  # a piece there already: the map's box is only rougher
        pieces.append(piece)
    if not pieces:
        whole = len(candidates) - 1
        return [context.piece(candidates[whole].box, typer[whole], typer.view(whole))]
    return _nms(sorted(pieces, key=lambda p: p.score, reverse=True))


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether either box lies mostly inside the other."""
    return _inside(a, b) >= 0.5 or _inside(b, a) >= 0.5


def _inside(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of box a that lies inside box b."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return iw * ih / area if area > 0 else 0.0


def _nms(pieces: list[Piece]) -> list[Piece]:
    """Most salient first, without pieces overlapping a kept one more than NMS_IOU, nor pieces
    of a kept one's type lying mostly inside it (a ring's inner edge, a chain's shadow)."""
    kept: list[Piece] = []
    for piece in pieces:
        if all(_iou(piece.box, k.box) <= NMS_IOU and
               (piece.type != k.type or _inside(piece.box, k.box) < NMS_INSIDE) for k in kept):
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
