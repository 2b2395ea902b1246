"""The prototype's two models (seed CNN classifier, conv autoencoder) and their shared training
and weights helpers, on a few dozen PIL-drawn pictures trained for one or two epochs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from jewelrec.errors import JewelrecError, NotReadyError
from jewelrec.models import seed_cnn
from jewelrec.models.autoencoder import CODE_DIM, AutoencoderEmbedder
from jewelrec.models.base import Embedder, FitReport, TypeClassifier
from jewelrec.models.seed_cnn import SeedCNNClassifier
from jewelrec.models.training import plot_loss_curves, to_tensor_batch, train_val_split
from jewelrec.models.weights import load_weights, save_weights

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "gold": (212, 175, 55)}


def draw(shape: str, colour: str, rng: np.random.Generator, side: int = 64) -> np.ndarray:
    """One piece on a white background: a square, a circle, or a pair of small circles."""
    image = Image.new("RGB", (side, side), "white")
    pen = ImageDraw.Draw(image)
    radius = int(rng.integers(side // 6, side // 4))
    cx, cy = (int(v) for v in rng.integers(radius + 2, side - radius - 2, size=2))
    fill = COLOURS[colour]
    if shape == "square":
        pen.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "circle":
        pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:  # "pair": two earrings side by side, well apart
        r = side // 10
        y = int(rng.integers(r + 2, side - r - 2))
        for x in (side // 4, 3 * side // 4):
            pen.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    return np.asarray(image)


def drawn_set(n: int, seed: int, kinds: list[tuple[str, str, str]]):
    """n images cycling through (label, shape, colour) kinds."""
    rng = np.random.default_rng(seed)
    picks = [kinds[i % len(kinds)] for i in range(n)]
    return [draw(shape, colour, rng) for _, shape, colour in picks], [p[0] for p in picks]


THREE_TYPES = [
    ("ring", "square", "red"),
    ("necklace", "circle", "blue"),
    ("bracelet", "square", "gold"),
]


@pytest.fixture(scope="module")
def tiny_set():
    return drawn_set(24, seed=0, kinds=THREE_TYPES)


@pytest.fixture(scope="module")
def trained_classifier(tiny_set):
    images, labels = tiny_set
    model = SeedCNNClassifier()
    report = model.fit(images, labels, epochs=2, progress=False)
    return model, report


@pytest.fixture(scope="module")
def trained_autoencoder(tiny_set):
    model = AutoencoderEmbedder()
    report = model.fit(tiny_set[0], tiny_set[1], epochs=1, progress=False)
    return model, report


def test_to_tensor_batch_resizes_and_keeps_rgb_order():
    red = np.zeros((37, 80, 3), dtype=np.uint8)
    red[..., 0] = 255
    batch = to_tensor_batch([red, red[:10]], 100)
    assert batch.shape == (2, 3, 100, 100) and batch.dtype == torch.float32
    assert torch.all(batch[:, 0] == 1.0) and torch.all(batch[:, 1:] == 0.0)


def test_train_val_split_is_disjoint_complete_and_seeded():
    train, val = train_val_split(24, 0.1, seed=5)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(24))
    assert np.array_equal(val, train_val_split(24, 0.1, seed=5)[1])
    assert len(train_val_split(3, 0.1, seed=0)[1]) == 1  # tiny sets still validate on something
    assert len(train_val_split(1, 0.1, seed=0)[1]) == 0


def test_classifier_probabilities(trained_classifier, tiny_set):
    model, report = trained_classifier
    assert isinstance(model, TypeClassifier)
    assert model.classes == ["bracelet", "necklace", "ring"]
    proba = model.predict_proba(tiny_set[0][:5])
    assert proba.shape == (5, 3) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5) and (proba >= 0).all()
    assert model.predict(tiny_set[0][:2])[0] in model.classes
    assert len(report.train_loss) == len(report.val_loss) == len(report.val_accuracy) == 2
    assert report.notes["train_samples"] + report.notes["val_samples"] == 24


def test_autoencoder_embeddings_are_unit_vectors(trained_autoencoder, tiny_set):
    model, report = trained_autoencoder
    assert isinstance(model, Embedder)
    vectors = model.embed(tiny_set[0][:7])
    assert model.dim == CODE_DIM == 8 * 13 * 13
    assert vectors.shape == (7, CODE_DIM) and vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    assert model.embed([]).shape == (0, CODE_DIM)
    assert model.reconstruct(tiny_set[0][:2]).shape == (2, 100, 100, 3)
    assert len(report.train_loss) == len(report.val_loss) == 1 and not report.val_accuracy


def test_untrained_models_say_to_train():
    with pytest.raises(NotReadyError, match="jewelrec train"):
        SeedCNNClassifier().predict_proba([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(NotReadyError, match="jewelrec train"):
        AutoencoderEmbedder().embed([np.zeros((8, 8, 3), np.uint8)])


def test_classifier_needs_two_types():
    images, labels = drawn_set(4, seed=0, kinds=[("ring", "square", "red")])
    with pytest.raises(JewelrecError, match="at least two types"):
        SeedCNNClassifier().fit(images, labels, epochs=1, progress=False)


@pytest.mark.parametrize("which", ["classifier", "autoencoder"])
def test_save_load_round_trip_gives_identical_outputs(
    which, trained_classifier, trained_autoencoder, tiny_set, tmp_path
):
    model = (trained_classifier if which == "classifier" else trained_autoencoder)[0]
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    run = "predict_proba" if which == "classifier" else "embed"
    assert np.array_equal(getattr(model, run)(tiny_set[0]), getattr(loaded, run)(tiny_set[0]))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == model.name and config["version"] == 1
    assert config["image_size"] == 100 and config["weights_sha256"]
    if which == "classifier":
        assert config["classes"] == loaded.classes == model.classes


def test_save_weights_records_fingerprint_and_refuses_nameless_config(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_weights(tmp_path, state, {"model": "toy", "training_data_fingerprint": "abc123"})
    loaded, config = load_weights(tmp_path)
    assert np.array_equal(loaded["w"], state["w"].numpy())
    assert config["training_data_fingerprint"] == "abc123"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "weights.safetensors"]
    with pytest.raises(ValueError):
        save_weights(tmp_path, state, {"version": 1})


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "unhashed-garbage",
        "bad-config",
        "missing-weights",
        "wrong-model",
        "empty-folder",
    ],
)
def test_damaged_model_folder_gives_not_ready_error(damage, trained_classifier, tmp_path):
    model = trained_classifier[0]
    model.save(tmp_path)
    weights, config_path = tmp_path / "weights.safetensors", tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    if damage == "garbage":
        weights.write_bytes(b"\x00not a safetensors file" * 10)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "unhashed-garbage":  # no hash to compare: the safetensors reader must refuse
        weights.write_bytes(b"{{{{ garbage")
        config_path.write_text(
            json.dumps({k: v for k, v in config.items() if k != "weights_sha256"})
        )
    elif damage == "bad-config":
        config_path.write_text("{ not json")
    elif damage == "missing-weights":
        weights.unlink()
    elif damage == "wrong-model":
        config_path.write_text(json.dumps({**config, "model": "autoencoder"}))
    else:
        weights.unlink()
        config_path.unlink()
    with pytest.raises(NotReadyError, match="jewelrec train"):
        SeedCNNClassifier.load(tmp_path)


def test_weights_that_do_not_fit_the_network_give_not_ready_error(trained_classifier, tmp_path):
    trained_classifier[0].save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["classes"] = ["only", "four", "classes", "here"]  # head would need 4 outputs, has 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotReadyError, match="do not fit"):
        SeedCNNClassifier.load(tmp_path)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("factory", [SeedCNNClassifier, AutoencoderEmbedder])
def test_same_seed_gives_identical_weights(factory, tiny_set):
    images, labels = tiny_set
    runs = []
    for seed in (7, 7, 8):
        model = factory()
        model.fit(images, labels, epochs=1, seed=seed, progress=False)
        runs.append(state_of(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_loss_curve_png_is_written(trained_classifier, tmp_path):
    path = plot_loss_curves(trained_classifier[1], tmp_path / "plots" / "loss.png", "seed-cnn")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    plot_loss_curves(FitReport(train_loss=[0.7], val_loss=[0.6]), tmp_path / "ae.png", "ae")
    assert (tmp_path / "ae.png").stat().st_size > 1000


EARRINGS_AND_RINGS = [("earring", "pair", "gold"), ("ring", "square", "red")]


def test_earring_photos_are_split_into_single_earrings_for_training(monkeypatch):
    """Every earring photo in the training part goes through the splitter, each crop a sample."""
    seen = []

    def halves(image: np.ndarray) -> list[np.ndarray]:
        seen.append(image.shape)
        width = image.shape[1]
        return [image[:, : width // 2], image[:, width // 2 :]]

    monkeypatch.setattr(seed_cnn, "_earring_splitter", lambda: halves)
    images, labels = drawn_set(20, seed=1, kinds=EARRINGS_AND_RINGS)
    report = SeedCNNClassifier().fit(images, labels, epochs=1, progress=False)
    photos, split = report.notes["train_photos"], report.notes["earring_photos_split"]
    assert photos == 18 and split == len(seen) and 7 <= split <= 10
    assert report.notes["train_samples"] == photos + 2 * split  # pair photo kept + 2 singles

    seen.clear()
    report = SeedCNNClassifier(keep_pair_photos=False).fit(images, labels, epochs=1, progress=False)
    assert report.notes["train_samples"] == photos + len(seen)  # each pair replaced by 2 singles


def test_earring_split_with_the_real_segmenter():
    pytest.importorskip("jewelrec.imaging.segment", reason="imaging.segment not written yet")
    images, labels = drawn_set(20, seed=2, kinds=EARRINGS_AND_RINGS)
    report = SeedCNNClassifier().fit(images, labels, epochs=1, progress=False)
    assert report.notes["earring_photos_split"] >= 1
    assert report.notes["train_samples"] > report.notes["train_photos"]


def test_missing_segmenter_fails_loudly(monkeypatch):
    monkeypatch.setitem(sys.modules, "jewelrec.imaging.segment", None)
    images, labels = drawn_set(6, seed=1, kinds=EARRINGS_AND_RINGS)
    with pytest.raises(ImportError, match="split_earring_pair"):
        SeedCNNClassifier().fit(images, labels, epochs=1, progress=False)


def test_classifier_learns_red_squares_from_blue_circles():
    kinds = [("ring", "square", "red"), ("necklace", "circle", "blue")]
    images, labels = drawn_set(64, seed=3, kinds=kinds)
    model = SeedCNNClassifier()
    report = model.fit(images, labels, epochs=6, seed=0, progress=False)
    assert report.train_loss[-1] < report.train_loss[0]
    fresh, truth = drawn_set(16, seed=99, kinds=kinds)
    assert model.predict(fresh) == truth
