"""Which candidates are pieces: typing them, joining pairs, suppression and ordering.

Candidates (jewelrec/models/piece_candidates.py) are cropped as squares and typed by the type
head, scored (confidence x the square root of its share of the photo), non-maximum suppressed,
most salient first. Twins the head calls earrings are ONE piece; two different rings stay two. A
photo always gives at least one piece: on a clean backdrop with one plausible piece, all its
objects framed together (today's framing); else the whole photo.

Typing is what costs (a backbone pass per crop), so only the crops a decision reads are typed,
batched per step: the two of a pair the head calls earrings are not typed alone, a map region
where an object piece lies already is not typed. A candidate that frames every object on a clean
backdrop (the lone piece, a pair that is all there is) is typed on exactly the pixels the query
types (`query_view`), and each piece carries the pixels it was typed on (`Piece.view`), which a
query searching it types again: the backbone's feature memory answers those, so a one-piece photo
costs the segmentation and no extra pass (benchmarks/pieces_overhead.py). A classifier with a
cheaper answer (`quick_proba`: a tuned network's frozen head, on the home pass) types the other
candidates with it, and the pieces chosen are typed again by the classifier itself: on real
photos the tuned network typed 3.05 views a query before, 1.67 now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jewelrec.imaging.focus import piece_box
from jewelrec.imaging.segment import Box
from jewelrec.models.piece_candidates import Candidate, ClassMaps, inside, iou, overlaps

PAIR_TYPES = ("earring",)  # a type whose pieces come as two alike objects side by side
MIN_PIECE_CONFIDENCE = 0.5  # a second piece must be typed at least this surely...
MIN_PIECE_SHARE = 0.01  # ...and its box cover at least this share of the photo
NMS_IOU = 0.5  # a candidate overlapping a better one more than this is the same piece
NMS_INSIDE = 0.6  # a piece this much inside a more salient one of its type is part of it


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


def _square(box: Box, w: int, h: int) -> Box:
    """The square (as far as the photo allows) centred on the box: the type head centre-crops
    a square, which would cut the ends off a wide earring pair or a long chain."""
    side = max(box.width, box.height)
    sw, sh = min(side, w), min(side, h)
    x0 = min(max(0, (box.x0 + box.x1 - sw) // 2), w - sw)
    y0 = min(max(0, (box.y0 + box.y1 - sh) // 2), h - sh)
    return Box(x0, y0, x0 + sw, y0 + sh)


class Typer:
    """The head's probabilities for the candidates, computed when a decision first needs them
    (each `need`: one batched call over the crops not typed yet, two with a `quick_proba`: the
    query's own view by the classifier, the rest quickly; `settle` types the chosen pieces).

    A candidate is typed on the square around its crop, the whole photo as it is. With `alone`
    (a clean backdrop, every object framed together), a candidate that frames all the objects
    (the framed piece; the only object; a pair that is all there is) is typed on exactly the
    pixels the query then types (`query_view`), so the backbone's feature memory (keyed by
    pixels and framing) answers the query's own pass: a photo of one piece costs no extra pass.
    """

    def __init__(self, img: np.ndarray, candidates: Sequence[Candidate], classifier: Any,
                 k: int, *, alone: bool) -> None:
        self.img, self.candidates, self.classifier, self.k = img, candidates, classifier, k
        framed = next((c.crop for c in candidates if c.source == "framed"), None)
        self.framed = framed if alone else None
        self.rows: dict[Box, np.ndarray] = {}  # by the box typed: candidates may share one
        self._query_view: Box | None = None
        # a classifier with a cheaper answer (a tuned network's frozen head) types the other
        # candidates with it: the classifier itself only the query's own view, and at the end
        # the pieces chosen (`settle`), so a photo costs it one pass, not one per candidate
        self.quick = getattr(classifier, "quick_proba", None)
        self.settled: set[Box] = set()  # boxes the classifier itself typed

    def view(self, i: int) -> Box:
        """The box candidate i is typed on."""
        c = self.candidates[i]
        h, w = self.img.shape[:2]
        if c.source == "whole":
            return Box(0, 0, w, h)
        if self.framed is not None and (c.crop or c.box) == self.framed:
            return self.query()
        return _square(c.crop or c.box, w, h)

    def query(self) -> Box:
        """The pixels the query types (`query_view`), found once."""
        if self._query_view is None:
            self._query_view = query_view(self.img, self.classifier)
        return self._query_view

    def need(self, indices: Iterable[int]) -> None:
        """Type the candidates among `indices` not typed yet, in one call."""
        boxes = list(dict.fromkeys(b for b in map(self.view, indices) if b not in self.rows))
        if self.quick is None:
            self._type(boxes)
            return
        query = self.query()
        self._type([b for b in boxes if b == query])
        self._type([b for b in boxes if b != query], quick=True)

    def settle(self, pieces: list[Piece], context: Context) -> list[Piece]:
        """The chosen pieces with the classifier's own answers on their views, where a quick
        answer typed them (in the order the decisions gave)."""
        self._type(list(dict.fromkeys(Box(*p.view) for p in pieces if p.view is not None
                                      and Box(*p.view) not in self.settled)))
        return [context.piece(Box(*p.box), self.rows[Box(*p.view)], Box(*p.view))
                if p.view is not None else p for p in pieces]

    def _type(self, boxes: list[Box], *, quick: bool = False) -> None:
        """Type the crops of `boxes` in one call (`quick`: with the cheaper answer)."""
        if not boxes:
            return
        crops = [np.ascontiguousarray(self.img[b.y0 : b.y1, b.x0 : b.x1]) for b in boxes]
        answer = self.quick if quick else self.classifier.predict_proba
        probabilities = np.asarray(answer(crops), np.float32)
        if probabilities.shape != (len(crops), self.k):
            raise ValueError(f"the type classifier answered shape {probabilities.shape} "
                             f"for {len(crops)} crops of {self.k} types")
        self.rows.update(zip(boxes, probabilities, strict=True))
        if not quick:
            self.settled.update(boxes)

    def __getitem__(self, i: int) -> np.ndarray:
        self.need([i])
        return self.rows[self.view(i)]


@dataclass
class Context:
    """What turns a typed candidate into a piece and judges it: the photo's size, the types,
    and (on busy photos) the activation maps a piece must be seen by."""

    classes: list[str]
    w: int
    h: int
    cams: ClassMaps | None

    def piece(self, box: Box, probabilities: np.ndarray, view: Box) -> Piece:
        best = int(np.argmax(probabilities))
        confidence = float(probabilities[best])
        share = box.area / float(self.w * self.h)
        return Piece(box.as_tuple(), self.classes[best], confidence, confidence * share ** 0.5,
                     view.as_tuple())

    def candidate_piece(self, candidates: list[Candidate], typer: Typer, i: int) -> Piece:
        """Candidate i as a piece, typed on its view."""
        return self.piece(candidates[i].box, typer[i], typer.view(i))

    def plausible(self, piece: Piece) -> bool:
        """Typed surely enough, large enough, and (where maps are at hand) seen by its type's
        activation map."""
        box = Box(*piece.box)
        if piece.confidence < MIN_PIECE_CONFIDENCE or \
                box.area / float(self.w * self.h) < MIN_PIECE_SHARE:
            return False
        if self.cams is None:
            return True
        return self.cams.support(self.classes.index(piece.type), box, self.w, self.h) > 0

    def says_pair(self, row: np.ndarray) -> bool:
        """Whether the head's answer is a type that comes as a pair."""
        name = self.classes[int(np.argmax(row))].lower()
        return any(word in name for word in PAIR_TYPES)


