"""Several pieces in one photo (issue 14): find_pieces on synthetic set photos, and
`jewelrec synth --sets` writing photos with their true boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jewelrec.catalog.synthetic import SET_KINDS, product_spec, render_set, render_view
from jewelrec.errors import ImageError, NotReadyError
from jewelrec.models.pieces import Piece, find_pieces, iou

TINY_SEED, TINY_PRODUCTS = 3, 24  # tests/conftest.py's tiny catalog


@pytest.fixture(scope="module")
def classifier(tiny_home):
    """The tiny home's trained type classifier (the default efficientnet head)."""
    from jewelrec.home import Home
    from jewelrec.models.backbone import Backbone
    from jewelrec.models.base import load_classifier

    home = Home(tiny_home)
    return load_classifier(home.models_dir, home.settings().classifier,
                           backbone=Backbone.for_home(home))


def first_of_type(kind: str, skip: int = 0):
    specs = [product_spec(TINY_SEED, i) for i in range(TINY_PRODUCTS)]
    return [s for s in specs if s.type == kind][skip]


class StubClassifier:
    """Says `answer` for every crop; counts the calls and keeps the crops it was shown."""

    def __init__(self, classes: list[str], answer: str, *, whole_photo: bool = True) -> None:
        self.classes, self.answer, self.calls = classes, answer, 0
        self.whole_photo = whole_photo  # as the default head: a query types the whole photo
        self.seen: list[np.ndarray] = []

    def predict_proba(self, images):
        self.calls += 1
        self.seen += list(images)
        out = np.full((len(images), len(self.classes)), 0.02, np.float32)
        out[:, self.classes.index(self.answer)] = 1 - 0.02 * (len(self.classes) - 1)
        return out


def matched(found: list[Piece], truth: list) -> list[float]:
    return [max((iou(p.box, t.box) for p in found), default=0.0) for t in truth]


def test_a_two_piece_set_on_a_plain_background_gives_both_pieces(classifier):
    specs = [first_of_type("necklace"), first_of_type("earring")]
    img, truth = render_set(specs, 0, size=320, background="plain")
    found = find_pieces(Image.fromarray(img), classifier)
    assert len(found) == 2, found
    assert min(matched(found, truth)) >= 0.5, (found, truth)
    assert {p.type for p in found} == {"necklace", "earring"}
    assert found[0].score >= found[1].score


def test_rings_side_by_side_stay_two_pieces(classifier):
    """Two alike objects side by side are one piece only when the head says earrings."""
    specs = [first_of_type("ring"), first_of_type("ring", skip=1)]
    img, truth = render_set(specs, 1, size=320, background="plain")
    found = find_pieces(Image.fromarray(img), classifier)
    assert len(found) == 2, found
    assert min(matched(found, truth)) >= 0.5


@pytest.mark.parametrize("kind", ["earring", "necklace", "ring", "bracelet"])
def test_a_single_piece_photo_gives_one_piece(classifier, kind):
    spec = first_of_type(kind)
    img = render_view(spec, 5, 256, shopper=True)
    found = find_pieces(Image.fromarray(img), classifier)
    assert len(found) == 1, found
    assert found[0].type == kind


def test_boxes_lie_within_the_photo_and_there_is_always_a_piece(classifier):
    rng = np.random.default_rng(0)
    photos = [
        np.full((40, 60, 3), 200, np.uint8),  # nothing on it
        rng.integers(0, 255, size=(48, 80, 3), dtype=np.uint8),  # noise
        render_set([first_of_type("bracelet"), first_of_type("ring")], 2, size=256,
                   background="textured")[0],
        np.full((1, 1, 3), 9, np.uint8),
    ]
    for img in photos:
        found = find_pieces(Image.fromarray(img), classifier)
        assert 1 <= len(found) <= 4
        h, w = img.shape[:2]
        for piece in found:
            x0, y0, x1, y1 = piece.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (piece, img.shape)
            assert piece.type in classifier.classes and 0 <= piece.confidence <= 1


