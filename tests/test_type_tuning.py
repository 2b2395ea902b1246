"""The tuned type head: the last two stages of Lite1 (the default) or Lite0 train on the catalog's
photos, their weights are checked when loaded, it calibrates on held-out folds, Lite0's stage runs
on the home pass's trunk output, and it saves its own ONNX graph that answers the same after a
reload; without a budget or with one type it is the frozen head."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from jewelrec.home import FP32, INT8
from jewelrec.models.adaptation import ARRAY_PREFIX, adapted_network, tail_arrays, tail_prefixes
from jewelrec.models.backbone import BACKBONE, LITE1, Backbone, load_torch_model
from jewelrec.models.base import classifier_class
from jewelrec.models.heads import (
    LEGACY_TUNED_ONNX_NAMES,
    TUNED_HEAD,
    TUNED_LITE0_HEAD,
    TUNED_MIN_IMAGES,
    TUNED_NETWORK_STEM,
    TUNED_STAGE_STEM,
    EfficientNetTunedHeadClassifier,
    HeadSettings,
    tuned_onnx_name,
)
from jewelrec.models.quantization import ACTIVATIONS_VARIABLE
from jewelrec.models.type_tuning import TuneSettings, tune_type_network

KINDS = ["ring", "earring", "necklace"]


def _photos(count: int) -> tuple[list[np.ndarray], list[str]]:
    """Photos whose type shows in their shape: a square, a thin vertical bar, a wide band."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(count):
        kind = KINDS[i % 3]
        image = np.full((96, 128, 3), 235, np.uint8)
        shade = rng.integers(60, 180, 3, dtype=np.uint8)
        y, x = rng.integers(0, 16, 2)
        box = {"ring": (30, 70, 44, 84), "earring": (8, 88, 60, 68),
               "necklace": (20, 32, 6, 122)}[kind]
        image[box[0] + y // 2:box[1] + y // 2, box[2] + x // 2:box[3] + x // 2] = shade
        images.append(image)
        labels.append(kind)
    return images, labels


def test_stage_weights_are_checked_as_a_whole_stretch():
    arrays = tail_arrays(load_torch_model(), tail_prefixes(11))
    assert any(k.startswith(ARRAY_PREFIX + "_blocks.11.") for k in arrays)
    adapted_network(arrays)  # complete: loads
    missing_block = {k: v for k, v in arrays.items() if ".12." not in k}
    with pytest.raises(ValueError, match="do not match"):
        adapted_network(missing_block)
    one_weight = next(k for k in arrays if "_blocks.13." in k)
    with pytest.raises(ValueError, match="do not match"):
        adapted_network({k: v for k, v in arrays.items() if k != one_weight})


@pytest.mark.parametrize("settings, first_block, graph", [
    (TUNED_HEAD, 15, tuned_onnx_name(TUNED_NETWORK_STEM, FP32)),
    (TUNED_LITE0_HEAD, 11, tuned_onnx_name(TUNED_STAGE_STEM, FP32))])
def test_tuned_head_learns_calibrates_saves_its_network_and_reloads(
        tmp_path, settings, first_block, graph):
    images, labels = _photos(30)
    model = classifier_class("efficientnet-tuned")(replace(settings, tune_seconds=8.0))
    model.min_images = 20  # a real catalog needs TUNED_MIN_IMAGES; this one is for speed
    report = model.fit(images, labels, progress=False)
    imagenet = load_torch_model(settings.tune_network)
    before = tail_arrays(imagenet, tail_prefixes(first_block, len(imagenet._blocks)))
    tuned = model._tuned_runner().tail
    assert set(tuned) == set(before)
    assert any(not np.allclose(tuned[k], before[k]) for k in before)  # it learned
    assert model.tuned_head.coef.shape == (3, 1280) and not model.tuned_head.normalise
    assert model.backbone.tail is None  # the frozen head runs on the home's network
    # two style-cluster folds, each trained apart, predicted the photos they left out
    assert report.notes["calibration_folds"] == 2 and "heldout_accuracy" in report.notes
    assert report.notes["tune_fold_1_seconds"] > 0 and report.notes["tune_fold_2_seconds"] > 0
    assert model.tuned_head.temperature > 0 and 0 < model.head.decision_threshold <= 1.01
    probabilities = model.predict_proba(images[:6])
    assert probabilities.shape == (6, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path)
    assert (tmp_path / graph).is_file()
    legacy = tmp_path / LEGACY_TUNED_ONNX_NAMES[0]  # an earlier version's whole tuned network
    legacy.write_bytes(b"13 MB once")
    loaded = EfficientNetTunedHeadClassifier.load(tmp_path)
    assert loaded.settings.tune_network == settings.tune_network
    runs = loaded.tuned_network if settings.tune_network == LITE1 else loaded.tuned_stage
    assert not legacy.exists()
    assert runs.runtime == "onnxruntime" and not loaded.tuned_head.normalise
    assert runs.onnx_path == tmp_path / graph
    assert loaded.tuned_head.temperature == pytest.approx(model.tuned_head.temperature)
    np.testing.assert_allclose(loaded.predict_proba(images[:6]), probabilities, atol=1e-4)


def test_in_an_int8_home_the_tuned_lite1_gets_an_int8_graph_that_agrees(tmp_path, monkeypatch):
    """The tuned network computes as the home's backbone does: an int8 home saves (and reloads)
    the tuned Lite1 as an int8 graph of this CPU's activations, whose answers stay those of the
    float network; moved to a CPU of the other kind, the home derives its own graph."""
    monkeypatch.setenv(ACTIVATIONS_VARIABLE, "u8")  # as on a CPU with VNNI
    images, labels = _photos(30)
    home_network = Backbone(tmp_path / "home-int8.onnx", precision=INT8)
    model = EfficientNetTunedHeadClassifier(replace(TUNED_HEAD, tune_seconds=4.0),
                                            backbone=home_network)
    model.min_images = 20
    model.fit(images, labels, progress=False)
    float_answers = model.predict_proba(images[:6])  # the tuned network on torch, before saving
    folder = tmp_path / "classifier"
    model.save(folder)
    graph = folder / tuned_onnx_name(TUNED_NETWORK_STEM, INT8)
    assert graph.name == f"{TUNED_NETWORK_STEM}-int8-u8s8.onnx" and graph.is_file()
    assert not (folder / tuned_onnx_name(TUNED_NETWORK_STEM, FP32)).exists()
    loaded = EfficientNetTunedHeadClassifier.load(folder, backbone=home_network)
    assert loaded.tuned_network.precision == INT8
    assert loaded.tuned_network.runtime == "onnxruntime"
    np.testing.assert_allclose(loaded.predict_proba(images[:6]), float_answers, atol=0.1)
    # moved to a CPU without VNNI (where U8S8 saturates): a graph of its own kind from the saved
    # weights; the earlier version's graph, named without its kind, goes; the other kind's stays
    legacy = folder / f"{TUNED_NETWORK_STEM}-int8.onnx"
    legacy.write_bytes(b"quantised for whichever CPU trained it")
    monkeypatch.setenv(ACTIVATIONS_VARIABLE, "s8")
    moved = EfficientNetTunedHeadClassifier.load(folder, backbone=home_network)
    assert moved.tuned_network.onnx_path.name == f"{TUNED_NETWORK_STEM}-int8-s8s8.onnx"
    assert moved.tuned_network.activation == "s8" and moved.tuned_network.onnx_path.is_file()
    assert graph.is_file() and not legacy.exists()
    np.testing.assert_allclose(moved.predict_proba(images[:6]), float_answers, atol=0.1)


def test_the_budget_bounds_training_and_splits_index_the_photos():
    images, labels = _photos(12)
    splits = [(np.arange(0, 6), np.arange(6, 12)), (np.arange(6, 12), np.arange(0, 6))]
    settings = TuneSettings(views=0, epochs=50, batch=4, seconds=3)
    tuned = tune_type_network(images, labels, splits=splits, settings=settings,
                              crop_fraction=1.0, size=64, progress=False,
                              heldout_views=[(64, 1.0), (96, 0.8)])
    assert tuned.notes["tune_stopped_by"] == "time budget" and tuned.notes["tune_epochs"] < 50
    # out-of-fold logits in each view asked for: the one it learned on, and one it did not cache
    assert tuned.heldout_logits is not None and tuned.heldout_logits.shape == (2, 12, 3)
    assert np.abs(tuned.heldout_logits).sum(axis=2).min() > 0  # every photo held out once
    assert not np.allclose(tuned.heldout_logits[0], tuned.heldout_logits[1])
    assert tuned.notes["tune_fold_1_heldout_seconds"] >= 0


def test_the_budget_counts_the_views_too(monkeypatch):
    """Views that eat the budget leave the trainings only their floor (a tenth of their planned
    part), so the whole tuning ends near its budget instead of a budget after the views."""
    import time

    from jewelrec.models import type_tuning

    real = type_tuning._Views.__init__

    def slow_views(self, *args, **kwargs):
        real(self, *args, **kwargs)
        time.sleep(2.0)

    monkeypatch.setattr(type_tuning._Views, "__init__", slow_views)
    images, labels = _photos(12)
    splits = [(np.arange(0, 6), np.arange(6, 12)), (np.arange(6, 12), np.arange(0, 6))]
    settings = TuneSettings(views=0, epochs=500, batch=4, seconds=2.0)
    tuned = tune_type_network(images, labels, splits=splits, settings=settings,
                              crop_fraction=1.0, size=64, progress=False)
    trained = (tuned.notes["tune_fold_1_seconds"] + tuned.notes["tune_fold_2_seconds"]
               + tuned.notes["tune_seconds"])
    assert trained < 0.2 * settings.seconds + 0.5  # the floors, not the budget again
    assert tuned.notes["tune_stopped_by"] == "time budget"


def test_a_short_budget_samples_the_photos_learned_from(monkeypatch):
    """`train --tune-seconds 60` on 600 photos took 104 s: the views of every photo alone took
    68 s. The photos learned from are now sampled so their views fit the budget's share."""
    from jewelrec.models import type_tuning

    monkeypatch.setattr(type_tuning, "MIN_IMAGES", 6)
    monkeypatch.setattr(type_tuning, "_photo_seconds", lambda *args: 0.1)  # as if timed
    images, labels = _photos(30)
    settings = TuneSettings(views=0, epochs=2, batch=4, seconds=2.0)  # 0.45 x 2 s: 9 photos
    tuned = tune_type_network(images, labels, settings=settings, crop_fraction=1.0, size=64,
                              progress=False)
    assert tuned.notes["tune_images"] == 9
    monkeypatch.setattr(type_tuning, "_photo_seconds", lambda *args: 100.0)  # the floor
    tuned = tune_type_network(images, labels, settings=settings, crop_fraction=1.0, size=64,
                              progress=False)
    assert tuned.notes["tune_images"] == 6
    roomy = replace(settings, seconds=1000.0)  # everything fits: every photo, as before
    monkeypatch.setattr(type_tuning, "_photo_seconds", lambda *args: 0.1)
    tuned = tune_type_network(images, labels, settings=roomy, crop_fraction=1.0, size=64,
                              progress=False)
    assert tuned.notes["tune_images"] == 30


def test_held_out_photos_are_sampled_alike_only_when_they_do_not_fit():
    from jewelrec.models.type_tuning import MIN_HELDOUT, _held_within

    rng = np.random.default_rng(0)
    splits = [(np.arange(0, 600), np.arange(600, 1000)), (np.arange(400, 1000), np.arange(400))]
    assert _held_within(splits, 0.01, 8.0, rng) is splits  # 800 x 0.01 s fit in 8 s
    sampled = _held_within(splits, 0.01, 4.0, rng)  # half of them fit
    assert [len(held) for _, held in sampled] == [200, 200]
    for (train, held), (kept_train, kept) in zip(splits, sampled, strict=True):
        assert kept_train is train and set(kept) <= set(held) and list(kept) == sorted(kept)
    floor = _held_within(splits, 0.01, 0.01, rng)
    assert [len(held) for _, held in floor] == [MIN_HELDOUT, MIN_HELDOUT]
    assert _held_within([], 1.0, 0.0, rng) == []


def test_the_classifier_calibrates_on_the_held_out_photos_typed(monkeypatch):
    """Held-out photos sampled by the tuning (typing them costs a second view here, the zoomed
    one): the temperature and threshold are fitted on those alone, never on the zero logits of
    photos that were not typed."""
    from jewelrec.models import type_tuning

    monkeypatch.setattr(type_tuning, "MIN_HELDOUT", 3)
    monkeypatch.setattr(type_tuning, "HELDOUT_SHARE", 1e-9)  # nothing fits: the floor
    images, labels = _photos(24)
    model = classifier_class("efficientnet-tuned")(replace(TUNED_HEAD, tune_seconds=4.0))
    model.min_images = 12
    report = model.fit(images, labels, progress=False)
    assert report.notes["tune_heldout_photos"] == 3 * report.notes["calibration_folds"] > 0
    assert report.notes["heldout_photos"] == report.notes["tune_heldout_photos"]


def test_without_budget_or_types_it_is_the_frozen_head():
    images, labels = _photos(12)
    net = Backbone()  # one network for both: exported once
    for settings, kinds, least in ((replace(TUNED_HEAD, tune_seconds=0), labels, 2),
                                   (TUNED_HEAD, ["ring"] * len(images), 2),
                                   (TUNED_HEAD, labels, TUNED_MIN_IMAGES)):
        model = EfficientNetTunedHeadClassifier(settings, backbone=net)
        model.min_images = least
        report = model.fit(images, kinds, progress=False)
        assert model.backbone is net and model.tuned_head is None
        assert report.notes["tuned"].startswith("no")
        assert model.predict_proba(images[:2]).shape[0] == 2


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="tune_seconds"):
        HeadSettings(tune_seconds=-1)


