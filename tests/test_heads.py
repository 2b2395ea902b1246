"""The efficientnet-head type classifier: probabilities that sum to 1 over sorted classes, a
temperature fitted to held-out logits, and a save/load round trip that changes nothing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jewelrec.errors import NotReadyError
from jewelrec.models.backbone import Backbone
from jewelrec.models.heads import (
    MAX_DECISION_THRESHOLD,
    UNDECIDED,
    EfficientNetHeadClassifier,
    HeadSettings,
    _calibration_splits,
    decision_threshold,
    fit_head,
    fit_temperature,
    head_probabilities,
    heldout_answers_note,
    saved_threshold,
    threshold_for,
    wilson_lower_bound,
)

REAL_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-jewelry"
PER_TYPE = 6


def real_photos() -> tuple[list[np.ndarray], list[str]]:
    """A few photos per type, each from a different source repository where possible."""
    with open(REAL_PHOTOS / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images, labels = [], []
    for kind in ("bracelet", "earring", "necklace", "ring"):
        picked, repos = [], set()
        for row in rows:
            if row["type"] == kind and row["source_repo"] not in repos and len(picked) < PER_TYPE:
                picked.append(row)
                repos.add(row["source_repo"])
        for row in picked:
            images.append(np.asarray(Image.open(REAL_PHOTOS / row["file"]).convert("RGB")))
            labels.append(kind)
    return images, labels


def drawn_shapes() -> tuple[list[np.ndarray], list[str]]:
    """Stand-ins when the real photos are absent: rings (circles) and necklaces (open curves)."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(2 * PER_TYPE):
        canvas = Image.new("RGB", (160, 160), "white")
        draw = ImageDraw.Draw(canvas)
        x, y, r = (int(v) for v in rng.integers(50, 110, size=3) // (1, 1, 2))
        colour = tuple(int(c) for c in rng.integers(120, 230, size=3))
        if i % 2:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=6)
        else:
            draw.arc((x - 2 * r, y - 3 * r, x + 2 * r, y + r), 20, 160, fill=colour, width=4)
        images.append(np.asarray(canvas))
        labels.append("ring" if i % 2 else "necklace")
    return images, labels


@pytest.fixture(scope="module")
def photos() -> tuple[list[np.ndarray], list[str]]:
    return real_photos() if (REAL_PHOTOS / "manifest.csv").exists() else drawn_shapes()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Backbone:
    """One runtime for the module's models (its feature cache spares the tests a pass)."""
    return Backbone(tmp_path_factory.mktemp("onnx") / "efficientnet-lite0.onnx")


@pytest.fixture(scope="module")
def features(photos, backbone) -> np.ndarray:
    return backbone.features(photos[0])


def test_head_gives_probabilities_over_sorted_classes(photos, features):
    labels = photos[1]
    head, notes = fit_head(features, labels, HeadSettings())
    probabilities = head_probabilities(head, features)
    assert head.classes == sorted(set(labels))
    assert probabilities.shape == (len(labels), len(head.classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert head.temperature > 0 and notes["temperature"] == head.temperature
    training_accuracy = np.mean(np.array(head.classes)[probabilities.argmax(1)] == labels)
    assert training_accuracy >= 0.9


def test_two_types_work_too(photos, features):
    labels = np.array(photos[1])
    keep = np.isin(labels, sorted(set(labels))[:2])
    head, _ = fit_head(features[keep], labels[keep], HeadSettings())
    assert head_probabilities(head, features[keep]).shape == (keep.sum(), 2)


def test_a_type_with_one_photo_leaves_the_others_calibrated(photos, features):
    """A one-photo type just added turned calibration off for the whole catalog (temperature 1,
    threshold 0.5: answers "decided" at 50%): the lone photo now always trains."""
    labels = np.array(photos[1])
    common = sorted(set(labels))[:2]
    keep = np.flatnonzero(np.isin(labels, common))
    lone = np.flatnonzero(~np.isin(labels, common))[:1]
    rows = np.concatenate([keep, lone])
    head, notes = fit_head(features[rows], labels[rows], HeadSettings(calibration="stratified"))
    assert len(head.classes) == 3 and "heldout_accuracy" in notes
    assert head.temperature != 1.0 and head.decision_threshold != 0.5


def test_temperature_recovers_a_known_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(4000, 3))
    tempered = np.exp(logits / 2.0)
    cumulative = np.cumsum(tempered / tempered.sum(1, keepdims=True), axis=1)
    labels = (rng.random((4000, 1)) > cumulative).sum(1)  # drawn from softmax(logits / 2)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_classifier_round_trip_is_identical(photos, backbone, tmp_path):
    images, labels = photos
    classifier = EfficientNetHeadClassifier(backbone=backbone)
    with pytest.raises(NotReadyError):
        classifier.predict_proba(images[:1])
    report = classifier.fit(images, labels, progress=False)
    assert report.notes["temperature"] > 0 and classifier.classes == sorted(set(labels))
    classifier.save(tmp_path / "classifier")
    loaded = EfficientNetHeadClassifier.load(tmp_path / "classifier", backbone=backbone)
    assert loaded.classes == classifier.classes and loaded.settings == classifier.settings
    np.testing.assert_array_equal(loaded.predict_proba(images), classifier.predict_proba(images))


def test_loading_another_model_is_refused(photos, features, tmp_path):
    from jewelrec.models.backbone import EfficientNetEmbedder, RetrievalSettings

    EfficientNetEmbedder(RetrievalSettings(centre=False, pca_dim=None)).save(tmp_path / "embedder")
    with pytest.raises(NotReadyError, match="efficientnet-head"):
        EfficientNetHeadClassifier.load(tmp_path / "embedder")


def test_a_one_type_catalog_gets_a_head_that_is_always_decided(features):
    head, notes = fit_head(features[:5], ["ring"] * 5, HeadSettings())
    probabilities = head_probabilities(head, features)
    assert head.classes == ["ring"] and head.decision_threshold == 0.0
    np.testing.assert_allclose(probabilities, 1.0)


def test_decision_threshold_keeps_the_confident_answers_right():
    # confidences 0.9..0.5; the two most confident are right, the third wrong, then right again
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])
    truth = np.array([0, 0, 1, 0, 0])
    assert decision_threshold(probabilities, truth, target=0.95, z=0) == pytest.approx(0.8)
    assert decision_threshold(probabilities, truth, target=0.78, z=0) == pytest.approx(0.5)
    assert decision_threshold(probabilities, np.array([1, 1, 1, 1, 1]), z=0) == UNDECIDED
    # by default the share must hold at its lower bound: two right answers prove little
    assert decision_threshold(probabilities, truth, target=0.95) == UNDECIDED
    # every held-out answer right at a saturated 1.0: a query at 0.999997 is still decided
    saturated = np.array([[1.0, 0.0]] * 50)
    assert decision_threshold(saturated, np.zeros(50, int)) == MAX_DECISION_THRESHOLD < 1.0
    # a head saved before keeps 1.0 in its config: read lowered, "never decide" kept
    assert saved_threshold(1.0) == MAX_DECISION_THRESHOLD
    assert saved_threshold(UNDECIDED) == UNDECIDED and saved_threshold(0.7) == 0.7


