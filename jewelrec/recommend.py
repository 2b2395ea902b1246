"""The Recommender: the one query pipeline behind the CLI, the Python API and the web server.

photo -> load (RGB) -> the caller's crop or the piece itself -> type with confidence -> embed ->
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
from typing import Any, Protocol

import numpy as np

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.imaging.segment import Box
from jewelrec.models.attributes import AttributeGuess
from jewelrec.models.base import Embedder, TypeClassifier
from jewelrec.search import prefer, variants, versions
from jewelrec.search.filters import Filters
from jewelrec.search.index import Index
from jewelrec.search.recognition import best_similarity, is_recognised, recognition_features
from jewelrec.search.why import QueryFacts, reasons
from jewelrec.snapshot import Snapshot, classifier_fingerprint, load_snapshot

log = logging.getLogger(__name__)

# Below this confidence the predicted type is a guess: search the likely types instead. A
# classifier may carry its own calibrated `decision_threshold`, which wins.
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
MAX_ALTERNATIVES = 3
MIN_ALTERNATIVE_PROBABILITY = 0.05
LIKELY_MASS = 0.9  # an undecided search spans the most likely types up to this probability
TYPE_PRIOR_WEIGHT = 0.1  # undecided: rank by cosine + TYPE_PRIOR_WEIGHT * log p(type)


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
        )


def typing_view(
    classifier: TypeClassifier, image: np.ndarray, crop: Box | None, focused: np.ndarray
) -> np.ndarray:
    """What the type classifier looks at: the caller's crop, else the whole photo for a head
    that wants the context (a neck, a hand), else the piece found automatically."""
    if crop is None and getattr(classifier, "whole_photo", False):
        return image
    return focused


@dataclass(frozen=True)
class TypeAlternative:
    type: str
    probability: float


def type_alternatives(classes: Sequence[str], probabilities: np.ndarray) -> list[TypeAlternative]:
    """The few types worth offering a person: most likely first, at most three, each >= 5%."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    return [
        TypeAlternative(classes[i], round(float(probabilities[i]), 6))
        for i in order[:MAX_ALTERNATIVES]
        if probabilities[i] >= MIN_ALTERNATIVE_PROBABILITY
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


@dataclass(frozen=True)
class PreparedPhoto:
    """A query photo loaded and framed (no model run yet): the per-request half of the work,
    so that the models can then see many requests' photos as one batch."""

    image: np.ndarray  # the whole photo, RGB
    focused: np.ndarray  # the caller's crop or the piece found automatically
    box: Box | None  # where `focused` lies in `image` (None: the whole photo)
    crop: Box | None  # the caller's crop, as asked
    name: str | None = None


@dataclass(frozen=True)
class PhotoInference:
    """What the models of one snapshot say about one prepared photo."""

    probabilities: np.ndarray  # over the snapshot's classifier's classes
    vector: np.ndarray  # the embedding
    recognition: np.ndarray | None  # backbone features for "is this jewelry?", when offered
    attributes: dict[str, AttributeGuess]


class Inference(Protocol):
    """Runs `infer` for one photo, possibly batched with other requests' photos that hold the
    same snapshot (jewelrec/server/inference.py); blocks until the answer is there."""

    def infer(self, snap: Snapshot, photo: PreparedPhoto) -> PhotoInference: ...


