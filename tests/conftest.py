"""Shared fixtures: a tiny demo catalog and a data home built from it by the real pipeline
(ingest -> train 1 epoch -> index), made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from milvus_server import milvus_uri  # noqa: F401  (one Milvus server per test session)

REAL_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-jewelry"


@pytest.fixture(scope="session")
def real_photos() -> Path:
    """The shared real-photo set, or a skip saying why it is missing."""
    if not (REAL_PHOTOS / "manifest.csv").exists():
        pytest.skip(f"real jewelry photos not found at {REAL_PHOTOS} (../shared/data is absent)")
    return REAL_PHOTOS


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory) -> Path:
    """Folder with catalog.csv, images/ and queries/ (24 products x 2 views, 4 query photos)."""
    from jewelrec.catalog.synthetic import generate_catalog

    folder = tmp_path_factory.mktemp("tiny-catalog")
    generate_catalog(folder, products=24, views=2, seed=3, query_photos=4, progress=False)
    return folder


@pytest.fixture(scope="session")
def tiny_home(tiny_catalog, tmp_path_factory) -> Path:
    """A data home with the default (pretrained) models trained and an index published."""
    from jewelrec.catalog.ingest import ingest
    from jewelrec.home import Home
    from jewelrec.indexing import build_index
    from jewelrec.train import train_home

    home = Home(tmp_path_factory.mktemp("tiny-home")).ensure()
    summary = ingest(tiny_catalog / "catalog.csv", home, progress=False)
    assert not summary.rejected, summary.to_dict()
    train_home(home, epochs=1, progress=False)
    build_index(home, progress=False)
    return home.root


@pytest.fixture(scope="session")
def tiny_query_photo(tiny_catalog) -> bytes:
    """A shopper photo (a render not in the catalog) of one of the tiny catalog's products."""
    return sorted((tiny_catalog / "queries").glob("*.jpg"))[0].read_bytes()
