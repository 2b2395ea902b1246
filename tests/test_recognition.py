"""An honest "this is not jewelry" signal (issue 10, finding 7): `jewelrec index` records a
threshold from the catalog itself; a photo less like the catalog than its pieces are like each
other is answered with recognised: false, and still gets the closest pieces."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from jewelrec.home import Home
from jewelrec.recommend import Recommender
from jewelrec.search import versions
from jewelrec.search.recognition import is_recognised, nearest_other_product, recognition_meta

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency")


def not_jewelry() -> dict[str, np.ndarray]:
    return {
        "blank white": np.full((300, 300, 3), 255, dtype=np.uint8),
        "blank black": np.zeros((300, 300, 3), dtype=np.uint8),
        "cat": skimage_data.chelsea(),
        "coffee": skimage_data.coffee(),
    }


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the threshold ------------------------------------------------------------------------------
def test_nearest_other_product_ignores_the_products_own_images():
    vectors = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    nearest = nearest_other_product(vectors, ["A", "A", "B", "C"])
    # A's two identical images do not count for each other; A is closest to B (0.6)
    assert nearest == pytest.approx([0.6, 0.6, 0.8, 0.8])


def test_the_threshold_is_a_low_percentile_floored_at_half_the_median():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    ids = [f"P{i}" for i in range(300)]
    meta = recognition_meta(vectors, ids)
    nearest = nearest_other_product(vectors, ids)
    assert meta["recognition_threshold"] == pytest.approx(
        max(np.percentile(nearest, 1), 0.5 * np.median(nearest)), abs=1e-6)
    assert meta["recognition"]["images_measured"] == 300
    lonely = np.vstack([vectors[:50], -vectors[:1]])  # one piece unlike every other
    low = recognition_meta(lonely, ids[:51])
    assert low["recognition_threshold"] >= 0.5 * low["recognition"]["median"] > -1


def test_a_one_product_catalog_has_no_threshold_and_recognises_everything():
    meta = recognition_meta(np.eye(3, dtype=np.float32), ["A", "A", "A"])
    assert meta == {"recognition_threshold": None}
    assert is_recognised(0.01, None) and is_recognised(None, 0.5)
    assert not is_recognised(0.2, 0.3) and is_recognised(0.3, 0.3)


def test_large_catalogs_are_measured_on_a_bounded_sample():
    vectors = np.random.default_rng(1).normal(size=(5000, 8)).astype(np.float32)
    nearest = nearest_other_product(vectors, [str(i) for i in range(5000)], sample=300)
    assert len(nearest) == 300


# -- on the tiny home ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recommender(tiny_home) -> Recommender:
    return Recommender.open(tiny_home)


def test_index_records_the_threshold(tiny_home):
    meta = versions.read_meta(Home(tiny_home))
    assert 0 < meta["recognition_threshold"] < 1
    assert meta["recognition"]["images_measured"] == meta["rows"]


@pytest.mark.parametrize("name", list(not_jewelry()))
def test_blank_frames_and_everyday_photos_are_not_recognised(recommender, name):
    answer = recommender.recommend(not_jewelry()[name], k=3)
    assert answer.recognised is False, name
    assert len(answer.results) == 3  # the closest pieces come anyway
    assert answer.to_dict()["recognised"] is False
    # whatever type the head picks for it, however sure, is not a decision
    assert answer.type_decided is False and answer.type_alternatives, name
    assert recommender.recommend(not_jewelry()[name], k=3, type="ring").type_decided is True


def test_shopper_photos_of_catalog_pieces_are_recognised(recommender, tiny_catalog):
    photos = sorted((tiny_catalog / "queries").glob("*.jpg"))
    assert photos
    for photo in photos:
        assert recommender.recommend(photo, k=3).recognised is True, photo.name


def test_more_like_this_is_recognised(recommender):
    product_id = recommender.store.ids()[0]
    assert recommender.similar_to_product(product_id, k=2).recognised is True


def test_the_api_and_the_json_output_say_it(tiny_home, capsys, tmp_path):
    from fastapi.testclient import TestClient

    from jewelrec.cli import main
    from jewelrec.server.app import create_app

    with TestClient(create_app(tiny_home)) as client:
        white = png(not_jewelry()["blank white"])
        answer = client.post("/api/recommend", files={"photo": ("white.png", white, "image/png")},
                             data={"k": "2"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["recognised"] is False and len(answer.json()["results"]) == 2
    path = tmp_path / "coffee.png"
    path.write_bytes(png(not_jewelry()["coffee"]))
    page = tmp_path / "page.html"
    assert main(["recommend", str(path), "--home", str(tiny_home), "--json", "-k", "1",
                 "--html", str(page)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recognised"] is False
    assert {"type_decided", "type_alternatives"} <= set(printed)
    assert "look like jewelry from this shop" in page.read_text()


# -- in the backbone's own feature space (embedders that offer recognition_features) ------------
def test_the_reference_sample_takes_one_image_per_product_first(monkeypatch):
    from jewelrec.search import recognition

    ids = ["A"] * 10 + ["B", "C"]
    monkeypatch.setattr(recognition, "REFERENCE_SIZE", 3)
    picked = recognition.reference_sample(ids)
    assert sorted(ids[i] for i in picked) == ["A", "B", "C"]
    monkeypatch.setattr(recognition, "REFERENCE_SIZE", 5)
    assert len(recognition.reference_sample(ids)) == 5


@pytest.fixture
def backbone_space(monkeypatch):
    """The default embedder offering its raw backbone features for recognition."""
    from jewelrec.models import backbone

    monkeypatch.setattr(backbone.EfficientNetEmbedder, "recognition_features",
                        lambda self, images: backbone.image_features(self.backbone, images),
                        raising=False)


def test_in_the_backbone_space_jewelry_is_recognised_and_other_photos_are_not(
    backbone_space, tiny_home, tiny_catalog, tmp_path
):
    import shutil

    from jewelrec.indexing import build_index
    from jewelrec.search.recognition import REFERENCE_FILE

    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home, home.root, symlinks=True)
    build_index(home, progress=False)
    meta = versions.read_meta(home)
    assert meta["recognition"]["space"] == "backbone"
    reference = np.load(versions.version_dir(home) / REFERENCE_FILE, allow_pickle=False)
    assert reference.shape[0] == meta["recognition"]["images_measured"] == meta["rows"]

    recommender = Recommender.open(home)
    assert recommender.snapshot.recognition_reference is not None
    for photo in sorted((tiny_catalog / "queries").glob("*.jpg")):
        assert recommender.recommend(photo, k=2).recognised is True, photo.name
    for name, image in not_jewelry().items():
        answer = recommender.recommend(image, k=2)
        assert answer.recognised is False, name
        assert len(answer.results) == 2
    # a caller of rank() who has no photo to measure cannot be told it is not jewelry
    vector = recommender.embedder.embed([not_jewelry()["cat"]])[0]
    classes = len(recommender.classifier.classes)
    probabilities = np.full(classes, 1 / classes)
    assert recommender.rank(vector, probabilities, k=1).recognised is True