def infer(snap: Snapshot, photos: Sequence[PreparedPhoto]) -> list[PhotoInference]:
    """The models of ONE snapshot over many prepared photos: one call per model for them all
    (the batch a micro-batching server forms, or a single query's photo)."""
    if not photos:
        return []
    focused = [p.focused for p in photos]
    probabilities = snap.classifier.predict_proba(
        [typing_view(snap.classifier, p.image, p.crop, p.focused) for p in photos])
    vectors = snap.embedder.embed(focused)
    seen = (recognition_features(snap.embedder, focused)
            if snap.recognition_reference is not None else None)
    guesses = (snap.attributes.predict(
        [typing_view(snap.attributes, p.image, p.crop, p.focused) for p in photos])
        if snap.attributes is not None else [{} for _ in photos])
    return [
        PhotoInference(probabilities[i], vectors[i], None if seen is None else seen[i],
                       guesses[i])
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
        self.auto_crop = auto_crop
        self._backend = backend
        self._milvus_uri = milvus_uri
        self._classifier_name = classifier_name or getattr(classifier, "name", "")
        self._snapshot = Snapshot(
            store, embedder, classifier, index, index_version, index_meta or {},
            classifier_fingerprint(home, self._classifier_name) if home else None,
        )
        self._reload_lock = threading.Lock()
        self._disagreement_logged: str | None = None  # index version already warned about
        # the server's micro-batching executor; None: each query runs the models itself
        self.inference: Inference | None = None

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
        if not home.catalog_db.exists():
            raise NotReadyError(f"no catalog in {home.root}: run `jewelrec ingest` first")
        settings = home.settings()
        version = versions.current_version(home)
        if version is None:
            raise NotReadyError(
                f"no index in {home.root}: run `jewelrec index --home {home.root}` first"
            )
        meta = versions.read_meta(home, version)
        if embedder and meta.get("embedder") and embedder != meta["embedder"]:
            raise NotReadyError(
                f"the index was built with embedder {meta['embedder']!r}, not {embedder!r}: "
                f"run `jewelrec index --embedder {embedder}` first"
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
        recommender.swap(snapshot)
        return recommender

    # -- queries ---------------------------------------------------------------------------
    def recommend(
        self,
        photo: bytes | str | Path | np.ndarray,
        *,
        k: int = 10,
        filters: Filters | None = None,
        type: str | None = None,
        crop: Box | None = None,
        photo_name: str | None = None,
        prefer_brand: str | None = None,
        group_variants: bool = False,
    ) -> Recommendation:
        """Photo (bytes, path or RGB array) -> the k most similar products that pass `filters`;
        `prefer_brand` ranks that brand a little higher (jewelrec/search/prefer.py);
        `group_variants` keeps the best product of each variant group (search/variants.py)."""
        # a preferred piece just below the cut may move in: rank k more candidates
        wanted = 2 * k if prefer_brand else k
        recommendation = self._recommend(
            self.snapshot, photo, k=wanted, filters=filters, type=type, crop=crop,
            photo_name=photo_name, known=None, group_variants=group_variants,
        )
        if prefer_brand:
            recommendation.results = prefer.prefer_brand(
                recommendation.results, prefer_brand, prefer.PHOTO_BRAND_BONUS)[:k]
        return recommendation

    def _recommend(
        self,
        snap: Snapshot,
        photo: bytes | str | Path | np.ndarray,
        *,
        k: int,
        filters: Filters | None,
        type: str | None,
        crop: Box | None,
        photo_name: str | None,
        known: QueryFacts | None,
        group_variants: bool = False,
    ) -> Recommendation:
        prepared = self.prepare(photo, crop=crop, photo_name=photo_name)
        inferred = (self.inference.infer(snap, prepared) if self.inference is not None
                    else infer(snap, [prepared])[0])
        return self._answer(snap, prepared, inferred, k=k, filters=filters, type=type,
                            known=known, group_variants=group_variants)

    def prepare(
        self, photo: bytes | str | Path | np.ndarray, *, crop: Box | None = None,
        photo_name: str | None = None,
    ) -> PreparedPhoto:
        """Load and frame one query photo (per request: decoding and framing need no model)."""
        if photo_name is None and isinstance(photo, str | Path):
            photo_name = str(photo)
        image = photo if isinstance(photo, np.ndarray) else load_image(photo)
        focused, box = focus_on_piece(image, crop, auto=self.auto_crop)
        return PreparedPhoto(image, focused, box, crop, photo_name)

    def _answer(
        self, snap: Snapshot, prepared: PreparedPhoto, inferred: PhotoInference, *, k: int,
        filters: Filters | None, type: str | None, known: QueryFacts | None,
        group_variants: bool,
    ) -> Recommendation:
        """The per-request search and ranking once the models have seen the photo."""
        guesses = inferred.attributes
        if snap.attributes is not None and guesses:  # the catalog's own data, if given, wins
            sure = snap.attributes.known(guesses)
            known = known or QueryFacts()
            known = replace(known, metal=known.metal or sure.get("metal"),
                            stone=known.stone or sure.get("stone"))
        recommendation = self._rank(snap, inferred.vector, inferred.probabilities, k=k,
                                    filters=filters, type=type,
                                    recognition=inferred.recognition, known=known,
                                    group_variants=group_variants)
        recommendation.photo = prepared.name
        recommendation.crop = prepared.box
        recommendation.attributes = guesses
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
    ) -> Recommendation:
        """`known`: what the caller knows of the query (a source product's type, metal, stone,
        brand) for the results' reasons; the type otherwise is the one decided (fixed by the
        caller or a one-type filter, or predicted with enough confidence)."""
        classes = snap.classifier.classes
        probabilities = np.asarray(probabilities, dtype=np.float64)
        best = int(np.argmax(probabilities))
        predicted, confidence = classes[best], float(probabilities[best])
        filters = filters or Filters()
        threshold = float(getattr(snap.classifier, "decision_threshold", self.confidence_threshold))
        fixed = [type] if type else sorted(filters.types) if filters.types else None
        decided = fixed is not None or confidence >= threshold
        if decided:
            searched = fixed or [predicted]
            results = self._search(snap, vector, k, filters.with_types(searched),
                                   group_variants)
        else:
            likely = likely_types(classes, probabilities)
            searched = list(likely)
            results = self._search_likely_types(snap, vector, k, filters, likely,
                                                group_variants)
        known = known or QueryFacts()
        if known.type is None and decided and len(searched) == 1:  # fixed, or sure enough
            known = replace(known, type=searched[0])
        results = self._explain(snap, results, known)
        return Recommendation(
            recognised=self._recognised(snap, vector, results, recognition),
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
        """`results` with their reasons; the products are read again only when a metal or stone
        of the query is known (Result does not carry them)."""
        products = (snap.store.get_many([r.id for r in results])
                    if known.metal or known.stone else {})
        explained = []
        for r in results:
            product = products.get(r.id)
            explained.append(replace(r, why=reasons(
                known, type=r.type, brand=r.brand, score=r.score,
                metal=product.metal if product else None,
                stone=product.stone if product else None,
            )))
        return explained

    def _search_likely_types(
        self, snap: Snapshot, vector: np.ndarray, k: int, filters: Filters,
        likely: dict[str, float], group_variants: bool = False,
    ) -> list[Result]:
        """k per likely type, merged by cosine + TYPE_PRIOR_WEIGHT * log p(type): a close piece
        of a less likely type can still come first, a far one cannot. Scores stay cosines."""
        ranked: list[tuple[float, Result]] = []
        for t, p in likely.items():
            prior = TYPE_PRIOR_WEIGHT * math.log(max(p, 1e-12))
            ranked += [(r.score + prior, r) for r in self._search(
                snap, vector, k, filters.with_types([t]), group_variants)]
        ranked.sort(key=lambda pair: -pair[0])
        return [r for _, r in ranked[:k]]

    def similar_to_product(
        self, product_id: str, *, k: int = 10, filters: Filters | None = None,
        group_variants: bool = False,
    ) -> Recommendation:
        """'More like this': query with a catalog product's main image, excluding itself
        (`group_variants`: as in `recommend`; at most one of its own other variants)."""
        snap = self.snapshot
        product = snap.store.get(product_id)
        if product is None:
            raise KeyError(product_id)
        filters = filters or Filters()
        filters = Filters(
            filters.min_price,
            filters.max_price,
            filters.types or frozenset({product.type}),
            filters.brands,
            filters.metals,
            filters.exclude_ids | {product_id},
        )
        image_path = self.home.image_path(product.image) if self.home else Path(product.image)
        recommendation = self._recommend(
            snap, image_path, k=k, filters=filters, type=None, crop=None, photo_name=None,
            known=QueryFacts(type=product.type, metal=product.metal, stone=product.stone,
                             brand=product.brand),
            group_variants=group_variants,
        )
        recommendation.photo = product_id
        return recommendation

    def _search(
        self, snap: Snapshot, vector: np.ndarray, k: int, filters: Filters,
        group_variants: bool = False,
    ) -> list[Result]:
        """Search, dropping hits whose product the store no longer has (logged, never shown)
        and, with `group_variants`, all but the best of each variant group; more hits are asked
        for while that leaves fewer than k and the index has more."""
        want = k * variants.CANDIDATES_PER_RESULT if group_variants else k
        while True:
            hits = snap.index.search(vector, want, filters)
            products = snap.store.get_many([h.product_id for h in hits])
            missing = [h.product_id for h in hits if h.product_id not in products]
            if missing and self._disagreement_logged != snap.index_version:
                # once per index version: a prune while serving would otherwise log every query
                self._disagreement_logged = snap.index_version
                log.warning("index %s and catalog disagree; dropped products no longer in the "
                            "catalog (first: %s); re-run `jewelrec index`", snap.index_version,
                            ", ".join(missing[:5]))
            results = [
                Result.from_product(products[h.product_id], h.image, h.score)
                for h in hits
                if h.product_id in products
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
        flight keep the snapshot they started with."""
        if self.home is None:
            return False
        version = versions.current_version(self.home)
        if version is None or version == self.index_version:
            return False
        with self._reload_lock:
            current = self.snapshot
            if version == current.index_version:
                return False
            fresh = load_snapshot(
                self.home, version, store=current.store, classifier_name=self._classifier_name,
                backend=self._backend, milvus_uri=self._milvus_uri, previous=current,
            )
            self.swap(fresh)
            log.info("switched to index %s", version)
            return True
