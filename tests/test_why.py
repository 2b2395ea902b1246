"""'Why this result' (issue 12, item 4): each reason comes with its evidence, none without."""

from __future__ import annotations

import math

import pytest

from jewelrec.recommend import Recommender
from jewelrec.search.why import QueryFacts, alike_percent, reasons


def why(facts: QueryFacts, **result) -> list[str]:
    base = {"type": "ring", "metal": None, "stone": None, "brand": None, "score": 0.0}
    return reasons(facts, **{**base, **result})


def test_every_reason_with_its_evidence():
    facts = QueryFacts(type="ring", metal="gold", stone="emerald", brand="Aurum")
    assert why(facts, type="ring", metal="Gold", stone="emerald ", brand="aurum", score=0.823) == [
        "ring like yours", "Gold like yours", "emerald like yours", "same brand",
        "looks 82% alike"]


def test_no_reason_without_evidence():
    # unknown query facts: only the score speaks
    assert why(QueryFacts(), type="ring", metal="gold", stone="ruby", brand="Aurum",
               score=0.5) == ["looks 50% alike"]
    # known facts that the result does not share
    facts = QueryFacts(type="ring", metal="gold", stone="emerald", brand="Aurum")
    assert why(facts, type="necklace", metal="silver", stone=None, brand=None, score=0.0) == []
    # a result without the attribute is no match for a query that has it, nor the reverse
    assert why(QueryFacts(metal="gold"), metal=None) == []
    assert why(QueryFacts(metal=None), metal="gold") == []
    # scores that are not cosines (text search) give no likeness
    assert why(QueryFacts(cosine=False), score=0.9) == []


@pytest.mark.parametrize(("score", "percent"), [
    (1.0, 100), (1.0000002, 100), (0.823, 82), (0.006, 1), (0.004, None), (0.0, None), (-0.3, None),
    (math.nan, None),
])
def test_alike_percent(score, percent):
    assert alike_percent(score) == percent


@pytest.fixture(scope="module")
def recommender(tiny_home) -> Recommender:
    return Recommender.open(tiny_home)


def test_a_photo_query_says_the_type_only_when_it_is_decided(recommender, tiny_query_photo):
    answer = recommender.recommend(tiny_query_photo, k=6)
    assert answer.results
    for r in answer.results:
        assert f"looks {alike_percent(r.score)}% alike" in r.why
        decided_same = answer.type_decided and r.type == answer.type
        assert (f"{r.type} like yours" in r.why) == decided_same
        assert "same brand" not in r.why  # a photo has no brand
    fixed = recommender.recommend(tiny_query_photo, k=4, type="necklace")
    assert fixed.results and all("necklace like yours" in r.why for r in fixed.results)


def test_more_like_this_reasons_come_from_the_source_product(recommender):
    products = recommender.store.all_products()
    source = next(p for p in products if p.metal and p.brand)
    answer = recommender.similar_to_product(source.id, k=8)
    assert answer.results
    catalog = {p.id: p for p in products}
    for r in answer.results:
        product = catalog[r.id]
        assert f"{source.type} like yours" in r.why
        assert (f"{product.metal} like yours" in r.why) == (product.metal == source.metal)
        assert ("same brand" in r.why) == (product.brand == source.brand)
        assert ((f"{product.stone} like yours" in r.why)
                == bool(source.stone and product.stone == source.stone))


def test_the_html_page_shows_the_reasons_as_escaped_chips(tmp_path):
    from PIL import Image

    from jewelrec.home import Home
    from jewelrec.html_report import render_page
    from jewelrec.recommend import Recommendation, Result

    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 160, 40)).save(photo)
    result = Result(id="p1", title="Hoop", type="earrings", brand=None, price=10.0,
                    currency="USD", url="https://shop.example/p1", image="p1.jpg", score=0.8,
                    why=["<b>earrings</b> like yours", "looks 80% alike"])
    bare = Result(**{**result.__dict__, "id": "p2", "why": []})
    answer = Recommendation(photo=str(photo), type="earrings", type_confidence=0.9,
                            results=[result, bare])
    out = tmp_path / "page.html"
    render_page(Home(tmp_path / "home"), out, [(str(photo), answer)])
    page = out.read_text()
    assert "<span>&lt;b&gt;earrings&lt;/b&gt; like yours</span>" in page
    assert "<span>looks 80% alike</span>" in page
    assert page.count("class='why'") == 1  # a result without reasons gets no empty row
