"""The Recommender: the one query pipeline behind the CLI, the Python API and the web server.

photo -> load (RGB) -> the caller's crop or the piece itself -> type with confidence -> embed ->
pre-filtered kNN within the type (or across all types when the caller fixes none and the
classifier is unsure) -> ranked products.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.imaging.segment import Box
from jewelrec.models.base import Embedder, TypeClassifier, load_classifier, load_embedder
from jewelrec.search import versions
from jewelrec.search.backends import open_index
from jewelrec.search.filters import Filters
from jewelrec.search.index import Index

log = logging.getLogger(__name__)

# Below this confidence the predicted type is a guess: search every type instead.
DEFAULT_CONFIDENCE_THRESHOLD = 0.5


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


@dataclass
class Recommendation:
    photo: str | None
    type: str | None
    type_confidence: float | None
    results: list[Result]
    type_probabilities: dict[str, float] = field(default_factory=dict)
    crop: Box | None = None
    searched_types: list[str] | None = None  # None: every type

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape (`recommend --json`, POST /api/recommend)."""
        return {
            "photo": self.photo,
            "type": self.type,
            "type_confidence": self.type_confidence,
            "results": [asdict(r) for r in self.results],
        }


class Recommender:
    """Holds the loaded models, the catalog store and the index; answers queries."""

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
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.classifier = classifier
        self.index = index
        self.home = home
        self.index_version = index_version
        self.confidence_threshold = confidence_threshold
        self.auto_crop = auto_crop
        self._backend = backend
        self._milvus_uri = milvus_uri
        self._index_meta = index_meta or {}
        self._reload_lock = threading.Lock()
        self._disagreement_logged: str | None = None  # index version already warned about

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
        index, meta = open_index(home, version=version, backend=backend, milvus_uri=milvus_uri)
        embedder_name = embedder or meta.get("embedder") or settings["embedder"]
        if meta.get("embedder") and embedder_name != meta["embedder"]:
            raise NotReadyError(
                f"the index was built with embedder {meta['embedder']!r}, not {embedder_name!r}: "
                f"run `jewelrec index --embedder {embedder_name}` first"
            )
        return cls(
            CatalogStore.open(home, read_only=True),  # queries never write; homes may be read-only
            load_embedder(home.models_dir, embedder_name),
            load_classifier(home.models_dir, classifier or settings["classifier"]),
            index,
            home=home,
            index_version=version,
            backend=backend,
            milvus_uri=milvus_uri,
            auto_crop=bool(settings.get("auto_crop", True)),
            index_meta=meta,
        )

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
    ) -> Recommendation:
        """Photo (bytes, path or RGB array) -> the k most similar products that pass `filters`."""
        if photo_name is None and isinstance(photo, str | Path):
            photo_name = str(photo)
        image = photo if isinstance(photo, np.ndarray) else load_image(photo)
        focused, box = focus_on_piece(image, crop, auto=self.auto_crop)
        probabilities = self.classifier.predict_proba([focused])[0]
        vector = self.embedder.embed([focused])[0]
        recommendation = self.rank(vector, probabilities, k=k, filters=filters, type=type)
        recommendation.photo = photo_name
        recommendation.crop = box
        return recommendation

    def rank(
        self,
        vector: np.ndarray,
        probabilities: np.ndarray,
        *,
        k: int = 10,
        filters: Filters | None = None,
        type: str | None = None,
    ) -> Recommendation:
        """The search half of the pipeline, for callers that already embedded the photo."""
        best = int(np.argmax(probabilities))
        predicted, confidence = self.classifier.classes[best], float(probabilities[best])
        filters = filters or Filters()
        searched = self._types_to_search(filters, type, predicted, confidence)
        if searched is not None:
            filters = filters.with_types(searched)
        return Recommendation(
            photo=None,
            type=predicted,
            type_confidence=round(confidence, 6),
            results=self._search(vector, k, filters),
            type_probabilities={
                c: round(float(p), 6)
                for c, p in zip(self.classifier.classes, probabilities, strict=True)
            },
            searched_types=searched,
        )

    def similar_to_product(
        self, product_id: str, *, k: int = 10, filters: Filters | None = None
    ) -> Recommendation:
        """'More like this': query with a catalog product's main image, excluding itself."""
        product = self.store.get(product_id)
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
        recommendation = self.recommend(image_path, k=k, filters=filters, type=None)
        recommendation.photo = product_id
        return recommendation

    def _types_to_search(
        self, filters: Filters, fixed: str | None, predicted: str, confidence: float
    ) -> list[str] | None:
        if fixed:
            return [fixed]
        if filters.types:
            return sorted(filters.types)
        if confidence >= self.confidence_threshold:
            return [predicted]
        return None

    def _search(self, vector: np.ndarray, k: int, filters: Filters) -> list:
        """Search, dropping hits whose product the store no longer has (logged, never shown)."""
        want = k
        while True:
            hits = self.index.search(vector, want, filters)
            products = self.store.get_many([h.product_id for h in hits])
            missing = [h.product_id for h in hits if h.product_id not in products]
            if missing and self._disagreement_logged != self.index_version:
                # once per index version: a prune while serving would otherwise log every query
                self._disagreement_logged = self.index_version
                log.warning("index %s and catalog disagree; dropped products no longer in the "
                            "catalog (first: %s); re-run `jewelrec index`", self.index_version,
                            ", ".join(missing[:5]))
            results = [
                Result.from_product(products[h.product_id], h.image, h.score)
                for h in hits
                if h.product_id in products
            ]
            if len(results) >= k or len(hits) < want or not missing:
                return results[:k]
            want = want + len(missing) * 2

    # -- live index updates ----------------------------------------------------------------
    def reload_if_changed(self) -> bool:
        """Swap in a newly published index; requests in flight keep the one they started with."""
        if self.home is None:
            return False
        version = versions.current_version(self.home)
        if version is None or version == self.index_version:
            return False
        with self._reload_lock:
            if version == self.index_version:
                return False
            index, meta = open_index(
                self.home, version=version, backend=self._backend, milvus_uri=self._milvus_uri
            )
            if meta.get("embedder_fingerprint") != self._index_meta.get("embedder_fingerprint"):
                # the models were retrained: queries must be embedded like the new index
                self.embedder = load_embedder(self.home.models_dir, meta["embedder"])
                self.classifier = load_classifier(
                    self.home.models_dir, getattr(self.classifier, "name", "")
                )
            self.index, self.index_version, self._index_meta = index, version, meta
            log.info("switched to index %s", version)
            return True
