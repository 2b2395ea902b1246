"""The Recommender: the one query pipeline behind the CLI, the Python API and the web server.

photo -> load (RGB) -> find the pieces (jewelrec/models/pieces.py) -> the caller's crop, else the
chosen piece (default the most salient one) -> type with confidence -> embed ->
pre-filtered kNN within the type (or within each likely type, merged, when the caller fixes
none and the classifier is unsure) -> ranked products, all from ONE snapshot of the models and
the index (see jewelrec/snapshot.py).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import JewelrecError, NotReadyError, UnknownProductError
from jewelrec.home import Home
from jewelrec.imaging.focus import frame_piece
from jewelrec.imaging.io import QUERY_SHORT_SIDE, DecodedPhoto, decode_photo, load_image, map_box
from jewelrec.imaging.segment import Box, Segmentation
from jewelrec.imaging.segment import crop as crop_box
from jewelrec.models.attributes import AttributeGuess
from jewelrec.models.base import Embedder, TypeClassifier
from jewelrec.models.pieces import Piece, find_pieces, segment_photo
from jewelrec.search import prefer, variants, versions
from jewelrec.search.filters import Filters, checked_k, spelled_as_catalog
from jewelrec.search.index import Index
from jewelrec.search.recognition import best_similarity, is_recognised, recognition_features
from jewelrec.search.why import QueryFacts, reasons
from jewelrec.snapshot import Snapshot, classifier_fingerprint, load_snapshot

if TYPE_CHECKING:
    from jewelrec.text.photo_words import PhotoWords
    from jewelrec.text.search import TextSearcher

log = logging.getLogger(__name__)

# Below this confidence the predicted type is a guess: search the likely types instead. A
# classifier may carry its own calibrated `decision_threshold`, which wins.
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
MAX_ALTERNATIVES = 3
MIN_ALTERNATIVE_PROBABILITY = 0.05
MAX_PIECES = 4  # pieces reported per photo, most salient first
LIKELY_MASS = 0.9  # an undecided search spans the most likely types up to this probability
TYPE_PRIOR_WEIGHT = 0.1  # undecided: rank by cosine + TYPE_PRIOR_WEIGHT * log p(type)
# A piece framed on a clean backdrop covering less of the photo than this is typed on the whole
# photo and on its framed crop, the two answers averaged. Measured through `recommend` (a probe,
# not a benchmark: a home trained on 900 real photos of 78 shops with --tune-seconds 200, 749
# photos of 33 other shops; the share and the mean picked on the same photos): the photos as
# they are 0.828 either way (decided 55.9% at 95.2% either way); their 479 packshots set smaller
# on their own backdrop, at 60% / 40% of the side: 0.837 -> 0.862 / 0.666 -> 0.825, decided
# right 95.5% -> 96.1% / 88.6% -> 96.6%. The framed crop alone instead of the mean lost 2
# photos as they are.
SMALL_PIECE_SHARE = 0.25


class PieceError(JewelrecError):
    """The caller asked for a piece the photo does not have."""


class NoPhotoError(JewelrecError):
    """A catalog product has no photo of its own to look for pieces like it by."""


class FilterError(JewelrecError, ValueError):
    """A filter names a value the catalog does not have (a ValueError too, as documented)."""


def _flagged_views(store: CatalogStore) -> tuple[set[tuple[str, str]], set[str]]:
    """The last ingest's hygiene findings: the (product id, image) views the index leaves out,
    and the images that are placeholders (imported here: a photo query never needs them)."""
    from jewelrec.catalog import hygiene

    findings = hygiene.stored_findings(store.meta(hygiene.META_KEY))
    if findings is None:
        return set(), set()
    placeholders = {image for group in findings.of_kind("placeholder") for image in group.images}
    return set(findings.excluded), placeholders


def _as_box(crop: object) -> Box:
    """A Python caller's crop given as four numbers (x0, y0, x1, y1) -> Box (ValueError, in
    words, for anything else: a tuple used to fail deep inside with an AttributeError)."""
    try:
        return Box(*crop)  # type: ignore[misc]
    except TypeError as exc:
        raise ValueError(f"crop: a Box or four whole numbers (x0, y0, x1, y1) in the photo's "
                         f"pixels, not {crop!r}") from exc
    except ValueError as exc:  # four numbers, but no box: Box says why (x1 below x0, ...)
        raise ValueError(f"crop: {exc}") from exc


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    type: str
    brand: str | None
    price: float
    currency: str
    url: str
    image: str
    score: float
    why: list[str] = field(default_factory=list)  # reasons it matches (jewelrec/search/why.py)
    metal: str | None = None
    stone: str | None = None
    predicted: list[str] = field(default_factory=list)  # metal / stone read from its photo

    @classmethod
    def from_product(cls, product: Product, image: str, score: float) -> Result:
        return cls(
            id=product.id,
            title=product.title,
            type=product.type,
            brand=product.brand,
            price=product.price,
            currency=product.currency,
            url=product.url,
            image=image,
            score=round(float(score), 6),
            metal=product.metal,
            stone=product.stone,
            predicted=list(product.predicted),
        )


def typing_view(
    classifier: TypeClassifier, image: np.ndarray, crop: Box | None, focused: np.ndarray
) -> np.ndarray:
    """What the type classifier looks at: the caller's crop, else the whole photo for a head
    that wants the context (a neck, a hand), else the piece found automatically."""
    if crop is None and getattr(classifier, "whole_photo", False):
        return image
    return focused


def small_piece(classifier: Any, image: np.ndarray, crop: Box | None, box: Box | None) -> bool:
    """Whether a head that types the whole photo should also see the framed piece: no crop of
    the caller's, and the piece framed on a clean backdrop covers under SMALL_PIECE_SHARE of
    the photo (a ring shot from afar: the whole photo read as an earring)."""
    if crop is not None or box is None or not getattr(classifier, "whole_photo", False):
        return False
    h, w = image.shape[:2]
    return box.area < SMALL_PIECE_SHARE * w * h


def type_probabilities(
    classifier: Any, views: Sequence[tuple[np.ndarray, np.ndarray | None]]
) -> np.ndarray:
    """The classifier's probabilities for each (typing view, framed piece or None) in one call:
    the mean of the two where the piece is small (`small_piece`), else the view's own."""
    flat = [image for view, piece in views for image in (view, piece) if image is not None]
    answers = iter(np.asarray(classifier.predict_proba(flat)))
    return np.stack([next(answers) if piece is None else (next(answers) + next(answers)) / 2
                     for _, piece in views])


