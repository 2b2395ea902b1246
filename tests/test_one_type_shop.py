"""A shop that sells one type only (a ring-only shop) trains, indexes and serves: the pretrained
embedder needs no second type, and the type 'decision' simply has one answer (issue 10, finding 4).
A one-product catalog does too."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def one_type_catalog(source: Path, folder: Path, kind: str, limit: int | None = None) -> Path:
    """The tiny demo catalog's products of one type, written beside the same images."""
    with open(source / "catalog.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["type"] == kind][:limit]
    assert rows, f"the tiny catalog has no {kind}"
    path = source / f"only-{kind}-{limit or 'all'}.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def jewelrec(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jewelrec.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("limit", [None, 1], ids=["ring-shop", "one-product"])
def test_a_one_type_shop_is_served_end_to_end(tiny_catalog, tmp_path, limit):
    catalog = one_type_catalog(tiny_catalog, tmp_path, "ring", limit)
    home = tmp_path / "home"
    for step in (("ingest", catalog), ("train",), ("index",)):
        done = jewelrec(*step, "--home", home, "--no-progress")
        assert done.returncode == 0, f"{step[0]}: {done.stderr[-2000:]}"
    photo = next((tiny_catalog / "images").glob("*.jpg"))
    done = jewelrec("recommend", photo, "--home", home, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout)
    answer = answers[0] if isinstance(answers, list) else answers
    assert answer["type"] == "ring" and answer["type_confidence"] == pytest.approx(1.0)
    assert answer["type_decided"] is True
    assert answer["results"] and {r["type"] for r in answer["results"]} == {"ring"}
