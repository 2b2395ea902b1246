"""Title vectors: embedded at `jewelrec index` time, stored in the index version they belong to.

Like image vectors, they are cached in the home per (model, content): the key is the sha256 of
the title, so a re-index embeds only new or changed titles. Each published index version holds
`text_ids.json` + `text_vectors.npy` (one unit row per product), read by text queries against
that version. A home whose text model cannot be loaded still gets its index (text search then
ranks by BM25 alone), with a warning that says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.catalog.schema import Product
from jewelrec.errors import NotReadyError
from jewelrec.home import Home, atomic_path
from jewelrec.text.minilm import MODEL_NAME, MiniLM, model_fingerprint

IDS_FILE = "text_ids.json"
VECTORS_FILE = "text_vectors.npy"
log = logging.getLogger(__name__)


def product_text(product: Product) -> str:
    """What a product's vector is made from: its title."""
    return product.title


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_title_vectors(
    home: Home,
    products: Sequence[Product],
    folder: Path,
    *,
    encoder: Callable[[], MiniLM] = MiniLM,
) -> dict[str, Any]:
    """Embed the titles (cached) into an index build folder; returns entries for its meta.json."""
    from jewelrec.indexing import EmbeddingCache  # indexing imports this module

    try:
        fingerprint = model_fingerprint()
        cache = EmbeddingCache(home, f"text-{MODEL_NAME}", fingerprint)
        keys = [text_key(product_text(p)) for p in products]
        todo = {key: product_text(p) for key, p in zip(keys, products, strict=True)
                if key not in cache.vectors}
        if todo:  # the model is loaded only when a title is new
            cache.vectors.update(zip(todo, encoder().embed(list(todo.values())), strict=True))
            cache.save()
    except NotReadyError as exc:
        log.warning("no title vectors in this index (text search ranks by words alone): %s", exc)
        return {"text_model": None}
    matrix = np.stack([cache.vectors[key] for key in keys]).astype(np.float32)
    with atomic_path(folder / VECTORS_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, matrix, allow_pickle=False)
    with atomic_path(folder / IDS_FILE) as tmp:
        tmp.write_text(json.dumps([p.id for p in products]))
    return {"text_model": fingerprint, "text_rows": len(keys), "text_embedded": len(todo)}


@dataclass(frozen=True)
class TitleVectors:
    """One index version's title vectors: rows in `ids` order."""

    ids: tuple[str, ...]
    matrix: np.ndarray  # (n, 384) float32, unit rows
    row_of: dict[str, int]

    @classmethod
    def load(cls, folder: Path) -> TitleVectors | None:
        """The version's vectors, or None when it has none (built without the text model)."""
        ids_path, vectors_path = folder / IDS_FILE, folder / VECTORS_FILE
        if not (ids_path.exists() and vectors_path.exists()):
            return None
        try:
            ids = tuple(json.loads(ids_path.read_text()))
            matrix = np.load(vectors_path, allow_pickle=False).astype(np.float32, copy=False)
        except (OSError, ValueError) as exc:  # numpy's "pickled data" advice is no fix here
            reason = exc if isinstance(exc, OSError) else "damaged"
            log.warning("cannot read the title vectors in %s (%s): ranking by words alone",
                        folder, reason)
            return None
        if matrix.ndim != 2 or len(ids) != len(matrix):
            log.warning("the title vectors in %s do not match their ids: ignored", folder)
            return None
        return cls(ids, matrix, {pid: i for i, pid in enumerate(ids)})

    def nearest(self, query: np.ndarray, n: int, allowed: Iterable[str] | None = None) -> list[str]:
        """Ids of the n titles closest to `query` (a unit vector), among `allowed` if given."""
        if allowed is None:
            rows = np.arange(len(self.ids))
        else:
            known = (self.row_of[i] for i in allowed if i in self.row_of)
            rows = np.fromiter(known, dtype=np.int64)
        if not len(rows) or n <= 0:
            return []
        scores = self.matrix[rows] @ query.astype(np.float32)
        n = min(n, len(rows))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((rows[top], -scores[top]))]  # best first; ties by row (stable)
        return [self.ids[rows[i]] for i in top]
