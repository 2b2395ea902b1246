"""One immutable snapshot per request (issue 10, finding 1): a query that started before a swap
finishes with the models, index and version it started with, even when the new snapshot has
another vector size and other classes; new queries get the new snapshot whole."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from query_stubs import PHOTO, FixedClassifier, FixedEmbedder, index_of, store_with

from jewelrec.home import Home
from jewelrec.recommend import Recommender
from jewelrec.snapshot import Snapshot


@pytest.fixture
def two_snapshots(tmp_path):
    """v1: 3-d vectors, one class; v2: 5-d vectors, two classes (a retrained, re-indexed home)."""
    store = store_with(tmp_path / "home", {"A": "ring", "B": "ring", "C": "necklace"})
    gate = threading.Event()
    old = Snapshot(
        store, FixedEmbedder([0.0, 1.0, 0.0], gate), FixedClassifier({"ring": 1.0}),
        index_of({"A": "ring", "B": "ring"}, np.eye(3)[:2]), "v1",
    )
    new = Snapshot(
        store, FixedEmbedder([0.0, 0.0, 0.0, 0.0, 1.0]),
        FixedClassifier({"necklace": 0.9, "ring": 0.1}),
        index_of({"A": "ring", "B": "ring", "C": "necklace"}, np.eye(5)[[0, 1, 4]]), "v2",
    )
    recommender = Recommender(old.store, old.embedder, old.classifier, old.index,
                              index_version="v1")
    recommender.swap(old)
    yield recommender, old, new, gate
    gate.set()
    store.close()


def test_a_query_started_before_a_swap_finishes_on_its_own_snapshot(two_snapshots):
    recommender, old, new, gate = two_snapshots
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(recommender.recommend, PHOTO, k=2)
        assert old.embedder.entered.wait(timeout=30)  # the query holds v1 and is embedding
        recommender.swap(new)  # v2: other vector size, other classes
        assert recommender.index_version == "v2" and recommender.index is new.index
        gate.set()
        answer = running.result(timeout=30)
    assert answer.index_version == "v1"
    assert answer.type == "ring" and answer.type_probabilities == {"ring": 1.0}
    assert [r.id for r in answer.results] == ["B", "A"]
    assert answer.results[0].score == pytest.approx(1.0)

    fresh = recommender.recommend(PHOTO, k=1)  # a query started after the swap: all v2
    assert fresh.index_version == "v2"
    assert fresh.type == "necklace" and set(fresh.type_probabilities) == {"necklace", "ring"}
    assert [r.id for r in fresh.results] == ["C"]


def test_more_like_this_started_before_a_swap_reads_one_snapshot(two_snapshots, monkeypatch):
    recommender, old, new, gate = two_snapshots
    monkeypatch.setattr("jewelrec.recommend.load_image", lambda source, **kw: PHOTO)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(recommender.similar_to_product, "A", k=2)
        assert old.embedder.entered.wait(timeout=30)
        recommender.swap(new)
        gate.set()
        answer = running.result(timeout=30)
    assert answer.index_version == "v1"
    assert answer.photo == "A"
    assert [r.id for r in answer.results] == ["B"]  # itself excluded, v1's rows only


def test_the_snapshot_cannot_be_changed_in_place(two_snapshots):
    recommender, old, _, _ = two_snapshots
    with pytest.raises(dataclasses.FrozenInstanceError):
        old.index_version = "v9"  # type: ignore[misc]
    with pytest.raises(TypeError):
        old.index_meta["embedder"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        recommender.index = old.index  # type: ignore[misc]


def test_reload_builds_the_whole_snapshot_and_loads_models_only_when_some_changed(
    two_snapshots, tmp_path, monkeypatch
):
    """A new index with the same embedder and classifier files keeps the loaded models and their
    backbone; new embedder files (or another embedder) or new classifier files load both models
    anew on a new backbone (the models of a snapshot share one runtime); an index that cannot be
    opened leaves the served snapshot as it was."""
    import jewelrec.recommend as recommend
    import jewelrec.snapshot as snapshot

    recommender, old, new, gate = two_snapshots
    gate.set()
    recommender.home = Home(tmp_path / "home")
    recommender.swap(dataclasses.replace(
        old, index_meta={"embedder": "fixed", "embedder_fingerprint": "e1"},
        classifier_fingerprint="c1"))
    published = {"version": "v1", "meta": {}, "classifier": "c1"}
    loads: list[str] = []

    def open_index(home, *, version, backend=None, milvus_uri=None):
        if published["meta"] is None:
            raise OSError("meta.json: no such file")
        return (new.index, published["meta"])

    monkeypatch.setattr(recommend.versions, "current_version", lambda home: published["version"])
    monkeypatch.setattr(snapshot, "open_index", open_index)
    monkeypatch.setattr(snapshot, "classifier_fingerprint",
                        lambda home, name: published["classifier"])
    runtimes: list[object] = []

    def load(kind):
        def loader(folder, name, *, backbone):
            runtimes.append(backbone)
            loads.append(f"{kind} {name}")
            return new.embedder if kind == "embedder" else new.classifier
        return loader

    monkeypatch.setattr(snapshot, "load_embedder", load("embedder"))
    monkeypatch.setattr(snapshot, "load_classifier", load("classifier"))

    assert recommender.reload_if_changed() is False  # v1 is already served
    published.update(version="v2", meta={"embedder": "fixed", "embedder_fingerprint": "e1"})
    assert recommender.reload_if_changed() is True
    assert loads == [] and recommender.index is new.index and recommender.index_version == "v2"
    assert recommender.embedder is old.embedder and recommender.classifier is old.classifier
    kept_runtime = recommender.snapshot.backbone

    published.update(version="v3", meta={"embedder": "fixed", "embedder_fingerprint": "e2"})
    assert recommender.reload_if_changed() is True
    assert loads == ["embedder fixed", "classifier fixed"]
    assert recommender.embedder is new.embedder and recommender.classifier is new.classifier
    assert runtimes[0] is runtimes[1] is recommender.snapshot.backbone is not kept_runtime

    published.update(version="v4", meta={"embedder": "other", "embedder_fingerprint": "e2"},
                     classifier="c2")
    assert recommender.reload_if_changed() is True
    assert loads[2:] == ["embedder other", "classifier fixed"]
    assert runtimes[2] is runtimes[3] is recommender.snapshot.backbone is not runtimes[0]
    assert recommender.index_meta["embedder"] == "other"

    served = recommender.snapshot
    published.update(version="v5", meta=None)
    with pytest.raises(OSError):
        recommender.reload_if_changed()
    assert recommender.snapshot is served  # nothing half-swapped
    assert recommender.refused_version == "v5"  # /healthz says the server is behind
    assert recommender.reload_if_changed() is False  # not tried again every poll...
    published.update(version="v6", meta={"embedder": "other", "embedder_fingerprint": "e2"})
    assert recommender.reload_if_changed() is True  # ...but the next version is
    assert recommender.index_version == "v6" and recommender.refused_version is None


def test_an_embedder_retrained_after_the_index_is_refused_with_what_to_run(
    tiny_home, tiny_catalog, tmp_path, capsys
):
    """After `train` on a grown catalog the embedder's vectors no longer match the index's
    (not even in length): every query failed with numpy's words, or a 500."""
    import json
    import shutil

    from jewelrec.cli import main
    from jewelrec.errors import NotReadyError
    from jewelrec.models.base import model_folder

    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home, home.root, symlinks=True)
    config = model_folder(home.models_dir, "embedder", "efficientnet") / "config.json"
    retrained = json.loads(config.read_text())
    retrained["retrained"] = True  # any change of its weights or config
    config.write_text(json.dumps(retrained))
    with pytest.raises(NotReadyError, match=r"embedder was retrained after index .* was built"):
        Recommender.open(home)
    photo = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    assert main(["recommend", str(photo), "--home", str(home.root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `jewelrec index --home" in err
    # a model folder missing its files was never retrained: training is what it needs (the
    # index would only answer "run train", and the two messages sent the operator in a circle)
    (config.parent / "weights.safetensors").unlink()
    assert main(["recommend", str(photo), "--home", str(home.root)]) == 2
    err = capsys.readouterr().err
    assert "was retrained after" not in err and "jewelrec train" in err


def test_each_home_and_each_reload_with_new_models_gets_its_own_backbone(
    tiny_home, tiny_query_photo, tmp_path
):
    """No process-wide runtime: two homes opened in one process run on their own ONNX files;
    a reload that loads new models binds them to a new backbone, and the snapshot a request
    captured before keeps answering on its own, untouched."""
    import shutil

    from jewelrec.models.backbone import INT8_ONNX_NAMES
    from jewelrec.models.base import model_folder
    from jewelrec.models.quantization import activations
    from jewelrec.search import versions
    from jewelrec.snapshot import load_snapshot

    other = Home(tmp_path / "other")
    shutil.copytree(tiny_home, other.root, symlinks=True)
    first, second = Recommender.open(tiny_home), Recommender.open(other)
    one, two = first.snapshot, second.snapshot
    assert one.backbone is not two.backbone and one.backbone._session is not two.backbone._session
    assert one.backbone.onnx_path == Home(tiny_home).cache_dir / INT8_ONNX_NAMES[activations()]
    assert two.backbone.onnx_path == other.cache_dir / INT8_ONNX_NAMES[activations()]
    for snap in (one, two):
        assert snap.embedder.backbone is snap.classifier.backbone is snap.backbone
        assert snap.backbone.runtime == "onnxruntime"

    captured = second.snapshot  # a request in flight holds this one
    before = second.recommend(tiny_query_photo, k=3)
    classifier = other.settings().classifier
    config = model_folder(other.models_dir, "classifier", classifier) / "config.json"
    config.write_text(config.read_text() + " ")  # retrained: other classifier files
    fresh = load_snapshot(other, versions.current_version(other), store=captured.store,
                          classifier_name=classifier, previous=captured)
    assert fresh.backbone is not captured.backbone
    assert fresh.embedder.backbone is fresh.classifier.backbone is fresh.backbone
    assert captured.embedder.backbone is captured.classifier.backbone is captured.backbone
    assert captured.backbone.runtime == "onnxruntime"
    second.swap(fresh)
    after = second.recommend(tiny_query_photo, k=3)
    assert [r.id for r in after.results] == [r.id for r in before.results]
    assert captured.embedder.embed([np.zeros((64, 64, 3), np.uint8)]).shape[0] == 1  # still works

    same = load_snapshot(other, versions.current_version(other), store=captured.store,
                         classifier_name=classifier, previous=fresh)
    assert same.backbone is fresh.backbone and same.embedder is fresh.embedder  # nothing new


def test_a_reload_types_with_the_classifier_the_home_now_records(tiny_home, tmp_path):
    """A server kept its start-up classifier across reloads, while a worker its supervisor
    restarted read the home's: two answers to one photo under one index version."""
    import shutil

    from jewelrec.indexing import build_index
    from jewelrec.train import train_home

    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    recommender = Recommender.open(home)
    other = "efficientnet-head" if home.settings().classifier != "efficientnet-head" else "seed-cnn"
    train_home(home, classifier=other, kinds=("classifier",), epochs=1, progress=False)
    home.update_settings(classifier=other)
    build_index(home, progress=False)
    assert recommender.reload_if_changed()
    assert type(recommender.snapshot.classifier) is type(Recommender.open(home).classifier)
    named = Recommender.open(home, classifier=other)  # asked for: kept, whatever the home says
    assert named._classifier_from_home is False
