"""The Index protocol and ExactIndex: cosine similarity by a numpy matrix product over the
pre-filtered rows, one result per product (its best image). ExactIndex is the embedded default
and the ground truth other backends are measured against."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from jewelrec.search.filters import Filters


@dataclass(frozen=True)
class IndexRow:
    """One indexed image, with the product attributes filters need."""

    product_id: str
    image: str
    type: str
    price: float
    brand: str | None = None
    metal: str | None = None


@dataclass(frozen=True)
class Hit:
    product_id: str
    image: str
    score: float


class Index(Protocol):
    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None: ...

    def delete(self, product_ids: Iterable[str]) -> None: ...

    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]: ...

    def __len__(self) -> int: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def best_per_product(
    scores: np.ndarray, product_codes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the k best rows with distinct products (highest score first).

    Looks at a partial top first (cheap) and falls back to a full sort only when images of the
    same products crowd it.
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    width = min(n, max(4 * k, k + 16))
    while True:
        if width < n:
            top = np.argpartition(-scores, width - 1)[:width]
            top = top[np.argsort(-scores[top], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        _, first = np.unique(product_codes[top], return_index=True)
        if len(first) >= k or width >= n:
            chosen = top[np.sort(first)][:k]
            return chosen, scores[chosen]
        width = min(n, width * 4)


# Gathering the filtered rows costs a copy; above 1/DENSE_FILTER_RATIO of the rows it is cheaper
# to score every row and pick the filtered scores.
DENSE_FILTER_RATIO = 4


class ExactIndex:
    """All vectors in one float32 matrix; filters become a boolean mask over rows."""

    backend = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.rows: list[IndexRow] = []
        self._refresh_columns()

    def _refresh_columns(self) -> None:
        rows = self.rows
        self._product_id = np.array([r.product_id for r in rows], dtype=object)
        self._type = np.array([r.type for r in rows], dtype=object)
        self._brand = np.array([r.brand or "" for r in rows], dtype=object)
        self._metal = np.array([r.metal or "" for r in rows], dtype=object)
        self._price = np.array([r.price for r in rows], dtype=np.float64)
        _, self._product_code = np.unique(self._product_id.astype(str), return_inverse=True)

    def __len__(self) -> int:
        return len(self.rows)

    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None:
        """Replace every row of the given products by these rows."""
        vectors = l2_normalise(vectors).reshape(len(rows), self.dim)
        replaced = {r.product_id for r in rows}
        keep = [i for i, r in enumerate(self.rows) if r.product_id not in replaced]
        self.rows = [self.rows[i] for i in keep] + list(rows)
        self.vectors = np.ascontiguousarray(np.vstack([self.vectors[keep], vectors]))
        self._refresh_columns()

    def delete(self, product_ids: Iterable[str]) -> None:
        gone = set(product_ids)
        keep = [i for i, r in enumerate(self.rows) if r.product_id not in gone]
        self.rows = [self.rows[i] for i in keep]
        self.vectors = self.vectors[keep]
        self._refresh_columns()

    def candidate_mask(self, filters: Filters | None) -> np.ndarray:
        if filters is None:
            return np.ones(len(self.rows), dtype=bool)
        return filters.mask(
            price=self._price,
            type_=self._type,
            brand=self._brand,
            metal=self._metal,
            product_id=self._product_id,
        )

    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        query = l2_normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        mask = self.candidate_mask(filters)
        positions = np.flatnonzero(mask)
        if len(positions) == 0:
            return []
        if len(positions) * DENSE_FILTER_RATIO >= len(self.rows):
            # most rows pass: one product over the whole matrix beats gathering the rows first
            scores = (self.vectors @ query)[positions]
        else:
            scores = self.vectors[positions] @ query
        codes = self._product_code[positions]
        chosen, best = best_per_product(scores, codes, k)
        rows = positions[chosen]
        return [
            Hit(self.rows[i].product_id, self.rows[i].image, float(s))
            for i, s in zip(rows, best, strict=True)
        ]

    # -- persistence: a folder with vectors.npy and rows.json ------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors, allow_pickle=False)
        (folder / "rows.json").write_text(json.dumps([asdict(r) for r in self.rows]))

    @classmethod
    def load(cls, folder: Path) -> ExactIndex:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        index = cls(vectors.shape[1])
        index.vectors = np.ascontiguousarray(vectors.astype(np.float32, copy=False))
        index.rows = [IndexRow(**r) for r in json.loads((folder / "rows.json").read_text())]
        index._refresh_columns()
        return index
