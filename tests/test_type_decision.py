"""The type as a decision (issue 9, item 3): decided or not against the classifier's threshold,
the likely alternatives, and an undecided search that spans the likely types, merged by
cosine + 0.1 * log p(type) with each result's score still the cosine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from query_stubs import PHOTO, FixedClassifier, FixedEmbedder, index_of, store_with

from jewelrec.recommend import Recommender, likely_types, type_alternatives
from jewelrec.search.filters import Filters

# Cosines to the query [1, 0]: R1 .95, B1 .99, N1 1.0, R2 .60, B2 .50
PRODUCTS = {"R1": "ring", "B1": "bracelet", "N1": "necklace", "R2": "ring", "B2": "bracelet"}
COSINES = [0.95, 0.99, 1.0, 0.60, 0.50]


def vectors_with_cosines(cosines: list[float]) -> np.ndarray:
    return np.array([[c, math.sqrt(1 - c * c)] for c in cosines], dtype=np.float32)


@pytest.fixture
def store(tmp_path):
    store = store_with(tmp_path / "home", PRODUCTS)
    yield store
    store.close()


def recommender_for(store, probabilities: dict[str, float], threshold: float | None):
    return Recommender(
        store, FixedEmbedder([1.0, 0.0]), FixedClassifier(probabilities, threshold),
        index_of(PRODUCTS, vectors_with_cosines(COSINES)), index_version="v1",
    )


UNSURE = {"ring": 0.6, "bracelet": 0.35, "necklace": 0.05}


def test_an_unsure_type_searches_the_likely_types_merged_by_type_probability(store):
    answer = recommender_for(store, UNSURE, threshold=0.8).recommend(PHOTO, k=3)
    assert answer.type == "ring" and answer.type_confidence == pytest.approx(0.6)
    assert answer.type_decided is False
    assert answer.searched_types == ["ring", "bracelet"]  # 0.6 + 0.35 >= 0.9: necklace left out
    # R1: .95 + .1 log .6 = .899 beats B1: .99 + .1 log .35 = .885; R2 .549 beats B2 .395
    assert [r.id for r in answer.results] == ["R1", "B1", "R2"]
    assert [r.score for r in answer.results] == pytest.approx([0.95, 0.99, 0.60], abs=1e-5)
    assert [(a.type, a.probability) for a in answer.type_alternatives] == [
        ("ring", 0.6), ("bracelet", 0.35), ("necklace", 0.05)]


def test_an_unsure_search_that_finds_fewer_than_k_goes_on_to_the_next_types(store):
    """One likely type with a single piece in the budget answered one result of the five
    asked for, though other types had pieces in it."""
    answer = recommender_for(store, UNSURE, threshold=0.8).recommend(PHOTO, k=5)
    assert answer.searched_types == ["ring", "bracelet", "necklace"]
    # N1: 1.0 + .1 log .05 = .700, between B1 .885 and R2 .549
    assert [r.id for r in answer.results] == ["R1", "B1", "N1", "R2", "B2"]
    sure_of_ring = {"ring": 0.95, "bracelet": 0.04, "necklace": 0.01}
    answer = recommender_for(store, sure_of_ring, threshold=0.99).recommend(PHOTO, k=2)
    assert answer.type_decided is False and answer.searched_types == ["ring"]  # enough rings
    assert [r.id for r in answer.results] == ["R1", "R2"]
    answer = recommender_for(store, sure_of_ring, threshold=0.99).recommend(PHOTO, k=4)
    assert answer.searched_types == ["ring", "bracelet"]  # two rings only: bracelets fill in
    assert [r.id for r in answer.results] == ["R1", "B1", "R2", "B2"]


def test_a_larger_pool_for_the_words_does_not_pull_in_unlikely_types(store):
    """Words re-rank a pool of 50 or more: counted against the pool, every type of a small shop
    was searched, and the re-ranking (without the type prior) mixed 2% types into the first 12.
    Only fewer results than the caller shows send the search on."""
    recommender = recommender_for(store, UNSURE, threshold=0.8)
    snap = recommender.snapshot
    likely = likely_types(["ring", "bracelet", "necklace"], np.array([0.6, 0.35, 0.05]))
    others = [("necklace", 0.05)]
    _, searched = recommender._search_likely_types(
        snap, np.array([1.0, 0.0], dtype=np.float32), 50, Filters(), likely, others, enough=3)
    assert searched == ["ring", "bracelet"]  # 4 found: enough for the 3 shown
    _, searched = recommender._search_likely_types(
        snap, np.array([1.0, 0.0], dtype=np.float32), 50, Filters(), likely, others, enough=5)
    assert searched == ["ring", "bracelet", "necklace"]


def test_a_confident_type_is_decided_and_searched_alone(store):
    answer = recommender_for(store, UNSURE, threshold=0.55).recommend(PHOTO, k=3)
    assert answer.type_decided is True
    assert answer.searched_types == ["ring"]
    assert [r.id for r in answer.results] == ["R1", "R2"]


def test_without_a_classifier_threshold_the_default_one_applies(store):
    assert recommender_for(store, UNSURE, threshold=None).recommend(PHOTO).type_decided is True
    low = {"ring": 0.45, "bracelet": 0.4, "necklace": 0.15}
    answer = recommender_for(store, low, threshold=None).recommend(PHOTO, k=5)
    assert answer.type_decided is False
    assert answer.searched_types == ["ring", "bracelet", "necklace"]  # three reach 0.9
    # B1 .99 + .1 log .4 = .898, R1 .95 + .1 log .45 = .870, N1 1.0 + .1 log .15 = .810 ...
    assert [r.id for r in answer.results] == ["B1", "R1", "N1", "R2", "B2"]


def test_a_type_the_caller_fixed_is_decided_even_when_the_classifier_is_unsure(store):
    recommender = recommender_for(store, UNSURE, threshold=0.99)
    for answer in (
        recommender.recommend(PHOTO, k=3, type="bracelet"),
        recommender.recommend(PHOTO, k=3, filters=Filters.build(types=["bracelet"])),
    ):
        assert answer.type_decided is True
        assert answer.searched_types == ["bracelet"]
        assert [r.id for r in answer.results] == ["B1", "B2"]
        assert answer.type == "ring"  # the detected type keeps its meaning


def test_alternatives_are_the_top_two_and_a_third_of_at_least_five_percent():
    classes = ["a", "b", "c", "d", "e"]
    probabilities = np.array([0.02, 0.5, 0.04, 0.3, 0.14])
    assert [(x.type, x.probability) for x in type_alternatives(classes, probabilities)] == [
        ("b", 0.5), ("d", 0.3), ("e", 0.14)]
    # a question offers a choice: the runner-up even when unlikely ("Is this a b?" had one button)
    assert [x.type for x in type_alternatives(classes, np.array([0, 0.97, 0.03, 0, 0]))] == [
        "b", "c"]
    assert [x.type for x in type_alternatives(["ring"], np.array([1.0]))] == ["ring"]
    assert likely_types(classes, probabilities) == pytest.approx({"b": 0.5, "d": 0.3, "e": 0.14})
    assert list(likely_types(classes, np.array([0, 0.92, 0.08, 0, 0]))) == ["b"]
    assert len(likely_types(classes, np.full(5, 0.2))) == 3  # never more than three


def test_the_json_shape_carries_the_decision(store):
    answer = recommender_for(store, UNSURE, threshold=0.8).recommend(PHOTO, k=2)
    data = json.loads(json.dumps(answer.to_dict()))
    assert data["type_decided"] is False
    assert data["type_alternatives"][0] == {"type": "ring", "probability": 0.6}
    assert {"photo", "type", "type_confidence", "results"} <= set(data)  # old fields stay


def test_the_text_output_says_what_it_is_unsure_of(store):
    from jewelrec.commands import format_table

    answer = recommender_for(store, UNSURE, threshold=0.8).recommend(PHOTO, k=2)
    answer.recognised = False
    text = format_table(answer)
    assert "not sure of the type: ring (60%) or bracelet (35%) or necklace (5%)?" in text
    assert "doesn't look like jewelry from this shop" in text
    sure = recommender_for(store, UNSURE, threshold=0.5).recommend(PHOTO, k=2)
    assert "not sure" not in format_table(sure) and "jewelry" not in format_table(sure)


def test_the_html_page_says_what_it_is_unsure_of(store, tmp_path):
    from PIL import Image

    from jewelrec.home import Home
    from jewelrec.html_report import render_page

    photo = tmp_path / "photo.png"
    Image.fromarray(PHOTO).save(photo)
    answer = recommender_for(store, UNSURE, threshold=0.8).recommend(PHOTO, k=1)
    answer.results = []  # the page's query part is what is tested here
    out = tmp_path / "page.html"
    render_page(Home(tmp_path / "home"), out, [(str(photo), answer)])
    page = out.read_text()
    assert "Not sure of the type: ring (60%) or bracelet (35%) or necklace (5%)" in page
    assert "searched ring, bracelet." in page


def test_percentages_never_overstate_an_unsure_answer():
    from jewelrec.commands import percent

    assert [percent(p) for p in (0.9996, 1.0, 0.6, 0.004, 0.0, 0.005)] == [
        ">99%", "100%", "60%", "<1%", "0%", "<1%"]


class ByBrightness:
    """A whole-photo head that says "earring" for a mostly light photo, "ring" otherwise: the
    small piece on a wide light backdrop is an "earring" until its framed crop is seen."""

    classes = ["earring", "ring"]
    whole_photo = True

    def predict_proba(self, images):
        light = np.array([float(np.mean(image) > 150) for image in images])
        return np.stack([light, 1 - light], axis=1)


def test_a_small_piece_on_a_plain_backdrop_is_typed_on_its_crop_too():
    """A ring shot from afar (a tenth of the photo) was typed on the whole photo alone."""
    from jewelrec.imaging.segment import Box
    from jewelrec.recommend import SMALL_PIECE_SHARE, small_piece, type_probabilities

    head = ByBrightness()
    photo = np.full((300, 300, 3), 240, np.uint8)
    photo[120:180, 120:180] = 40  # the piece: dark, a small share of the frame
    box = Box(110, 110, 190, 190)
    crop = photo[110:190, 110:190]
    assert box.area < SMALL_PIECE_SHARE * 300 * 300 and small_piece(head, photo, None, box)
    assert not small_piece(head, photo, box, box)  # the caller's crop: typed as it is
    assert not small_piece(head, photo, None, None)  # no piece framed: the whole photo
    assert not small_piece(head, photo, None, Box(0, 0, 280, 280))  # it fills the frame
    both = type_probabilities(head, [(photo, crop), (photo, None)])
    np.testing.assert_allclose(both, [[0.5, 0.5], [1.0, 0.0]])  # the mean, then as before
