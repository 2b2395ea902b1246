"""Image + words (issue 12, item 3): "like this but in silver" on a demo-like home, words that
filter and words that re-rank, through the Recommender, the API and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jewelrec.home import Home
from jewelrec.recommend import Recommender
from jewelrec.search.filters import Filters
from jewelrec.text.photo_words import FILLER, WordsError

# seed 5, 40 products: the family solitaire-ring-2 holds a gold and a silver ring, and the
# catalog has other silver rings, so "the same, in silver" has one right first answer
SEED, PRODUCTS = 5, 40
FAMILY = "solitaire-ring-2"


@pytest.fixture(scope="module")
def demo_like_home(tiny_home, tmp_path_factory) -> Path:
    """A demo catalog drawn with the repo's generator, indexed with the tiny home's models."""
    from jewelrec.catalog.ingest import ingest
    from jewelrec.catalog.synthetic import generate_catalog
    from jewelrec.indexing import build_index

    folder = tmp_path_factory.mktemp("demo-like")
    csv = generate_catalog(folder / "catalog", products=PRODUCTS, views=2, seed=SEED,
                           progress=False)
    home = Home(folder / "home")
    shutil.copytree(tiny_home, home.root)  # trained models and their caches
    summary = ingest(csv, home, prune=True, progress=False)
    assert not summary.rejected, summary.to_dict()
    build_index(home, progress=False)
    return home.root


@pytest.fixture(scope="module")
def recommender(demo_like_home) -> Recommender:
    return Recommender.open(demo_like_home)


def family_of(product) -> str:
    return next(t for t in product.tags if t.count("-") == 2)


def gold_ring_photo(recommender: Recommender) -> tuple[Path, object]:
    """A photo of the gold ring of FAMILY: its second view (the first is the main image)."""
    gold = next(p for p in recommender.store.all_products()
                if p.type == "ring" and p.metal == "gold" and family_of(p) == FAMILY)
    return recommender.home.image_path(gold.images[1]), gold


def test_like_this_but_in_silver_gives_silver_rings_in_visual_order(recommender):
    photo, gold = gold_ring_photo(recommender)
    products = {p.id: p for p in recommender.store.all_products()}
    silver_rings = [p for p in products.values() if p.type == "ring" and p.metal == "silver"]
    assert len(silver_rings) >= 3

    answer = recommender.recommend(photo, k=5, text="but in silver")
    assert answer.query == "but in silver"
    assert answer.applied["metals"] == ["silver"] and answer.applied["types"] == []
    assert answer.ranked_by == ["photo"]  # "but" is filler: nothing left to rank by
    ids = [r.id for r in answer.results]
    assert len(ids) == min(5, len(silver_rings))
    assert all(products[i].type == "ring" and products[i].metal == "silver" for i in ids)
    # the same design in silver is the piece drawn most like the photo
    assert family_of(products[ids[0]]) == FAMILY
    # ranked by visual similarity: the same order as a plain silver-ring photo search
    plain = recommender.recommend(photo, k=5, filters=Filters.build(metals=["silver"],
                                                                     types=["ring"]))
    assert ids == [r.id for r in plain.results]
    assert [r.score for r in answer.results] == sorted((r.score for r in answer.results),
                                                       reverse=True)
    assert all("silver as you asked" in r.why for r in answer.results)
    assert all(r.metal == "silver" for r in answer.results)
    # the photo alone: its own metal is no filter
    alone = recommender.recommend(photo, k=5)
    assert alone.applied is None and any(r.metal != "silver" for r in alone.results)
    # every piece of the photo gets the words too (recommend --all-pieces)
    for each in recommender.recommend_pieces(photo, k=3, text="but in silver"):
        assert each.applied["metals"] == ["silver"]
        assert each.results and all(r.metal == "silver" for r in each.results)


def test_more_like_this_in_silver_and_a_stone_word(recommender):
    _, gold = gold_ring_photo(recommender)
    products = {p.id: p for p in recommender.store.all_products()}
    same = recommender.similar_to_product(gold.id, k=4, text="in silver")
    assert same.results and all(products[r.id].metal == "silver" and products[r.id].type ==
                                "ring" for r in same.results)
    assert family_of(products[same.results[0].id]) == FAMILY
    stone = next(p.stone for p in products.values() if p.type == "ring" and p.stone)
    with_stone = recommender.similar_to_product(gold.id, k=4, text=f"with a {stone}")
    assert with_stone.applied["stones"] == [stone]
    assert with_stone.results and all(products[r.id].stone == stone
                                      for r in with_stone.results)
    # a stone ruled out is left out of the visual answer
    without = recommender.similar_to_product(gold.id, k=8, text=f"without {stone}")
    assert without.applied["excluded"] == {"stones": [stone]}
    assert without.results and all(products[r.id].stone != stone for r in without.results)
    # a type word overrides the product's own type
    necklaces = recommender.similar_to_product(gold.id, k=3, text="like this but a necklace")
    assert necklaces.searched_types == ["necklace"]
    assert all(r.type == "necklace" and "necklace as you asked" in r.why
               for r in necklaces.results)
    # the caller's own filter wins over the words, as in text search
    fixed = recommender.similar_to_product(gold.id, k=3, text="in silver",
                                           filters=Filters.build(metals=["rose gold"]))
    assert fixed.applied["metals"] == [] and all(products[r.id].metal == "rose gold"
                                                 for r in fixed.results)


def test_words_no_filter_takes_re_rank_the_visual_candidates(recommender):
    photo, _ = gold_ring_photo(recommender)
    visual = recommender.recommend(photo, k=12)
    worded = recommender.recommend(photo, k=12, text="like this but petite")
    assert "petite" not in FILLER and worded.ranked_by == ["photo", "title vectors"]
    assert all(v in ([], {}) for k, v in worded.applied.items() if k not in ("max_price",
                                                                          "min_price"))
    scores = {r.id: r.score for r in visual.results}
    # reported scores stay visual cosines; only the order changes
    assert all(scores.get(r.id, r.score) == r.score for r in worded.results)

    def first_petite(results) -> int:
        return next(i for i, r in enumerate(results) if "Petite" in r.title)

    assert any("Petite" in r.title for r in worded.results)
    assert first_petite(worded.results) <= first_petite(visual.results + worded.results)
    petite = worded.results[first_petite(worded.results)]
    assert "“petite” in its title" in petite.why


def test_words_that_cannot_be_read_are_said(recommender):
    photo, _ = gold_ring_photo(recommender)
    with pytest.raises(WordsError, match="price"):
        recommender.recommend(photo, text="over 300 under 20")
    with pytest.raises(WordsError, match="longer"):
        recommender.recommend(photo, text="silver " * 100)
    # blank words are no words
    assert recommender.recommend(photo, k=2, text="  ").applied is None


def test_the_api_takes_words_with_a_photo_and_with_more_like_this(demo_like_home, recommender):
    from jewelrec.server.app import create_app

    photo, gold = gold_ring_photo(recommender)
    with TestClient(create_app(demo_like_home)) as client:
        answer = client.post("/api/recommend", files={"photo": ("ring.jpg", photo.read_bytes(),
                                                               "image/jpeg")},
                             data={"k": "3", "q": "but in silver"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["query"] == "but in silver" and body["applied"]["metals"] == ["silver"]
        assert body["ranked_by"] == ["photo"]
        assert body["results"] and all(r["metal"] == "silver" for r in body["results"])
        plain = client.post("/api/recommend", files={"photo": ("ring.jpg", photo.read_bytes(),
                                                              "image/jpeg")}, data={"k": "3"})
        assert plain.json()["applied"] is None
        similar = client.get(f"/api/products/{gold.id}/similar",
                             params={"k": 3, "q": "in silver"}).json()
        assert similar["applied"]["metals"] == ["silver"]
        assert similar["results"] and all(r["metal"] == "silver" for r in similar["results"])
        # "All types" with words naming a type: the words' type, not every type
        for route in ("recommend", "similar"):
            if route == "recommend":
                worded = client.post("/api/recommend", data={"k": "3", "type": "any",
                                                             "q": "but a necklace"},
                                     files={"photo": ("r.jpg", photo.read_bytes(), "image/jpeg")})
            else:
                worded = client.get(f"/api/products/{gold.id}/similar",
                                    params={"k": 3, "type": "any", "q": "a necklace"})
            body = worded.json()
            assert body["applied"]["types"] == ["necklace"], route
            assert body["results"] and {r["type"] for r in body["results"]} == {"necklace"}
        bad = client.get(f"/api/products/{gold.id}/similar", params={"q": "under 5 over 50"})
        assert bad.status_code == 422 and "price" in bad.json()["detail"]
        long = client.post("/api/recommend", files={"photo": ("r.jpg", photo.read_bytes(),
                                                             "image/jpeg")},
                           data={"q": "x" * 600})
        assert long.status_code == 422


def test_cli_recommend_with_words(demo_like_home, recommender, capsys):
    from jewelrec.cli import main

    photo, _ = gold_ring_photo(recommender)
    assert main(["recommend", str(photo), "--home", str(demo_like_home), "-k", "3",
                 "--words", "but in silver", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["applied"]["metals"] == ["silver"]
    assert answer["results"] and all(r["metal"] == "silver" for r in answer["results"])
    assert main(["recommend", str(photo), "--home", str(demo_like_home), "-k", "3",
                 "--words", "in silver"]) == 0
    assert "your words: metals ['silver']" in capsys.readouterr().out
