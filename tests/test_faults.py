"""Faults a real shop meets: one unreadable image in an indexed catalog, and kill -9 at random
moments of `jewelrec ingest` and `jewelrec index` (the home must always open and a re-run must
finish)."""

from __future__ import annotations

import logging
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from jewelrec.catalog.ingest import STAGING_DIR
from jewelrec.catalog.store import CatalogStore
from jewelrec.home import Home
from jewelrec.indexing import build_index
from jewelrec.recommend import Recommender
from jewelrec.search import versions


def copy_home(source: Path, target: Path) -> Home:
    shutil.copytree(source, target, symlinks=True)
    return Home(target)


def test_index_skips_an_unreadable_image_and_names_it(
    tiny_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = copy_home(tiny_home, tmp_path / "home")
    shutil.rmtree(home.cache_dir / "embeddings")  # every image is read again
    products = CatalogStore.open(home).all_products()
    bad = products[3]
    # An image stored before the load-time limits existed: 1x39000 pixels once cost gigabytes
    # and failed the whole catalog's index.
    Image.new("L", (1, 39_000)).save(home.image_path(bad.images[0]), "PNG")
    with caplog.at_level(logging.WARNING, logger="jewelrec.indexing"):
        report = build_index(home, progress=False)
    total = sum(len(set(p.images)) for p in products)
    assert report.images == total - 1 and report.products == len(products)
    messages = "\n".join(caplog.messages)
    assert f"skipping image {bad.images[0]}" in messages and "20:1 limit" in messages
    assert bad.id in messages
    recommender = Recommender.open(home)
    photo = home.image_path(products[0].images[0])
    assert recommender.recommend(photo, k=3).results


# -- kill -9 at random moments ---------------------------------------------------------------

TRIALS = 3  # per command; each is one kill of a running command and one check
MAX_ATTEMPTS = 5  # per trial: a command that ends before its kill is tried again, killed sooner
SEED = 10


def jewelrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "jewelrec.cli", *args, "--no-progress"]


def run_to_end(command: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command[3:]} failed: {done.stdout}\n{done.stderr}"
    return time.monotonic() - start


def kill_after(command: list[str], seconds: float) -> bool:
    """Start `command`, SIGKILL it after `seconds`; True when it was still running then."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child.wait(timeout=seconds)  # it may finish first: a kill after the end is a trial too
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
    finally:
        code = child.wait(timeout=60)
    return code == -signal.SIGKILL


def assert_home_works(home: Home, ids: set[str], query: Path | None = None) -> None:
    """The store opens and holds exactly `ids`, every image it names exists, the index pointer
    names a complete version, and (given a query) the home answers it."""
    store = CatalogStore.open(home)
    try:
        products = store.all_products()
    finally:
        store.close()
    assert {p.id for p in products} == ids
    for product in products:
        for name in product.images:
            assert home.image_path(name).is_file(), f"{product.id} names a missing image {name}"
    assert (versions.version_dir(home) / "meta.json").is_file()
    if query is not None:
        rec = Recommender.open(home).recommend(query, k=3)
        assert rec.results and {r.id for r in rec.results} <= ids


@pytest.mark.slow
def test_kill_9_at_random_moments_of_ingest_and_index_leaves_a_working_home(
    tiny_home: Path, tiny_catalog: Path, tmp_path: Path
) -> None:
    from jewelrec.catalog.synthetic import generate_catalog

    rng = random.Random(SEED)
    home = copy_home(tiny_home, tmp_path / "home")
    query = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]

    def fingerprint() -> str:
        store = CatalogStore.open(home)
        try:
            return store.fingerprint()
        finally:
            store.close()

    def ids() -> set[str]:
        store = CatalogStore.open(home)
        try:
            return set(store.ids())
        finally:
            store.close()

    # Each ingest trial brings a new catalog (new images to decode and stage, every product
    # changed, some pruned), kills the command at a random moment of a measured run, checks the
    # home holds the old catalog or the new one, whole, then re-runs it to the end. A command
    # that finished before its kill is no trial: it is repeated, with a shorter delay.
    catalogs = iter(range(1, 100))

    def ingest_command() -> list[str]:
        seed = next(catalogs)
        catalog = generate_catalog(tmp_path / f"catalog-{seed}", products=40 + seed % 2,
                                   views=2, seed=seed, progress=False)
        return jewelrec("ingest", str(catalog), "--home", str(home.root), "--prune")

    seconds = run_to_end(ingest_command())
    for _ in range(TRIALS):
        delay = rng.uniform(0.2, 0.95) * seconds
        for _attempt in range(MAX_ATTEMPTS):
            command, before = ingest_command(), fingerprint()
            if kill_after(command, delay):
                break
            delay /= 2
        else:
            pytest.fail(f"no ingest was still running after {delay:.2f}s: nothing was tested")
        interrupted = fingerprint()
        assert_home_works(home, ids())
        run_to_end(command)
        assert interrupted in (before, fingerprint())  # all or nothing
        assert not (home.root / STAGING_DIR).exists()
        assert_home_works(home, ids())

    # Index trials: the embedding cache is dropped each time, so there is embedding to kill.
    index = jewelrec("index", "--home", str(home.root))
    listed = ids()
    seconds = run_to_end(index)
    for _ in range(TRIALS):
        delay = rng.uniform(0.2, 0.95) * seconds
        for _attempt in range(MAX_ATTEMPTS):
            shutil.rmtree(home.cache_dir / "embeddings", ignore_errors=True)
            before = versions.current_version(home)
            if kill_after(index, delay):
                break
            delay /= 2
        else:
            pytest.fail(f"no index was still running after {delay:.2f}s: nothing was tested")
        assert_home_works(home, listed, query)  # the old version, or a complete new one
        run_to_end(index)
        assert versions.current_version(home) != before
        assert_home_works(home, listed, query)