def test_max_pieces_and_the_json_shape(classifier):
    specs = [first_of_type("necklace"), first_of_type("earring"), first_of_type("ring")]
    img, _ = render_set(specs, 3, size=320, background="plain")
    found = find_pieces(Image.fromarray(img), classifier, max_pieces=1)
    assert len(found) == 1
    answer = found[0].to_dict()
    assert set(answer) == {"box", "type", "confidence"}
    assert all(isinstance(v, int) for v in answer["box"]) and len(answer["box"]) == 4
    json.dumps(answer)


def test_crops_are_typed_together_and_a_grey_or_mode_p_image_works():
    specs = [first_of_type("necklace"), first_of_type("ring")]
    img, truth = render_set(specs, 4, size=256, background="plain")
    stub = StubClassifier(["earring", "necklace", "ring"], "ring")
    found = find_pieces(Image.fromarray(img).convert("P"), stub)
    assert stub.calls == 1
    assert len(found) == 2 and min(matched(found, truth)) >= 0.5
    assert find_pieces(Image.fromarray(img).convert("L"), stub)


@pytest.mark.parametrize("whole_photo", [True, False])
def test_a_lone_piece_is_typed_on_what_the_query_types_and_nothing_else(whole_photo):
    """A photo of one piece on a clean backdrop: the only crop typed is the query's own view of
    it (the whole photo for a head that wants the context, else imaging/focus.py's framing), so
    the query's typing is answered by the backbone's feature memory, not a second pass."""
    from jewelrec.imaging.focus import focus_on_piece

    img = render_view(first_of_type("necklace"), 5, 256, shopper=True)
    stub = StubClassifier(["earring", "necklace", "ring"], "necklace", whole_photo=whole_photo)
    found = find_pieces(Image.fromarray(img), stub)
    assert len(found) == 1 and found[0].type == "necklace"
    framed, box = focus_on_piece(img)
    assert box is not None  # the query's framing differs from the whole photo
    expected = img if whole_photo else framed
    assert len(stub.seen) == 1 and np.array_equal(stub.seen[0], expected)
    x0, y0, x1, y1 = found[0].view
    assert np.array_equal(img[y0:y1, x0:x1], expected)


def test_the_two_of_a_pair_the_head_calls_earrings_are_not_typed_alone():
    img, truth = render_set([first_of_type("earring")], 7, size=256, background="plain")
    stub = StubClassifier(["earring", "ring"], "earring")
    found = find_pieces(Image.fromarray(img), stub)
    assert len(found) == 1 and min(matched(found, truth)) >= 0.5
    assert len(stub.seen) == 1 and np.array_equal(stub.seen[0], img)  # the pair is the photo
    ring = StubClassifier(["earring", "ring"], "ring")  # twins, but the head says rings
    assert len(find_pieces(Image.fromarray(img), ring)) == 2
    assert len(ring.seen) == 3  # the pair, then each alone


class QuickStubClassifier(StubClassifier):
    """A classifier with a cheaper answer (as a tuned head's frozen head): it says `quick` for
    every crop, the classifier itself `answer`."""

    def __init__(self, classes: list[str], answer: str, quick: str) -> None:
        super().__init__(classes, answer)
        self.quick = StubClassifier(classes, quick)
        self.quick_proba = self.quick.predict_proba


def test_a_cheaper_answer_types_the_candidates_and_the_classifier_the_chosen_pieces():
    """The classifier itself types only the query's own view and the pieces chosen, each once;
    the candidates on the way get the cheaper answer; the pieces carry the classifier's types."""
    specs = [first_of_type("necklace"), first_of_type("ring")]
    img, truth = render_set(specs, 4, size=256, background="plain")
    stub = QuickStubClassifier(["earring", "necklace", "ring"], "necklace", quick="ring")
    found = find_pieces(Image.fromarray(img), stub)
    assert len(found) == 2 and min(matched(found, truth)) >= 0.5
    assert {p.type for p in found} == {"necklace"}  # settled by the classifier itself
    views = [img[p.view[1]:p.view[3], p.view[0]:p.view[2]] for p in found]
    assert len(stub.seen) == len(views)  # each chosen piece once, nothing else
    assert all(any(np.array_equal(v, s) for s in stub.seen) for v in views)
    assert len(stub.quick.seen) >= 2  # the candidates

    lone = render_view(first_of_type("necklace"), 5, 256, shopper=True)
    stub = QuickStubClassifier(["earring", "necklace", "ring"], "necklace", quick="ring")
    found = find_pieces(Image.fromarray(lone), stub)
    assert len(found) == 1 and found[0].type == "necklace"
    assert len(stub.seen) == 1 and np.array_equal(stub.seen[0], lone)  # the query's view
    assert stub.quick.seen == []


