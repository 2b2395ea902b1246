"""Predicted attributes stored (issue 12, item 2): a catalog without metal / stone columns gets
the attribute heads' reading of its photos at `index`, marked predicted, in one transaction;
the catalog's own values always win and replace predictions when they come."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore, product_hash
from jewelrec.home import Home
from jewelrec.models.attributes import product_attributes


def product(i: int, **changes: object) -> Product:
    base = Product(
        id=f"p{i:03d}", title=f"Piece {i}", type="ring", price=10.0 + i,
        url=f"https://shop.example.com/{i}", images=(f"ab/{i:064x}.jpg",), tags=("band",),
    )
    return replace(base, **changes)


@pytest.fixture
def store(tmp_path: Path):
    with CatalogStore.open(Home(tmp_path / "home")) as opened:
        yield opened


def test_predictions_are_stored_marked_and_searchable(store: CatalogStore) -> None:
    with store.transaction() as tx:
        tx.upsert(product(1))
        tx.upsert(product(2, metal="gold"))
    with store.transaction() as tx:
        assert tx.set_predicted("p001", {"metal": "silver", "stone": None})
        assert not tx.set_predicted("p002", {"metal": "silver"})  # the catalog's gold wins
        assert not tx.set_predicted("nope", {"metal": "silver"})
    one, two = store.get("p001"), store.get("p002")
    assert (one.metal, one.stone, one.predicted) == ("silver", None, ("metal", "stone"))
    assert (two.metal, two.predicted) == ("gold", ())
    assert store.facets()["metals"] == ["gold", "silver"]
    assert store.distinct_words()["metals"] == ["gold", "silver"]
    assert [pid for pid, _ in store.search_text(["silver"])] == ["p001"]  # its text row too
    # what the catalog gave is what its hash says: a prediction is no change of the product
    assert product_hash(one) == product_hash(product(1))
    assert store.content_hashes()["p001"] == product_hash(product(1))
    # a head never learns from its own guesses
    assert product_attributes([one, two])["metal"] == [None, "gold"]


def test_the_catalog_s_values_replace_predictions(store: CatalogStore) -> None:
    with store.transaction() as tx:
        tx.upsert(product(1))
    with store.transaction() as tx:
        tx.set_predicted("p001", {"metal": "silver"})
    with store.transaction() as tx:  # re-ingest: the catalog now says rose gold
        tx.upsert(product(1, metal="rose gold"))
    again = store.get("p001")
    assert (again.metal, again.predicted) == ("rose gold", ())
    assert [pid for pid, _ in store.search_text(["silver"])] == []
    assert [pid for pid, _ in store.search_text(["rose"])] == ["p001"]
    with store.transaction() as tx:
        assert tx.clear_predicted("p001", ["metal"]) is False  # nothing predicted to clear
        tx.set_predicted("p001", {"stone": "ruby"})
        assert tx.clear_predicted("p001", ["stone"])
    assert store.get("p001") == product(1, metal="rose gold")


def test_a_failed_transaction_stores_no_prediction(store: CatalogStore) -> None:
    with store.transaction() as tx:
        tx.upsert(product(1))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.set_predicted("p001", {"metal": "silver"})
        raise RuntimeError("killed")
    assert store.get("p001") == product(1)
    assert store.facets()["metals"] == []


def test_a_store_made_before_predictions_is_migrated_and_readable(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with CatalogStore.open(home) as new:
        with new.transaction() as tx:
            tx.upsert(product(1, metal="gold"))
    conn = sqlite3.connect(home.catalog_db)  # as an older jewelrec left it: no column
    columns = "id, title, type, price, currency, brand, url, metal, stone, tags, images"
    conn.executescript(f"""
        CREATE TABLE older AS SELECT {columns}, content_hash FROM products ORDER BY rowid;
        DROP TABLE products;
        ALTER TABLE older RENAME TO products;
    """)
    conn.close()
    with CatalogStore.open(home, read_only=True) as old:  # read-only: read, not migrated
        assert old.get("p001") == product(1, metal="gold")
    with CatalogStore.open(home) as migrated:
        with migrated.transaction() as tx:
            tx.upsert(product(2))
            tx.set_predicted("p002", {"metal": "silver"})
        assert migrated.get("p002").predicted == ("metal",)
        assert migrated.get("p001") == product(1, metal="gold")


def _without_columns(source: Path, target: Path, dropped: set[str]) -> Path:
    """A copy of a catalog CSV without some columns (its images are found from `source`)."""
    with open(source, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = [f for f in rows[0] if f not in dropped]
    with open(target, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_a_catalog_without_metal_gets_predicted_metals_at_index(tiny_home, tiny_catalog,
                                                                tmp_path):
    """A home whose catalog has no metal column, with attribute heads from a labelled home:
    index predicts every metal; filters, facets, text search and the API see them, marked."""
    from jewelrec.catalog.ingest import ingest
    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.search.filters import Filters
    from jewelrec.server.app import create_app
    from jewelrec.text.search import TextSearcher

    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home, home.root)  # models (the attribute heads too) and caches
    truth = {p.id: p.metal for p in CatalogStore.open(home, read_only=True).all_products()}
    bare = _without_columns(tiny_catalog / "catalog.csv", tiny_catalog / "no-metal.csv",
                            {"metal", "stone"})
    summary = ingest(bare, home, prune=True, progress=False)
    assert not summary.rejected and summary.updated == len(truth)
    assert CatalogStore.open(home, read_only=True).facets()["metals"] == []

    report = build_index(home, progress=False)
    assert report.to_dict()["predicted_attributes"]["metal"] == len(truth)
    store = CatalogStore.open(home, read_only=True)
    products = store.all_products()
    assert all(p.metal and "metal" in p.predicted for p in products)
    assert all("stone" not in p.predicted for p in products)  # no stone head on this catalog
    right = sum(p.metal == truth[p.id] for p in products)
    assert right >= 0.75 * len(products), (right, len(products))  # read from the photos
    metals = store.facets()["metals"]
    assert metals and set(metals) <= set(truth.values())

    metal = metals[0]
    recommender = Recommender.open(home)
    some = products[0]
    answer = recommender.similar_to_product(some.id, k=5, filters=Filters.build(
        metals=[metal], types=list({p.type for p in products})))
    by_id = {p.id: p for p in products}
    assert answer.results and all(by_id[r.id].metal == metal for r in answer.results)
    words = TextSearcher(store, home).search(metal, k=5)
    assert words.applied["metals"] == [metal]
    assert words.results and all(by_id[r.id].metal == metal for r in words.results)
    with TestClient(create_app(home)) as client:
        shown = client.get(f"/api/products/{some.id}").json()
        assert shown["metal"] == some.metal and shown["predicted"] == ["metal"]
        assert metal in client.get("/api/facets").json()["metals"]

    # quality is measured on the catalog's own labels only: none here
    from jewelrec.evaluate import evaluate_home

    measured = evaluate_home(home, progress=False)
    assert measured.metal_precision_at_10 is None and measured.metal_accuracy is None

    # the catalog with its metal column again: its values replace every prediction
    ingest(tiny_catalog / "catalog.csv", home, prune=True, progress=False)
    again = CatalogStore.open(home, read_only=True).all_products()
    assert all(p.predicted == () and p.metal == truth[p.id] for p in again)
    assert build_index(home, progress=False).to_dict()["predicted_attributes"] == {}