@dataclass(frozen=True)
class TypeAlternative:
    type: str
    probability: float


def type_alternatives(classes: Sequence[str], probabilities: np.ndarray) -> list[TypeAlternative]:
    """The few types worth offering a person: most likely first, the top two always (a question
    needs a choice: "Is this a ring or a bracelet?"), a third when it has >= 5%."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    return [
        TypeAlternative(classes[i], round(float(probabilities[i]), 6))
        for rank, i in enumerate(order[:MAX_ALTERNATIVES])
        if rank < 2 or probabilities[i] >= MIN_ALTERNATIVE_PROBABILITY
    ]


def likely_types(classes: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
    """The smallest set of most likely types whose probabilities sum to LIKELY_MASS (at most
    MAX_ALTERNATIVES), with their probabilities: what an undecided search spans."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    chosen: dict[str, float] = {}
    for i in order[:MAX_ALTERNATIVES]:
        chosen[classes[i]] = float(probabilities[i])
        if sum(chosen.values()) >= LIKELY_MASS:
            break
    return chosen


def ranked_types(classes: Sequence[str], probabilities: np.ndarray) -> list[tuple[str, float]]:
    """Every type with its probability, most likely first (those of probability 0, types the
    index does not hold, left out)."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    return [(classes[i], float(probabilities[i])) for i in order if probabilities[i] > 0]


def within_types(classes: Sequence[str], probabilities: np.ndarray,
                 held: Sequence[str] | None) -> np.ndarray:
    """The probabilities of the `held` types only, renormalised (all of them when none is
    held, or `held` is not known): an undecided search spans what the index holds."""
    if not held:
        return probabilities
    inside = np.array([c in set(held) for c in classes])
    if not inside.any():
        return probabilities
    kept = np.where(inside, probabilities, 0.0)
    total = kept.sum()
    return kept / total if total > 0 else inside / inside.sum()


@dataclass(frozen=True)
class PreparedPhoto:
    """A query photo loaded, with what the caller asked of its framing (no model run yet): the
    per-request half of the work. Its pieces are found, and the photo framed, with the models
    (`frame`, in `infer`: in a server, in the model thread, with other requests' photos)."""

    image: np.ndarray  # the whole photo, RGB (a large JPEG decoded reduced: see `size`)
    crop: Box | None  # the caller's crop, as asked, in the photo's pixels (it wins over pieces)
    name: str | None = None
    piece: int | None = None  # the piece asked for (None: the first)
    pieces: tuple[Piece, ...] | None = None  # found already (None: to find; (): none wanted)
    auto_crop: bool = True  # frame the piece of a one-piece photo (False: the whole photo)
    # the photo's own (width, height) when `image` is it decoded reduced (None: `image` is the
    # photo): the models work in `image`'s pixels, the caller asks and is answered in the photo's
    size: tuple[int, int] | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def photo_size(self) -> tuple[int, int]:
        return self.size or self.image_size

    def to_image(self, box: Box) -> Box:
        """A box in the photo's pixels -> `image`'s (rounded outward, clipped)."""
        return Box(*map_box(box.as_tuple(), self.photo_size, self.image_size))

    def to_photo(self, box: Box) -> Box:
        """A box in `image`'s pixels -> the photo's (rounded outward, clipped)."""
        return Box(*map_box(box.as_tuple(), self.image_size, self.photo_size))

    @property
    def image_crop(self) -> Box | None:
        """The caller's crop in `image`'s pixels, at least 2 a side as a crop must be (a crop of
        a few pixels of a photo decoded at 1/8 could shrink below that)."""
        if self.crop is None:
            return None
        box, (w, h) = self.to_image(self.crop), self.image_size
        x0, y0 = min(box.x0, max(0, w - 2)), min(box.y0, max(0, h - 2))
        return Box(x0, y0, max(box.x1, x0 + 2), max(box.y1, y0 + 2)).clip(w, h)


@dataclass(frozen=True)
class Framing:
    """Where the models look in a prepared photo, decided once its pieces are known."""

    focused: np.ndarray  # what the embedder sees: the crop, the piece, or the whole photo
    box: Box | None  # where `focused` lies in the photo (None: the whole photo)
    # a box the classifier types on its own: the caller's crop, or where the piece finder typed
    # the chosen piece of a photo of several (None: the classifier's own view, see typing_view)
    typed: Box | None
    pieces: tuple[Piece, ...] = ()  # every piece found in the photo, most salient first
    piece: int | None = None  # which of `pieces` is framed (None: the caller's crop)
    # the piece's foreground over `focused` as the framing found it (imaging/focus.py), for the
    # colour signature; None: the embedder segments `focused` itself
    mask: np.ndarray | None = None

    def typed_view(self, image: np.ndarray) -> np.ndarray:
        """The pixels of `typed` (`focused` when they are one box): a piece is typed on the very
        pixels the piece finder typed it on, so the backbone's feature memory answers."""
        if self.typed is None or self.typed == self.box:
            return self.focused
        return crop_box(image, self.typed)


def photo_pieces(snap: Snapshot, image: np.ndarray,
                 segmentation: Segmentation | None = None) -> tuple[Piece, ...]:
    """The pieces of jewelry in a photo, most salient first (at least one), typed by the
    snapshot's classifier (jewelrec/models/pieces.py); `segmentation`: the photo's, if made."""
    return tuple(find_pieces(image, snap.classifier, max_pieces=MAX_PIECES,
                             segmentation=segmentation))


def frame(snap: Snapshot, photo: PreparedPhoto) -> Framing:
    """What the models look at. The caller's crop wins; a photo of one piece is framed as it
    always was (segmentation's box for the embedder, the whole photo for a classifier that
    wants the context); in a photo of several, the chosen piece's box is searched and typed on
    its own. A piece the photo lacks frames the first (its answer is a PieceError)."""
    image, crop = photo.image, photo.image_crop
    # one segmentation serves the piece finder and the framing (3-6 CPU ms a query, GIL-held)
    segmentation = segment_photo(image) if photo.pieces is None else None
    pieces = photo_pieces(snap, image, segmentation) if photo.pieces is None else photo.pieces
    asked = photo.piece if photo.piece is not None and photo.piece < len(pieces) else 0
    if crop is None and len(pieces) > 1:
        h, w = image.shape[:2]
        box = Box(*pieces[asked].box).clip(w, h)
        view = pieces[asked].view
        typed = Box(*view).clip(w, h) if view is not None else box
        if box.width >= 2 and box.height >= 2 and typed.width >= 2 and typed.height >= 2:
            return Framing(crop_box(image, box), box, typed, pieces, asked)
    framed = frame_piece(image, crop, auto=photo.auto_crop,  # framed as the index frames
                         segmentation=segmentation)
    return Framing(framed.image, framed.box, crop, pieces,
                   None if crop is not None or not pieces else asked, framed.mask)


@dataclass(frozen=True)
class PhotoInference:
    """What the models of one snapshot say about one prepared photo."""

    probabilities: np.ndarray  # over the snapshot's classifier's classes
    vector: np.ndarray  # the embedding
    recognition: np.ndarray | None  # backbone features for "is this jewelry?", when offered
    attributes: dict[str, AttributeGuess]
    framing: Framing  # where the models looked, and the photo's pieces


class Inference(Protocol):
    """Runs `infer` for one photo, possibly batched with other requests' photos that hold the
    same snapshot (jewelrec/server/inference.py); blocks until the answer is there."""

    def infer(self, snap: Snapshot, photo: PreparedPhoto) -> PhotoInference: ...


def infer(snap: Snapshot, photos: Sequence[PreparedPhoto]) -> list[PhotoInference]:
    """The models of ONE snapshot over many prepared photos: one call per model for them all
    (the batch a micro-batching server forms, or a single query's photo)."""
    if not photos:
        return []
    framings = [frame(snap, p) for p in photos]  # finding pieces is per photo
    focused = [f.focused for f in framings]
    probabilities = type_probabilities(snap.classifier, [
        (typing_view(snap.classifier, p.image, f.typed, f.typed_view(p.image)),
         f.focused if small_piece(snap.classifier, p.image, f.typed, f.box) else None)
        for p, f in zip(photos, framings, strict=True)])
    vectors = snap.embedder.embed(focused, masks=[f.mask for f in framings])
    seen = (recognition_features(snap.embedder, focused)
            if snap.recognition_reference is not None else None)
    guesses = (snap.attributes.predict(
        [typing_view(snap.attributes, p.image, f.typed, f.typed_view(p.image))
         for p, f in zip(photos, framings, strict=True)])
        if snap.attributes is not None else [{} for _ in photos])
    return [
        PhotoInference(probabilities[i], vectors[i], None if seen is None else seen[i],
                       guesses[i], framings[i])
        for i in range(len(photos))
    ]


@dataclass
class Recommendation:
    photo: str | None
    type: str | None
    type_confidence: float | None
    results: list[Result]
    type_probabilities: dict[str, float] = field(default_factory=dict)
    crop: Box | None = None
    searched_types: list[str] | None = None  # None: every type
    index_version: str | None = None  # the snapshot that answered
    # False: the classifier was unsure and the caller fixed no type; the search spanned the
    # likely types and a person can pick one of `type_alternatives`
    type_decided: bool = True
    type_alternatives: list[TypeAlternative] = field(default_factory=list)
    # False: the photo is less like this catalog than its own pieces are like each other (not
    # jewelry from this shop, see search/recognition.py); the closest pieces still come
    recognised: bool = True
    # metal / stone read from the photo with calibrated confidences (empty: no heads trained)
    attributes: dict[str, AttributeGuess] = field(default_factory=dict)
    # the pieces found in the photo, most salient first (empty: "more like this"), and which of
    # them this answer searched (None: the caller's crop)
    pieces: list[Piece] = field(default_factory=list)
    piece: int | None = None
    # the shopper's words with the photo (jewelrec/text/photo_words.py): the filters they
    # applied, shaped as text search's, and what ranked the results; None without words
    query: str | None = None
    applied: dict[str, Any] | None = None
    ranked_by: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape (`recommend --json`, POST /api/recommend)."""
        return {
            "photo": self.photo,
            "type": self.type,
            "type_confidence": self.type_confidence,
            "recognised": self.recognised,
            "type_decided": self.type_decided,
            "type_alternatives": [asdict(a) for a in self.type_alternatives],
            "results": [asdict(r) for r in self.results],
            "attributes": {name: asdict(g) for name, g in self.attributes.items()},
            "pieces": [p.to_dict() for p in self.pieces],
            "piece": self.piece,
            "query": self.query,
            "applied": self.applied,
            "ranked_by": self.ranked_by,
            "type_probabilities": self.type_probabilities,
            "searched_types": self.searched_types,
            "crop": list(self.crop.as_tuple()) if self.crop is not None else None,
            "index_version": self.index_version,  # the snapshot that answered
        }


class Recommender:
    """Answers queries from one immutable Snapshot (store, models, index), swapped whole when a
    new index is published; each query captures the snapshot once and reads nothing else."""

    def __init__(
        self,
        store: CatalogStore,
        embedder: Embedder,
        classifier: TypeClassifier,
        index: Index,
        *,
        home: Home | None = None,
        index_version: str | None = None,
        backend: str | None = None,
        milvus_uri: str | None = None,
        confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
        auto_crop: bool = True,
        index_meta: dict[str, Any] | None = None,
        classifier_name: str | None = None,
    ) -> None:
        self.home = home
        self.confidence_threshold = confidence_threshold
        self._auto_crop = auto_crop
        self._backend = backend
        self._milvus_uri = milvus_uri
        self._classifier_name = classifier_name or getattr(classifier, "name", "")
        # a server opened without naming a classifier types with the one the home records, at
        # each reload too: a restarted worker reads the home's, and must not answer otherwise
        self._classifier_from_home = False
        self._snapshot = Snapshot(
            store, embedder, classifier, index, index_version, index_meta or {},
            classifier_fingerprint(home, self._classifier_name) if home else None,
        )
        self._reload_lock = threading.Lock()
        self._unloadable: str | None = None  # an index version that failed to load: not retried
        self._disagreement_logged: str | None = None  # index version already warned about
        # the server's micro-batching executor; None: each query runs the models itself
        self.inference: Inference | None = None
        self._text: TextSearcher | None = None
        self._text_lock = threading.Lock()

    @property
    def refused_version(self) -> str | None:
        """The newest published index version that failed to load (None: none did, or a later
        one loaded since): /healthz shows it, so an operator sees the server is behind."""
        refused, serving = self._unloadable, self.index_version
        return refused if refused and (serving is None or refused > serving) else None

    @property
    def auto_crop(self) -> bool:
        """Whether queries frame the piece: as the serving index's photos were framed (its meta
        records it), so a home whose setting changed since is still searched consistently."""
        return bool(self._snapshot.index_meta.get("auto_crop", self._auto_crop))

    # -- the current snapshot (read-only views for the CLI, benchmarks and tests) -------------
    @property
    def snapshot(self) -> Snapshot:
        """What a query started now reads; capture it once per query."""
        return self._snapshot

    def swap(self, snapshot: Snapshot) -> None:
        """Make `snapshot` the one new queries capture; queries in flight keep theirs."""
        self._snapshot = snapshot  # one reference assignment: atomic

    @property
    def store(self) -> CatalogStore:
        return self._snapshot.store

    @property
    def text(self) -> TextSearcher:
        """Words over the same catalog (text search, and the words given with a photo); its
        model loads on the first query that needs it, once per Recommender."""
        if self._text is None:
            from jewelrec.text.search import TextSearcher  # text search imports Result

            with self._text_lock:
                if self._text is None:
                    self._text = TextSearcher(self.store, self.home)
        return self._text

    @property
    def embedder(self) -> Embedder:
        return self._snapshot.embedder

    @property
    def classifier(self) -> TypeClassifier:
        return self._snapshot.classifier

    @property
    def index(self) -> Index:
        return self._snapshot.index

    @property
    def index_version(self) -> str | None:
        return self._snapshot.index_version

    @property
    def index_meta(self) -> Any:
        return self._snapshot.index_meta

    @classmethod
    def open(
        cls,
        home: Home | str | Path | None = None,
        *,
        embedder: str | None = None,
        classifier: str | None = None,
        backend: str | None = None,
        milvus_uri: str | None = None,
    ) -> Recommender:
        """Load everything a home holds; names given here override what the home records."""
        home = home if isinstance(home, Home) else Home(home)
        home.require_catalog()
        settings = home.settings()
        version = versions.current_version(home)
        if version is None:
            raise NotReadyError(
                f"no index in {home.root}: run `{home.command('index')}` first"
            )
        meta = versions.read_meta(home, version)
        if embedder and meta.get("embedder") and embedder != meta["embedder"]:
            raise NotReadyError(
                f"the index was built with embedder {meta['embedder']!r}, not {embedder!r}: "
                f"run `{home.command('index', '--embedder', embedder)}` first"
            )
        classifier_name = classifier or settings.classifier
        snapshot = load_snapshot(
            home, version,
            store=CatalogStore.open(home, read_only=True),  # queries never write
            classifier_name=classifier_name, embedder_name=embedder, backend=backend,
            milvus_uri=milvus_uri,
        )
        recommender = cls(
            snapshot.store, snapshot.embedder, snapshot.classifier, snapshot.index,
            home=home, backend=backend, milvus_uri=milvus_uri,
            auto_crop=settings.auto_crop, classifier_name=classifier_name,
        )
        recommender._classifier_from_home = classifier is None
        recommender.swap(snapshot)
        return recommender

    # -- queries ---------------------------------------------------------------------------
    def recommend(
        self,
        photo: bytes | str | Path | np.ndarray | DecodedPhoto,
        *,
        k: int = 10,
        filters: Filters | None = None,
        type: str | None = None,
        crop: Box | None = None,
        photo_name: str | None = None,
        prefer_brand: str | None = None,
        group_variants: bool = False,
        piece: int | None = None,
        text: str | None = None,
    ) -> Recommendation:
        """Photo (bytes, path, RGB array or DecodedPhoto) -> the k most similar products that
        pass `filters`; `prefer_brand` ranks that brand a little higher (search/prefer.py);
        `group_variants` keeps the best product of each variant group (search/variants.py).
        The answer lists the photo's pieces and searches the first, or `piece` (an index into
        them; PieceError when the photo has fewer); a `crop` wins over both. `text`: the
        shopper's words ("but in silver"): attribute words filter, the rest re-rank
        (jewelrec/text/photo_words.py; ValueError, in words, for words that cannot be read)."""
        snap = self.snapshot
        k, filters = checked_k(k), self._spelled(snap, filters, type)
        words = self._read_words(snap, text, filters)
        prepared = self.prepare(photo, crop=crop, photo_name=photo_name, piece=piece)
        recommendation = self._infer_and_answer(
            snap, prepared, k=words.pool(k) if words else k,
            filters=words.filters if words else filters, type=None, prefer_brand=prefer_brand,
            known=QueryFacts(asked=words.asked) if words else None,
            group_variants=group_variants, shown=k)
        return self._preferred(self._with_words(snap, recommendation, words, k, prefer_brand),
                               prefer_brand, k)

    def _spelled(self, snap: Snapshot, filters: Filters | None,
                 type: str | None = None) -> Filters | None:
        """The caller's filters as the catalog spells them (search/filters.spelled_as_catalog),
        with `type` one of them: it wins over the filters' types, and over a type the words
        name (the answer's `applied` does not claim the words' type)."""
        if type is not None and str(type).strip():
            filters = (filters or Filters()).with_types([str(type)])
        if filters is None or not (filters.types or filters.brands or filters.metals):
            return filters
        try:
            return spelled_as_catalog(filters, snap.store.facets())
        except ValueError as exc:  # the API checked them, but an ingest may drop one meanwhile
            raise FilterError(str(exc)) from exc

    def _read_words(self, snap: Snapshot, text: str | None,
                    filters: Filters | None) -> PhotoWords | None:
        """The words given with a photo, read against the catalog (None: no words)."""
        if text is None or not text.strip():
            return None
        from jewelrec.text.photo_words import read_words

        return read_words(self.text, text, filters, snap.index_version)

    def _with_words(self, snap: Snapshot, recommendation: Recommendation,
                    words: PhotoWords | None, k: int,
                    prefer_brand: str | None) -> Recommendation:
        """The visual candidates re-ranked by the words, cut to what is shown, and the answer
        saying what the words applied."""
        if words is None:
            return recommendation
        from jewelrec.text.photo_words import rerank

        results, ranked_by = rerank(recommendation.results, words, self.text,
                                    snap.index_version)
        recommendation.results = results[: self._wanted(k, prefer_brand)]
        recommendation.query, recommendation.applied = words.query, words.applied
        recommendation.ranked_by = ranked_by
        return recommendation

    def recommend_pieces(
        self,
        photo: bytes | str | Path | np.ndarray | DecodedPhoto,
        *,
        k: int = 10,
        filters: Filters | None = None,
        type: str | None = None,
        photo_name: str | None = None,
        prefer_brand: str | None = None,
        group_variants: bool = False,
        text: str | None = None,
    ) -> list[Recommendation]:
        """One answer per piece of the photo (`recommend --all-pieces`), most salient first: the
        photo is loaded and its pieces found once, and the models see every piece in one batch
        (`text`: words as in `recommend`, for every piece)."""
        snap = self.snapshot
        k, filters = checked_k(k), self._spelled(snap, filters, type)
        words = self._read_words(snap, text, filters)
        first = self.prepare(photo, photo_name=photo_name)
        found = self._infer(snap, first)  # finds the pieces
        pieces = found.framing.pieces
        rest = [replace(first, piece=i, pieces=pieces) for i in range(1, len(pieces))]
        prepared = [first, *rest]
        inferred = [found, *(infer(snap, rest) if self.inference is None
                             else [self.inference.infer(snap, p) for p in rest])]
        wanted = self._wanted(words.pool(k) if words else k, prefer_brand)
        return [
            self._preferred(self._with_words(snap, self._answer(
                snap, p, inf, k=wanted, filters=words.filters if words else filters, type=None,
                known=QueryFacts(asked=words.asked) if words else None,
                group_variants=group_variants, shown=k), words, k, prefer_brand), prefer_brand, k)
            for p, inf in zip(prepared, inferred, strict=True)
        ]

    @staticmethod
    def _wanted(k: int, prefer_brand: str | None) -> int:
        """A preferred piece just below the cut may move in: rank k more candidates."""
        return 2 * k if prefer_brand else k

    @staticmethod
    def _preferred(recommendation: Recommendation, prefer_brand: str | None,
                   k: int) -> Recommendation:
        if prefer_brand:
            recommendation.results = prefer.prefer_brand(
                recommendation.results, prefer_brand, prefer.PHOTO_BRAND_BONUS)[:k]
        return recommendation

    def _infer_and_answer(
        self, snap: Snapshot, prepared: PreparedPhoto, *, k: int, filters: Filters | None,
        type: str | None, prefer_brand: str | None = None, known: QueryFacts | None = None,
        group_variants: bool = False, shown: int | None = None,
    ) -> Recommendation:
        return self._answer(snap, prepared, self._infer(snap, prepared),
                            k=self._wanted(k, prefer_brand),
                            filters=filters, type=type, known=known,
                            group_variants=group_variants, shown=shown)

    def _infer(self, snap: Snapshot, prepared: PreparedPhoto) -> PhotoInference:
        """The models on one photo: through the server's executor when there is one."""
        return (self.inference.infer(snap, prepared) if self.inference is not None
                else infer(snap, [prepared])[0])

    def prepare(
        self, photo: bytes | str | Path | np.ndarray | DecodedPhoto, *, crop: Box | None = None,
        photo_name: str | None = None, piece: int | None = None, pieces: bool = True,
    ) -> PreparedPhoto:
        """Load one query photo and check what is asked of it (the caller's crop, a piece);
        `pieces=False`: none are looked for (a catalog image, framed as the index framed it).
        The pieces are found with the models, in `infer`. A large JPEG is decoded reduced
        (QUERY_SHORT_SIDE, and no further than `crop` keeps that many pixels); `crop` and the
        answer's boxes stay in the photo's own pixels."""
        if photo_name is None and isinstance(photo, str | Path):
            photo_name = str(photo)
        if crop is not None and not isinstance(crop, Box):
            crop = _as_box(crop)
        if piece is not None and (isinstance(piece, bool)
                                  or not isinstance(piece, int | np.integer)):
            raise PieceError(f"piece is a piece's number (0 for the first), not {piece!r}")
        if isinstance(photo, np.ndarray):
            decoded = DecodedPhoto.of(photo)
        elif isinstance(photo, DecodedPhoto):
            decoded = photo
        elif pieces:
            decoded = decode_photo(photo, reduce_to=QUERY_SHORT_SIDE,
                                   keep=crop.as_tuple() if crop is not None else None)
        else:  # a catalog image: decoded whole, as the index decoded it
            decoded = DecodedPhoto.of(load_image(photo))
        if crop is not None:
            try:
                crop.crop_in(*decoded.size)
            except ValueError as exc:
                raise ValueError(f"crop: {exc}") from exc
        if piece is not None and piece < 0:
            raise PieceError(f"piece {piece}: pieces are numbered from 0")
        return PreparedPhoto(decoded.image, crop, photo_name, piece, None if pieces else (),
                             self.auto_crop, decoded.size if decoded.reduced else None)

    def find_pieces(self, image: np.ndarray) -> tuple[Piece, ...]:
        """The pieces of jewelry in a photo, most salient first (at least one)."""
        return photo_pieces(self.snapshot, image)

    def _answer(
        self, snap: Snapshot, prepared: PreparedPhoto, inferred: PhotoInference, *, k: int,
        filters: Filters | None, type: str | None, known: QueryFacts | None,
        group_variants: bool, shown: int | None = None,
    ) -> Recommendation:
        """The per-request search and ranking once the models have seen the photo (`shown`: see
        `_rank`)."""
        framing = inferred.framing
        if (prepared.crop is None and prepared.piece is not None
                and prepared.piece >= len(framing.pieces)):
            count = len(framing.pieces)
            found = f"it has {count} (0 to {count - 1})" if count else "none were looked for"
            raise PieceError(f"piece {prepared.piece}: the photo has no such piece; {found}")
        guesses = inferred.attributes
        if snap.attributes is not None and guesses:  # the catalog's own data, if given, wins
            sure = snap.attributes.known(guesses)
            known = known or QueryFacts()
            known = replace(known, metal=known.metal or sure.get("metal"),
                            stone=known.stone or sure.get("stone"))
        recommendation = self._rank(snap, inferred.vector, inferred.probabilities, k=k,
                                    filters=filters, type=type,
                                    recognition=inferred.recognition, known=known,
                                    group_variants=group_variants, shown=shown)
        recommendation.photo = prepared.name
        recommendation.attributes = guesses
        recommendation.piece = framing.piece
        # the caller sees the photo's own pixels (the image may be the photo decoded reduced)
        if prepared.size is None:
            recommendation.crop, recommendation.pieces = framing.box, list(framing.pieces)
            return recommendation
        if prepared.crop is not None:  # as asked, not as the reduced image could hold it
            recommendation.crop = prepared.crop.clip(*prepared.size)
        elif framing.box is not None:
            recommendation.crop = prepared.to_photo(framing.box)
        recommendation.pieces = [
            replace(p, box=prepared.to_photo(Box(*p.box)).as_tuple(),
                    view=None if p.view is None else prepared.to_photo(Box(*p.view)).as_tuple())
            for p in framing.pieces]
        return recommendation

    def rank(
        self,
        vector: np.ndarray,
        probabilities: np.ndarray,
        *,
        k: int = 10,
        filters: Filters | None = None,
        type: str | None = None,
        snapshot: Snapshot | None = None,
        group_variants: bool = False,
    ) -> Recommendation:
        """The search half of the pipeline, for callers that already embedded the photo (with
        `snapshot`'s models: pass the snapshot they used; default the current one)."""
        return self._rank(
            snapshot or self.snapshot, vector, probabilities, k=k, filters=filters, type=type,
            group_variants=group_variants,
        )

    def _rank(
        self,
        snap: Snapshot,
        vector: np.ndarray,
        probabilities: np.ndarray,
        *,
        k: int,
        filters: Filters | None,
        type: str | None,
        recognition: np.ndarray | None = None,
        known: QueryFacts | None = None,
        group_variants: bool = False,
        shown: int | None = None,
    ) -> Recommendation:
        """`known`: what the caller knows of the query (a source product's type, metal, stone,
        brand) for the results' reasons; the type otherwise is the one decided (fixed by the
        caller or a one-type filter, or predicted with enough confidence). `shown`: how many
        results the caller shows, when it asks for a larger pool (the words re-rank 50): an
        undecided search goes on to further types only while it has fewer (k when None)."""
        classes = snap.classifier.classes
        probabilities = np.asarray(probabilities, dtype=np.float64)
        best = int(np.argmax(probabilities))
        predicted, confidence = classes[best], float(probabilities[best])
        filters = filters or Filters()
        threshold = float(getattr(snap.classifier, "decision_threshold", self.confidence_threshold))
        fixed = [type] if type else sorted(filters.types) if filters.types else None
        # A photo unlike anything in the catalog (a blank frame, no jewelry) is never decided:
        # whatever type the head picks for it means nothing, however sure it sounds (a shop of
        # one type has nothing to choose between)
        # a type the index holds no piece of (the catalog dropped it since `train`) is no
        # answer to search by, however sure: the likely types among those it holds are
        held = snap.index_meta.get("types")
        sure = confidence >= threshold and (not held or predicted in held)
        recognised = (self._recognised(snap, vector, [], recognition)
                      if fixed is None and sure and len(classes) > 1 else None)
        decided = fixed is not None or (sure and recognised is not False)
        if decided:
            searched = fixed or [predicted]
            results = self._search(snap, vector, k, filters.with_types(searched),
                                   group_variants)
        else:
            spread = within_types(classes, probabilities, held)
            results, searched = self._search_likely_types(
                snap, vector, k, filters, likely_types(classes, spread),
                ranked_types(classes, spread), group_variants, enough=shown)
        known = known or QueryFacts()
        if known.type is None and decided and len(searched) == 1:  # fixed, or sure enough
            known = replace(known, type=searched[0])
        results = self._explain(snap, results, known)
        if recognised is None:
            recognised = self._recognised(snap, vector, results, recognition)
        return Recommendation(
            recognised=recognised,
            photo=None,
            type=predicted,
            type_confidence=round(confidence, 6),
            results=results,
            type_probabilities={
                c: round(float(p), 6) for c, p in zip(classes, probabilities, strict=True)
            },
            searched_types=searched,
            index_version=snap.index_version,
            type_decided=decided,
            type_alternatives=type_alternatives(classes, probabilities),
        )

    def _recognised(
        self, snap: Snapshot, vector: np.ndarray, results: list[Result],
        recognition: np.ndarray | None,
    ) -> bool:
        """Whether the photo is as close to the catalog as the catalog's pieces are to each
        other (the threshold `jewelrec index` recorded), in the backbone's space when the index
        holds reference features (`recognition`: the photo's), else in the embedding space,
        with one unfiltered nearest-neighbour look-up only when the results cannot tell."""
        threshold = snap.index_meta.get("recognition_threshold")
        if threshold is None:
            return True
        if snap.recognition_reference is not None:
            if recognition is None:  # rank() from a caller without the photo: cannot tell
                return True
            return is_recognised(best_similarity(snap.recognition_reference, recognition),
                                 threshold)
        if any(r.score >= threshold for r in results):
            return True
        nearest = snap.index.search(vector, 1, Filters())
        return is_recognised(nearest[0].score if nearest else None, threshold)

    def _explain(self, snap: Snapshot, results: list[Result], known: QueryFacts) -> list[Result]:
        """`results` with their reasons (from what each result carries)."""
        return [replace(r, why=reasons(known, type=r.type, brand=r.brand, score=r.score,
                                       metal=r.metal, stone=r.stone))
                for r in results]

    def _search_likely_types(
        self, snap: Snapshot, vector: np.ndarray, k: int, filters: Filters,
        likely: dict[str, float], others: Sequence[tuple[str, float]] = (),
        group_variants: bool = False, enough: int | None = None,
    ) -> tuple[list[Result], list[str]]:
        """k per likely type, merged by cosine + TYPE_PRIOR_WEIGHT * log p(type): a close piece
        of a less likely type can still come first, a far one cannot. Scores stay cosines.
        While that finds fewer than `enough` (default k; a budget few of the likely types'
        pieces fit), the `others` (the remaining types, most likely first) are searched too,
        merged by the same rule: an undecided search of one likely type answered one anklet of
        five asked for, with dozens of rings in the budget. Returns the results and the types
        searched."""
        ranked: list[tuple[float, Result]] = []
        searched: list[str] = []
        enough = k if enough is None else min(enough, k)
        for t, p in [*likely.items(), *((t, p) for t, p in others if t not in likely)]:
            if t not in likely and len(ranked) >= enough:
                break
            prior = TYPE_PRIOR_WEIGHT * math.log(max(p, 1e-12))
            ranked += [(r.score + prior, r) for r in self._search(
                snap, vector, k, filters.with_types([t]), group_variants)]
            searched.append(t)
        ranked.sort(key=lambda pair: -pair[0])
        return [r for _, r in ranked[:k]], searched

    def similar_to_product(
        self, product_id: str, *, k: int = 10, filters: Filters | None = None,
        group_variants: bool = False, text: str | None = None,
    ) -> Recommendation:
        """'More like this': query with a catalog product's main image, excluding itself
        (`group_variants`: as in `recommend`; at most one of its own other variants; `text`:
        words as in `recommend`, "in silver": the same piece's look in silver)."""
        snap = self.snapshot
        k, filters = checked_k(k), self._spelled(snap, filters)
        product = snap.store.get(product_id)
        if product is None:
            raise UnknownProductError(f"no product with id {product_id!r} in the catalog")
        words = self._read_words(snap, text, filters)
        filters = words.filters if words else filters or Filters()
        filters = Filters(
            filters.min_price,
            filters.max_price,
            filters.types or frozenset({product.type}),
            filters.brands,
            filters.metals,
            filters.exclude_ids | {product.id},  # as stored (asked maybe in other accents)
        )
        image_path = self._own_photo(snap, product)
        # a catalog image: framed as the index framed it, no pieces looked for
        prepared = self.prepare(image_path, pieces=False)
        recommendation = self._infer_and_answer(
            snap, prepared, k=words.pool(k) if words else k, filters=filters, type=None,
            known=QueryFacts(type=product.type, metal=product.metal, stone=product.stone,
                             brand=product.brand, asked=words.asked if words else ()),
            group_variants=group_variants,
        )
        recommendation = self._with_words(snap, recommendation, words, k, None)
        recommendation.photo = product.id
        return recommendation

    def _own_photo(self, snap: Snapshot, product: Product) -> Path:
        """The photo "more like this" searches by: the product's first one as indexed, else its
        first that other products share (a variant's shot still shows the piece), never a
        placeholder ("coming soon" answered random pieces, typed "earring" and decided).
        NoPhotoError when it has only placeholders. The ingest's findings are read once per
        catalog version."""
        if self.home is None:
            return Path(product.image)
        flagged, placeholders = snap.store.cached(
            "views flagged at ingest", lambda: _flagged_views(snap.store))
        usable = ([image for image in product.images if (product.id, image) not in flagged]
                  or [image for image in product.images if image not in placeholders])
        if not usable:
            raise NoPhotoError(
                f"product {product.id!r} has no photo of its own, only a placeholder other "
                "products show too: there is nothing to find pieces like it by")
        return self.home.image_path(self.home.shown_image(usable))

    def _search(
        self, snap: Snapshot, vector: np.ndarray, k: int, filters: Filters,
        group_variants: bool = False,
    ) -> list[Result]:
        """Search, dropping hits whose product the store no longer has or no longer passes the
        filters with (a price or type changed since the index copied it; logged, never shown)
        and, with `group_variants`, all but the best of each variant group; more hits are asked
        for while that leaves fewer than k and the index has more."""
        want = k * variants.CANDIDATES_PER_RESULT if group_variants else k
        while True:
            hits = snap.index.search(vector, want, filters)
            products = snap.store.get_many([h.product_id for h in hits])
            missing = [h.product_id for h in hits if h.product_id not in products
                       or not filters.admits(products[h.product_id])]
            if missing and self._disagreement_logged != snap.index_version:
                # once per index version: a prune while serving would otherwise log every query
                self._disagreement_logged = snap.index_version
                log.warning("index %s and catalog disagree; dropped products no longer in the "
                            "catalog or no longer passing the filters (first: %s); re-run "
                            "`jewelrec index`", snap.index_version, ", ".join(missing[:5]))
            dropped = set(missing)
            results = [
                Result.from_product(products[h.product_id], h.image, h.score)
                for h in hits
                if h.product_id not in dropped
            ]
            if group_variants:
                results = variants.one_per_group(results, products)
            if len(results) >= k or len(hits) < want or not (missing or group_variants):
                return results[:k]
            want = want * 2 if group_variants else want + len(missing) * 2

    # -- live index updates ----------------------------------------------------------------
    def reload_if_changed(self) -> bool:
        """Swap in a newly published index as one complete snapshot (new models too when the
        index was built with other embedder files or the classifier was retrained); requests in
        flight keep the snapshot they started with. A version that fails to load (it does not
        match the models: a retrained embedder) raises once and is not tried again; the next
        published one is."""
        if self.home is None:
            return False
        version = versions.current_version(self.home)
        if version is None or version in {self.index_version, self._unloadable}:
            return False
        with self._reload_lock:
            current = self.snapshot
            if version == current.index_version:
                return False
            try:
                name = (self.home.settings().classifier if self._classifier_from_home
                        else self._classifier_name)
                fresh = load_snapshot(
                    self.home, version, store=current.store,
                    classifier_name=name, backend=self._backend,
                    milvus_uri=self._milvus_uri, previous=current,
                )
            except Exception:
                self._unloadable = version
                raise
            self._classifier_name = name
            self.swap(fresh)
            log.info("switched to index %s", version)
            return True