def _object_pieces(candidates: list[Candidate], typer: Typer, context: Context) -> list[Piece]:
    """One piece per group of objects, alike side-by-side pairs the head calls earrings (together
    or each alone) merged; most salient first. The two of a pair the head calls earrings
    together are not typed alone."""
    objects = [i for i, c in enumerate(candidates) if c.source == "object"]
    members = {i: {i} for i in objects}
    pairs = [i for i, c in enumerate(candidates) if c.source == "pair"]
    typer.need(pairs)
    typer.need([objects[x] for i in pairs if not context.says_pair(typer[i])
                for x in candidates[i].parts])
    for i in sorted(pairs, key=lambda i: -typer[i].max()):  # surest pairs first
        a, b = (objects[x] for x in candidates[i].parts)
        if a in members and b in members and (
                context.says_pair(typer[i]) or all(context.says_pair(typer[x]) for x in (a, b))):
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
    pieces = [context.candidate_piece(candidates, typer, i) for i in members]
    return sorted(pieces, key=lambda p: p.score, reverse=True)


def decide_clean(candidates: list[Candidate], typer: Typer, context: Context) -> list[Piece]:
    """On a clean backdrop: the most salient piece always; others when plausible; a lone piece
    is framed with all its fragments (today's framing)."""
    pieces = _object_pieces(candidates, typer, context)
    rest = [p for p in pieces[1:] if context.plausible(p)]
    if not rest:
        framed = next(i for i, c in enumerate(candidates) if c.source == "framed")
        return [context.candidate_piece(candidates, typer, framed)]
    return _nms([pieces[0], *rest])


def decide_busy(candidates: list[Candidate], typer: Typer, context: Context) -> list[Piece]:
    """Without a clean backdrop: edge objects (those one map region holds joined where the head
    agrees) and activation-map regions that are plausible pieces (a map region only where no
    object piece lies); else the whole photo (the last candidate)."""
    pieces = [p for p in _object_pieces(candidates, typer, context) if context.plausible(p)]
    cams = [i for i, c in enumerate(candidates) if c.source == "cam" and not any(
        overlaps(candidates[i].box.as_tuple(), p.box) for p in pieces)]
    typer.need(cams)  # the map regions where no piece lies yet, in one call
    for i in cams:
        piece = context.candidate_piece(candidates, typer, i)
        if piece.type != candidates[i].cam_type or not context.plausible(piece):
            continue
        if any(overlaps(p.box, piece.box) for p in pieces):
            continue  # a piece there already: the map's box is only rougher
        pieces.append(piece)
    if not pieces:
        return [context.candidate_piece(candidates, typer, len(candidates) - 1)]
    return _nms(sorted(pieces, key=lambda p: p.score, reverse=True))


def _nms(pieces: list[Piece]) -> list[Piece]:
    """Most salient first, without pieces overlapping a kept one more than NMS_IOU, nor pieces
    of a kept one's type lying mostly inside it (a ring's inner edge, a chain's shadow)."""
    kept: list[Piece] = []
    for piece in pieces:
        if all(iou(piece.box, k.box) <= NMS_IOU and
               (piece.type != k.type or inside(piece.box, k.box) < NMS_INSIDE) for k in kept):
            kept.append(piece)
    return kept
