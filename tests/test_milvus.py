"""MilvusIndex against ExactIndex on the embedded Milvus server, plus the filter compiler.

FLAT must give ExactIndex's answers (same products, order, best images, scores); HNSW must
find at least 95% of them; deletes and replacing upserts must be visible to the next search;
no catalog string may change a filter expression's meaning.
"""

from __future__ import annotations

import codecs
import logging
import re
import socket
import uuid

import numpy as np
import pytest

from jewelrec.errors import JewelrecError, NotReadyError
from jewelrec.search.filters import Filters
from jewelrec.search.index import ExactIndex, IndexRow
from jewelrec.search.milvus import (
    MilvusIndex,
    filters_to_milvus_expr,
    milvus_number,
    milvus_string,
)

pytest.importorskip("pymilvus")

DIM = 32
TYPES = ("earring", "necklace", "ring", "bracelet")
BRANDS = ("Aurum", "Lumen", 'O"Brien\'s')
METALS = ("gold", "silver", "rose gold")
TRICKY = ['O"Brien\'s', 'x" or brand != "', "back\\slash", 'a\\"b', "new\nline", "tab\there",
          "\x01ctl", "ünïcødé", "😀 emoji", "'single'", "", "] or [", "(", "price >= 0"]


def catalog(products: int, seed: int) -> tuple[list[IndexRow], np.ndarray]:
    """Random products with 1-4 images each; a product's images lie close together, so their
    rows crowd each other near the top of a ranking (what per-product dedupe must handle)."""
    rng = np.random.default_rng(seed)
    rows, vectors = [], []
    for p in range(products):
        centre = rng.normal(size=DIM)
        for v in range(int(rng.integers(1, 5))):
            rows.append(IndexRow(
                product_id=f"P{p:04d}", image=f"p{p}_{v}.jpg", type=TYPES[p % 4],
                price=float(np.round(rng.lognormal(4.0, 0.8), 2)),
                brand=BRANDS[p % 3] if p % 7 else None, metal=METALS[p % 3],
            ))
            vectors.append(centre + 0.3 * rng.normal(size=DIM))
    return rows, np.array(vectors, dtype=np.float32)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_index(milvus_uri):
    """Factory for MilvusIndex collections that are dropped after the test."""
    made: list[MilvusIndex] = []

    def make(rows, vectors, **options) -> MilvusIndex:
        index = MilvusIndex(milvus_uri, unique_name("test"), dim=DIM, **options)
        index.upsert(rows, vectors)
        made.append(index)
        return index

    yield make
    for index in made:
        index.drop()


FILTERS = [
    None,
    Filters.build(max_price=40),
    Filters.build(min_price=50, max_price=120),
    Filters.build(types=["ring", "necklace"]),
    Filters.build(brands=['O"Brien\'s'], metals=["gold", "rose gold"]),
    Filters.build(types="earring", min_price=30, exclude_ids=["P0001", "P0005", "P0010"]),
    Filters.build(min_price=10_000),  # matches nothing
]


# -- the expression compiler (no server needed) --------------------------------------------
def test_no_filters_compile_to_no_expression():
    assert filters_to_milvus_expr(None) == ""
    assert filters_to_milvus_expr(Filters()) == ""


def test_filters_compile_to_one_conjunction():
    expr = filters_to_milvus_expr(Filters.build(
        min_price=10, max_price=99.5, types=["ring", "earring"], brands=['O"Brien\'s'],
        metals="gold", exclude_ids=["P1"],
    ))
    assert expr == (
        '(price >= 10.0) and (price <= 99.5) and (type in ["earring", "ring"]) and '
        '(brand in ["O\\"Brien\'s"]) and (metal in ["gold"]) and (product_id not in ["P1"])'
    )


