"""Each image through the backbone once, and work that survives (issue 11): the feature store
`train` fills and `index` reads, chunked commits of embeddings, stale temporary files, and a
model fingerprint that ignores training.json's timestamps."""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from jewelrec import feature_store, indexing
from jewelrec.catalog.ingest import ingest
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.views import split_views
from jewelrec.feature_store import FeatureStore, remove_stale_temporaries
from jewelrec.home import Home
from jewelrec.indexing import EmbeddingCache, build_index, model_fingerprint
from jewelrec.models import backbone
from jewelrec.models.base import model_folder
from jewelrec.models.quantization import activations
from jewelrec.train import train_home

SHAPE = (len(backbone.POOLINGS), 4)


def _records(n: int, seed: int = 0) -> dict[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {rng.bytes(16): rng.random(SHAPE, dtype=np.float32) for _ in range(n)}


def _chunks(folder: Path) -> list[Path]:
    return sorted(folder.glob("chunk-*.safetensors"))


def test_store_round_trip_in_chunks_and_across_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_store, "WRITE_CHUNK", 10)
    store = FeatureStore(tmp_path)
    records = _records(25)
    store.put_many(records)  # 25 >= 10: written at once
    assert len(_chunks(tmp_path)) == 1
    more = _records(3, seed=1)
    store.put_many(more)  # 3 < 10: kept in memory, yet readable
    assert len(_chunks(tmp_path)) == 1 and len(store) == 28
    store.flush()
    assert len(_chunks(tmp_path)) == 2
    reopened = FeatureStore(tmp_path)  # another process later
    found = reopened.get_many([*records, *more, b"x" * 16])
    assert set(found) == set(records) | set(more)
    for key, value in {**records, **more}.items():
        assert found[key].dtype == np.float32 and np.array_equal(found[key], value)


def test_too_many_chunks_are_merged_without_losing_records(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_store, "WRITE_CHUNK", 1)
    monkeypatch.setattr(feature_store, "MAX_CHUNKS", 4)
    store = FeatureStore(tmp_path)
    records = _records(9)
    for key, value in records.items():
        store.put_many({key: value})
    assert 1 <= len(_chunks(tmp_path)) <= 4
    found = FeatureStore(tmp_path).get_many(records)
    assert all(np.array_equal(found[k], v) for k, v in records.items()) and len(found) == 9


def test_a_damaged_chunk_is_only_recomputed(tmp_path):
    store = FeatureStore(tmp_path)
    records = _records(3)
    store.put_many(records)
    store.flush()
    assert len(FeatureStore(tmp_path, shape=(4, 4)).get_many(records)) == 0  # another shape
    assert len(FeatureStore(tmp_path, shape=SHAPE).get_many(records)) == 3
    _chunks(tmp_path)[0].write_bytes(b"not a safetensors file")
    assert FeatureStore(tmp_path).get_many(records) == {}


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    stale, live = tmp_path / ".vectors.npy.abc123.tmp", tmp_path / ".names.json.def456.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    old = time.time() - 2 * feature_store.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and live.exists()


def test_pooled_reads_the_store_and_runs_only_what_it_lacks(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(5)]
    runs: list[int] = []

    def fake_run(batch, **_):
        runs.append(len(batch))
        return np.stack([np.full(SHAPE[:1] + (backbone.FEATURE_DIM,), float(im.sum()),
                                 np.float32) for im in batch]), None

    plain = backbone.Backbone()
    monkeypatch.setattr(plain, "run_images", fake_run)
    expected = plain.pooled(images)
    cached = backbone.Backbone()
    monkeypatch.setattr(cached, "run_images", fake_run)
    cached.store = FeatureStore(tmp_path)
    cached.store.put_many({backbone.image_key(im, backbone.IMAGENET_CROP): expected[i]
                           for i, im in enumerate(images[:3])})
    runs.clear()
    assert np.array_equal(cached.pooled(images), expected)
    assert runs == [2]  # only the two images the store lacked
    assert len(cached.store) == 5  # and those were added


@pytest.fixture
def catalog_home(tiny_catalog, tmp_path) -> Home:
    home = Home(tmp_path / "home").ensure()
    ingest(tiny_catalog / "catalog.csv", home, progress=False)
    return home


def _catalog_images(home: Home) -> int:
    return sum(len(set(p.images)) for p in CatalogStore.open(home).all_products())


