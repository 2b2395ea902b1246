"""EfficientNet-Lite0: the architecture loads the package weights strictly and classifies ImageNet
photos right; the ONNX runtime agrees with torch; the embedder gives unit vectors that rank two
crops of one photo above an unrelated photo."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from jewelrec.errors import ImageError, NotReadyError
from jewelrec.home import FP32, Home
from jewelrec.imaging.colour import SIGNATURE_DIM
from jewelrec.models.backbone import (
    FEATURE_DIM,
    IMAGENET_CROP,
    INPUT_SIZE,
    ONNX_NAME,
    POOLINGS,
    Backbone,
    EfficientNetEmbedder,
    RetrievalSettings,
    load_torch_model,
    pool,
    preprocess,
    preprocess_batch,
    weights_path,
)
from jewelrec.models.base import load_embedder, model_folder
from jewelrec.models.efficientnet_lite import EfficientNetLite0, SameConv2d

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {"coffee": skimage_data.coffee(), "chelsea": skimage_data.chelsea(),
            "astronaut": skimage_data.astronaut()}


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> object:
    """One export for the module."""
    path = tmp_path_factory.mktemp("onnx") / ONNX_NAME
    assert Backbone(path).prepare()
    assert path.exists()
    return path


@pytest.fixture(scope="module")
def on_onnx(onnx_path) -> Backbone:
    """A backbone running on the module's export, shared by the tests that need no fresh one."""
    return Backbone(onnx_path)


def test_imagenet_classes_come_out_right(photos):
    logits = Backbone().run_torch(preprocess_batch([photos["coffee"], photos["chelsea"]]))[1]
    assert logits[0].argmax() == 967  # espresso
    assert 281 <= logits[1].argmax() <= 285  # a domestic cat


@pytest.mark.parametrize("size", [INPUT_SIZE, 320])
def test_onnx_matches_torch_at_any_multiple_of_32(photos, on_onnx, size):
    # batch 2 and another size than the export's: the batch, height and width axes are dynamic
    batch = preprocess_batch([photos["coffee"], photos["astronaut"]], size=size)
    torch_maps, torch_logits, torch_trunk = Backbone().run_torch(batch)
    onnx_maps, onnx_logits, onnx_trunk = on_onnx.run_with_trunk(batch)
    assert on_onnx.runtime == "onnxruntime"
    assert onnx_maps.shape == (2, FEATURE_DIM, size // 32, size // 32)
    assert onnx_trunk.shape == (2, 112, size // 16, size // 16)  # blocks 0-10's output
    np.testing.assert_allclose(onnx_maps, torch_maps, atol=1e-4)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(onnx_trunk, torch_trunk, rtol=1e-4, atol=1e-3)  # unbounded
    np.testing.assert_array_equal(on_onnx.run(batch)[0], onnx_maps)  # maps and logits alone


def test_sizes_that_are_not_multiples_of_32_are_refused(photos):
    with pytest.raises(ValueError, match="multiple of 32"):
        RetrievalSettings(input_size=300)
    with pytest.raises(ValueError, match="multiple of 32"):
        Backbone().run(preprocess_batch([photos["coffee"]], size=100))


def test_poolings_of_a_known_map():
    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 0, 0, 0] = 8.0  # one strong response in a corner of channel 0
    maps[0, 1] = 1.0  # channel 1 flat
    average, gem, rmac = (pool(maps, how) for how in POOLINGS)
    assert average[0, 0] == pytest.approx(0.5) and average[0, 1] == pytest.approx(1.0)
    assert average[0, 0] < gem[0, 0] < 8.0  # the generalised mean leans to the strong response
    assert gem[0, 1] == pytest.approx(1.0, rel=1e-4)  # and equals a flat map's value
    assert rmac.shape == (1, 2) and rmac[0, 0] > 0  # the corner region still counts
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "median")


def test_one_pass_serves_every_pooling(photos, onnx_path, monkeypatch):
    backbone = Backbone(onnx_path)
    runs = []
    real_run = backbone.run
    monkeypatch.setattr(backbone, "run", lambda batch: runs.append(len(batch)) or real_run(batch))
    gem = backbone.features([photos["chelsea"]], size=320, pooling="gem")
    rmac = backbone.features([photos["chelsea"]], size=320, pooling="rmac")
    assert runs == [1] and gem.shape == rmac.shape == (1, FEATURE_DIM)
    backbone.features([photos["chelsea"]], size=224, pooling="gem")  # another framing: a pass
    assert runs == [1, 1]