@pytest.mark.parametrize("value", TRICKY)
def test_string_literals_are_closed_ascii_and_round_trip(value):
    literal = milvus_string(value)
    assert literal.isascii() and literal.isprintable()
    inner = literal[1:-1]
    assert literal[0] == literal[-1] == '"'
    # no quote inside ends the literal early: every quote is preceded by an odd run of \
    for match in re.finditer('"', inner):
        backslashes = len(inner[: match.start()]) - len(inner[: match.start()].rstrip("\\"))
        assert backslashes % 2 == 1, literal
    assert codecs.decode(inner, "unicode_escape") == value


def test_lone_surrogates_are_refused_not_sent():
    with pytest.raises(JewelrecError, match="not valid Unicode"):
        milvus_string("bad\ud800")


def test_prices_are_written_without_exponents():
    for value in (0.0, 1e-7, 12.5, 1e20, 123456789.123):
        text = milvus_number(value)
        assert "e" not in text.lower() and float(text) == value


# -- against the server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def flat_pair(milvus_uri):
    rows, vectors = catalog(products=120, seed=1)
    exact = ExactIndex(DIM)
    exact.upsert(rows, vectors)
    remote = MilvusIndex(milvus_uri, unique_name("flat"), dim=DIM, index_type="FLAT")
    remote.upsert(rows, vectors)
    yield exact, remote, vectors
    remote.drop()


@pytest.mark.milvus
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: filters_to_milvus_expr(f) or "none")
def test_flat_gives_exact_results(flat_pair, filters):
    exact, remote, vectors = flat_pair
    assert len(remote) == len(exact) > 300
    rng = np.random.default_rng(5)
    queries = [vectors[0], vectors[100], *rng.normal(size=(3, DIM))]
    for query in queries:
        for k in (1, 10, 200):  # 200: more than the 120 products, so every match comes back
            want = exact.search(query, k, filters)
            got = remote.search(query, k, filters)
            assert [(h.product_id, h.image) for h in got] == [
                (h.product_id, h.image) for h in want
            ]
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
    if filters is not None and filters.min_price == 10_000:
        assert remote.search(vectors[0], 10, filters) == []


@pytest.mark.milvus
def test_hnsw_recall_at_10(make_index):
    rows, vectors = catalog(products=500, seed=2)
    exact = ExactIndex(DIM)
    exact.upsert(rows, vectors)
    remote = make_index(rows, vectors, index_type="HNSW", hnsw_ef=64)
    rng = np.random.default_rng(7)
    queries = np.vstack([vectors[rng.integers(0, len(vectors), 10)], rng.normal(size=(10, DIM))])
    found = wanted = 0
    for query in queries:
        for filters in (None, Filters.build(max_price=60)):
            want = {h.product_id for h in exact.search(query, 10, filters)}
            got = remote.search(query, 10, filters)
            assert len({h.product_id for h in got}) == len(got) == 10
            found += len(want & {h.product_id for h in got})
            wanted += len(want)
    assert found / wanted >= 0.95


@pytest.mark.milvus
def test_delete_and_replacing_upsert_are_seen_by_the_next_search(make_index):
    rows, vectors = catalog(products=30, seed=3)
    remote = make_index(rows, vectors)
    counts = {pid: sum(r.product_id == pid for r in rows) for pid in {r.product_id for r in rows}}

    remote.delete(["P0003", "P0004"])
    assert len(remote) == len(rows) - counts["P0003"] - counts["P0004"]
    hits = remote.search(vectors[[r.product_id for r in rows].index("P0003")], 100)
    assert {h.product_id for h in hits} == set(counts) - {"P0003", "P0004"}

    # product P0007 now has exactly one new image, pointing somewhere new
    new_vector = np.random.default_rng(9).normal(size=DIM)
    remote.upsert([IndexRow("P0007", "new.jpg", "ring", 12.0, "Aurum", "gold")], new_vector[None])
    assert len(remote) == len(rows) - counts["P0003"] - counts["P0004"] - counts["P0007"] + 1
    top = remote.search(new_vector, 3)
    assert (top[0].product_id, top[0].image) == ("P0007", "new.jpg")
    assert top[0].score == pytest.approx(1.0, abs=1e-4)
    assert remote.search(new_vector, 1, Filters.build(types="ring", max_price=12))[0].image == (
        "new.jpg"
    )


