"""`jewelrec report`: how the system does on a shop's catalog, as one self-contained HTML file.

Everything the page shows is inside it: plots are PNGs and photos small JPEGs, inlined as data:
URIs; there is no script, no link to fetch, and a Content-Security-Policy that allows only data:
images and the inline style, so it opens the same from a mail attachment or a disk with no
network. Catalog text is escaped and product links are left out (the page must not reach out).

Sections: catalog composition, hygiene findings (catalog/hygiene.py), quality on held-out views
(confusion matrix, Recall@K and precision per type, from evaluate.py), the confidence/accuracy
curve, example queries with their results, a 2-D map of the index's embeddings with thumbnails,
and training (curves and notes of each model). A section the home cannot support yet (no
models, no index) says which command to run instead of failing the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jewelrec import plots
from jewelrec.catalog import hygiene
from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.views import split_views
from jewelrec.console import printable
from jewelrec.errors import JewelrecError, NotReadyError
from jewelrec.evaluate import RECALL_AT, EvaluationReport, evaluate_home
from jewelrec.home import Home, atomic_write_bytes
from jewelrec.imaging.io import load_image

log = logging.getLogger(__name__)

MAP_POINTS = 300  # thumbnails on the embedding map: more only overlap
EXAMPLES = 4
RESULTS_PER_EXAMPLE = 6
THUMB = 112
MAP_THUMB = 28
HYGIENE_GROUPS_SHOWN = 12
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#faf8f5}main{max-width:1180px;margin:0 auto;padding:1.5rem}
h1{font-weight:600;margin:.2rem 0}h2{margin-top:0}.sub{color:#666}
nav a{margin-right:.8rem;color:#7a5c2e}
section{margin:1.5rem 0;padding:1rem 1.2rem;background:#fff;border-radius:12px;
box-shadow:0 1px 4px #0001}
img.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#8a6d3b;background:#fcf8e3;padding:.5rem .8rem;border-radius:8px}
.query{display:flex;gap:.8rem;align-items:flex-start;margin:1rem 0;flex-wrap:wrap}
.card{width:120px;font-size:.78rem}.card img{width:112px;height:112px;object-fit:contain;
background:#f3f3f3;border-radius:6px}.card.q img{outline:3px solid #c9a227}
.meta{color:#666}.hit{color:#2e7d32;font-weight:600}
"""


@dataclass
class Section:
    id: str
    title: str
    body: str


@dataclass
class ReportSummary:
    path: Path
    sections: list[str]  # section ids, in page order
    unavailable: dict[str, str] = field(default_factory=dict)  # section id -> why
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sections": self.sections,
                "unavailable": self.unavailable, "bytes": self.bytes}


# -- small helpers ---------------------------------------------------------------------------

