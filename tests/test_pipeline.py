"""The prototype's pipeline end to end through the CLI: ingest -> train -> index -> recommend ->
evaluate, on a tiny catalog with the seed models (1 epoch), plus the default models' home."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jewelrec.cli import main
from jewelrec.home import current_umask


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def seed_home(tiny_catalog, tmp_path_factory) -> Path:
    """A home trained with the prototype's models (seed CNN + autoencoder), through the CLI."""
    home = tmp_path_factory.mktemp("seed-home")
    assert main(["ingest", str(tiny_catalog / "catalog.csv"), "--home", str(home), "--json"]) == 0
    assert main(["train", "--home", str(home), "--classifier", "seed-cnn",
                 "--embedder", "autoencoder", "--epochs", "1", "--no-progress"]) == 0
    assert main(["index", "--home", str(home), "--no-progress"]) == 0
    return home


def test_train_writes_safetensors_config_and_loss_curves(seed_home):
    for folder, name in (("classifier-seed-cnn", "seed-cnn"), ("embedder-autoencoder",
                                                                "autoencoder")):
        model = seed_home / "models" / folder
        weights = (model / "weights.safetensors").read_bytes()
        config = json.loads((model / "config.json").read_text())
        assert config["model"] == name
        assert config["weights_sha256"] == hashlib.sha256(weights).hexdigest()
        assert (model / "loss.png").stat().st_size > 1000
        assert json.loads((model / "training.json").read_text())["training_data_fingerprint"]
    settings = json.loads((seed_home / "settings.json").read_text())
    assert settings["embedder"] == "autoencoder" and settings["classifier"] == "seed-cnn"


def test_recommend_json_respects_max_price_and_returns_k(seed_home, tiny_catalog, capsys):
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.home import Home

    products = CatalogStore.open(Home(seed_home)).all_products()
    photo = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    k = 3
    for ptype in sorted({p.type for p in products}):
        prices = sorted(p.price for p in products if p.type == ptype)
        limit = prices[k - 1]  # exactly enough products of this type at or under the limit
        code, out, _ = run(capsys, "recommend", str(photo), "--home", str(seed_home), "--json",
                           "-k", str(k), "--type", ptype, "--max-price", str(limit))
        assert code == 0
        answer = json.loads(out.strip().splitlines()[0])
        assert set(answer) >= {"photo", "type", "type_confidence", "results"}
        assert len(answer["results"]) == k
        for r in answer["results"]:
            assert r["price"] <= limit and r["type"] == ptype
            assert set(r) == {"id", "title", "type", "brand", "price", "currency", "url",
                              "image", "score", "why", "metal", "stone", "predicted"}
            assert f"{ptype} like yours" in r["why"]  # the type was fixed: that is evidence


def test_recommend_bad_photo_reports_and_continues(seed_home, tiny_catalog, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    html = tmp_path / "page.html"
    code, out, err = run(capsys, "recommend", str(bad), str(good), "--home", str(seed_home),
                         "--json", "--html", str(html))
    assert code == 1
    assert "broken.jpg" in err and "Traceback" not in err
    lines = [json.loads(line) for line in out.strip().splitlines()]  # one line per photo
    assert len(lines) == 2 and lines[1]["photo"] == str(good) and "error" not in lines[1]
    assert lines[0]["photo"] == str(bad) and lines[0]["error"] in err
    page = html.read_text()
    assert "broken.jpg" in page and "<script" not in page
    assert html.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # 0644, not mkstemp's 0600


def test_evaluate_json_reports_metrics(seed_home, capsys):
    code, out, _ = run(capsys, "evaluate", "--home", str(seed_home), "--json", "--no-progress")
    assert code == 0
    metrics = json.loads(out)
    for key in ("type_accuracy", "recall@1", "recall@5", "recall@10", "type_precision@10",
                "metal_precision@10", "median_latency_ms", "confusion", "metal_accuracy",
                "stone_accuracy"):
        assert key in metrics
    assert metrics["queries"] == 24
    assert 0.0 <= metrics["recall@10"] <= 1.0
    assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"]
    assert Path(metrics["confusion_png"]).exists()


def test_missing_steps_give_clear_errors(tmp_path, capsys):
    code, _, err = run(capsys, "recommend", "x.jpg", "--home", str(tmp_path / "empty"))
    assert code == 2 and "ingest" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "--home", str(tmp_path / "empty"))
    assert code == 2 and "ingest" in err


