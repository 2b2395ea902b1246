"""Tiny stand-ins for the models and a real store and index, for tests of the query pipeline
that must control exactly what the models answer."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.home import Home
from jewelrec.search.index import ExactIndex, IndexRow

PHOTO = np.full((32, 32, 3), 200, dtype=np.uint8)


class FixedEmbedder:
    """Embeds every photo as `vector`; `gate` (if set) holds `embed` until the test opens it."""

    name = "fixed"

    def __init__(self, vector: list[float], gate: threading.Event | None = None) -> None:
        self.vector = np.asarray(vector, dtype=np.float32)
        self.gate = gate
        self.entered = threading.Event()

    @property
    def dim(self) -> int:
        return len(self.vector)

    def embed(self, images, masks=None):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        return np.stack([self.vector for _ in images])


class FixedClassifier:
    """Answers `probabilities` (type -> p) for every photo; optional `decision_threshold`."""

    name = "fixed"

    def __init__(
        self, probabilities: dict[str, float], decision_threshold: float | None = None
    ) -> None:
        self.classes = list(probabilities)
        self.probabilities = np.asarray(list(probabilities.values()))
        if decision_threshold is not None:
            self.decision_threshold = decision_threshold

    def predict_proba(self, images):
        return np.stack([self.probabilities for _ in images])


def store_with(root: Path, products: dict[str, str]) -> CatalogStore:
    """A real catalog store holding one product per (id -> type)."""
    home = Home(root).ensure()
    store = CatalogStore.open(home)
    with store.transaction() as tx:
        for pid, ptype in products.items():
            tx.upsert(Product(pid, f"title {pid}", ptype, 10.0, f"https://shop.example/{pid}",
                              (f"{pid}.png",)))
    return store


def index_of(rows: dict[str, str], vectors: np.ndarray) -> ExactIndex:
    """An ExactIndex with one image per product (id -> type), row i = vectors[i]."""
    index = ExactIndex(vectors.shape[1])
    index.upsert([IndexRow(pid, f"{pid}.png", ptype, 10.0) for pid, ptype in rows.items()],
                 vectors)
    return index
