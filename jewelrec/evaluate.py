"""`jewelrec evaluate`: how good and how fast the home's pipeline is, on its own catalog.

Queries are the held-out views (catalog/views.py): never trained on, never in the evaluation
index, which holds the other views. Each is answered by the same Recommender code as a shopper's
photo. Metrics a catalog cannot support (one view per product, no metal column) are reported as
None ("n/a"), not as failures.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jewelrec import plots
from jewelrec.catalog import hygiene
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.views import split_views
from jewelrec.home import Home, atomic_write_json
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.indexing import (
    EmbeddingCache,
    embed_images,
    framing_tag,
    index_rows,
    model_fingerprint,
)
from jewelrec.models.attributes import NO_STONE, AttributeHeads, load_attributes, product_attributes
from jewelrec.models.backbone import Backbone
from jewelrec.models.base import load_classifier, load_embedder, model_folder
from jewelrec.recommend import Recommender, small_piece, type_probabilities, typing_view
from jewelrec.search.index import ExactIndex

log = logging.getLogger(__name__)

RECALL_AT = (1, 5, 10)
PRECISION_AT = 10
LATENCY_QUERIES = 30


@dataclass
class EvaluationReport:
    embedder: str
    classifier: str
    queries: int
    type_accuracy: float | None
    confusion_classes: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    recall: dict[int, float | None] = field(default_factory=dict)
    type_precision_at_10: float | None = None
    metal_precision_at_10: float | None = None
    median_latency_ms: float | None = None
    confusion_png: str | None = None
    # per true type: queries, recall@K, type precision@10 of the results, and the classifier's
    # recall (of that type's queries, how many it named right) and precision (of its answers)
    per_type: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    selective_curve: list[dict[str, float]] = field(default_factory=list)  # held-out views
    # attributes read from the photo (models/attributes.py): accuracy on the held-out views
    # whose label the head learned; None without a head
    metal_accuracy: float | None = None
    stone_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder,
            "classifier": self.classifier,
            "queries": self.queries,
            "type_accuracy": self.type_accuracy,
            "confusion": {"classes": self.confusion_classes, "matrix": self.confusion},
            **{f"recall@{k}": v for k, v in self.recall.items()},
            "type_precision@10": self.type_precision_at_10,
            "metal_precision@10": self.metal_precision_at_10,
            "median_latency_ms": self.median_latency_ms,
            "confusion_png": self.confusion_png,
            "per_type": self.per_type,
            "selective_curve": self.selective_curve,
            "metal_accuracy": self.metal_accuracy,
            "stone_accuracy": self.stone_accuracy,
        }

    def describe(self) -> str:
        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        if not self.queries:
            return (f"embedder {self.embedder}, classifier {self.classifier}: nothing to measure "
                    "with: every product has one photo of its own (its others could not be read, "
                    "or ingest flagged them as placeholders or shared photos), and "
                    "evaluate asks with a product's second photo, held out of its index")
        lines = [
            f"embedder {self.embedder}, classifier {self.classifier}, {self.queries} queries",
            f"type accuracy        {fmt(self.type_accuracy)}",
            *(f"recall@{k:<13} {fmt(v)}" for k, v in self.recall.items()),
            f"type precision@10    {fmt(self.type_precision_at_10)}",
            f"metal precision@10   {fmt(self.metal_precision_at_10)}",
            f"metal from photo     {fmt(self.metal_accuracy)}",
            f"stone from photo     {fmt(self.stone_accuracy)}",
            "median latency       "
            + ("n/a" if self.median_latency_ms is None else f"{self.median_latency_ms:.1f} ms"),
        ]
        if self.confusion_classes:
            width = max(len(c) for c in self.confusion_classes) + 2
            lines.append("confusion (rows: true, columns: predicted)")
            lines.append(" " * width + "".join(c[:8].rjust(9) for c in self.confusion_classes))
            for name, row in zip(self.confusion_classes, self.confusion, strict=True):
                lines.append(name.ljust(width) + "".join(str(v).rjust(9) for v in row))
        if self.confusion_png:
            lines.append(f"confusion matrix: {self.confusion_png}")
        return "\n".join(lines)


def evaluate_home(
    home: Home,
    *,
    embedder: str | None = None,
    classifier: str | None = None,
    progress: bool = True,
) -> EvaluationReport:
    settings = home.settings()
    embedder_name = embedder or settings.embedder
    classifier_name = classifier or settings.classifier
    auto_crop = settings.auto_crop
    home.require_catalog()
    store = CatalogStore.open(home)
    # as in the served index: placeholders and shared photos flagged at ingest are left out
    flagged = hygiene.excluded_views(store.meta(hygiene.META_KEY))
    fit_views, query_views = split_views(store.all_products(), flagged)
    backbone = Backbone.for_home(home, share_cores=True)  # embed_images' workers overlap runs
    embed_model = load_embedder(home.models_dir, embedder_name, backbone=backbone)
    type_model = load_classifier(home.models_dir, classifier_name, backbone=backbone)
    report = EvaluationReport(embedder_name, classifier_name, len(query_views), None)
    report.recall = {k: None for k in RECALL_AT}
    if not query_views:
        return report  # one view per product: nothing held out to ask with

    cache = EmbeddingCache(
        home,
        embedder_name,
        model_fingerprint(model_folder(home.models_dir, "embedder", embedder_name)),
        backbone.features_tag + framing_tag(auto_crop),
    )
    names = [image for _, image in fit_views + query_views]
    vectors = embed_images(home, embed_model, names, cache=cache, auto_crop=auto_crop,
                           progress=progress)
    # an image that could not be read (embed_images warned) is left out, as `index` does
    fit_views = [(p, image) for p, image in fit_views if image in vectors]
    query_views = [(p, image) for p, image in query_views if image in vectors]
    report.queries = len(query_views)
    if not query_views or not fit_views:
        return report
    index = ExactIndex(len(next(iter(vectors.values()))))
    index.upsert(index_rows(fit_views), np.stack([vectors[image] for _, image in fit_views]))
    recommender = Recommender(store, embed_model, type_model, index, home=home,
                              auto_crop=auto_crop)

    probabilities = _classify(home, type_model, query_views, auto_crop, progress)
    truth = [product.type for product, _ in query_views]
    predicted = [type_model.classes[int(np.argmax(p))] for p in probabilities]
    report.type_accuracy = float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)]))
    report.confusion_classes = sorted(set(truth) | set(type_model.classes))
    position = {c: i for i, c in enumerate(report.confusion_classes)}
    matrix = np.zeros((len(position), len(position)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        matrix[position[t], position[p]] += 1
    report.confusion = matrix.tolist()
    report.selective_curve = selective_curve(
        probabilities, [type_model.classes.index(t) if t in type_model.classes else -1
                        for t in truth])

    hits = {k: 0 for k in RECALL_AT}
    type_precision, metal_precision = [], []
    by_type: dict[str, dict[str, list[float]]] = {}
    for (product, image), probs in zip(query_views, probabilities, strict=True):
        results = recommender.rank(vectors[image], probs, k=max(RECALL_AT)).results
        ids = [r.id for r in results]
        mine = by_type.setdefault(product.type, {"hits": [], "precision": []})
        mine["hits"].append([product.id in ids[:k] for k in RECALL_AT])
        for k in RECALL_AT:
            hits[k] += product.id in ids[:k]
        top = results[:PRECISION_AT]
        if top:
            type_precision.append(np.mean([r.type == product.type for r in top]))
            mine["precision"].append(type_precision[-1])
            if product.metal and "metal" not in product.predicted:  # the catalog's own label
                metals = store.get_many([r.id for r in top])
                metal_precision.append(np.mean([metals[r.id].metal == product.metal for r in top]))
    report.recall = {k: hits[k] / len(query_views) for k in RECALL_AT}
    report.type_precision_at_10 = float(np.mean(type_precision)) if type_precision else None
    report.metal_precision_at_10 = float(np.mean(metal_precision)) if metal_precision else None
    report.per_type = _per_type(report, by_type)
    heads = load_attributes(home.models_dir, backbone=backbone)
    if heads is not None:
        accuracy = _attribute_accuracy(home, heads, query_views, auto_crop, progress)
        report.metal_accuracy, report.stone_accuracy = accuracy.get("metal"), accuracy.get("stone")
    report.median_latency_ms = _median_latency(home, recommender, query_views)
    try:  # the numbers are the answer; a read-only home only loses their saved copies
        report.confusion_png = str(_plot_confusion(home, report))
        atomic_write_json(home.reports_dir / "evaluation.json", report.to_dict())
    except OSError as exc:  # StorageError from the JSON, the OS's own from the figure
        report.confusion_png = None
        log.warning("the evaluation's files were not saved in %s: %s", home.reports_dir, exc)
    return report


def selective_curve(
    probabilities: np.ndarray, truth: Sequence[int], points: int = 20
) -> list[dict[str, float]]:
    """Accuracy of the type answers kept when only the most confident are kept: one point per
    coverage step (1/points ... 1), with the confidence threshold that keeps that share."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return []
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == np.asarray(truth)
    order = np.argsort(-confidence, kind="stable")
    curve = []
    for n in sorted({max(1, round(q * len(order))) for q in np.linspace(0, 1, points + 1)[1:]}):
        kept = order[:n]
        curve.append({"coverage": n / len(order), "accuracy": float(correct[kept].mean()),
                      "threshold": float(confidence[order[n - 1]])})
    return curve