def test_default_home_recommends_the_right_type(tiny_home, tiny_catalog, capsys):
    """The pretrained pipeline finds the queried product's type for shopper photos."""
    import csv

    rows = list(csv.DictReader(open(tiny_catalog / "queries" / "queries.csv")))
    photos = [str(tiny_catalog / "queries" / r["file"]) for r in rows]
    code, out, _ = run(capsys, "recommend", *photos, "--home", str(tiny_home), "--json", "-k", "5")
    assert code == 0
    answers = [json.loads(line) for line in out.strip().splitlines()]
    assert len(answers) == len(rows)
    for answer in answers:
        assert len(answer["results"]) == 5
    right = sum(a["type"] == r["type"] for a, r in zip(answers, rows, strict=True))
    assert right >= len(rows) - 1, (answers, rows)


def test_index_rebuild_is_atomic_and_old_index_kept(seed_home, capsys):
    """While `index` publishes new versions, a reader that keeps opening whatever CURRENT names
    (as a server does on reload) always gets a complete index: every row with its vector,
    searchable. The previous version stays for readers still loading it."""
    from jewelrec.home import Home
    from jewelrec.search import versions
    from jewelrec.search.backends import open_index

    home = Home(seed_home)
    before = versions.current_version(home)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop, started = threading.Event(), threading.Event()

    def reader() -> None:
        while True:
            last = stop.is_set()
            try:
                version = versions.current_version(home)
                index, meta = open_index(home, version=version)
                assert index.vectors.shape == (meta["rows"], meta["dim"]) == (len(index.rows),
                                                                           meta["dim"])
                assert len(index.search(np.ones(meta["dim"], dtype=np.float32), 3)) == 3
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return
            seen.append(version)
            started.set()
            if last:
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert started.wait(60)
        published = []
        for _ in range(3):
            code, out, _ = run(capsys, "index", "--home", str(seed_home), "--json")
            assert code == 0
            report = json.loads(out)
            assert report["embedded"] == 0  # nothing changed: every vector came from the cache
            published.append(report["version"])
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[0]
    assert seen[0] == before and seen[-1] == published[-1] != before
    assert set(seen) <= {before, *published}
    assert (seed_home / "index" / published[-2]).exists()  # the previous version is kept
    assert not list((seed_home / "index").glob(".building-*"))


