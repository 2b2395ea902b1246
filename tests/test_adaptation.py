"""Adapting the backbone's last block to a catalog: views keep colour, the tail's weights round
trip, and an adapted embedder trains, saves its own ONNX network and answers the same after a
reload, differently from the frozen one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from jewelrec.models.adaptation import (
    ARRAY_PREFIX,
    AdaptSettings,
    adapt_tail,
    adapted_network,
    augmented_view,
    tail_arrays,
)
from jewelrec.models.backbone import (
    ADAPTED_ONNX_NAME,
    Backbone,
    EfficientNetAdaptedEmbedder,
    EfficientNetEmbedder,
    load_torch_model,
)
from jewelrec.models.base import embedder_class


def _photos(count: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    rng = np.random.default_rng(0)
    kinds = ["ring", "earring", "necklace", "bracelet"]
    images, products, labels = [], [], []
    for i in range(count):
        kind = kinds[i % 4]
        coarse = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # smooth blobs, any content
        image = np.kron(coarse, np.ones((20, 20, 1), np.uint8))
        images.append(image)
        products.append(f"p{i // 2}")  # two photos per product: a gallery
        labels.append(kind)
    return images, products, labels


def test_augmented_view_keeps_colour():
    red = np.zeros((120, 90, 3), np.uint8)
    red[..., 0] = 220
    view = augmented_view(red, np.random.default_rng(1), 64)
    assert view.shape == (3, 64, 64) and view.dtype == np.float32
    assert (view[0] > view[1]).all() and (view[0] > view[2]).all()  # still red, any crop


def test_tail_weights_round_trip_and_are_checked():
    arrays = tail_arrays(load_torch_model())
    assert arrays and all(k.startswith(ARRAY_PREFIX) for k in arrays)
    x = torch.zeros(1, 3, 64, 64).uniform_(-1, 1)
    with torch.inference_mode():
        assert torch.allclose(adapted_network(arrays).feature_maps(x),
                              load_torch_model().feature_maps(x))
    broken = dict(arrays)
    name = next(k for k in broken if k.endswith("_conv_head.weight"))
    broken[name] = broken[name][:10]
    with pytest.raises(ValueError, match="shape"):
        adapted_network(broken)
    with pytest.raises(ValueError, match="do not match"):
        adapted_network({k: v for k, v in arrays.items() if k != name})


def test_adapt_tail_changes_the_tail_and_reports_its_work():
    images, products, labels = _photos(12)
    adapted = adapt_tail(images, products, labels, crop_fraction=1.0, size=64, progress=False,
                         settings=AdaptSettings(seconds=30, epochs=2, batch=4))
    before = tail_arrays(load_torch_model())
    assert set(adapted.arrays) == set(before)
    assert any(not np.allclose(adapted.arrays[k], before[k]) for k in before)
    assert adapted.clean_features.shape == (12, 1280)
    assert adapted.notes["adapt_epochs"] == 2 and adapted.notes["adapt_products"] == 6
    with pytest.raises(ValueError, match="one entry per photo"):
        adapt_tail(images, products[:3], labels, crop_fraction=1.0, size=64,
                   settings=AdaptSettings(seconds=1), progress=False)


def test_adapted_embedder_saves_its_network_and_reloads(tmp_path):
    assert embedder_class("efficientnet-adapted") is EfficientNetAdaptedEmbedder
    images, products, labels = _photos(16)
    settings = replace(EfficientNetAdaptedEmbedder.default_settings, adapt_seconds=20,
                       input_size=64, pca_dim=None)
    home_backbone = Backbone()
    model = EfficientNetAdaptedEmbedder(settings, backbone=home_backbone)
    report = model.fit(images, labels, products=products, progress=False)
    assert report.notes["adapt_products"] == 8
    assert model.backbone is not home_backbone and model.backbone.tail is not None
    model.save(tmp_path)
    assert (tmp_path / ADAPTED_ONNX_NAME).exists()
    vectors = model.embed(images[:4])
    loaded = EfficientNetAdaptedEmbedder.load(tmp_path, backbone=home_backbone)
    assert loaded.backbone is not home_backbone
    assert loaded.backbone.runtime == "onnxruntime"
    np.testing.assert_allclose(loaded.embed(images[:4]), vectors, atol=2e-3)
    (tmp_path / ADAPTED_ONNX_NAME).unlink()  # lost: exported again from the saved tail
    again = EfficientNetAdaptedEmbedder.load(tmp_path, backbone=home_backbone)
    assert (tmp_path / ADAPTED_ONNX_NAME).exists() and again.backbone.runtime == "onnxruntime"
    np.testing.assert_allclose(again.embed(images[:4]), vectors, atol=2e-3)
    frozen = EfficientNetEmbedder(replace(settings, adapt_seconds=0), backbone=home_backbone)
    frozen.fit(images, labels, progress=False)
    assert not np.allclose(frozen.embed(images[:4]), vectors, atol=1e-2)


def test_adapt_budget_applies_only_to_the_adapting_embedder():
    from jewelrec.errors import JewelrecError
    from jewelrec.train import with_adapt_budget

    model = with_adapt_budget(EfficientNetAdaptedEmbedder(backbone=Backbone()), 12)
    assert model.settings.adapt_seconds == 12
    with pytest.raises(JewelrecError, match="efficientnet-adapted"):
        with_adapt_budget(EfficientNetEmbedder(backbone=Backbone()), 12)
    with pytest.raises(JewelrecError, match="between 0 and"):
        with_adapt_budget(EfficientNetAdaptedEmbedder(backbone=Backbone()), -1)