def _per_type(
    report: EvaluationReport, by_type: dict[str, dict[str, list]]
) -> dict[str, dict[str, float | int | None]]:
    """Retrieval and classification quality of each true type's held-out queries."""
    matrix = np.array(report.confusion)
    out: dict[str, dict[str, float | int | None]] = {}
    for i, name in enumerate(report.confusion_classes):
        if name not in by_type:
            continue
        hits = np.array(by_type[name]["hits"], dtype=float)
        precision = by_type[name]["precision"]
        answered = int(matrix[:, i].sum())
        out[name] = {
            "queries": len(hits),
            **{f"recall@{k}": float(hits[:, j].mean()) for j, k in enumerate(RECALL_AT)},
            "type_precision@10": float(np.mean(precision)) if precision else None,
            "classifier_recall": float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None,
            "classifier_precision": float(matrix[i, i] / answered) if answered else None,
        }
    return out


def _classify(home, model, views, auto_crop: bool, progress: bool) -> np.ndarray:
    """Each view typed as a query photo is (recommend.typing_view, small pieces twice)."""
    rows = []
    batch: list[tuple[np.ndarray, np.ndarray | None]] = []
    for _, image in tqdm(views, desc="classifying", unit="img", disable=not progress):
        photo = load_image(home.image_path(image))
        focused, box = focus_on_piece(photo, auto=auto_crop)
        batch.append((typing_view(model, photo, None, focused),
                      focused if small_piece(model, photo, None, box) else None))
        if len(batch) == 32:
            rows.append(type_probabilities(model, batch))
            batch = []
    if batch:
        rows.append(type_probabilities(model, batch))
    return np.concatenate(rows)