def test_loading_is_strict():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    EfficientNetLite0().load_state_dict(state, strict=True)  # every key matches
    del state["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        EfficientNetLite0().load_state_dict(state, strict=True)


def test_same_padding_is_tensorflows():
    conv = SameConv2d(1, 1, 3, stride=2)
    for size in (224, 225, 7):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)  # ceil
    with torch.no_grad():  # the extra pad goes right/bottom: the first window starts at pixel 0
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        x = torch.arange(16.0).reshape(1, 1, 4, 4)
        assert conv(x)[0, 0, 0, 0] == 0.0 and conv(x)[0, 0, 1, 1] == 10.0
    assert load_torch_model().features(torch.zeros(1, 3, 161, 97)).shape == (1, FEATURE_DIM)


def test_preprocess_keeps_rgb_and_crops_the_centre():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 150:450, 0] = 255  # a red square band in the middle
    x = preprocess(image)
    assert x.shape == (3, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1:], -127 / 128)
    with pytest.raises(ImageError):
        preprocess(np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("size, crop_fraction", [(224, IMAGENET_CROP), (320, 1.0), (224, 1.0)])
def test_preprocess_resamples_only_the_crop_yet_matches_resizing_the_whole_photo(
        photos, size, crop_fraction):
    """The crop is resampled straight from the photo (faster); the pixels are those of resizing
    the whole photo and cropping its centre, but for a rounding."""
    from PIL import Image

    for image in (photos["coffee"], photos["chelsea"][40:200, 10:380], photos["astronaut"]):
        h, w = image.shape[:2]
        scale = size / crop_fraction / min(h, w)
        scaled = (max(size, round(w * scale)), max(size, round(h * scale)))
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        whole = Image.fromarray(image).resize(scaled, Image.BILINEAR)
        expected = np.asarray(whole.crop((left, top, left + size, top + size)))
        got = preprocess(image, crop_fraction, size).transpose(1, 2, 0) * 128 + 127
        difference = np.abs(got - expected)
        assert difference.max() <= 1.0 and difference.mean() < 0.01


RAW = RetrievalSettings(centre=False, pca_dim=None, colour_weight=0.0)


def test_raw_embedding_gives_unit_vectors_that_rank_crops_of_one_photo_first(photos, on_onnx):
    embedder = EfficientNetEmbedder(RAW, backbone=on_onnx)
    coffee = photos["coffee"]
    vectors = embedder.embed([coffee[:, :500], coffee[:, 100:], photos["chelsea"]])
    assert vectors.shape == (3, embedder.dim) == (3, FEATURE_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_feature_cache_runs_the_network_once_per_photo(photos, onnx_path, monkeypatch):
    backbone = Backbone(onnx_path)
    seen = []
    original = backbone.run
    monkeypatch.setattr(backbone, "run", lambda batch: seen.append(len(batch)) or original(batch))
    query = photos["astronaut"][::2, ::2].copy()
    first = backbone.features([query])
    second = backbone.features([query.copy()])  # same pixels, another array
    assert seen == [1] and np.array_equal(first, second)


def test_default_embedder_learns_the_catalog_mean_and_round_trips(photos, on_onnx, tmp_path):
    catalog = [photos["coffee"][:, :500], photos["chelsea"], photos["astronaut"]]
    embedder = EfficientNetEmbedder(backbone=on_onnx)
    with pytest.raises(NotReadyError):
        embedder.embed(catalog)
    embedder.fit(catalog, ["cup", "cat", "person"], progress=False)
    assert embedder.dim == FEATURE_DIM + SIGNATURE_DIM  # 3 photos: too few for PCA, centred only
    embedder.save(tmp_path / "embedder")
    loaded = EfficientNetEmbedder.load(tmp_path / "embedder", backbone=on_onnx)
    assert loaded.backbone is on_onnx
    assert loaded.settings == embedder.settings
    query = photos["coffee"][:, 100:]
    np.testing.assert_array_equal(loaded.embed([query]), embedder.embed([query]))
    scores = loaded.embed(catalog) @ loaded.embed([query])[0]
    assert scores.argmax() == 0
    np.testing.assert_allclose(np.linalg.norm(loaded.embed(catalog), axis=1), 1.0, atol=1e-5)


def test_pca_projection_round_trips(photos, on_onnx, tmp_path):
    images = [photos["coffee"], photos["chelsea"], photos["astronaut"], photos["coffee"][::-1]]
    embedder = EfficientNetEmbedder(RetrievalSettings(pca_dim=2, colour_weight=0.0),
                                    backbone=on_onnx)
    embedder.fit(images, ["a"] * 4, progress=False)
    assert embedder.dim == 2
    embedder.save(tmp_path / "pca")
    loaded = EfficientNetEmbedder.load(tmp_path / "pca", backbone=on_onnx)
    assert loaded.dim == 2
    np.testing.assert_array_equal(loaded.embed(images), embedder.embed(images))


def test_a_homes_backbone_runs_from_the_homes_cache_and_opens_lazily(onnx_path, tmp_path):
    home = Home(tmp_path / "home").ensure()
    backbone = Backbone.for_home(home, FP32)  # int8: tests/test_quantization.py
    assert backbone.onnx_path == home.cache_dir / ONNX_NAME
    assert backbone.runtime == "torch" and not backbone.onnx_path.exists()  # nothing opened yet
    home.cache_dir.mkdir()
    shutil.copyfile(onnx_path, backbone.onnx_path)
    assert backbone.prepare() and backbone.runtime == "onnxruntime"


def test_an_upgraded_homes_old_graph_is_removed_when_the_new_one_opens(onnx_path, tmp_path):
    from jewelrec.models.backbone import LEGACY_ONNX_NAMES

    home = Home(tmp_path / "home").ensure()
    home.cache_dir.mkdir()
    old = home.cache_dir / LEGACY_ONNX_NAMES[0]
    old.write_bytes(b"an earlier export")
    backbone = Backbone.for_home(home, FP32)
    shutil.copyfile(onnx_path, backbone.onnx_path)
    assert backbone.prepare() and not old.exists() and backbone.onnx_path.exists()


def _home_with_embedder(root, onnx_path) -> Home:
    """A home holding a saved raw embedder and a copy of the module's ONNX export."""
    home = Home(root).ensure()
    home.update_settings(precision=FP32)  # the module's export is the float graph
    home.cache_dir.mkdir()
    shutil.copyfile(onnx_path, home.cache_dir / ONNX_NAME)
    EfficientNetEmbedder(RAW, backbone=Backbone.for_home(home)).save(
        model_folder(home.models_dir, "embedder", "efficientnet"))
    return home


def test_two_homes_in_one_process_each_run_on_their_own_onnx_file(photos, onnx_path, tmp_path):
    """No process-wide runtime: each opened home's models get a backbone bound to that home's
    ONNX file, with its own session and feature cache."""
    first = _home_with_embedder(tmp_path / "first", onnx_path)
    second = _home_with_embedder(tmp_path / "second", onnx_path)
    one = load_embedder(first.models_dir, "efficientnet", backbone=Backbone.for_home(first))
    two = load_embedder(second.models_dir, "efficientnet", backbone=Backbone.for_home(second))
    assert one.backbone is not two.backbone
    assert one.backbone.onnx_path == first.cache_dir / ONNX_NAME
    assert two.backbone.onnx_path == second.cache_dir / ONNX_NAME
    assert one.backbone.runtime == two.backbone.runtime == "onnxruntime"  # opened at load
    assert one.backbone._session is not two.backbone._session
    query = [photos["coffee"]]
    np.testing.assert_allclose(one.embed(query), two.embed(query), atol=1e-5)
    assert len(one.backbone._cache) == len(two.backbone._cache) == 1  # each its own cache


def test_damaged_onnx_file_is_exported_again(photos, tmp_path):
    path = tmp_path / ONNX_NAME
    path.write_bytes(b"not an onnx model")
    backbone = Backbone(path)
    assert backbone.prepare() and backbone.runtime == "onnxruntime"
    assert backbone.features([photos["coffee"]]).shape == (1, FEATURE_DIM)


def test_an_unwritable_onnx_path_runs_on_torch(photos, tmp_path, monkeypatch):
    import jewelrec.models.backbone as backbone_module

    def refuse(self, path):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(backbone_module.Backbone, "export_onnx", refuse)
    backbone = Backbone(tmp_path / "read-only" / ONNX_NAME)
    assert not backbone.prepare() and backbone.runtime == "torch"
    assert backbone.features([photos["coffee"]]).shape == (1, FEATURE_DIM)


def test_a_bulk_run_on_torch_exports_and_switches_to_onnx(photos, monkeypatch):
    import jewelrec.models.backbone as backbone_module

    monkeypatch.setattr(backbone_module, "BULK_IMAGES", 2)
    backbone = Backbone()
    _, logits = backbone.run_images([photos["coffee"], photos["chelsea"]])
    assert backbone.runtime == "onnxruntime" and logits[0].argmax() == 967


def test_export_folds_the_same_pads_into_the_convolutions(onnx_path):
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    ops = [node.op_type for node in graph.node]
    assert "Pad" not in ops  # folded; test_onnx_matches_torch_* shows the numbers are unchanged
    asymmetric = [a.ints for n in graph.node if n.op_type == "Conv"
                  for a in n.attribute if a.name == "pads" and list(a.ints[:2]) != list(a.ints[2:])]
    assert len(asymmetric) == 5  # the five stride-2 convolutions pad right/bottom more
