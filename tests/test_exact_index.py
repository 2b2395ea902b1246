"""ExactIndex: cosine ranking, pre-filtering, one result per product, persistence."""

import numpy as np
import pytest

from jewelrec.search.filters import Filters
from jewelrec.search.index import ExactIndex, IndexRow


def make_index(n_products=60, images_per_product=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    rows, vectors = [], []
    types = ["earring", "necklace", "ring", "bracelet"]
    for p in range(n_products):
        centre = rng.normal(size=dim)
        for v in range(images_per_product):
            rows.append(
                IndexRow(
                    product_id=f"P{p:03d}",
                    image=f"img{p}_{v}.jpg",
                    type=types[p % 4],
                    price=float(10 + 5 * p),
                    brand=["Aurum", "Lumen"][p % 2],
                    metal=["gold", "silver", "rose gold"][p % 3],
                )
            )
            vectors.append(centre + 0.1 * rng.normal(size=dim))
    index = ExactIndex(dim)
    index.upsert(rows, np.array(vectors))
    return index, rows, np.array(vectors)


def test_returns_k_distinct_products_best_image_first():
    index, rows, vectors = make_index()
    hits = index.search(vectors[4], 10)
    assert len(hits) == 10
    assert len({h.product_id for h in hits}) == 10
    assert hits[0].product_id == rows[4].product_id and hits[0].image == rows[4].image
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_prefilter_gets_k_whenever_k_products_match():
    index, rows, vectors = make_index()
    # products 0..11 cost <= 65: exactly 12 products, far from most queries
    for query in vectors[::17]:
        hits = index.search(query, 10, Filters.build(max_price=65))
        assert len(hits) == 10
        assert all(h.product_id in {f"P{p:03d}" for p in range(12)} for h in hits)


def test_filters_combine_and_can_match_nothing():
    index, rows, vectors = make_index()
    f = Filters.build(types=["ring"], brands=["Aurum"], metals="gold,silver", min_price=20)
    hits = index.search(vectors[0], 50, f)
    by_id = {r.product_id: r for r in rows}
    assert hits
    for h in hits:
        row = by_id[h.product_id]
        assert row.type == "ring" and row.brand == "Aurum" and row.metal in {"gold", "silver"}
        assert row.price >= 20
    assert index.search(vectors[0], 5, Filters.build(min_price=10_000)) == []


def test_exclude_ids_and_delete_and_replace():
    index, rows, vectors = make_index(n_products=8)
    hits = index.search(vectors[0], 3, Filters.build(exclude_ids=["P000"]))
    assert "P000" not in {h.product_id for h in hits}
    index.delete(["P001"])
    assert "P001" not in {h.product_id for h in index.search(vectors[3], 8)}
    index.upsert([IndexRow("P002", "new.jpg", "ring", 1.0)], vectors[:1])
    assert len([r for r in index.rows if r.product_id == "P002"]) == 1
    assert index.search(vectors[0], 1)[0].product_id in {"P000", "P002"}


def test_bad_filters_are_refused():
    with pytest.raises(ValueError):
        Filters.build(min_price=50, max_price=10)
    with pytest.raises(ValueError):
        Filters.build(max_price=-1)
    with pytest.raises(ValueError):
        Filters.build(max_price=float("nan"))


def test_save_and_load_round_trip(tmp_path):
    index, rows, vectors = make_index(n_products=10)
    index.save(tmp_path)
    loaded = ExactIndex.load(tmp_path)
    assert loaded.rows == index.rows
    assert loaded.search(vectors[7], 5) == index.search(vectors[7], 5)
