"""Where pieces may be in a photo: the candidate regions `find_pieces` types and decides among.

No pretrained detector can be installed here, so candidates come from what the home already has:

1. On a clean backdrop, the foreground segmentation (jewelrec/imaging/segment.py) gives the
   separate objects. Objects one edge region links (a thin chain the mask lost between a pendant
   and its clasp) are one object, small fragments inside a larger object's box join it, and edge
   regions the mask missed altogether (a faint silver piece) are candidates too.
2. Where no backdrop stands out (a worn or lifestyle photo), the objects are edge regions (sharp,
   contrasted colour edges: metal, facets, beads), and class-activation maps of the type head
   over the backbone's last feature map (per type: the head's weights dotted with the feature at
   each cell, minus the mean over types) both check them (a piece must lie where its type's map
   is positive) and propose regions no object covers.
3. Twins side by side (boxes of one size, thumbnails that correlate) are proposed as a pair; the
   type head decides whether they are one piece (earrings) or two (different rings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from jewelrec.imaging import components
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

FRAGMENT_SHARE = 0.2  # an object with fewer foreground pixels than this share of a larger
# object, centred inside that object's box, is a fragment of it (a pendant, a clasp)
BOX_MARGIN = 0.0  # a piece's box: its object's box grown by this share of its longer side (the
# crop it is typed on keeps segment.py's wider DEFAULT_MARGIN, for context)
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

Objects = list[tuple[Box, int]]  # (box in the photo's pixels, pixels), as segment.objects gives
Edges = tuple[np.ndarray, int, int]  # labels on a small copy, their count, the shrink factor


@dataclass
class Candidate:
    """A region that may be a piece, and why it was proposed (the decision reads `source`)."""

    box: Box  # the piece's box, as answered
    source: str  # "object", "pair", "framed", "cam", "union", "whole"
    cam_type: str | None = None  # the type whose activation map proposed it
    crop: Box | None = None  # what the type head sees (default: the box)
    parts: tuple[int, ...] = ()  # the objects a "pair" or "union" candidate joins


# -- objects: segmentation and edges ------------------------------------------------------------


def object_candidates(objects: Objects, missed: Objects, img: np.ndarray,
                      *, framed: bool) -> list[Candidate]:
    """Groups of objects (fragments joined), twins side by side (a pair?), and with `framed`
    the framed whole (the `objects` together; `missed` ones, found by their edges only, stay
    out of it)."""
    h, w = img.shape[:2]
    groups = _join_fragments(objects)
    whole = groups[0][0]
    for box, _ in groups[1:]:
        whole = union(whole, box)
    groups += _join_fragments(missed) if missed else []

    def candidate(box: Box, source: str, parts: tuple[int, ...] = ()) -> Candidate:
        return Candidate(box.expand(BOX_MARGIN, w, h), source,
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


def _between(groups: Objects, i: int, j: int) -> bool:
    """Whether another object stands in the gap between objects i and j (then they are pieces
    of a row, not a pair)."""
    left, right = sorted((groups[i][0], groups[j][0]), key=lambda b: b.x0)
    top, bottom = min(left.y0, right.y0), max(left.y1, right.y1)
    return any(left.x1 <= (box.x0 + box.x1) / 2 <= right.x0 and box.y0 < bottom and box.y1 > top
               for k, (box, _) in enumerate(groups) if k not in (i, j))


def _join_fragments(objects: Objects) -> Objects:
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


def edge_objects(edges: Edges | None, img: np.ndarray) -> Objects:
    """Objects where no clean backdrop stands out: jewelry is drawn by sharp, contrasted edges
    (metal highlights, facets, beads) that smooth surfaces (skin, wood, fabric out of focus) lack.
    The largest MAX_EDGE_OBJECTS edge objects, in the photo's pixels, largest box first."""
    if edges is None:
        return []
    labels, count, factor = edges
    h, w = img.shape[:2]
    found = [(_photo_box(slices, factor, w, h), pixels)
             for slices, pixels in components.sized_boxes(labels, count, EDGE_MIN_AREA)]
    found.sort(key=lambda item: item[1], reverse=True)
    found = found[:MAX_EDGE_OBJECTS]
    found.sort(key=lambda item: (item[0].area, item[1]), reverse=True)
    return found