def test_an_index_build_that_fails_mid_write_publishes_nothing_and_says_why(
    seed_home, tiny_catalog, monkeypatch, capsys
):
    """The disk fills while the vectors are written (numpy's short write, no errno): the
    command names the index folder and the full disk, removes its partial folder, and the
    previous index keeps answering."""
    from jewelrec.search.index import ExactIndex

    before = (seed_home / "index" / "CURRENT").read_text()

    def save_on_full_disk(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vectors.npy").write_bytes(b"\x93NUMPY" + bytes(66_528))
        raise OSError("588800 requested and 66528 written")

    monkeypatch.setattr(ExactIndex, "save", save_on_full_disk)
    monkeypatch.setattr("jewelrec.home.shutil.disk_usage", lambda path: SimpleNamespace(free=0))
    code, _, err = run(capsys, "index", "--home", str(seed_home))
    assert code == 2
    assert "unexpected error" not in err
    assert str(seed_home / "index") in err and "disk is full" in err
    assert not list((seed_home / "index").glob(".building-*"))
    assert (seed_home / "index" / "CURRENT").read_text() == before
    monkeypatch.undo()
    photo = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    code, out, _ = run(capsys, "recommend", str(photo), "--home", str(seed_home), "--json",
                       "-k", "2")
    assert code == 0 and len(json.loads(out)["results"]) == 2


def test_one_index_run_per_home_at_a_time(tiny_home, tmp_path, capsys):
    """Two runs raced to publish, and the one that started first (an older catalog) could
    become the current index after the newer one."""
    import shutil

    fcntl = pytest.importorskip("fcntl")
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    current = (home / "index" / "CURRENT").read_text()
    with open(home / ".index.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert main(["index", "--home", str(home), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "another index is running on" in err and err.count("\n") == 1
        assert (home / "index" / "CURRENT").read_text() == current  # nothing published
    assert main(["index", "--home", str(home), "--no-progress"]) == 0
    assert (home / "index" / "CURRENT").read_text() != current


@pytest.mark.parametrize("lost", ["weights.safetensors", None])
def test_index_without_a_type_head_is_refused_before_any_work(tiny_home, tmp_path, capsys, lost):
    """The index was embedded and published, then every server refused it (queries type the
    photo first): now `index` says to train, and the serving index stays."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    current = (home / "index" / "CURRENT").read_text()
    classifier = json.loads((home / "settings.json").read_text())["classifier"]
    folder = home / "models" / f"classifier-{classifier}"
    if lost:
        (folder / lost).unlink()
    else:
        shutil.rmtree(folder)
    assert main(["index", "--home", str(home), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "jewelrec train" in err and "Traceback" not in err
    assert (home / "index" / "CURRENT").read_text() == current


def test_a_type_the_catalog_drops_or_gains_after_train_is_said_and_searched_around(
    tiny_home, tiny_catalog, tmp_path, capsys
):
    """A type dropped since `train`: its photos were still decided as it and answered with
    nothing ("no products match the filters"); a type added: never found by photo, and
    neither ingest nor index said to train."""
    import csv
    import shutil

    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    with open(tiny_catalog / "catalog.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = list(reader.fieldnames or []), list(reader)
    dropped = rows[0]["type"]
    kept = [row for row in rows if row["type"] != dropped]
    smaller = tiny_catalog / f"without-{dropped}.csv"
    with open(smaller, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept)
    code, out, _ = run(capsys, "ingest", str(smaller), "--home", str(home), "--prune")
    assert code == 0 and f"no longer sold: {dropped}" in out and "jewelrec train" in out
    assert run(capsys, "index", "--home", str(home), "--no-progress")[0] == 0
    photo = str(tiny_catalog / rows[0]["image"].split("|")[0])  # a photo of the dropped type
    code, out, _ = run(capsys, "recommend", photo, "--home", str(home), "--json", "-k", "3")
    answer = json.loads(out)
    assert code == 0 and answer["results"], answer
    assert answer["type_decided"] is False
    assert {r["type"] for r in answer["results"]} <= {row["type"] for row in kept}
    # "any" is every type the shop sells (it was the classifier's, the dropped one refused)
    code, out, err = run(capsys, "recommend", photo, "--home", str(home), "--json", "-k", "3",
                         "--type", "any")
    assert code == 0, err
    assert sorted(json.loads(out)["searched_types"]) == sorted({row["type"] for row in kept})

    # the type comes back, but as a new name the head never learnt: index says to train
    renamed = [{**row, "type": "anklet"} if row["type"] == dropped else row for row in rows]
    with open(smaller, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(renamed)
    code, out, _ = run(capsys, "ingest", str(smaller), "--home", str(home), "--json")
    assert json.loads(out)["types_added"] == ["anklet"]
    code, out, err = run(capsys, "index", "--home", str(home), "--no-progress")
    assert code == 0 and "trained before the catalog had anklet" in err


def test_a_type_shown_only_worn_among_product_shots_is_warned_of():
    """A shop's anklets were all photographed on legs, its other pieces on white: shoppers' worn
    earrings, rings and bracelets came back "anklet" at 0.8-0.96, and train said nothing."""
    from jewelrec.train import style_warnings

    labels = ["anklet"] * 12 + ["ring"] * 30 + ["earring"] * 30
    plain = [False] * 11 + [True] + [True] * 25 + [False] * 5 + [True] * 27 + [False] * 3
    warned = style_warnings(labels, plain)
    assert len(warned) == 1 and warned[0].startswith("8% of the photos of anklet")
    assert "87% of the other types'" in warned[0]
    # a shop whose photos are all worn, or a mix in every type: nothing to warn of
    assert style_warnings(labels, [False] * len(labels)) == []
    assert style_warnings(labels, [i % 2 == 0 for i in range(len(labels))]) == []
