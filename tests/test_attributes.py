"""Attributes read from the photo (issue 12, item 2): metal and stone heads fitted at train."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.models.attributes import (
    NO_STONE,
    AttributeGuess,
    AttributeHeads,
    attributes_folder,
    learnable,
    load_attributes,
    product_attributes,
)
from jewelrec.models.backbone import Backbone
from jewelrec.models.heads import Head, head_probabilities
from jewelrec.recommend import Recommender


def test_only_values_with_enough_photos_are_learnable():
    assert learnable(["gold"] * 5 + ["silver"] * 5 + ["platinum"] * 4 + [None] * 9) == {
        "gold", "silver"}
    assert learnable(["gold"] * 9 + ["silver"] * 4) == set()  # one value: nothing to tell apart
    assert learnable([None] * 20) == set()


def test_a_piece_without_a_stone_is_no_stone_only_where_the_catalog_names_stones():
    piece = SimpleNamespace
    named = [piece(metal="gold", stone="ruby"), piece(metal=None, stone=None)]
    assert product_attributes(named) == {"metal": ["gold", None], "stone": ["ruby", NO_STONE]}
    silent = [piece(metal="gold", stone=None), piece(metal="silver", stone="")]
    assert product_attributes(silent)["stone"] == [None, None]


def random_head(classes, dim=1280, seed=0) -> Head:
    rng = np.random.default_rng(seed)
    k = len(classes)
    return Head(list(classes), rng.normal(size=(k, dim)).astype(np.float32),
                rng.normal(size=k).astype(np.float32), np.zeros(dim, np.float32),
                np.ones(dim, np.float32), temperature=1.7, decision_threshold=0.6)


def test_heads_round_trip_through_safetensors(tmp_path):
    heads = AttributeHeads({"metal": random_head(["gold", "silver"]),
                            "stone": random_head(["none", "ruby", "pearl"], seed=1)})
    heads.save(tmp_path / "a")
    loaded = AttributeHeads.load(tmp_path / "a")
    features = np.random.default_rng(2).normal(size=(3, 1280)).astype(np.float32)
    for name, head in heads.heads.items():
        assert loaded.heads[name].classes == head.classes
        np.testing.assert_allclose(head_probabilities(loaded.heads[name], features),
                                   head_probabilities(head, features), rtol=1e-6)
    assert loaded.settings == heads.settings


def test_damaged_heads_are_a_clear_error(tmp_path):
    AttributeHeads({"metal": random_head(["gold", "silver"])}).save(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config["heads"]["metal"].pop("classes")
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotReadyError, match="attribute heads"):
        AttributeHeads.load(tmp_path / "a")


def test_only_confident_guesses_count_as_evidence():
    heads = AttributeHeads({"metal": random_head(["gold", "silver"]),
                            "stone": random_head(["none", "ruby"])})
    guesses = {"metal": AttributeGuess("gold", 0.9), "stone": AttributeGuess("ruby", 0.55)}
    assert heads.known(guesses) == {"metal": "gold"}  # both thresholds are 0.6


def test_train_fits_the_heads_the_catalog_can_teach(tiny_home):
    home = Home(tiny_home)
    heads = load_attributes(home.models_dir, backbone=Backbone.for_home(home))
    assert heads is not None, "the tiny catalog labels metals on enough photos"
    assert "metal" in heads.heads
    notes = json.loads((attributes_folder(home.models_dir) / "training.json").read_text())
    assert set(notes["notes"]) == set(heads.heads)
    metals = {p.metal for p in Recommender.open(tiny_home).store.all_products()}
    assert set(heads.heads["metal"].classes) <= metals


def test_queries_answer_the_photo_s_attributes(tiny_home, tiny_query_photo):
    from jewelrec.server.app import create_app

    recommender = Recommender.open(tiny_home)
    snap = recommender.snapshot
    assert snap.attributes.backbone is snap.backbone is snap.classifier.backbone  # one runtime
    answer = recommender.recommend(tiny_query_photo, k=3)
    metal = answer.attributes["metal"]
    assert metal.value in recommender.snapshot.attributes.heads["metal"].classes
    assert 0 < metal.confidence <= 1
    assert answer.to_dict()["attributes"]["metal"] == {"value": metal.value,
                                                       "confidence": metal.confidence}
    with TestClient(create_app(tiny_home)) as client:
        served = client.post("/api/recommend",
                             files={"photo": ("p.jpg", tiny_query_photo, "image/jpeg")},
                             data={"k": "3"}).json()
    assert served["attributes"]["metal"]["value"] == metal.value
    # a confident metal is evidence: results of that metal say so
    sure = recommender.snapshot.attributes.known(answer.attributes)
    products = {p.id: p for p in recommender.store.all_products()}
    for r in answer.results:
        said = f"{products[r.id].metal} like yours" in r.why
        assert said == (sure.get("metal") is not None and products[r.id].metal == sure["metal"])


def test_evaluate_reports_attribute_accuracy_on_held_out_views(tiny_home, tmp_path):
    import shutil

    from jewelrec.evaluate import evaluate_home

    copy = tmp_path / "home"  # evaluate writes reports: not into the shared home
    shutil.copytree(tiny_home, copy)
    report = evaluate_home(Home(copy), progress=False).to_dict()
    assert 0 <= report["metal_accuracy"] <= 1
    assert report["stone_accuracy"] is None  # the tiny catalog names too few stones to learn
