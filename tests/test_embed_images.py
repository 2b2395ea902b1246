"""`embed_images`, the bulk path of `jewelrec index`: several batches embedded at once (one
worker per core) still give every readable image its own vector, in the caller's order, skip an
unreadable file with a warning, and fill the embedding cache so the next run embeds nothing;
`index` removes the caches of the embedder's earlier models, and only those."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from jewelrec.home import Home
from jewelrec.imaging.focus import frame_piece
from jewelrec.imaging.io import load_image
from jewelrec.indexing import BATCH_SIZE, EmbeddingCache, embed_images, prune_stale_embeddings


class MeanColour:
    """A stand-in embedder: the frame's mean colour and size, so each image's vector is its own;
    it records which threads called it and how many calls overlapped."""

    def __init__(self, *, overlap: bool = False) -> None:
        self.overlap = overlap  # the first two calls wait (2 s at most) until both are running
        self.threads: set[str] = set()
        self.calls = 0
        self._running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        self._overlap = threading.Barrier(2, timeout=2)

    def embed(self, images: Sequence[np.ndarray],
              masks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.calls += 1
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            if self.overlap and self.calls <= 2:
                self._overlap.wait()
        except threading.BrokenBarrierError:
            pass
        finally:
            with self._lock:
                self._running -= 1
        assert masks is not None and len(masks) == len(images)
        rows = [np.r_[im.reshape(-1, 3).mean(axis=0), im.shape[:2]] for im in images]
        return np.asarray(rows, np.float32)


@pytest.fixture()
def home(tmp_path) -> tuple[Home, list[str]]:
    home = Home(tmp_path / "home").ensure()
    names = []
    rng = np.random.default_rng(3)
    for i in range(3 * BATCH_SIZE + 3):
        pixels = np.full((40 + i, 50, 3), 255, np.uint8)
        pixels[10:30, 10:40] = rng.integers(0, 200, 3)  # a piece of its own colour on white
        name = f"p{i:02d}.png"
        Image.fromarray(pixels).save(home.images_dir / name)
        names.append(name)
    (home.images_dir / "broken.png").write_bytes(b"not an image")
    names.insert(5, "broken.png")
    return home, names


def test_batches_run_side_by_side_yet_each_image_keeps_its_own_vector(home, caplog):
    home, names = home
    alone, together = MeanColour(), MeanColour(overlap=True)
    with caplog.at_level(logging.WARNING, logger="jewelrec.indexing"):
        one = embed_images(home, alone, names, progress=False, workers=1)
    assert "broken.png" in caplog.text
    many = embed_images(home, together, names, progress=False, workers=3)
    assert list(one) == list(many) == [n for n in names if n != "broken.png"]
    for name in one:
        np.testing.assert_array_equal(one[name], many[name])
    for name in list(one)[:: BATCH_SIZE - 1]:  # each vector is its own image's, not shuffled
        framed = frame_piece(load_image(home.image_path(name)))
        np.testing.assert_array_equal(many[name], MeanColour().embed([framed.image], [None])[0])
    assert alone.most_at_once == 1 and len(alone.threads) == 1
    assert together.most_at_once >= 2 and len(together.threads) >= 2


def test_the_cache_keeps_what_ran_and_the_next_run_embeds_nothing(home):
    home, names = home
    cache = EmbeddingCache(home, "mean-colour", "f0")
    first = embed_images(home, MeanColour(), names, cache=cache, progress=False, workers=2)
    again = MeanColour()
    second = embed_images(home, again, names, progress=False, workers=2,
                          cache=EmbeddingCache(home, "mean-colour", "f0"))
    assert again.calls == 0  # only the unreadable file is tried again, and never reaches it
    assert list(second) == list(first)


class BrokenModel(MeanColour):
    """Fails on its second batch, as a model that runs out of memory would."""

    def embed(self, images, masks=None):
        if self.calls == 1:
            self.calls += 1
            raise RuntimeError("out of memory")
        return super().embed(images, masks)


def test_an_embedder_error_stops_the_run_instead_of_embedding_the_rest(home):
    home, names = home
    for i in range(10 * BATCH_SIZE):  # ten batches more, so the rest clearly never runs
        Image.new("RGB", (30, 30), (i, 90, 200)).save(home.images_dir / f"more{i:02d}.png")
        names.append(f"more{i:02d}.png")
    model = BrokenModel()
    with pytest.raises(RuntimeError, match="out of memory"):
        embed_images(home, model, names, progress=False, workers=1)
    assert model.calls <= 4  # the failed batch and those already handed out, not the ten others


def test_the_caches_of_earlier_models_go_and_the_rest_stay(home):
    home, _ = home
    current, earlier = "0123456789abcdef", "fedcba9876543210"
    kind = "-int8-qdq-u8s8-minmax-synth64-float01-v2"
    kept = [f"efficientnet-{current}{kind}",
            f"efficientnet-{current}-int8-qdq-s8s8-minmax-synth64-float01-v2",  # other CPU kind
            f"recognition-efficientnet-{current}",
            f"efficientnet-gap-{earlier}",  # another embedder's model
            f"text-all-MiniLM-L6-v2-{earlier}", "notes"]
    gone = [f"efficientnet-{earlier}{kind}", f"efficientnet-{earlier}",
            f"recognition-efficientnet-{earlier}"]
    folder = home.cache_dir / "embeddings"
    for name in kept + gone:
        (folder / name).mkdir(parents=True)
    assert sorted(prune_stale_embeddings(home, "efficientnet", current)) == sorted(gone)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)
    assert prune_stale_embeddings(Home(home.root / "elsewhere"), "efficientnet", current) == []


def test_index_removes_the_embeddings_of_a_model_it_no_longer_has(tiny_home, tmp_path):
    import shutil

    from jewelrec.indexing import build_index

    copy = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    folder = copy.cache_dir / "embeddings"
    current = sorted(p.name for p in folder.iterdir())
    stale = folder / "efficientnet-fedcba9876543210"  # a model trained before this one
    stale.mkdir()
    (stale / "vectors.npy").write_bytes(b"vectors nobody can read again")
    report = build_index(copy, progress=False)
    assert report.embedded == 0  # the current model's cache served every image
    assert sorted(p.name for p in folder.iterdir()) == current


def test_an_image_file_deleted_after_its_vector_was_cached_is_left_out(tiny_home, tmp_path):
    """Its cached vector kept it in the index (shown to shoppers, a broken image) and
    `evaluate` failed on it: gone files are left out like unreadable ones, and where the
    product is shown (a text search's result, "more like this", which was a 503 for good) its
    other photo stands in."""
    import shutil

    from jewelrec.catalog.store import CatalogStore
    from jewelrec.evaluate import evaluate_home
    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.search import versions
    from jewelrec.text.search import TextSearcher

    copy = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    store = CatalogStore.open(copy)
    product = next(p for p in store.all_products() if len(p.images) > 1)
    store.close()
    main, other = product.images[0], product.images[1]
    copy.image_path(main).unlink()
    report = build_index(copy, progress=False)
    assert report.embedded == 0  # the rest from the cache
    rows = (versions.version_dir(copy) / "rows.json").read_text()
    assert main not in rows and other in rows
    evaluate_home(copy, progress=False)  # no "image file ... does not exist"
    assert copy.shown_image(product.images) == other
    found = TextSearcher.open(copy).search(product.title, k=50).results
    assert [r.image for r in found if r.id == product.id] == [other]
    similar = Recommender.open(copy).similar_to_product(product.id, k=2)
    assert similar.results and product.id not in [r.id for r in similar.results]
    # the product's API page lists only the photos it can serve (a broken link before)
    from fastapi.testclient import TestClient

    from jewelrec.server.app import create_app
    from jewelrec.server.schemas import image_url

    with TestClient(create_app(copy.root)) as client:
        shown = client.get(f"/api/products/{product.id}").json()
        assert shown["images"] == [n for n in product.images if n != main]
        assert shown["image_url"] == image_url(other)
        assert all(client.get(url).status_code == 200 for url in shown["image_urls"])


def test_the_whole_photo_and_the_framed_piece_are_cached_apart_and_queries_follow_the_index(
    tiny_home, tmp_path
):
    """With `auto_crop` turned off in settings.json, `index` reused the framed pieces' cached
    vectors (keyed by image name only), and a server kept framing its queries: now the whole
    photos' vectors have their own cache and queries frame as the serving index was built."""
    import shutil

    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.search import versions

    copy = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    framed_server = Recommender.open(copy)
    assert framed_server.auto_crop
    folder = copy.cache_dir / "embeddings"
    framed = {p.name for p in folder.iterdir()}
    copy.update_settings(auto_crop=False)
    report = build_index(copy, progress=False)
    assert report.embedded > 0  # nothing read from the framed pieces' cache
    whole = {p.name for p in folder.iterdir()} - framed
    assert whole and all(name.endswith("-whole") for name in whole), whole
    assert versions.read_meta(copy, versions.current_version(copy))["auto_crop"] is False
    framed_server.reload_if_changed()  # a server started before now frames as the index did
    assert not framed_server.auto_crop
    copy.update_settings(auto_crop=True)  # changed back, no index yet: still as indexed
    assert not Recommender.open(copy).auto_crop
