"""The default pipeline against the 2019 prototype's, on the same data, in one table.

    prototype = --classifier seed-cnn --embedder autoencoder (100x100 CNNs trained on the catalog)
    default   = --classifier efficientnet-head --embedder efficientnet (frozen EfficientNet-Lite0)

1. Demo catalog (`generate_catalog`, --products x 3 views, 40 shopper photos), one home per
   pipeline, built as an operator would: ingest (images/s), train, index (images/s), evaluate on
   the held-out views (type accuracy, Recall@1/5/10, type and metal precision@10). Query latency
   is photo bytes to results through `Recommender.recommend`, on the shopper photos and held-out
   views; the two pipelines take turns photo by photo, so both see the same machine load.
2. Real photos (../shared/data/real-jewelry, 4 types, skipped with a reason when absent): a
   GroupKFold by source_repo (photos of one shop look alike). Per fold, each pipeline fits its
   classifier and its embedder on the training folds only; type accuracy on the test fold, and
   type precision@10 of cosine kNN (ExactIndex, no type filter) from each test photo over the
   training photos. Mean over folds +/- the standard deviation across folds.

Nothing is shared between the pipelines but the data: each step that opens a home (train, index,
the Recommender) runs on a new backbone of its own, so no stage is timed on features an earlier
one remembered in memory; the real-photo folds share one backbone, started empty.

    python benchmarks/compare.py --quick   # smoke run: 200 products, 2 folds, 3 epochs
    python benchmarks/compare.py           # 600 products, 5 folds, 15 epochs (tens of minutes)

Prints the table (ratio > 1 means the default pipeline is better, in every row) and writes
benchmarks/results/compare.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import percentiles_ms, write_results
from real_catalog import DATA, RealPhoto, index_rows, load_framed, read_manifest
from sklearn.model_selection import GroupKFold

from jewelrec.catalog.ingest import ingest
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.synthetic import generate_catalog
from jewelrec.catalog.views import split_views
from jewelrec.evaluate import evaluate_home
from jewelrec.home import Home
from jewelrec.indexing import build_index
from jewelrec.models.backbone import Backbone
from jewelrec.models.base import model_folder, new_classifier, new_embedder
from jewelrec.models.weights import CONFIG_FILE, WEIGHTS_FILE
from jewelrec.recommend import Recommender
from jewelrec.search.index import ExactIndex
from jewelrec.train import train_home

PIPELINES: dict[str, dict[str, str]] = {
    "prototype": {"classifier": "seed-cnn", "embedder": "autoencoder"},
    "default": {"classifier": "efficientnet-head", "embedder": "efficientnet"},
}
FACTORIES = {"classifier": new_classifier, "embedder": new_embedder}
VIEWS = 3
QUERY_PHOTOS = 40
HELD_OUT_QUERIES = 60  # held-out views timed besides the shopper photos
K = 10
FULL = {"products": 600, "epochs": 15, "folds": 5, "real_epochs": 15}
QUICK = {"products": 200, "epochs": 3, "folds": 2, "real_epochs": 3}
PROBE_PHOTOS = 96  # photos in the one-epoch timing probe behind the time estimate


@dataclass
class Params:
    products: int
    epochs: int
    folds: int
    real_epochs: int
    data: Path
    quick: bool


# -- helpers ---------------------------------------------------------------------------------
def say(message: str) -> None:
    print(message, flush=True)


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def model_megabytes(home: Home, names: dict[str, str]) -> float:
    """Weights + settings of both models, and any ONNX export the pipeline keeps in the home."""
    files = [model_folder(home.models_dir, kind, name) / part
             for kind, name in names.items() for part in (WEIGHTS_FILE, CONFIG_FILE)]
    files += sorted(home.cache_dir.glob("*.onnx"))
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)),
            "folds": [round(float(v), 4) for v in values]}


# -- the time estimate -----------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingCost:
    """Seconds per training photo for both prototype models: once per fit (earring splitting,
    set-up), and per epoch."""

    per_fit: float
    per_epoch: float

    def seconds(self, photos: int, epochs: int) -> float:
        return photos * (self.per_fit + epochs * self.per_epoch)


def probe_training_cost(images: Sequence[np.ndarray], labels: Sequence[str]) -> TrainingCost:
    """Fit both prototype models for 1 and 2 epochs on a sample of photos, now: the machine is
    shared, so a constant measured another day would be off by the load factor."""
    step = max(1, len(images) // PROBE_PHOTOS)
    sample, sample_labels = list(images[::step]), list(labels[::step])
    seconds = {}
    for epochs in (1, 2):
        start = time.perf_counter()
        for kind, name in PIPELINES["prototype"].items():
            FACTORIES[kind](name, backbone=None).fit(sample, sample_labels, epochs=epochs,
                                                     progress=False)
        seconds[epochs] = (time.perf_counter() - start) / len(sample)
    per_epoch = max(seconds[2] - seconds[1], 0.0)
    return TrainingCost(per_fit=max(seconds[1] - per_epoch, 0.0), per_epoch=per_epoch)


def print_estimate(params: Params, cost: TrainingCost, real_photos: int) -> None:
    demo = cost.seconds(params.products * (VIEWS - 1), params.epochs)
    train_photos = round(real_photos * (params.folds - 1) / params.folds)
    real = params.folds * cost.seconds(train_photos, params.real_epochs)
    say(f"probe: the prototype's models cost {cost.per_epoch * 1000:.0f} ms per photo per epoch "
        f"+ {cost.per_fit * 1000:.0f} ms per photo per fit right now (load average "
        f"{os.getloadavg()[0]:.1f}); expected prototype training: demo ~{demo / 60:.1f} min, "
        f"real photos ~{real / 60:.1f} min (+ a few minutes for everything else)")


# -- 1. the demo catalog ---------------------------------------------------------------------
def build_home(catalog_csv: Path, root: Path, names: dict[str, str], epochs: int) -> dict:
    """ingest -> train -> index -> evaluate one home; the metrics of each step."""
    home = Home(root)
    images = sum(1 for _ in (catalog_csv.parent / "images").iterdir())
    summary, ingest_s = timed(lambda: ingest(catalog_csv, home, progress=False))
    if summary.rejected:
        raise RuntimeError(f"the demo catalog had rejected rows: {summary.rejected[:3]}")
    _, train_s = timed(lambda: train_home(home, epochs=epochs, progress=False, **names))
    report, index_s = timed(lambda: build_index(home, progress=False))
    evaluation = evaluate_home(home, progress=False)
    return {
        "home": home,
        "ingest_images_per_s": images / ingest_s,
        "train_s": train_s,
        "index_images_per_s": report.images / index_s,
        "type_accuracy": evaluation.type_accuracy,
        **{f"recall@{k}": v for k, v in evaluation.recall.items()},
        "type_precision@10": evaluation.type_precision_at_10,
        "metal_precision@10": evaluation.metal_precision_at_10,
        "queries": evaluation.queries,
        "model_mb": model_megabytes(home, names),
    }


def query_photos(catalog_dir: Path, home: Home) -> tuple[list[bytes], bytes]:
    """The photos to time (shopper photos, then a spread of held-out views) and a warm-up photo
    that is none of them (a catalog view: the backbone remembers features by pixel content)."""
    photos = [p.read_bytes() for p in sorted((catalog_dir / "queries").glob("*.jpg"))]
    fit_views, held_out = split_views(CatalogStore.open(home).all_products())
    step = max(1, len(held_out) // HELD_OUT_QUERIES)
    photos += [home.image_path(image).read_bytes() for _, image in held_out[::step]]
    return photos[: QUERY_PHOTOS + HELD_OUT_QUERIES], home.image_path(fit_views[0][1]).read_bytes()


def query_latencies(homes: dict[str, Home], photos: list[bytes], warm_up: bytes) -> dict:
    """Seconds per Recommender.recommend(bytes), pipelines alternating which goes first."""
    recommenders = {name: Recommender.open(home) for name, home in homes.items()}
    for recommender in recommenders.values():
        recommender.recommend(warm_up)  # lazy set-up (ONNX session, first torch call)
    seconds: dict[str, list[float]] = {name: [] for name in homes}
    for i, photo in enumerate(photos):
        order = list(recommenders) if i % 2 == 0 else list(reversed(recommenders))
        for name in order:
            _, took = timed(lambda r=recommenders[name], p=photo: r.recommend(p, k=K))
            seconds[name].append(took)
    return seconds


def run_demo(params: Params, workdir: Path) -> dict[str, dict]:
    catalog_dir = workdir / "catalog"
    say(f"demo catalog: drawing {params.products} products x {VIEWS} views ...")
    catalog_csv, draw_s = timed(lambda: generate_catalog(
        catalog_dir, products=params.products, views=VIEWS, seed=0, query_photos=QUERY_PHOTOS,
        progress=False))
    say(f"  drawn in {draw_s:.0f} s")
    results: dict[str, dict] = {}
    for name, names in PIPELINES.items():
        say(f"demo catalog, {name} pipeline ({names['classifier']} + {names['embedder']}): "
            "ingest, train, index, evaluate ...")
        results[name], seconds = timed(
            lambda n=name, m=names: build_home(catalog_csv, workdir / n, m, params.epochs))
        say(f"  done in {seconds:.0f} s (train {results[name]['train_s']:.0f} s)")
    homes = {name: r.pop("home") for name, r in results.items()}
    photos, warm_up = query_photos(catalog_dir, homes["prototype"])
    say(f"query latency: {len(photos)} photos per pipeline, taking turns ...")
    for name, seconds in query_latencies(homes, photos, warm_up).items():
        results[name].update(percentiles_ms(seconds), latency_queries=len(seconds))
    return results


# -- 2. the real photos ----------------------------------------------------------------------
def fit_and_score(
    names: dict[str, str],
    photos: Sequence[RealPhoto],
    images: Sequence[np.ndarray],
    train: np.ndarray,
    test: np.ndarray,
    epochs: int,
    backbone: Backbone,
) -> dict[str, float]:
    """One fold, one pipeline: type accuracy on the test photos, and type precision@10 of their
    nearest training photos (models on the pretrained backbone run on `backbone`)."""
    labels = np.array([p.type for p in photos])
    train_images, test_images = [images[i] for i in train], [images[i] for i in test]
    classifier = new_classifier(names["classifier"], backbone=backbone)
    _, classifier_s = timed(lambda: classifier.fit(
        train_images, labels[train].tolist(), epochs=epochs, seed=0, progress=False))
    predicted = np.array(classifier.classes)[classifier.predict_proba(test_images).argmax(1)]
    embedder = new_embedder(names["embedder"], backbone=backbone)
    _, embedder_s = timed(lambda: embedder.fit(
        train_images, labels[train].tolist(), epochs=epochs, seed=0, progress=False))
    vectors = embedder.embed(list(images))
    gallery = ExactIndex(vectors.shape[1])
    gallery.upsert(index_rows([photos[i] for i in train]), vectors[train])
    type_of = {p.file: p.type for p in photos}
    precision = [
        np.mean([type_of[hit.product_id] == labels[i] for hit in gallery.search(vectors[i], K)])
        for i in test
    ]
    return {"type_accuracy": float(np.mean(predicted == labels[test])),
            "type_precision@10": float(np.mean(precision)),
            "fit_s": classifier_s + embedder_s}


def run_real(params: Params, photos: list[RealPhoto], images: list[np.ndarray]) -> dict:
    labels = np.array([p.type for p in photos])
    groups = np.array([p.source_repo for p in photos])
    splits = list(GroupKFold(n_splits=params.folds).split(np.zeros(len(photos)), labels, groups))
    folds: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
    backbone = Backbone()  # no home: torch, exported to a temporary ONNX for the bulk runs
    for f, (train, test) in enumerate(splits, 1):
        for name, names in PIPELINES.items():
            scores = fit_and_score(names, photos, images, train, test, params.real_epochs,
                                   backbone)
            folds[name].append(scores)
            say(f"  fold {f}/{len(splits)} ({len(train)} train, {len(test)} test), {name}: "
                f"type accuracy {scores['type_accuracy']:.3f}, type precision@10 "
                f"{scores['type_precision@10']:.3f}, fit {scores['fit_s']:.0f} s")
    return {
        "photos": len(photos),
        "repositories": len(set(groups.tolist())),
        "per_type": {t: int((labels == t).sum()) for t in sorted(set(labels.tolist()))},
        **{name: {metric: mean_sd([s[metric] for s in runs])
                  for metric in ("type_accuracy", "type_precision@10", "fit_s")}
           for name, runs in folds.items()},
    }


# -- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    label: str
    key: str
    digits: int
    higher_is_better: bool = True


DEMO_ROWS = (
    Row("type accuracy", "type_accuracy", 3),
    Row("Recall@1", "recall@1", 3),
    Row("Recall@5", "recall@5", 3),
    Row("Recall@10", "recall@10", 3),
    Row("type precision@10", "type_precision@10", 3),
    Row("metal precision@10", "metal_precision@10", 3),
    Row("ingest, images/s", "ingest_images_per_s", 1),
    Row("index (embedding), images/s", "index_images_per_s", 1),
    Row("query p50, ms", "p50_ms", 1, higher_is_better=False),
    Row("query p95, ms", "p95_ms", 1, higher_is_better=False),
    Row("train, s", "train_s", 1, higher_is_better=False),
    Row("model size on disk, MB", "model_mb", 1, higher_is_better=False),
)
REAL_ROWS = (
    Row("type accuracy", "type_accuracy", 3),
    Row("kNN type precision@10", "type_precision@10", 3),
)


def ratio(row: Row, prototype: float | None, default: float | None) -> str:
    """> 1 means the default is better: default/prototype, or prototype/default where lower
    is better (milliseconds, seconds, megabytes)."""
    if prototype is None or default is None:
        return "-"
    top, bottom = (default, prototype) if row.higher_is_better else (prototype, default)
    return "-" if bottom == 0 else f"{top / bottom:.2f}"


def table_rows(demo: dict[str, dict], real: dict | None, params: Params) -> list[list[str]]:
    def value(v: float | None, digits: int) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    queries = demo["prototype"]["queries"]
    rows = [[f"**demo catalog** ({params.products} products x {VIEWS} views, "
             f"{queries} held-out views)", "", "", ""]]
    for row in DEMO_ROWS:
        p, d = demo["prototype"][row.key], demo["default"][row.key]
        rows.append([row.label, value(p, row.digits), value(d, row.digits), ratio(row, p, d)])
    if real is not None:
        rows.append([f"**real photos** ({real['photos']} photos, {params.folds}-fold "
                     "GroupKFold by source repo, mean +/- sd)", "", "", ""])
        for row in REAL_ROWS:
            p, d = real["prototype"][row.key], real["default"][row.key]
            rows.append([row.label,
                         f"{p['mean']:.3f} +/- {p['sd']:.3f}", f"{d['mean']:.3f} +/- {d['sd']:.3f}",
                         ratio(row, p["mean"], d["mean"])])
    return rows


def format_table(rows: list[list[str]]) -> str:
    """A markdown table whose columns also line up as plain text."""
    headers = ["metric", "prototype", "default", "ratio (>1: default better)"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]])
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])


def header_lines(params: Params, minutes: float, real_ran: bool) -> list[str]:
    one, five, fifteen = os.getloadavg()
    real = (f"real photos folds={params.folds} epochs={params.real_epochs}" if real_ran
            else f"real photos skipped (no {params.data / 'manifest.csv'})")
    return [
        f"machine: {os.cpu_count()} cores, load average {one:.1f} / {five:.1f} / {fifteen:.1f} "
        f"(1 / 5 / 15 min, at the end), torch threads {torch.get_num_threads()}; "
        f"run took {minutes:.1f} min",
        f"parameters: prototype = seed-cnn + autoencoder, default = efficientnet-head + "
        f"efficientnet; demo products={params.products} views={VIEWS} "
        f"query_photos={QUERY_PHOTOS} epochs={params.epochs}; {real}"
        f"{' (--quick)' if params.quick else ''}",
    ]


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, help=f"demo products (default {FULL['products']})")
    parser.add_argument("--epochs", type=int,
                        help=f"prototype epochs on the demo catalog (default {FULL['epochs']})")
    parser.add_argument("--folds", type=int, help=f"real-photo folds (default {FULL['folds']})")
    parser.add_argument("--real-epochs", type=int,
                        help=f"prototype epochs on the real photos (default {FULL['real_epochs']})")
    parser.add_argument("--data", type=Path, default=DATA, help="the real-photo folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    if chosen["products"] < 10 or chosen["folds"] < 2 or min(chosen["epochs"],
                                                             chosen["real_epochs"]) < 1:
        parser.error("need --products >= 10, --folds >= 2 and at least 1 epoch")
    return Params(**chosen, data=args.data, quick=args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    start = time.perf_counter()
    real_source = params.data / "manifest.csv"
    photos: list[RealPhoto] = []
    images: list[np.ndarray] = []
    if real_source.exists():
        photos = read_manifest(params.data)
        images, load_s = timed(lambda: load_framed(params.data, photos))
        say(f"real photos: {len(photos)} loaded and framed in {load_s:.0f} s")
        print_estimate(params, probe_training_cost(images, [p.type for p in photos]), len(photos))
    else:
        say(f"real photos: skipped, no {real_source} (the folder is not part of the repo)")

    with tempfile.TemporaryDirectory(prefix="jewelrec-compare-") as tmp:
        demo = run_demo(params, Path(tmp))
    real = None
    if photos:
        say(f"real photos: {params.folds}-fold GroupKFold by source repository ...")
        real = run_real(params, photos, images)

    minutes = (time.perf_counter() - start) / 60
    table = format_table(table_rows(demo, real, params))
    print()
    print("\n".join(header_lines(params, minutes, real is not None)))
    print()
    print(table)
    path = write_results("compare", {
        "parameters": {**asdict(params), "data": str(params.data), "views": VIEWS,
                       "query_photos": QUERY_PHOTOS, "pipelines": PIPELINES},
        "torch_threads": torch.get_num_threads(),
        "minutes": round(minutes, 2),
        "demo": demo,
        "real": real if real is not None else f"skipped: no {real_source}",
        "table": table,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
