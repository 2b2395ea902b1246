"""The prototype's pipeline end to end through the CLI: ingest -> train -> index -> recommend ->
evaluate, on a tiny catalog with the seed models (1 epoch), plus the default models' home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jewelrec.cli import main


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
    for folder in ("classifier-seed-cnn", "embedder-autoencoder"):
        model = seed_home / "models" / folder
        assert (model / "weights.safetensors").exists()
        config = json.loads((model / "config.json").read_text())
        assert config
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
                              "image", "score"}


def test_recommend_bad_photo_reports_and_continues(seed_home, tiny_catalog, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    html = tmp_path / "page.html"
    code, out, err = run(capsys, "recommend", str(bad), str(good), "--home", str(seed_home),
                         "--json", "--html", str(html))
    assert code == 1
    assert "broken.jpg" in err and "Traceback" not in err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert len(lines) == 1 and lines[0]["photo"] == str(good)
    page = html.read_text()
    assert "broken.jpg" in page and "<script" not in page


def test_evaluate_json_reports_metrics(seed_home, capsys):
    code, out, _ = run(capsys, "evaluate", "--home", str(seed_home), "--json", "--no-progress")
    assert code == 0
    metrics = json.loads(out)
    for key in ("type_accuracy", "recall@1", "recall@5", "recall@10", "type_precision@10",
                "metal_precision@10", "median_latency_ms", "confusion"):
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
    before = (seed_home / "index" / "CURRENT").read_text()
    code, out, _ = run(capsys, "index", "--home", str(seed_home), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["embedded"] == 0  # nothing changed: every vector came from the cache
    after = (seed_home / "index" / "CURRENT").read_text()
    assert after != before and (seed_home / "index" / before).exists()
    shutil.rmtree(seed_home / "index" / before)
