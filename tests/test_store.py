"""The SQLite catalog store: reads, facets, fingerprint, all-or-nothing writes, concurrency."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore, product_hash
from jewelrec.errors import CatalogError
from jewelrec.home import Home


def product(i: int, **changes: object) -> Product:
    base = Product(
        id=f"p{i:03d}", title=f"Piece {i}", type=("ring", "necklace")[i % 2],
        price=10.0 + i, url=f"https://shop.example.com/{i}", images=(f"ab/{i:064x}.jpg",),
        currency="USD", brand=("Aurelia", "Solenne", None)[i % 3],
        metal=("gold", "silver")[i % 2], stone=None, tags=("a", "b"),
    )
    return replace(base, **changes)


def fill(store: CatalogStore, products: list[Product]) -> None:
    with store.transaction() as tx:
        for p in products:
            tx.upsert(p)


@pytest.fixture
def store(tmp_path: Path):
    with CatalogStore.open(Home(tmp_path / "home")) as opened:
        yield opened


def test_a_new_store_is_empty_and_in_wal_mode(store: CatalogStore) -> None:
    assert store.count() == 0 and store.all_products() == [] and store.ids() == []
    assert store.facets() == {"types": [], "brands": [], "metals": [], "price_min": None,
                              "price_max": None, "currency": "USD"}
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_products_round_trip_ordered_by_id(store: CatalogStore) -> None:
    products = [product(i) for i in (3, 1, 2)]
    fill(store, products)
    assert store.all_products() == sorted(products, key=lambda p: p.id)
    assert store.get("p002") == product(2)
    assert store.get("nope") is None
    assert store.ids() == ["p001", "p002", "p003"]
    assert store.count() == 3
    assert store.types() == ["necklace", "ring"]
    assert store.content_hashes()["p001"] == product_hash(product(1))


def test_get_many_keeps_the_order_asked_and_skips_unknown_ids(store: CatalogStore) -> None:
    fill(store, [product(i) for i in range(1200)])  # more than one IN (...) chunk
    asked = ["p999", "missing", "p001", "p999", "p1100"]
    assert list(store.get_many(asked)) == ["p999", "p001", "p1100"]
    many = store.get_many(f"p{i:03d}" for i in range(1200))
    assert len(many) == 1200 and many["p1199"] == product(1199)


def test_an_id_is_found_in_either_unicode_form_of_its_accents(store: CatalogStore) -> None:
    """A catalog exported on macOS keeps "é" as e + U+0301; the shop's page asks with "é": the
    widget stayed empty with a 404 naming an id that looked the same."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Ré-ü 2")
    fill(store, [product(1, id=decomposed)])
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed
    for asked in (composed, decomposed):
        found = store.get(asked)
        assert found is not None and found.id == decomposed
    assert store.get("Re-u 2") is None


def test_facets_describe_what_can_be_filtered(store: CatalogStore) -> None:
    fill(store, [product(1), product(2), product(3, currency="EUR", price=5.5),
                 product(4, currency="EUR"), product(5, currency="EUR")])
    facets = store.facets()
    assert facets["types"] == ["necklace", "ring"]
    assert facets["brands"] == ["Aurelia", "Solenne"]  # None is not a brand
    assert facets["metals"] == ["gold", "silver"]
    assert (facets["price_min"], facets["price_max"]) == (5.5, 15.0)
    assert facets["currency"] == "EUR"  # the most common


def test_facets_are_read_once_per_catalog_version(store: CatalogStore, tmp_path: Path) -> None:
    """Every filtered query asks for the facets (five queries under the store's lock, 76 ms at
    50,000 products): read once, and again only after a commit, this store's or another's."""
    fill(store, [product(1)])
    calls = []
    original = store._read_facets
    store._read_facets = lambda: calls.append(1) or original()
    assert store.facets() is store.facets() and len(calls) == 1
    assert store.facets()["brands"] == ["Solenne"]
    fill(store, [product(2, brand="Aurelia")])  # this store's own transaction
    assert store.facets()["brands"] == ["Aurelia", "Solenne"] and len(calls) == 2
    other = CatalogStore(store.path)  # another process's ingest, as far as SQLite can tell
    with other.transaction() as tx:
        tx.upsert(product(3, brand="Kestrel"))
    other.close()
    assert "Kestrel" in store.facets()["brands"] and len(calls) == 3


def test_fingerprint_follows_content_not_write_order(tmp_path: Path) -> None:
    a = CatalogStore.open(tmp_path / "a")
    b = CatalogStore.open(tmp_path / "b")
    fill(a, [product(1), product(2)])
    fill(b, [product(2), product(1)])
    assert a.fingerprint() == b.fingerprint()
    before = a.fingerprint()
    fill(a, [product(2, price=99.0)])
    assert a.fingerprint() != before
    fill(a, [product(2)])
    assert a.fingerprint() == before
    a.close()
    b.close()


def test_a_failed_transaction_changes_nothing(store: CatalogStore) -> None:
    fill(store, [product(1)])
    before = store.fingerprint()
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.upsert(product(2))
        tx.delete(["p001"])
        raise RuntimeError("killed half-way")
    assert store.fingerprint() == before and store.ids() == ["p001"]


def test_readers_see_the_last_commit_while_a_write_is_open(store: CatalogStore) -> None:
    fill(store, [product(1)])
    seen: list[int] = []
    with store.transaction() as tx:
        for i in range(2, 50):
            tx.upsert(product(i))
        reader = threading.Thread(target=lambda: seen.append(store.count()))
        reader.start()
        reader.join(timeout=20)
        assert not reader.is_alive(), "a reader was blocked by the writer"
    assert seen == [1]  # not the uncommitted 49
    assert store.count() == 49


def test_many_threads_can_read_one_store(store: CatalogStore) -> None:
    fill(store, [product(i) for i in range(20)])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for i in range(50):
                assert store.get(f"p{i % 20:03d}") is not None
                assert len(store.get_many(["p001", "p002"])) == 2
        except BaseException as exc:  # collected for the main thread to report
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_image_sources_and_meta_are_remembered(store: CatalogStore) -> None:
    with store.transaction() as tx:
        tx.remember_image_source("url:https://i.example/a.jpg", "ab/abc.jpg")
        tx.set_meta("last_ingest", {"added": 3})
    assert store.image_sources() == {"url:https://i.example/a.jpg": "ab/abc.jpg"}
    assert store.meta("last_ingest") == {"added": 3}
    assert store.meta("nothing") is None


def test_a_file_that_is_not_a_store_is_refused_clearly(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.catalog_db.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(CatalogError, match="not a jewelrec catalog store"):
        CatalogStore.open(home)


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    CatalogStore.open(tmp_path).close()
    with sqlite3.connect(Home(tmp_path).catalog_db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CatalogError, match="version 99"):
        CatalogStore.open(tmp_path)
