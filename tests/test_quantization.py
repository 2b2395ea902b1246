"""The int8 backbone: a real quantised graph that agrees with the float one, the default of a
new home only, recorded wherever features are kept so int8 and float numbers never mix, and
what queries compute in follows what the index was embedded with."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from jewelrec.errors import JewelrecError
from jewelrec.feature_store import store_for_home
from jewelrec.home import FP32, INT8, Home, Settings
from jewelrec.models.backbone import (
    INT8_ONNX_NAMES,
    ONNX_NAME,
    Backbone,
    image_features,
    l2_rows,
)
from jewelrec.models.quantization import (
    ACTIVATIONS_VARIABLE,
    FLOAT_PREFIXES,
    activations,
    calibration_photos,
    cpu_has_vnni,
    recipe,
)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut()]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Backbone, Backbone]:
    """A float and an int8 backbone, each on its own export (made once for the module)."""
    folder = tmp_path_factory.mktemp("graphs")
    float_one = Backbone(folder / ONNX_NAME)
    int8_one = Backbone(folder / INT8_ONNX_NAMES[activations()], precision=INT8)
    assert float_one.prepare() and int8_one.prepare()
    return float_one, int8_one


def test_the_int8_graph_is_quantised_and_has_no_dead_weight(pair):
    _, int8_one = pair
    model = onnx.load(str(int8_one.onnx_path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # activations in the type this CPU runs fastest (models/quantization.py)
    zero_points = {i.data_type for i in model.graph.initializer if i.name.endswith("zero_point")
                   and not i.name.startswith("onnx::") and i.dims == []}
    expected = onnx.TensorProto.UINT8 if int8_one.activation == "u8" else onnx.TensorProto.INT8
    assert zero_points == {expected}
    int8_weights = {i.name for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node
                   if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if dequantized.get(n.input[1]) not in int8_weights]
    # the stem and blocks 0-1 stay float (see FLOAT_PREFIXES), the other 43 are int8
    assert float_convs == [n.name for n in convs if n.name.startswith(FLOAT_PREFIXES)]
    assert len(float_convs) == 6 and len(convs) == 49
    read = {name for node in model.graph.node for name in node.input}
    assert all(init.name in read for init in model.graph.initializer)


@pytest.mark.parametrize("size", [224, 320])
def test_int8_features_agree_with_float_ones(pair, photos, size):
    float_one, int8_one = pair
    a = l2_rows(image_features(float_one, photos, size=size, pooling="gem"))
    b = l2_rows(image_features(int8_one, photos, size=size, pooling="gem"))
    agreement = (a * b).sum(axis=1)
    assert agreement.min() > 0.99, agreement  # all-int8 graphs gave 0.95-0.98
    # and each photo is still nearest to itself among the others' float features
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(photos))).all()


def test_int8_keeps_the_imagenet_answers(pair, photos):
    from jewelrec.models.backbone import preprocess_batch

    float_one, int8_one = pair
    batch = preprocess_batch(photos[:2])  # an espresso and a tabby cat (no class is astronaut)
    assert float_one.run(batch)[1].argmax(1).tolist() == [967, 282]
    assert int8_one.run(batch)[1].argmax(1).tolist() == [967, 282]


def test_calibration_photos_are_fixed():
    first = [p for p, _ in zip(calibration_photos(), range(3), strict=False)]
    again = [p for p, _ in zip(calibration_photos(), range(3), strict=False)]
    for x, y in zip(first, again, strict=True):
        assert x.shape == (1, 3, 224, 224)
        np.testing.assert_array_equal(x, y)


def test_int8_is_the_new_homes_default_and_an_older_home_stays_float(tmp_path):
    assert Settings().precision == INT8
    new = Home(tmp_path / "new").ensure()
    assert Backbone.for_home(new).precision == INT8
    assert Backbone.for_home(new).onnx_path == new.cache_dir / INT8_ONNX_NAMES[activations()]
    older = Home(tmp_path / "older").ensure()
    older.settings_path.write_text(json.dumps({"embedder": "efficientnet"}))  # before the choice
    assert older.settings().precision == FP32
    assert Backbone.for_home(older).onnx_path == older.cache_dir / ONNX_NAME
    assert Backbone.for_home(older, INT8).precision == INT8  # asked for: a snapshot's index


def test_an_unknown_precision_is_named(tmp_path):
    home = Home(tmp_path / "home").ensure()
    home.settings_path.write_text(json.dumps({"precision": "int4"}))
    with pytest.raises(JewelrecError, match="precision.*int8, fp32"):
        home.settings()
    with pytest.raises(ValueError, match="precision"):
        Backbone(tmp_path / "x.onnx", precision="int4")


def test_int8_and_float_features_are_kept_apart(tmp_path):
    home = Home(tmp_path / "home").ensure()
    float_one, int8_one = Backbone.for_home(home, FP32), Backbone.for_home(home, INT8)
    assert float_one.features_tag == "" and recipe() in int8_one.features_tag
    assert (store_for_home(home, float_one.features_tag).folder
            != store_for_home(home, int8_one.features_tag).folder)


def test_train_records_the_precision_and_queries_follow_the_index(tiny_catalog, tmp_path,
                                                                   tiny_query_photo):
    """`train --precision fp32` on a home: models, settings and index say fp32, and a reload
    after training in int8 again switches the queries' runtime with the index."""
    from jewelrec.catalog.ingest import ingest
    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.train import train_home

    home = Home(tmp_path / "home").ensure()
    ingest(tiny_catalog / "catalog.csv", home, progress=False)
    train_home(home, classifier="efficientnet-head", epochs=1, progress=False,
               precision=FP32)
    assert home.settings().precision == FP32
    config = json.loads((home.models_dir / "classifier-efficientnet-head" / "config.json")
                        .read_text())
    assert config["precision"] == FP32
    build_index(home, progress=False)
    recommender = Recommender.open(home)
    assert recommender.snapshot.backbone.precision == FP32
    float_answer = recommender.recommend(tiny_query_photo, k=3)

    train_home(home, classifier="efficientnet-head", epochs=1, progress=False,
               precision=INT8)
    report = build_index(home, progress=False)
    assert home.settings().precision == INT8 and report.embedded > 0  # nothing float reused
    assert recommender.reload_if_changed()
    assert recommender.snapshot.backbone.precision == INT8
    int8_answer = recommender.recommend(tiny_query_photo, k=3)
    assert int8_answer.type == float_answer.type
    assert int8_answer.results[0].id == float_answer.results[0].id


