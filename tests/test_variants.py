"""Variant groups in results (issue 13): with `group_variants` (recommend/search/serve
--group-variants) a result list keeps the best-ranked product of each `group:<id>` design, and
the search asks for more candidates so k results still come while the index has them."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from query_stubs import PHOTO, FixedClassifier, FixedEmbedder, index_of

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.cli import main
from jewelrec.home import Home
from jewelrec.recommend import Recommender
from jewelrec.search.variants import one_per_group, variant_group
from jewelrec.server.app import create_app
from jewelrec.text.search import TextSearcher

# id -> (group or None, cosine to the query [1, 0]); all rings. Nine variants of design A come
# first, so the first window of candidates (4 x k for k = 2) holds only design A.
CATALOG = {
    **{f"A{i}": ("A", 0.99 - 0.005 * i) for i in range(9)},
    "solo": (None, 0.90),
    "B0": ("B", 0.85),
    "B1": ("B", 0.84),
    "C0": ("C", 0.50),
}


def vectors(cosines: list[float]) -> np.ndarray:
    return np.array([[c, math.sqrt(1 - c * c)] for c in cosines], dtype=np.float32)


@pytest.fixture
def recommender(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no home: 'more like this' reads the product's image from here
    store = CatalogStore.open(Home(tmp_path / "home").ensure())
    with store.transaction() as tx:
        for pid, (group, _) in CATALOG.items():
            tx.upsert(Product(pid, f"title {pid}", "ring", 10.0, f"https://shop.example/{pid}",
                              (f"{pid}.png",), tags=(f"group:{group}",) if group else ("gold",)))
    Image.new("RGB", (32, 32), (200, 200, 200)).save(tmp_path / "A0.png")
    yield Recommender(
        store, FixedEmbedder([1.0, 0.0]), FixedClassifier({"ring": 0.9, "earring": 0.1}),
        index_of({pid: "ring" for pid in CATALOG},
                 vectors([cosine for _, cosine in CATALOG.values()])),
        index_version="v1",
    )
    store.close()


def ids(results) -> list[str]:
    return [r["id"] if isinstance(r, dict) else r.id for r in results]


def test_variant_group_reads_the_group_tag():
    assert variant_group(["gold", "group:G-100", "group:other"]) == "G-100"
    assert variant_group(["gold", "group:"]) is None
    assert variant_group([]) is None


def test_one_per_group_keeps_the_first_of_each_group_and_every_ungrouped_result():
    class R:
        def __init__(self, id: str) -> None:
            self.id = id

    class P:
        def __init__(self, *tags: str) -> None:
            self.tags = tags

    products = {"a1": P("group:a"), "x": P("gold"), "a2": P("group:a"), "b1": P("group:b"),
                "y": P()}
    results = [R(i) for i in ("a1", "x", "a2", "missing", "b1", "y")]
    assert ids(one_per_group(results, products)) == ["a1", "x", "missing", "b1", "y"]


def test_recommend_groups_variants_only_when_asked(recommender):
    plain = recommender.recommend(PHOTO, k=3)
    assert ids(plain.results) == ["A0", "A1", "A2"]
    grouped = recommender.recommend(PHOTO, k=3, group_variants=True)
    assert ids(grouped.results) == ["A0", "solo", "B0"]
    assert [r.score for r in grouped.results] == pytest.approx([0.99, 0.90, 0.85], abs=1e-5)


def test_grouping_asks_for_more_candidates_until_k_designs_come(recommender):
    # the first 8 candidates are all design A: a second, larger search must bring 'solo'
    assert ids(recommender.recommend(PHOTO, k=2, group_variants=True).results) == ["A0", "solo"]
    # fewer designs than k: every design once, and the search stops when the index runs out
    assert ids(recommender.recommend(PHOTO, k=10, group_variants=True).results) == [
        "A0", "solo", "B0", "C0"]


def test_grouping_works_with_prefer_brand_and_an_undecided_type(recommender):
    answer = recommender.recommend(PHOTO, k=3, group_variants=True, prefer_brand="nobody")
    assert ids(answer.results) == ["A0", "solo", "B0"]
    recommender.confidence_threshold = 0.8  # ring at 0.6 is a guess: ring and earring searched
    unsure = recommender.rank(np.array([1.0, 0.0]), np.array([0.6, 0.4]), k=3,
                              group_variants=True)
    assert unsure.type_decided is False and unsure.searched_types == ["ring", "earring"]
    assert ids(unsure.results) == ["A0", "solo", "B0"]


def test_more_like_this_groups_variants_including_its_own(recommender):
    plain = recommender.similar_to_product("A0", k=3)
    assert ids(plain.results) == ["A1", "A2", "A3"]
    grouped = recommender.similar_to_product("A0", k=3, group_variants=True)
    assert ids(grouped.results) == ["A1", "solo", "B0"]  # one sibling of A0 at most


def groups_of(results) -> list[str | None]:
    return [CATALOG[i][0] for i in ids(results)]


def test_text_search_groups_variants_only_when_asked(recommender):
    searcher = TextSearcher(recommender.store)
    assert len(searcher.search("title", k=13).results) == 13
    grouped = searcher.search("title", k=13, group_variants=True).results
    assert sorted(groups_of(grouped), key=str) == ["A", "B", "C", None]


def test_serve_group_variants_applies_to_photo_results_and_more_like_this(recommender):
    photo = io.BytesIO()
    Image.fromarray(PHOTO).save(photo, format="PNG")
    for grouped, expected_similar, expected_photo in (
        (False, ["A1", "A2", "A3"], ["A0", "A1", "A2"]),
        (True, ["A1", "solo", "B0"], ["A0", "solo", "B0"]),
    ):
        app = create_app(recommender=recommender, group_variants=grouped)
        with TestClient(app) as client:
            similar = client.get("/api/products/A0/similar?k=3")
            assert similar.status_code == 200, similar.text
            assert ids(similar.json()["results"]) == expected_similar
            answer = client.post("/api/recommend", data={"k": "3"},
                                 files={"photo": ("p.png", photo.getvalue(), "image/png")})
            assert answer.status_code == 200, answer.text
            assert ids(answer.json()["results"]) == expected_photo
            words = client.get("/api/search?q=title&k=13")
            assert words.status_code == 200, words.text
            assert len(words.json()["results"]) == (4 if grouped else 13)


def test_cli_recommend_and_serve_take_group_variants(recommender, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Recommender, "open", classmethod(lambda cls, *a, **k: recommender))
    photo = tmp_path / "query.png"
    Image.fromarray(PHOTO).save(photo)
    for extra, expected in (([], ["A0", "A1", "A2"]), (["--group-variants"], ["A0", "solo", "B0"])):
        assert main(["recommend", str(photo), "--home", str(tmp_path / "home"), "-k", "3",
                     "--json", *extra]) == 0
        assert ids(json.loads(capsys.readouterr().out)["results"]) == expected
    for extra, count in (([], 13), (["--group-variants"], 4)):
        assert main(["search", "title", "--home", str(tmp_path / "home"), "-k", "13", "--json",
                     *extra]) == 0
        assert len(json.loads(capsys.readouterr().out)["results"]) == count

    served: list[dict] = []
    monkeypatch.setattr("jewelrec.server.app.serve", lambda *a, **k: served.append(k))
    assert main(["serve", "--home", str(tmp_path / "home"), "--group-variants"]) == 0
    assert main(["serve", "--home", str(tmp_path / "home")]) == 0
    assert [k["group_variants"] for k in served] == [True, False]