def test_the_views_survive_a_saved_config_and_bad_views_are_refused():
    """A config.json holds the views as lists: they load as the settings were; a config written
    before the views existed types as it did (one view, the frozen head voting)."""
    import json
    from dataclasses import asdict

    assert HeadSettings(**json.loads(json.dumps(asdict(TUNED_HEAD)))) == TUNED_HEAD
    saved = {k: v for k, v in asdict(TUNED_HEAD).items()
             if k not in ("type_views", "frozen_votes")}
    before = EfficientNetTunedHeadClassifier(HeadSettings(**saved), backbone=Backbone())
    assert before.type_views() == [(256, TUNED_HEAD.crop_fraction)]
    assert before.settings.frozen_votes
    with pytest.raises(ValueError, match="multiple of"):
        replace(TUNED_HEAD, type_views=((250, 1.0),))
    with pytest.raises(ValueError, match="crop fraction"):
        replace(TUNED_HEAD, type_views=((288, 1.5),))
    with pytest.raises(ValueError, match="no views of its own"):
        replace(TUNED_LITE0_HEAD, type_views=((224, 1.0),))


def test_tune_budget_applies_only_to_the_tuning_classifier():
    from jewelrec.errors import JewelrecError
    from jewelrec.models.heads import EfficientNetHeadClassifier
    from jewelrec.train import with_tune_budget

    net = Backbone()
    model = with_tune_budget(EfficientNetTunedHeadClassifier(backbone=net), 60)
    assert model.settings.tune_seconds == 60
    with pytest.raises(JewelrecError, match="--tune-seconds applies to the classifier"):
        with_tune_budget(EfficientNetHeadClassifier(backbone=net), 60)
    with pytest.raises(JewelrecError, match="between 0 and 86400"):
        with_tune_budget(EfficientNetTunedHeadClassifier(backbone=net), -1)