def edge_labels(img: np.ndarray) -> Edges | None:
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


def with_edges(objects: Objects, edges: Edges | None, img: np.ndarray) -> tuple[Objects, Objects]:
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
        inside_box = labels[box.y0 // factor : -(-box.y1 // factor),
                            box.x0 // factor : -(-box.x1 // factor)]
        votes = np.bincount(inside_box.ravel(), minlength=count + 1)[1:]
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
    missed = [(box, pixels) for box, pixels in edge_objects(edges, img)
              if not any(overlaps(box.as_tuple(), known.as_tuple()) for known, _ in out)]
    return out, missed


# -- class-activation maps ----------------------------------------------------------------------


@dataclass
class ClassMaps:
    """Per-type class-activation maps (K, mh, mw): each type's score minus the mean over types."""

    maps: np.ndarray

    def support(self, k: int, box: Box, w: int, h: int) -> float:
        """Mean of type k's map over the cells the box covers (> 0: the type is seen there)."""
        _, mh, mw = self.maps.shape
        r0, r1 = int(box.y0 * mh / h), max(int(box.y0 * mh / h) + 1, -(-box.y1 * mh // h))
        c0, c1 = int(box.x0 * mw / w), max(int(box.x0 * mw / w) + 1, -(-box.x1 * mw // w))
        return float(self.maps[k, r0:r1, c0:c1].mean())


def class_maps(
    img: np.ndarray, classifier: Any, classes: list[str], backbone: Backbone | None
) -> ClassMaps | None:
    """The type head's class-activation maps over the backbone's last feature map (None without
    a linear head: then pieces are not checked against them)."""
    head = getattr(classifier, "head", None)
    if head is None or len(classes) < 2 or not hasattr(head, "coef"):
        return None
    backbone = backbone or getattr(classifier, "backbone", None) or _default_backbone()
    features = _feature_map(img, backbone)  # (C, mh, mw)
    coef = np.asarray(head.coef, np.float32) / np.asarray(head.scale, np.float32)  # (K, C)
    cams = np.einsum("kc,chw->khw", coef, features)
    return ClassMaps(cams - cams.mean(axis=0, keepdims=True))


def cam_candidates(cams: ClassMaps, classes: list[str], w: int, h: int) -> list[Candidate]:
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
                out.append(Candidate(box, "cam", cam_type=name))
    return out


def cam_unions(candidates: list[Candidate], regions: list[Candidate]) -> list[Candidate]:
    """For each activation-map region holding several objects, the objects together (a chain
    whose edges broke into arms): typed with the rest, kept where the head agrees."""
    objects = [c for c in candidates if c.source == "object"]
    out = []
    for region in regions:
        parts = tuple(i for i, c in enumerate(objects)
                      if inside(c.box.as_tuple(), region.box.as_tuple()) >= 0.5)
        if len(parts) < 2:
            continue
        box, crop = objects[parts[0]].box, objects[parts[0]].crop or objects[parts[0]].box
        for i in parts[1:]:
            box, crop = union(box, objects[i].box), union(crop, objects[i].crop or box)
        if all(c.parts != parts for c in out):
            out.append(Candidate(box, "union", region.cam_type, crop, parts))
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


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


# -- box overlap (candidates and the decision both ask it) --------------------------------------


def _intersection(a: Sequence[int], b: Sequence[int]) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def inside(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of box a that lies inside box b."""
    area = (a[2] - a[0]) * (a[3] - a[1])
    return _intersection(a, b) / area if area > 0 else 0.0


def overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether either box lies mostly inside the other (the same piece, or part of it)."""
    return inside(a, b) >= 0.5 or inside(b, a) >= 0.5


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    inter = _intersection(a, b)
    union_area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union_area if union_area > 0 else 0.0