esc = html.escape


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_img(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return f"<img class='plot' alt='{esc(alt)}' src='{_png_uri(buffer.getvalue())}'>"


def _thumbnail(image: np.ndarray, size: int) -> Image.Image:
    picture = Image.fromarray(image)
    picture.thumbnail((size, size))
    return picture


def _jpeg_uri(image: np.ndarray, size: int = THUMB) -> str:
    buffer = io.BytesIO()
    _thumbnail(image, size).save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _home_image(home: Home, name: str) -> np.ndarray | None:
    try:
        return load_image(home.image_path(name))
    except (JewelrecError, OSError, ValueError) as exc:
        log.warning("report: cannot read image %s: %s", name, exc)
        return None


def _card(uri: str | None, lines: Sequence[str], *, query: bool = False) -> str:
    img = f"<img alt='' src='{uri}'>" if uri else ""
    return (f"<div class='card{' q' if query else ''}'>{img}"
            + "".join(f"<div>{line}</div>" for line in lines) + "</div>")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any, tag: str) -> str:
        if isinstance(value, float):
            return f"<{tag} class='n'>{value:.3f}</{tag}>"
        if isinstance(value, int):
            return f"<{tag} class='n'>{value:,}</{tag}>"
        return f"<{tag}>{esc('n/a' if value is None else str(value))}</{tag}>"

    return ("<table><tr>" + "".join(cell(h, "th") for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
            + "</table>")


def _na(why: str) -> str:
    return f"<p class='na'>{esc(why)}</p>"


# -- sections --------------------------------------------------------------------------------

def catalog_section(products: Sequence[Product], facets: dict[str, Any]) -> Section:
    types = Counter(p.type for p in products)
    brands = Counter(p.brand or "(none)" for p in products)
    images = {image for p in products for image in p.images}
    figure = plots.figure(13, 4)
    ax = figure.add_subplot(1, 3, 1)
    names = sorted(types, key=lambda t: (-types[t], t))
    labels = [plots.as_written(t) for t in names]
    ax.barh(labels[::-1], [types[t] for t in names[::-1]], color="#c9a227")
    ax.set(title="products per type", xlabel="products")
    ax = figure.add_subplot(1, 3, 2)
    prices = [[p.price for p in products if p.type == t] for t in names]
    ax.boxplot(prices, tick_labels=labels, orientation="horizontal")
    low, high = min(p.price for p in products), max(p.price for p in products)
    if low > 0 and high / low > 20:  # prices spanning orders of magnitude
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(title=f"price per type ({facets['currency']})", xlabel="price")
    ax = figure.add_subplot(1, 3, 3)
    top = brands.most_common(12)
    ax.barh([plots.as_written(b) for b, _ in top][::-1], [n for _, n in top][::-1],
            color="#7a5c2e")
    ax.set(title=f"top brands ({len(brands)} in all)", xlabel="products")
    summary = _table(["products", "images", "types", "brands", "metals", "price range"], [[
        len(products), len(images), len(types), len(brands), len(facets["metals"]),
        f"{facets['price_min']:,.2f} - {facets['price_max']:,.2f} {facets['currency']}",
    ]])
    return Section("catalog", "Catalog composition",
                   summary + _figure_img(figure, "catalog composition: types, prices, brands"))


def hygiene_section(home: Home, store: CatalogStore) -> Section:
    findings = hygiene.HygieneFindings.from_dict(store.meta(hygiene.META_KEY))
    if findings is None:
        return Section("hygiene", "Catalog hygiene",
                       _na("no hygiene findings: re-run `jewelrec ingest` to check the catalog"))
    fate = ("they are kept in the index (ingest --keep-duplicates)" if findings.kept
            else f"{len(findings.excluded):,} product views are left out of the index")
    counts = _table(["images checked", "placeholders", "shared photos", "repeats in a product",
                     "views left out"], [[
        findings.images, len(findings.of_kind("placeholder")),
        len(findings.of_kind("duplicate")), len(findings.of_kind("repeat")),
        len(findings.excluded)]])
    parts = [f"<p>Placeholders are images on {findings.placeholder_min} or more products; "
             f"shared photos stand on 2 to {findings.placeholder_min - 1}; {esc(fate)}.</p>",
             counts]
    groups = sorted(findings.groups, key=lambda g: (-len(g.products), g.kind))
    cards = []
    for group in groups[:HYGIENE_GROUPS_SHOWN]:
        image = _home_image(home, group.images[0])
        ids = ", ".join(group.products[:3]) + (" ..." if len(group.products) > 3 else "")
        kept = f"kept for {esc(group.kept)}" if group.kept and not findings.kept else ""
        files = f"{len(group.images)} file" + ("" if len(group.images) == 1 else "s")
        cards.append(_card(_jpeg_uri(image) if image is not None else None, [
            f"<b>{esc(group.kind)}</b>", f"<span class='meta'>{esc(group.name)}</span>",
            f"{len(group.products)} products, {files}",
            f"<span class='meta'>{esc(ids)}</span>", kept]))
    if cards:
        parts.append("<div class='query'>" + "".join(cards) + "</div>")
    else:
        parts.append("<p>No placeholder, shared or repeated photo found.</p>")
    return Section("hygiene", "Catalog hygiene", "".join(parts))


def training_record(path: Path) -> dict | None:
    """A model's training.json as a dict, None when it is damaged (not JSON, not an object):
    the report names it rather than stopping."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def training_section(home: Home) -> Section:
    records = sorted(home.models_dir.glob("*/training.json")) if home.models_dir.exists() else []
    if not records:
        raise NotReadyError(f"no trained model: run `{home.command('train')}`")
    parts = []
    for record in records:
        folder = record.parent
        parts.append(f"<h3>{esc(folder.name)}</h3>")
        data = training_record(record)
        if data is None:
            parts.append(_na(f"its training record is damaged: run `{home.command('train')}` "
                             "again"))
            continue
        notes = {k: v for k, v in (data.get("notes") or {}).items()
                 if isinstance(v, int | float | str) and k not in data}
        rows = [["images", data.get("images")], ["epochs", data.get("epochs")],
                ["seconds", data.get("seconds")], ["trained at", data.get("trained_at")],
                *([k, v] for k, v in sorted(notes.items()))]
        parts.append(_table(["", "value"], rows))
        curve = folder / "loss.png"
        if curve.is_file():
            parts.append(f"<img class='plot' alt='training curves of {esc(folder.name)}' "
                         f"src='{_png_uri(curve.read_bytes())}'>")
        elif len(data.get("train_loss") or []) + len(data.get("val_loss") or []) > 0:
            parts.append(_figure_img(_curves_figure(data), f"training curves of {folder.name}"))
        else:
            parts.append("<p class='meta'>no per-epoch curve recorded for this model (the "
                         "figures it kept are in the table).</p>")
    return Section("training", "Training", "".join(parts))


def _curves_figure(data: dict[str, Any]):
    figure = plots.figure(6, 3.5)
    ax = figure.add_subplot(1, 1, 1)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = data.get(key) or []
        if values:
            ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    ax.legend()
    return figure


def evaluation_section(evaluation: EvaluationReport | None, why: str | None) -> Section:
    if evaluation is None or evaluation.type_accuracy is None:
        raise NotReadyError(why or "no held-out views: every product has one photo")
    classes = evaluation.confusion_classes
    matrix = np.array(evaluation.confusion)
    figure = plots.figure(0.7 * len(classes) + 2.5, 0.7 * len(classes) + 2)
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(matrix, cmap="Blues")
    labels = [plots.as_written(c) for c in classes]
    ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"type confusion, accuracy {evaluation.type_accuracy:.3f}")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    overall = _table(
        ["queries", "type accuracy", *(f"recall@{k}" for k in RECALL_AT), "type precision@10",
         "metal precision@10", "median latency ms"],
        [[evaluation.queries, evaluation.type_accuracy,
          *(evaluation.recall.get(k) for k in RECALL_AT), evaluation.type_precision_at_10,
          evaluation.metal_precision_at_10, evaluation.median_latency_ms]])
    per_type = evaluation.per_type
    keys = ["queries", *(f"recall@{k}" for k in RECALL_AT), "type_precision@10",
            "classifier_recall", "classifier_precision"]
    table = _table(["type", *(k.replace("_", " ") for k in keys)],
                   [[name, *(per_type[name].get(k) for k in keys)] for name in per_type])
    bars = plots.figure(7, 3.4)
    ax = bars.add_subplot(1, 1, 1)
    names = list(per_type)
    width = 0.8 / (len(RECALL_AT) + 1)
    for n, key in enumerate([*(f"recall@{k}" for k in RECALL_AT), "classifier_precision"]):
        values = [per_type[t].get(key) or 0.0 for t in names]
        ax.bar(np.arange(len(names)) + n * width, values, width, label=key.replace("_", " "))
    ax.set_xticks(np.arange(len(names)) + width * len(RECALL_AT) / 2,
                  [plots.as_written(t) for t in names])
    ax.set(ylim=(0, 1.05), ylabel="share", title="per type: Recall@K and classifier precision")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside, not on, the bars
    body = (f"<p>{evaluation.queries:,} held-out views (never trained on, never indexed) asked as "
            f"shopper photos; embedder {esc(evaluation.embedder)}, classifier "
            f"{esc(evaluation.classifier)}.</p>" + overall
            + "<p class='meta'>Recall@K: the share of those photos whose own product is among "
            "the first K results. Type precision@10: the share of the first 10 results of the "
            "photo's own type; metal precision@10 likewise for the metal. Classifier recall and "
            "precision: of a type's photos, the share typed as it; of the photos typed as it, "
            "the share that are. A type with fewer than 20 queries gives rough figures. These "
            "photos come from the shop's own studio: shoppers' photos (worn, other light, other "
            "backdrops) do worse.</p>"
            + _figure_img(figure, "confusion matrix") + table
            + _figure_img(bars, "Recall@K and precision per type"))
    return Section("evaluation", "Quality on held-out views", body)


def confidence_section(
    home: Home, evaluation: EvaluationReport | None
) -> Section:
    """From the classifier's out-of-fold predictions when its training notes hold the curve,
    else from the held-out views of the evaluation."""
    from jewelrec.models.base import model_folder

    name = home.settings().classifier
    record = model_folder(home.models_dir, "classifier", name) / "training.json"
    curve, source = [], ""
    notes = (training_record(record) or {}).get("notes") if record.is_file() else None
    if isinstance(notes, dict) and isinstance(notes.get("selective_curve"), list):
        curve = notes["selective_curve"]
        source = f"out-of-fold predictions of {name} at training"
    if not curve and evaluation is not None:
        curve, source = evaluation.selective_curve, "held-out views of the evaluation"
    if not curve:
        if record.is_file() and evaluation is not None:  # both ran: nothing to hold out
            raise NotReadyError(
                "no confidence curve: the catalog has too few photos per type to hold any "
                "out at training, and no product has a second photo for evaluate to ask with")
        raise NotReadyError("no confidence curve: train the classifier and evaluate the home "
                            "first")
    coverage = [p["coverage"] for p in curve]
    figure = plots.figure(6.5, 3.6)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(coverage, [p["accuracy"] for p in curve], marker="o", label="accuracy of answers kept")
    ax.plot(coverage, [p["threshold"] for p in curve], linestyle="--", label="confidence threshold")
    ax.set(xlabel="coverage (share of photos answered)", ylim=(0, 1.02), xlim=(0, 1.02),
           title="type answers: confidence vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return Section("confidence", "Confidence and accuracy", (
        f"<p>Keep only the answers at least as confident as the threshold: fewer photos are "
        f"answered, more of them right. From the {esc(source)}. Shoppers' photos taken "
        "elsewhere (worn, staged, other light) are typed less surely than the shop's own: "
        "expect lower accuracy at each threshold on them, most of all for a type the catalog "
        "shows only worn or only on a backdrop.</p>"
        + _figure_img(figure, "confidence and accuracy curve")))


def examples_section(
    home: Home, products: Sequence[Product], photos: Sequence[Path], count: int
) -> Section:
    from jewelrec.recommend import Recommender

    recommender = Recommender.open(home)
    queries: list[tuple[str, Any, str | None]] = [(printable(str(p)), p, None) for p in photos]
    if not queries:  # held-out views, one per type in turn: their right answer is known
        _, held_out = split_views(
            products, hygiene.excluded_views(recommender.store.meta(hygiene.META_KEY)))
        recommender = _held_out_of_index(home, recommender, {image for _, image in held_out})
        by_type: dict[str, list] = {}
        for product, image in held_out:
            by_type.setdefault(product.type, []).append((product, image))
        for i in range(count):
            for views in by_type.values():
                if i < len(views) and len(queries) < count:
                    product, image = views[(i * 7) % len(views)]
                    queries.append((f"held-out view of {product.id}", home.image_path(image),
                                    product.id))
    if not queries:
        return Section("examples", "Example queries", _na("no photo to ask with"))
    parts = []
    for label, photo, expected in queries:
        try:
            rec = recommender.recommend(photo, k=RESULTS_PER_EXAMPLE)
            query_image = load_image(photo)
        except (JewelrecError, OSError, ValueError) as exc:
            parts.append(f"<p class='na'>{esc(label)}: {esc(str(exc))}</p>")
            continue
        confidence = rec.type_confidence or 0.0
        cards = [_card(_jpeg_uri(query_image), [
            f"<b>{esc(label if expected else Path(label).name)}</b>",
            f"looks like {esc(rec.type or '?')} ({confidence:.0%})"], query=True)]
        for r in rec.results:
            image = _home_image(home, r.image)
            hit = " <span class='hit'>same product</span>" if r.id == expected else ""
            cards.append(_card(_jpeg_uri(image) if image is not None else None, [
                esc(r.title[:60]), f"<span class='meta'>{r.price:,.2f} {esc(r.currency)} · "
                f"{r.score:.2f}</span>{hit}"]))
        parts.append("<div class='query'>" + "".join(cards) + "</div>")
    return Section("examples", "Example queries", (
        "<p>Each row: the photo asked with (outlined), then the results in order "
        "(price, similarity).</p>" + "".join(parts)))


def _held_out_of_index(home: Home, recommender: Any, images: set[str]) -> Any:
    """`recommender` over the published index less `images`, as `evaluate` holds its query
    views out: a held-out view asked with must find its product's other photos, not itself at
    similarity 1.00 (the published index holds every view)."""
    from jewelrec.recommend import Recommender
    from jewelrec.search import versions
    from jewelrec.search.index import ExactIndex

    published = recommender.index  # the exact index it already loaded, else (Milvus) the files
    if not isinstance(published, ExactIndex):
        published = ExactIndex.load(versions.version_dir(home, recommender.index_version))
    keep = [i for i, row in enumerate(published.rows) if row.image not in images]
    index = ExactIndex(published.vectors.shape[1])
    index.upsert([published.rows[i] for i in keep], published.vectors[keep])
    return Recommender(recommender.store, recommender.embedder, recommender.classifier, index,
                       home=home, auto_crop=home.settings().auto_crop)


def map_section(home: Home, points: int) -> Section:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from jewelrec.search import versions
    from jewelrec.search.index import ExactIndex

    version = versions.current_version(home)
    if version is None:
        raise NotReadyError(f"no index yet: run `{home.command('index')}`")
    with versions.damaged_as_not_ready(home, version):
        index = ExactIndex.load(versions.version_dir(home, version))
    first: dict[str, int] = {}
    for i, row in enumerate(index.rows):
        first.setdefault(row.product_id, i)  # one point per product: its first indexed view
    if len(first) < 3:  # a plane needs three points (one product's many photos are one)
        return Section("map", "Map of the catalog", _na("fewer than 3 indexed products"))
    rows = np.array(sorted(first.values()))
    rng = np.random.default_rng(0)
    if len(rows) > points:
        rows = np.sort(rng.choice(rows, points, replace=False))
    vectors = index.vectors[rows].astype(np.float64)
    centred = vectors - vectors.mean(0)
    _, _, basis = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ basis[:2].T
    types = sorted({index.rows[i].type for i in rows})
    colours = {t: f"C{n % 10}" for n, t in enumerate(types)}
    figure = plots.figure(11, 8.5)
    ax = figure.add_subplot(1, 1, 1)
    for t in types:
        mine = [n for n, i in enumerate(rows) if index.rows[i].type == t]
        ax.scatter(xy[mine, 0], xy[mine, 1], s=12, color=colours[t], label=plots.as_written(t))
    for n, i in enumerate(rows):
        image = _home_image(home, index.rows[i].image)
        if image is None:
            continue
        box = OffsetImage(np.asarray(_thumbnail(image, MAP_THUMB)), zoom=1.0)
        ax.add_artist(AnnotationBbox(box, xy[n], frameon=True, pad=0.1,
                                     bboxprops={"edgecolor": colours[index.rows[i].type],
                                                "linewidth": 1.5}))
    ax.set(title=f"{len(rows)} products on the first two principal axes of their embeddings",
           xticks=[], yticks=[])
    ax.legend(loc="best", markerscale=2)
    return Section("map", "Map of the catalog", (
        "<p>Each product's first indexed photo, placed by a 2-D projection (PCA) of its "
        "embedding: neighbours on the map are what search finds alike; the frame colour is the "
        "catalog's type.</p>" + _figure_img(figure, "map of the catalog's embeddings")))


# -- the page --------------------------------------------------------------------------------

def build_report(
    home: Home,
    out: Path,
    *,
    photos: Sequence[Path] = (),
    examples: int = EXAMPLES,
    map_points: int = MAP_POINTS,
    evaluation: EvaluationReport | None = None,
    progress: bool = False,
) -> ReportSummary:
    """Write the report for `home` to `out`. `evaluation`: one already computed (the demo just
    ran it); otherwise the held-out evaluation runs here, as `jewelrec evaluate` does."""
    home.require_catalog()
    store = CatalogStore.open(home, read_only=None)
    try:
        products = store.all_products()
        if not products:
            raise home.empty_catalog()
        facets = store.facets()
        evaluation_error = None
        if evaluation is None:
            try:
                evaluation = evaluate_home(home, progress=progress)
            except (JewelrecError, OSError) as exc:
                evaluation_error = f"no evaluation: {exc}"
        builders: list[tuple[str, str, Callable[[], Section]]] = [
            ("catalog", "Catalog composition", lambda: catalog_section(products, facets)),
            ("hygiene", "Catalog hygiene", lambda: hygiene_section(home, store)),
            ("evaluation", "Quality on held-out views",
             lambda: evaluation_section(evaluation, evaluation_error)),
            ("confidence", "Confidence and accuracy", lambda: confidence_section(home, evaluation)),
            ("examples", "Example queries",
             lambda: examples_section(home, products, photos, examples)),
            ("map", "Map of the catalog", lambda: map_section(home, map_points)),
            ("training", "Training", lambda: training_section(home)),
        ]
        sections, unavailable = [], {}
        for section_id, title, build in builders:
            try:
                sections.append(build())
            except (JewelrecError, OSError) as exc:  # a missing step: say which, go on
                unavailable[section_id] = str(exc)
                sections.append(Section(section_id, title, _na(f"not available: {exc}")))
    finally:
        store.close()
    page = _page(home, sections)
    out = Path(out)
    atomic_write_bytes(out, page.encode())
    return ReportSummary(out, [s.id for s in sections], unavailable, len(page.encode()))


def _page(home: Home, sections: Sequence[Section]) -> str:
    nav = "".join(f"<a href='#{s.id}'>{esc(s.title)}</a>" for s in sections)
    body = "".join(f"<section id='{s.id}'><h2>{esc(s.title)}</h2>{s.body}</section>"
                   for s in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>jewelrec report: {esc(home.root.name)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>jewelrec report</h1><p class='sub'>{esc(str(home.root))} · "
        f"{esc(time.strftime('%Y-%m-%d %H:%M'))}</p><nav>{nav}</nav>{body}</main></body></html>"
    )