def test_twins_the_head_calls_earrings_are_one_piece_and_different_rings_are_not():
    stub = StubClassifier(["earring", "ring"], "earring")
    img, truth = render_set([first_of_type("earring"), first_of_type("ring")], 6, size=320,
                            background="plain")
    found = find_pieces(Image.fromarray(img), stub)
    assert len(found) == 2, (found, truth)
    assert min(matched(found, truth)) >= 0.5
    img, truth = render_set([first_of_type("ring"), first_of_type("ring", skip=1)], 1,
                            size=256, background="plain")
    assert len(find_pieces(Image.fromarray(img), stub)) == 2


def test_bad_input_is_named():
    stub = StubClassifier(["ring", "earring"], "ring")
    with pytest.raises(ImageError):
        find_pieces("photo.jpg", stub)
    with pytest.raises(ImageError):
        find_pieces(np.zeros((10, 10), np.uint8), stub)
    with pytest.raises(ImageError):
        find_pieces(Image.new("RGB", (0, 5)), stub)
    with pytest.raises(ValueError, match="max_pieces"):
        find_pieces(Image.new("RGB", (8, 8)), stub, max_pieces=0)
    with pytest.raises(NotReadyError):
        find_pieces(Image.new("RGB", (8, 8)), type("Untrained", (), {"classes": []})())


def test_synth_sets_writes_photos_and_true_boxes(tmp_path):
    from jewelrec.cli import main

    out = tmp_path / "demo"
    code = main(["synth", "--out", str(out), "--products", "12", "--views", "1", "--sets",
                 str(len(SET_KINDS) + 1), "--no-progress"])
    assert code == 0
    document = json.loads((out / "sets" / "sets.json").read_text())
    photos = document["photos"]
    assert len(photos) == len(SET_KINDS) + 1
    assert {p["kind"] for p in photos} == set(SET_KINDS)
    for photo in photos:
        with Image.open(out / "sets" / photo["file"]) as img:
            w, h = img.size
        assert 2 <= len(photo["pieces"]) <= 3
        for piece in photo["pieces"]:
            x0, y0, x1, y1 = piece["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert piece["type"] in ("earring", "necklace", "ring", "bracelet")
        boxes = [p["box"] for p in photo["pieces"]]
        assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_synth_sets_refuses_a_catalog_without_the_types(tmp_path):
    from jewelrec.cli import EXIT_USAGE, main

    code = main(["synth", "--out", str(tmp_path / "d"), "--products", "2", "--views", "1",
                 "--sets", "1", "--no-progress"])
    assert code == EXIT_USAGE
    assert not (tmp_path / "d" / "sets" / "sets.json").exists()


@pytest.mark.parametrize("level", [200, 120])
def test_a_blank_photo_is_one_piece_the_whole_frame(classifier, level, monkeypatch):
    """A uniform light-grey frame gave three "pieces" on the demo home (the activation maps of
    a blank image are the network's padding): they are not consulted, the photo is one piece."""
    from jewelrec.models import pieces

    def no_maps(*args, **kwargs):
        raise AssertionError("activation maps computed for a blank photo")

    monkeypatch.setattr(pieces, "class_maps", no_maps)
    blank = np.full((300, 300, 3), level, np.uint8)
    found = find_pieces(blank, classifier)
    assert [p.box for p in found] == [(0, 0, 300, 300)]
    with pytest.raises(AssertionError, match="activation maps"):  # a busy photo: read again
        find_pieces(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8),
                    classifier)