def test_stores_of_other_weights_go_and_other_cpu_kinds_stay(catalog_home):
    folder = catalog_home.cache_dir / feature_store.FOLDER
    current = f"{backbone.BACKBONE}-{feature_store.backbone_fingerprint()}"
    other_weights = f"{backbone.BACKBONE}-{'0' * 16}-int8-some-recipe"
    kept = [current + "-int8-the-other-cpu-kind", current, "efficientnet-lite1-notes"]
    for name in [other_weights, *kept]:
        store = FeatureStore(folder / name)
        store.put_many(_records(2))
        store.flush()
    feature_store.keep_bounded(catalog_home, FeatureStore(folder / current))
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_a_store_grown_far_past_the_catalog_starts_afresh(catalog_home, monkeypatch):
    monkeypatch.setattr(feature_store, "MIN_RECORDS_KEPT", 0)
    monkeypatch.setattr(feature_store, "WRITE_CHUNK", 4)
    images = _catalog_images(catalog_home)
    folder = catalog_home.cache_dir / feature_store.FOLDER / "store"
    store = FeatureStore(folder)
    store.put_many(_records(feature_store.MAX_RECORDS_PER_IMAGE * images))
    store.flush()
    feature_store.keep_bounded(catalog_home, store)  # at the bound: kept
    assert len(FeatureStore(folder)) == feature_store.MAX_RECORDS_PER_IMAGE * images
    store.put_many(_records(1, seed=9))
    store.flush()
    feature_store.keep_bounded(catalog_home, store)  # past it: started afresh
    assert len(store) == 0 and not _chunks(folder) and len(FeatureStore(folder)) == 0
    store.put_many(_records(3, seed=5))  # and still a working store
    store.flush()
    assert len(FeatureStore(folder)) == 3


@pytest.fixture
def fresh_backbone(monkeypatch) -> list[int]:
    """The images any backbone runs through the network during the test (train and index each
    open the home with a new backbone, whose in-memory cache starts empty)."""
    counted: list[int] = []
    real = backbone.Backbone.run_images

    def counting(self, images, **options):
        counted.append(len(images))
        return real(self, images, **options)

    monkeypatch.setattr(backbone.Backbone, "run_images", counting)
    return counted


def _fingerprints(home: Home) -> dict[str, str]:
    return {kind: model_fingerprint(model_folder(home.models_dir, kind, name))
            for kind, name in (("classifier", home.settings().classifier),
                               ("embedder", home.settings().embedder))}


def test_index_after_train_runs_only_unseen_images_and_retraining_runs_none(
    tiny_catalog, tiny_home, fresh_backbone, tmp_path
):
    home = Home(tmp_path / "home").ensure()
    home.cache_dir.mkdir()  # the tiny home's ONNX export spares this home one
    shutil.copyfile(Path(tiny_home) / "cache" / backbone.INT8_ONNX_NAMES[activations()],
                    home.cache_dir / backbone.INT8_ONNX_NAMES[activations()])
    ingest(tiny_catalog / "catalog.csv", home, progress=False)
    train_home(home, progress=False)
    assert sum(fresh_backbone) > 0
    trained = _fingerprints(home)
    _, held_out = split_views(CatalogStore.open(home).all_products())

    fresh_backbone.clear()
    first = build_index(home, progress=False)
    assert first.embedded == first.images
    assert 0 < sum(fresh_backbone) <= len(held_out)  # the views training never saw

    fresh_backbone.clear()
    train_home(home, progress=False)  # an unchanged catalog: the same models, no backbone run
    assert sum(fresh_backbone) == 0 and _fingerprints(home) == trained
    again = build_index(home, progress=False)
    assert again.embedded == 0 and sum(fresh_backbone) == 0


def test_training_json_does_not_change_the_fingerprint(tiny_home, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_folder(Home(tiny_home).models_dir, "embedder", "efficientnet"), folder)
    before = model_fingerprint(folder)
    (folder / "training.json").write_text('{"trained_at": "another time"}')
    assert model_fingerprint(folder) == before
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert model_fingerprint(folder) != before


def test_a_killed_index_keeps_its_finished_chunks(tiny_home, tmp_path, monkeypatch):
    copy = Home(tmp_path / "home")
    shutil.copytree(tiny_home, copy.root)
    shutil.rmtree(copy.cache_dir / "embeddings")
    monkeypatch.setattr(indexing, "COMMIT_EVERY", indexing.BATCH_SIZE)
    # one batch at a time, so the third embed call is the third batch (with a worker per core,
    # batches finish in any order, and what is kept depends on which one died)
    monkeypatch.setattr(indexing, "embed_images",
                        functools.partial(indexing.embed_images, workers=1))
    real_load = indexing.load_embedder
    calls = []

    def dying_embedder(models_dir, name, **runtime):
        model = real_load(models_dir, name, **runtime)
        real_embed = model.embed

        def embed(images, masks=None):
            calls.append(len(images))
            if len(calls) == 3:
                raise KeyboardInterrupt  # killed while embedding the third batch
            return real_embed(images, masks)

        model.embed = embed
        return model

    monkeypatch.setattr(indexing, "load_embedder", dying_embedder)
    with pytest.raises(KeyboardInterrupt):
        build_index(copy, progress=False)
    fingerprint = model_fingerprint(model_folder(copy.models_dir, "embedder", "efficientnet"))
    tag = backbone.Backbone.for_home(copy).features_tag  # int8: a new home's default
    kept = EmbeddingCache(copy, "efficientnet", fingerprint, tag)
    assert len(kept.vectors) == 2 * indexing.BATCH_SIZE

    monkeypatch.setattr(indexing, "load_embedder", real_load)
    report = build_index(copy, progress=False)
    assert report.embedded == report.images - 2 * indexing.BATCH_SIZE
    assert not list(kept.folder.glob("part-*.npz"))  # folded into vectors.npy
