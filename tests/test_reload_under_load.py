"""16 clients post photos to a running server while `jewelrec index` alternates embedders
(issue 10, finding 1): every request gets a 2xx, and every answer agrees with the index version
it names. The load and the checks are benchmarks/reload_under_load.py, runnable by hand on any
home; here on a copy of the tiny home, bounded to a few swaps on loopback.

Measured on the code before one snapshot per request (same harness, 4 swaps): 1 answer of
2,973 was a 500 and 1 carried one version's label with another's results."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from jewelrec.home import Home

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reload_under_load.py"


def load_script():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    if "reload_under_load" not in sys.modules:
        spec = importlib.util.spec_from_file_location("reload_under_load", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["reload_under_load"]


@pytest.fixture(scope="module")
def home_with_two_embedders(tiny_home, tmp_path_factory) -> Path:
    """A copy of the tiny home that also holds a trained autoencoder, set back to the defaults."""
    script = load_script()
    home = tmp_path_factory.mktemp("load") / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    trained = script.jewelrec("train", "--home", str(home), "--embedder", "autoencoder",
                              "--classifier", "seed-cnn", "--epochs", "1", "--no-progress")
    assert trained.returncode == 0, trained.stderr[-2000:]
    # train records the models it trained as the home's; the defaults (trained with the tiny
    # home) serve, and `index --embedder` picks the embedder of each swap
    defaults = Home(tiny_home).settings()
    Home(home).update_settings(embedder=defaults.embedder, classifier=defaults.classifier)
    return home


def test_the_checker_flags_failures_and_answers_labelled_with_another_version():
    script = load_script()
    Answer = script.Answer
    versions = {"v1": "efficientnet", "v2": "autoencoder", "v3": "efficientnet"}
    good = [Answer(200, 0, "v1", ("A", "B"), (0.9, 0.8)),
            Answer(200, 0, "v3", ("A", "B"), (0.9, 0.8 + 1e-6)),  # float noise only
            Answer(200, 0, "v2", ("C", "A"), (0.99, 0.98))]
    assert script.check(good, versions) == []
    mixed = Answer(200, 0, "v3", ("C", "A"), (0.99, 0.98))  # v2's answer, v3's label
    problems = script.check([*good, *good, mixed], versions)
    assert len(problems) == 1 and "under efficientnet" in problems[0]
    drifted = Answer(200, 0, "v1", ("A", "B"), (0.9, 0.7))
    assert script.check([*good, *good, drifted], versions)
    assert script.check([Answer(200, 1, "v9")], versions) == [
        "photo 1: unknown index version 'v9'"]


@pytest.mark.slow
def test_no_request_fails_and_no_answer_mixes_snapshots_while_embedders_swap(
    home_with_two_embedders, tiny_catalog
):
    script = load_script()
    photos = [p.read_bytes() for p in sorted((tiny_catalog / "queries").glob("*.jpg"))]
    assert photos
    messages: list[str] = []
    report = script.run_load(home_with_two_embedders, photos, clients=16, swaps=4,
                             settle_s=2.0, log=messages.append)
    summary = report.to_dict()
    assert len(messages) == 4, summary
    assert report.failures == [], summary
    assert report.inconsistent == [], summary
    assert report.server_errors == [], summary
    # the load really spanned the swaps: answers from every version, both embedders checked
    assert set(report.answers_per_version) == set(report.versions), summary
    assert set(report.versions.values()) == {"efficientnet", "autoencoder"}
    assert report.requests >= 16 * len(report.versions), summary
