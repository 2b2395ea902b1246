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