def test_the_stage_on_the_trunk_equals_the_whole_tuned_network(tmp_path):
    """The stage's ONNX graph on the home pass's trunk output gives the GeM features the whole
    tuned network gives on torch, at 224 and at another size."""
    import torch

    from jewelrec.models.backbone import GEM_POWER, preprocess_batch
    from jewelrec.models.tuned_stage import TunedStage

    network = load_torch_model()
    tail = tail_arrays(network, tail_prefixes(11))
    rng = np.random.default_rng(1)
    for name in [k for k in tail if k.endswith("weight")][:6]:  # a stage unlike ImageNet's
        tail[name] = tail[name] * rng.uniform(0.5, 1.5, tail[name].shape).astype(np.float32)
    whole = adapted_network(tail)
    stage = TunedStage(tmp_path / tuned_onnx_name(TUNED_STAGE_STEM, FP32), tail)
    assert stage.prepare() and stage.runtime == "onnxruntime"
    home = Backbone(tmp_path / "home.onnx")
    images, _ = _photos(3)
    for size in (224, 288):
        batch = preprocess_batch(images, 1.0, size)
        with torch.inference_mode():
            maps = whole.feature_maps(torch.from_numpy(batch)).clamp(min=1e-6)
            expected = maps.pow(GEM_POWER).mean(dim=(2, 3)).pow(1 / GEM_POWER).numpy()
        got = home.staged(images, stage, crop_fraction=1.0, size=size)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_a_stage_starting_elsewhere_is_refused():
    from jewelrec.models.tuned_stage import TunedStage

    with pytest.raises(ValueError, match="train the classifier again"):
        TunedStage(None, tail_arrays(load_torch_model(), tail_prefixes(12)))


