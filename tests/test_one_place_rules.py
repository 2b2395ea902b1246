"""Rules written once (issue 10, design): the 'no catalog, run ingest' error every stage
gives, the one http(s) link check ingest, the fetcher and pages share, and the API's response
models that follow the pipeline's dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest

from jewelrec.catalog.fetch import FetchError, fetch_image
from jewelrec.catalog.importers import validate_fields
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import CatalogError, NotReadyError
from jewelrec.evaluate import evaluate_home
from jewelrec.home import Home
from jewelrec.indexing import build_index
from jewelrec.links import is_http_ref, link_problem, safe_link
from jewelrec.recommend import Recommender
from jewelrec.report import build_report
from jewelrec.train import load_training_images, train_home

NO_CATALOG = "no catalog in {root}: run `jewelrec ingest` first"
EMPTY = "the catalog in {root} is empty: run `jewelrec ingest` first"


@pytest.mark.parametrize("stage", [
    lambda home: build_index(home, progress=False),
    lambda home: train_home(home, progress=False),
    lambda home: load_training_images(home, progress=False),
    lambda home: evaluate_home(home, progress=False),
    lambda home: build_report(home, home.root / "report.html"),
    lambda home: Recommender.open(home),
], ids=["index", "train", "training-images", "evaluate", "report", "recommend"])
def test_every_stage_says_the_same_when_there_is_no_catalog(tmp_path: Path, stage) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(NotReadyError) as caught:
        stage(home)
    assert str(caught.value) == NO_CATALOG.format(root=home.root)


def test_a_read_only_store_that_is_missing_is_a_catalog_error(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(CatalogError) as caught:
        CatalogStore.open(home, read_only=True)
    assert str(caught.value) == NO_CATALOG.format(root=home.root)
    assert not home.catalog_db.exists()


@pytest.mark.parametrize("stage", [
    lambda home: build_index(home, progress=False),
    lambda home: load_training_images(home, progress=False),
    lambda home: build_report(home, home.root / "report.html"),
], ids=["index", "training-images", "report"])
def test_every_stage_says_the_same_when_the_catalog_is_empty(tmp_path: Path, stage) -> None:
    home = Home(tmp_path / "home")
    CatalogStore.open(home).close()  # an empty store
    with pytest.raises(NotReadyError) as caught:
        stage(home)
    assert str(caught.value) == EMPTY.format(root=home.root)


@pytest.mark.parametrize(("url", "problem"), [
    ("https://shop.example/p/1", None),
    ("HTTP://shop.example:8080/x?y=1", None),
    ("javascript:alert(1)", "URL is not http(s): 'javascript:alert(1)'"),
    ("ftp://shop.example/a.jpg", "URL is not http(s)"),
    ("file:///etc/passwd", "URL is not http(s)"),
    ("https:///nohost", "URL has no host"),
    ("https://shop.example/a b.jpg", "contains spaces or control characters"),
    ("https://shop.example/\x00", "contains spaces or control characters"),
    ("http://[::1/a.jpg", "malformed"),
    ("http://shop.example:99999/", "malformed"),
    ("http://shop.example:port/", "malformed"),
])
def test_one_link_rule_for_ingest_fetch_and_pages(url: str, problem: str | None) -> None:
    found = link_problem(url)
    if problem is None:
        assert found is None
        assert safe_link(url) == url
        return
    assert found is not None and problem in found
    assert safe_link(url) is None
    # a catalog row with that product link is rejected with the same words
    row = {"id": "p1", "title": "Ring", "type": "ring", "price": "10", "url": url,
           "image": "a.jpg"}
    rejected = validate_fields(row, 2)
    assert isinstance(rejected, str) and problem in rejected
    # the fetcher refuses the same link, before any connection, with the same words
    with pytest.raises(FetchError) as caught:
        fetch_image(url)
    assert str(caught.value) == found


def test_web_references_are_told_from_file_paths() -> None:
    assert is_http_ref("https://cdn.example/a.jpg") and is_http_ref("HTTP://x/a.jpg")
    assert is_http_ref("http://[::1/a.jpg")  # malformed, but meant for the web: refused there
    assert not is_http_ref("images/a.jpg") and not is_http_ref("C:/photos/a.jpg")
    assert not is_http_ref("ftp://x/a.jpg")
