"""Open the index a home's current version points at, on the backend it was built for
(or the one the caller names)."""

from __future__ import annotations

from typing import Any

from jewelrec.home import Home
from jewelrec.search import versions
from jewelrec.search.index import ExactIndex, Index

BACKENDS = ("exact", "milvus")


def open_index(
    home: Home,
    *,
    version: str | None = None,
    backend: str | None = None,
    milvus_uri: str | None = None,
) -> tuple[Index, dict[str, Any]]:
    """Returns the index and its meta.json (embedder, dimension, backend, collection...)."""
    meta = versions.read_meta(home, version)
    backend = backend or meta.get("backend", "exact")
    if backend == "exact":
        folder = versions.version_dir(home, version)
        with versions.damaged_as_not_ready(home, folder.name):
            return ExactIndex.load(folder), meta
    if backend == "milvus":
        from jewelrec.errors import NotReadyError
        from jewelrec.search.milvus import MilvusIndex

        if not meta.get("milvus_collection"):  # built with the exact backend: nothing in Milvus
            raise NotReadyError(
                f"the index was built for the {meta.get('backend', 'exact')} backend, so Milvus "
                "holds no collection for it: run `jewelrec index --backend milvus "
                "--milvus-uri URI` first, or leave out --backend")
        uri = milvus_uri or meta.get("milvus_uri")
        if not uri:
            raise NotReadyError("the milvus backend needs --milvus-uri (none recorded in the home)")
        return MilvusIndex.connect(uri, meta["milvus_collection"]), meta
    raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