@pytest.mark.parametrize("settings, passes_per_photo", [
    (TUNED_LITE0_HEAD, {BACKBONE: 1}),
    (TUNED_HEAD, {LITE1: 2}),
    (replace(TUNED_HEAD, type_views=(), frozen_votes=True), {BACKBONE: 1, LITE1: 1})])
def test_the_tuned_head_costs_one_pass_per_photo_and_view(monkeypatch, settings,
                                                          passes_per_photo):
    """Both heads of a tuned Lite0 read one pass of the home's network per photo; a tuned Lite1
    runs once per view it types on (the default: two, and the frozen head does not vote, so the
    home's network does not run); a photo seen again costs none."""
    images, labels = _photos(30)
    model = classifier_class("efficientnet-tuned")(replace(settings, tune_seconds=4.0))
    model.min_images = 20
    model.fit(images, labels, progress=False)
    passes: dict[str, int] = {}
    real = Backbone._run

    def counting(self, batch, outputs):
        passes[self.architecture] = passes.get(self.architecture, 0) + len(batch)
        return real(self, batch, outputs)

    monkeypatch.setattr(Backbone, "_run", counting)
    fresh = [np.ascontiguousarray(im[::-1]) for im in images[:5]]  # not remembered yet
    assert model.predict_proba(fresh).shape == (5, 3)
    assert passes == {name: 5 * count for name, count in passes_per_photo.items()}
    model.predict_proba(fresh)
    assert passes == {name: 5 * count for name, count in passes_per_photo.items()}


def test_the_held_out_passes_are_reserved_by_their_views_area_and_the_cached_view_is_free():
    from jewelrec.models.type_tuning import heldout_pass_seconds

    trained = (256, 1.0)
    assert heldout_pass_seconds(0.02, 100, [trained], trained) == 0  # cached trunk outputs
    one = heldout_pass_seconds(0.02, 100, [(256, 0.8)], trained)
    assert one == pytest.approx(2.0)  # a pass per photo at the trained size
    both = heldout_pass_seconds(0.02, 100, [(512, 1.0), (256, 0.8), trained], trained)
    assert both == pytest.approx(2.0 * 4 + 2.0)