def test_the_tuned_type_stage_runs_in_int8_on_the_homes_trunk(pair, photos, tmp_path):
    """The tuned stage (blocks 11-15 and the head, models/tuned_stage.py) gets its own int8
    graph, fed by the int8 home pass; its features agree with the float stage on the float
    trunk."""
    from jewelrec.models.adaptation import tail_arrays, tail_prefixes
    from jewelrec.models.backbone import load_torch_model
    from jewelrec.models.heads import TUNED_STAGE_STEM, tuned_onnx_name
    from jewelrec.models.tuned_stage import TunedStage

    float_one, int8_one = pair
    tail = tail_arrays(load_torch_model(), tail_prefixes(11))
    float_stage = TunedStage(tmp_path / tuned_onnx_name(TUNED_STAGE_STEM, FP32), tail)
    int8_stage = TunedStage(tmp_path / tuned_onnx_name(TUNED_STAGE_STEM, INT8), tail, INT8)
    assert int8_stage.prepare() and int8_stage.runtime == "onnxruntime"
    ops = {node.op_type for node in onnx.load(str(int8_stage.onnx_path)).graph.node}
    assert "QuantizeLinear" in ops
    a = l2_rows(float_one.staged(photos, float_stage, crop_fraction=1.0, size=224))
    b = l2_rows(int8_one.staged(photos, int8_stage, crop_fraction=1.0, size=224))
    assert (a * b).sum(axis=1).min() > 0.99


def test_activations_are_unsigned_only_where_the_cpu_has_vnni():
    """U8S8 runs about twice as fast as S8S8 on a CPU with VNNI and saturates without it."""
    assert cpu_has_vnni("processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_has_vnni("flags: fpu avx2 avx_vnni\n")
    assert not cpu_has_vnni("flags: fpu sse2 avx avx2 fma\n")  # an AVX2-only EPYC
    assert not cpu_has_vnni("")  # cannot tell: signed, right everywhere
    assert activations() == ("u8" if cpu_has_vnni() else "s8") or ACTIVATIONS_VARIABLE in os.environ


def test_the_activations_can_be_chosen_and_each_kind_keeps_its_own_graph_and_features(
    tmp_path, monkeypatch
):
    home = Home(tmp_path / "home").ensure()
    backbones = {}
    for chosen in ("u8", "s8"):
        monkeypatch.setenv(ACTIVATIONS_VARIABLE, chosen)
        assert activations() == chosen
        backbones[chosen] = Backbone.for_home(home)
        assert backbones[chosen].activation == chosen
        assert backbones[chosen].onnx_path == home.cache_dir / INT8_ONNX_NAMES[chosen]
    assert backbones["u8"].features_tag != backbones["s8"].features_tag
    assert (store_for_home(home, backbones["u8"].features_tag).folder
            != store_for_home(home, backbones["s8"].features_tag).folder)
    assert recipe("s8") == "int8-qdq-s8s8-minmax-synth64-float01-v2"  # the homes' since 12-01
    monkeypatch.setenv(ACTIVATIONS_VARIABLE, "int4")
    with pytest.raises(JewelrecError, match="JEWELREC_INT8_ACTIVATIONS.*u8, s8"):
        activations()