@pytest.mark.milvus
def test_filter_strings_cannot_inject(make_index):
    rows = [IndexRow(f"T{i}", f"t{i}.jpg", "ring", 10.0 + i, brand, "gold")
            for i, brand in enumerate(TRICKY)]
    vectors = np.random.default_rng(4).normal(size=(len(rows), DIM))
    remote = make_index(rows, vectors)
    for i, brand in enumerate(TRICKY):
        if not brand:
            continue  # no brand: Filters drop empty strings
        hits = remote.search(vectors[0], 50, Filters.build(brands=[brand]))
        assert [h.product_id for h in hits] == [f"T{i}"], brand
    excluded = remote.search(vectors[0], 50, Filters.build(exclude_ids=['T0" or product_id != "']))
    assert len(excluded) == len(rows)


@pytest.mark.milvus
def test_connect_reads_the_collection_as_built(milvus_uri, flat_pair):
    exact, remote, vectors = flat_pair
    again = MilvusIndex.connect(milvus_uri, remote.collection)
    assert (again.dim, again.index_type, len(again)) == (DIM, "FLAT", len(exact))
    assert again.search(vectors[5], 10) == remote.search(vectors[5], 10)
    with pytest.raises(JewelrecError, match="32-d"):
        MilvusIndex(milvus_uri, remote.collection, dim=DIM + 1)
    with pytest.raises(NotReadyError, match="no collection"):
        MilvusIndex.connect(milvus_uri, unique_name("missing"))


@pytest.fixture
def pymilvus_records():
    """What pymilvus logs (its loggers write to their own stream, not to pytest's capture)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("pymilvus")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.milvus
def test_server_errors_are_user_errors_without_tracebacks(make_index, pymilvus_records):
    rows, vectors = catalog(products=3, seed=6)
    remote = make_index(rows, vectors)
    remote.drop()  # e.g. retired by a newer index build while a server still uses it
    remote.drop()  # dropping twice is fine
    with pytest.raises(JewelrecError, match=re.escape(f"Milvus at {remote.uri} could not")):
        remote.search(vectors[0], 5)
    assert not pymilvus_records  # pymilvus's own error log (with a traceback) stays quiet


def test_unreachable_server_is_a_user_error_naming_the_uri():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(JewelrecError, match=re.escape(uri)):
        MilvusIndex(uri, dim=DIM)
    with pytest.raises(JewelrecError, match="unsupported Milvus URI"):
        MilvusIndex("file:///tmp/x.db", dim=DIM)


# -- retired index versions ------------------------------------------------------------------
@pytest.mark.milvus
def test_retired_index_versions_take_their_collection_with_them(milvus_uri, tmp_path):
    import json

    from jewelrec.home import Home
    from jewelrec.search import versions
    from jewelrec.search.milvus import drop_collection

    home = Home(tmp_path / "home").ensure()
    names = [unique_name("retire") for _ in range(4)]
    rows, vectors = catalog(products=3, seed=0)
    for i, name in enumerate(names):  # four published versions, oldest first
        MilvusIndex(milvus_uri, name, dim=DIM).upsert(rows, vectors)
        folder = home.index_dir / f"v2026010{i}"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps(
            {"backend": "milvus", "milvus_uri": milvus_uri, "milvus_collection": name, "dim": DIM}))
    versions._remove_stale(home, keep="v20260103")
    client_view = [MilvusIndex(milvus_uri, n, dim=DIM) if n in names[2:] else None for n in names]
    assert [drop_collection(milvus_uri, n) for n in names[:2]] == [False, False]  # gone already
    assert all(index is not None and len(index) == len(rows) for index in client_view[2:])
    assert sorted(p.name for p in home.index_dir.iterdir()) == ["v20260102", "v20260103"]
    for index in client_view[2:]:
        index.drop()