def _attribute_accuracy(
    home: Home, heads: AttributeHeads, views, auto_crop: bool, progress: bool
) -> dict[str, float]:
    """Per attribute head: the share of held-out views (whose label it learned) it names right."""
    labels = product_attributes([product for product, _ in views])
    guesses, batch = [], []
    for _, image in tqdm(views, desc="attributes", unit="img", disable=not progress):
        photo = load_image(home.image_path(image))
        batch.append(typing_view(heads, photo, None, focus_on_piece(photo, auto=auto_crop)[0]))
        if len(batch) == 32:
            guesses += heads.predict(batch)
            batch = []
    guesses += heads.predict(batch)
    accuracy = {}
    for name, head in heads.heads.items():
        right = [(g[name].value or NO_STONE) == label
                 for g, label in zip(guesses, labels[name], strict=True) if label in head.classes]
        if right:
            accuracy[name] = float(np.mean(right))
    return accuracy


def _median_latency(home: Home, recommender: Recommender, views) -> float:
    """Photo bytes to results, through the full Recommender, on a sample of held-out views."""
    step = max(1, len(views) // LATENCY_QUERIES)
    sample = views[::step][:LATENCY_QUERIES]
    photos = [home.image_path(image).read_bytes() for _, image in sample]
    recommender.recommend(photos[0])  # warm-up: first call pays for lazy set-up
    timings = []
    for photo in photos:
        start = time.perf_counter()
        recommender.recommend(photo)
        timings.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(timings), 2)


def _plot_confusion(home: Home, report: EvaluationReport) -> Path:
    classes, matrix = report.confusion_classes, np.array(report.confusion)
    fig = plots.figure(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    labels = [plots.as_written(c) for c in classes]  # type names are the catalog's words
    ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_title(f"type confusion ({plots.as_written(report.classifier)}), "
                 f"accuracy {report.type_accuracy:.3f}")
    fig.tight_layout()
    path = home.reports_dir / "confusion.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
