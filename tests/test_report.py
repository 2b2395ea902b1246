"""`jewelrec report`: one self-contained HTML file with every section, no network, no script;
in Chromium with the network off every plot loads.

Set JEWELREC_REPORT_SCREENSHOT=path/to/file.png to also save the screenshot (1280x1800 from the
example queries on; docs/report.png is made this way from a demo home, scaled to half).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS

from jewelrec.catalog.ingest import ingest
from jewelrec.cli import main
from jewelrec.home import Home
from jewelrec.report import build_report

SECTIONS = ["catalog", "hygiene", "evaluation", "confidence", "examples", "map", "training"]
PLOTS = 5  # catalog, confusion, per type, confidence, map (plus any loss curves)


class Page(HTMLParser):
    """The tags of a page that matter here: section ids, images, scripts, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attributes.get("id"))
        if tag == "img":
            self.images.append(attributes)


@pytest.fixture(scope="module")
def report(tiny_home, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    code = main(["report", "--home", str(tiny_home), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_every_section_self_contained(report, capsys):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == SECTIONS
    assert "class='na'" not in text  # every section has its content on a complete home
    assert re.search(r"https?://", text) is None  # no product link, nothing to fetch
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.images and all(img["src"].startswith("data:image/") for img in page.images)
    plots = [img for img in page.images if img.get("class") == "plot"]
    assert len(plots) >= PLOTS
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "same product" in text  # a held-out view found its own product among the results
    # ...through the product's other photo: the view itself is held out of the index there
    assert "· 1.00</span> <span class='hit'>same product" not in text
    assert "recall@5" in text and "classifier precision" in text


def test_report_json_and_example_photo(tiny_home, tiny_catalog, tmp_path, capsys):
    photo = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
    out = tmp_path / "r.html"
    code = main(["report", "--home", str(tiny_home), "--out", str(out), "--json",
                 "--photo", str(photo), "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == SECTIONS and summary["unavailable"] == {}
    assert summary["bytes"] == out.stat().st_size
    assert photo.name in out.read_text(encoding="utf-8")
    assert main(["report", "--home", str(tiny_home), "--out", str(out),
                 "--photo", str(tmp_path / "missing.jpg")]) != 0
    assert "no such file" in capsys.readouterr().err
    text = tmp_path / "notes.jpg"  # said only inside the page, the command exiting 0
    text.write_text("not a photo")
    assert main(["report", "--home", str(tiny_home), "--out", str(out),
                 "--photo", str(text)]) != 0
    assert "is not an image we can read" in capsys.readouterr().err


def test_catalog_only_home_says_what_to_run(tiny_catalog, tmp_path):
    """No models, no index: the report still comes out, each missing part naming its command;
    the home's name is escaped."""
    home = Home(tmp_path / "shop<script>x").ensure()
    ingest(tiny_catalog / "catalog.csv", home, progress=False)
    summary = build_report(home, tmp_path / "report.html")
    text = summary.path.read_text(encoding="utf-8")
    assert Page(text).sections == SECTIONS
    assert "<script" not in text and "shop&lt;script&gt;x" in text
    assert "jewelrec train" in text and "jewelrec index" in text
    assert {"examples", "map"} <= set(summary.unavailable)


def test_catalog_text_with_dollar_signs_is_drawn_as_written(tiny_catalog, tmp_path):
    """matplotlib reads text between `$` signs as mathematics: one brand "Bling$ #1 $hop" made
    the whole report fail with a parse error (and the confusion plot of `evaluate` alike)."""
    import csv

    rows = list(csv.DictReader((tiny_catalog / "catalog.csv").open(encoding="utf-8")))
    rows[0]["brand"] = "Bling$ #1 $hop"
    rows[1]["brand"] = r"Bad $\undefinedmacro{$ Brand"
    catalog = tmp_path / "catalog.csv"
    with catalog.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copytree(tiny_catalog / "images", tmp_path / "images")  # as the rows name them
    home = Home(tmp_path / "home").ensure()
    ingest(catalog, home, progress=False)
    summary = build_report(home, tmp_path / "report.html")
    assert "catalog" not in summary.unavailable
    assert Page(summary.path.read_text(encoding="utf-8")).sections == SECTIONS


def test_damaged_files_cost_their_section_not_the_report(tiny_home, tmp_path):
    """A truncated rows.json or a training.json that is not an object stopped the whole report
    with an unexpected JSONDecodeError / AttributeError."""
    import shutil

    from jewelrec.search import versions

    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    rows = versions.version_dir(home) / "rows.json"
    rows.write_bytes(rows.read_bytes()[:10])
    record = next(home.models_dir.glob("classifier-*/training.json"))
    record.write_text("[]")
    summary = build_report(home, tmp_path / "report.html", evaluation=None)
    text = summary.path.read_text(encoding="utf-8")
    assert Page(text).sections == SECTIONS
    said = summary.unavailable["map"]
    assert "damaged" in said and "jewelrec index" in said
    assert "its training record is damaged" in text


def test_an_evaluation_that_cannot_save_its_files_still_answers(tiny_home, monkeypatch):
    """On a read-only home `evaluate` computed everything, then failed on saving its figure and
    printed no number."""
    import errno

    from jewelrec import evaluate

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(evaluate, "_plot_confusion", read_only)
    report = evaluate.evaluate_home(Home(tiny_home), progress=False)
    assert report.type_accuracy is not None and report.confusion_png is None


def test_no_catalog_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--home", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "r.html")]) != 0
    assert "jewelrec ingest" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.browser
@pytest.mark.slow
def test_report_opens_offline_in_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    requests: list[str] = []
    shot = Path(os.environ.get("JEWELREC_REPORT_SCREENSHOT") or tmp_path / "report.png")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1800}, offline=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri())
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            plots = page.eval_on_selector_all(
                "img.plot", "imgs => imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
            headings = page.eval_on_selector_all("section h2", "hs => hs.map(h => h.textContent)")
            page.eval_on_selector("#examples", "e => e.scrollIntoView()")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert widths and all(w > 0 for w in widths)
    assert len(plots) >= PLOTS and all(w > 0 and h > 0 for _, w, h in plots)
    assert len(headings) == len(SECTIONS)
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert shot.stat().st_size > 10_000


def test_selective_curve_from_held_out_probabilities():
    import numpy as np

    from jewelrec.evaluate import selective_curve

    # four confident right answers, then two unsure wrong ones
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8],
                              [0.6, 0.4], [0.45, 0.55]])
    curve = selective_curve(probabilities, [0, 1, 0, 1, 1, 0], points=3)
    assert [round(p["coverage"], 3) for p in curve] == [0.333, 0.667, 1.0]
    assert [p["accuracy"] for p in curve] == [1.0, 1.0, 4 / 6]
    assert curve[-1]["threshold"] == 0.55 and curve[0]["threshold"] == 0.9


def test_training_section_shows_loss_curves_and_notes(tmp_path):
    from jewelrec.report import training_section

    home = Home(tmp_path / "home").ensure()
    folder = home.models_dir / "embedder-autoencoder"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps({
        "images": 40, "epochs": 2, "train_loss": [0.5, 0.3], "val_loss": [0.6, 0.4],
        "notes": {"heldout_accuracy": 0.75, "selective_curve": [{"coverage": 1.0}]}}))
    section = training_section(home)
    assert section.body.count("<img class='plot'") == 1  # drawn from the json: no loss.png
    assert "heldout_accuracy" in section.body and "selective_curve" not in section.body
    from PIL import Image

    Image.new("RGB", (40, 30), "white").save(folder / "loss.png")
    assert "data:image/png;base64," in training_section(home).body


def test_no_confidence_curve_says_why_when_train_and_evaluate_both_ran(tmp_path: Path) -> None:
    """Five one-photo products, trained and evaluated: the report said to train and evaluate
    first, which had been done; what lacks is photos to hold out."""
    from jewelrec.errors import NotReadyError
    from jewelrec.evaluate import EvaluationReport
    from jewelrec.home import Home
    from jewelrec.models.base import model_folder
    from jewelrec.report import confidence_section

    home = Home(tmp_path / "home").ensure()
    folder = model_folder(home.models_dir, "classifier", home.settings().classifier)
    folder.mkdir(parents=True)
    (folder / "training.json").write_text(json.dumps({"notes": {"c": 10.0}}))
    with pytest.raises(NotReadyError, match="too few photos per type"):
        confidence_section(home, EvaluationReport("efficientnet", "head", 0, None))
    with pytest.raises(NotReadyError, match="train the classifier and evaluate"):
        confidence_section(home, None)