def test_the_threshold_margin_shrinks_as_held_out_photos_grow():
    """96% right at every confidence: the point rule decides everything; the bound decides
    everything only once there are enough photos for 96% to be surely above 95%."""
    for n, decided_all in ((100, False), (20000, True)):
        confidence = np.linspace(0.99, 0.5, n)
        probabilities = np.stack([confidence, 1 - confidence], axis=1)
        truth = (np.arange(n) % 25 == 7).astype(int)  # every 25th answer wrong: 96% right
        assert decision_threshold(probabilities, truth, z=0) == pytest.approx(0.5)
        assert (decision_threshold(probabilities, truth, z=1) == pytest.approx(0.5)) == decided_all
    assert wilson_lower_bound(np.array([96.0]), np.array([100.0]), 1.0)[0] == pytest.approx(
        0.9354, abs=1e-3)  # the textbook value for 96 of 100


def test_the_kept_heldout_answers_give_back_the_threshold_of_any_margin():
    """What the training notes keep is enough to weigh another margin without training."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 4)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.where(rng.random(300) < 0.85, probabilities.argmax(1), rng.integers(0, 4, 300))
    note = heldout_answers_note(probabilities, truth)
    assert len(note["confidence"]) == len(note["right"]) == 300
    assert note["confidence"] == sorted(note["confidence"], reverse=True)
    for z in (0.0, 0.5, 1.0):
        kept = threshold_for(np.array(note["confidence"]), np.array(note["right"], bool),
                             target=0.9, z=z)
        assert kept == pytest.approx(decision_threshold(probabilities, truth, 0.9, z), abs=1e-4)


def test_cluster_calibration_never_trains_on_the_cluster_it_predicts():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 10  # five well separated "shop styles"
    x = np.concatenate([c + rng.normal(size=(20, 16)) for c in centres])
    style = np.repeat(np.arange(5), 20)
    y = np.tile([0, 1], 50)
    splits = _calibration_splits(x, y, "clusters", seed=0)
    assert len(splits) >= 2
    for train, held in splits:
        assert not set(style[train]) & set(style[held])
    random_splits = _calibration_splits(x, y, "stratified", seed=0)
    assert any(set(style[train]) & set(style[held]) for train, held in random_splits)


def test_default_head_classifies_the_whole_photo_and_saves_its_threshold(
    photos, backbone, tmp_path
):
    images, labels = photos
    classifier = EfficientNetHeadClassifier(backbone=backbone)
    assert classifier.whole_photo and classifier.settings.pooling == "rmac"
    report = classifier.fit(images, labels, progress=False)
    assert 0.0 <= classifier.decision_threshold <= UNDECIDED
    assert report.notes["decision_threshold"] == classifier.decision_threshold
    classifier.save(tmp_path / "classifier")
    loaded = EfficientNetHeadClassifier.load(tmp_path / "classifier", backbone=backbone)
    assert loaded.decision_threshold == classifier.decision_threshold


def test_when_the_styles_are_the_types_calibration_falls_back_to_random_folds():
    # one studio, one look per type (the demo catalog): holding a style out would hold a type out
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 30)
    x = rng.normal(size=(5, 8))[y] * 20 + rng.normal(size=(150, 8))
    for train, held in _calibration_splits(x, y, "clusters", seed=0):
        assert set(y[train]) == set(range(5)) and len(set(y[held])) > 1


def test_train_warns_when_the_held_out_styles_were_typed_no_better_than_chance(tmp_path):
    """A starved tuning budget on a shop with one look per type: held-out accuracy 0.043, every
    answer near even odds and never decided, and `train` said nothing."""
    from jewelrec.models.base import FitReport
    from jewelrec.train import TrainedModel

    def trained(accuracy: float, classes: int = 2, kind: str = "classifier") -> TrainedModel:
        notes = {"heldout_accuracy": accuracy, "classes": classes}
        return TrainedModel(kind, "efficientnet-tuned", tmp_path, 1.0, FitReport(notes=notes))

    assert "no better than chance" in trained(0.043).warnings[0]
    assert "warnings" in trained(0.043).to_dict()
    assert trained(0.9).warnings == [] and trained(0.3, classes=4).warnings == []
    assert trained(0.043, kind="embedder").warnings == []
