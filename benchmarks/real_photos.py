"""Quality on real photos of shops that are NOT in the catalog, through the real pipeline.

Each variant (a classifier + embedder pair, registered by name) goes through what a shop runs:
`ingest` a catalog, `train`, `index`, then queries through the `Recommender`.

- Types: the real photos of ../shared/data/real-jewelry split by `source_repo` (GroupKFold):
  a home is trained on the photos of some shops and classifies the photos of the others, framed
  exactly as the Recommender frames a query. Printed: accuracy overall, per fold, per style, the
  confusion, and the selective curve (accuracy and coverage of the answers decided alone).
- Retrieval: ../shared/data/real-groups-dev (130 real products photographed 2-6 ways). The first
  photo of each product is the query; its other photos form ONE catalog product with a gallery
  (the `|` image column), among the real-jewelry photos as single-photo distractor products
  (those that also appear in the groups are left out). Recall@1/5/10 and mAP, per type too, and
  the CPU time per query; 95% bootstrap intervals of Recall@1 and @10 over the queries, and each
  variant's paired difference from `default` on the same queries.

Rows: `default` (today's: the tuned type head on the int8 backbone), `default-fp32` (the same on
the float backbone, the default before int8), `frozen-head` (the default before the tuned head,
whose type head is a logistic regression on the frozen network), `first-wave` (the pipeline as
the first wave shipped it, float) and `prototype` (the 2019 models), measured in the same run. Needs
../shared/data; prints why not.

    python benchmarks/real_photos.py                 # all variants, 5 folds (about two hours here)
    python benchmarks/real_photos.py --quick         # 2 folds, no prototype
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_note, machine, print_table, write_results  # noqa: E402

from jewelrec.catalog.ingest import ingest  # noqa: E402
from jewelrec.home import FP32, INT8, Home  # noqa: E402
from jewelrec.imaging.focus import focus_on_piece  # noqa: E402
from jewelrec.imaging.io import load_image  # noqa: E402
from jewelrec.indexing import build_index  # noqa: E402
from jewelrec.models.backbone import Backbone  # noqa: E402
from jewelrec.models.base import load_classifier, model_folder  # noqa: E402
from jewelrec.models.heads import DECIDED_ACCURACY, threshold_for  # noqa: E402
from jewelrec.recommend import DEFAULT_CONFIDENCE_THRESHOLD, Recommender, typing_view  # noqa: E402
from jewelrec.train import train_home  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TYPES = ("bracelet", "earring", "necklace", "ring")
VARIANTS = {  # name -> (classifier, embedder, the backbone's precision)
    "default": ("efficientnet-tuned", "efficientnet", INT8),
    "default-fp32": ("efficientnet-tuned", "efficientnet", FP32),  # before the int8 backbone
    "frozen-head": ("efficientnet-head", "efficientnet", INT8),  # before the tuned head
    "adapted": ("efficientnet-head", "efficientnet-adapted", FP32),
    "first-wave": ("efficientnet-head-gap", "efficientnet-gap", FP32),  # as it shipped
    "prototype": ("seed-cnn", "autoencoder", FP32),
}
RECALL_AT = (1, 5, 10)
MARGINS_Z = (0.0, 0.25, 0.5, 1.0)  # decision rules weighed on the same folds (heads.py's z)
SEARCH_DEPTH = 100  # mAP counts a product found beyond this as not found
BOOTSTRAP_DRAWS = 2000  # resamplings of the queries behind each 95% interval
PRICE = 100.0  # no metric here depends on prices


@dataclass(frozen=True)
class Photo:
    path: Path
    type: str
    source_repo: str
    style: str = "unknown"


@dataclass(frozen=True)
class CatalogProduct:
    id: str
    type: str
    photos: tuple[Path, ...]


def read_real_jewelry(data: Path) -> list[Photo]:
    with open(data / "manifest.csv", newline="") as fh:
        return [Photo(data / row["file"], row["type"], row["source_repo"], row["style"])
                for row in csv.DictReader(fh) if row["type"] in TYPES]


def read_groups(data: Path) -> dict[str, list[Photo]]:
    groups: dict[str, list[Photo]] = defaultdict(list)
    with open(data / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            groups[row["group_id"]].append(Photo(data / row["file"], row["type"],
                                                 row["source_repo"]))
    return dict(groups)


def overlapping_files(groups_data: Path) -> set[str]:
    with open(groups_data / "overlap_with_real_jewelry.csv", newline="") as fh:
        return {row["real_jewelry_file"] for row in csv.DictReader(fh)}


def write_catalog(folder: Path, products: list[CatalogProduct]) -> Path:
    """catalog.csv + copies of the photos in `folder` (a temporary folder, never the repo)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "type", "price", "url", "image"])
        for product in products:
            names = []
            for i, photo in enumerate(product.photos):
                name = f"{product.id}-{i}{photo.suffix.lower()}"
                shutil.copyfile(photo, images / name)
                names.append(f"images/{name}")
            writer.writerow([product.id, product.id, product.type, PRICE,
                             f"https://shop.example/{product.id}", "|".join(names)])
    return path


def build_home(root: Path, products: list[CatalogProduct], classifier: str, embedder: str,
               precision: str, *, index: bool, epochs: int | None
               ) -> tuple[Home, dict[str, float]]:
    """ingest -> train (-> index) a fresh home; returns it and the seconds of each stage."""
    home = Home(root / "home").ensure()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    summary = ingest(write_catalog(root / "catalog", products), home, progress=False,
                     keep_duplicates=True)
    seconds["ingest"] = time.perf_counter() - start
    if summary.rejected:
        print(f"  note: {len(summary.rejected)} photos rejected at ingest", flush=True)
    start = time.perf_counter()
    kinds = ("classifier", "embedder") if index else ("classifier",)
    trained = train_home(home, classifier=classifier, embedder=embedder, epochs=epochs,
                         progress=False, kinds=kinds, precision=precision)
    seconds["train"] = time.perf_counter() - start
    for model in trained:
        seconds[f"train {model.kind}"] = model.seconds
    if index:
        start = time.perf_counter()
        build_index(home, embedder=embedder, progress=False)
        seconds["index"] = time.perf_counter() - start
    return home, seconds


# -- types ------------------------------------------------------------------------------------
def shop_folds(photos: list[Photo], folds: int) -> list[tuple[list[int], list[int]]]:
    from sklearn.model_selection import GroupKFold

    labels = [p.type for p in photos]
    repos = [p.source_repo for p in photos]
    return [(list(a), list(b)) for a, b in GroupKFold(folds).split(photos, labels, repos)]


def classify(classifier, photos: list[Photo], batch: int = 32) -> np.ndarray:
    """Probabilities for each photo, framed as the Recommender frames a query."""
    rows = []
    for i in range(0, len(photos), batch):
        views = []
        for photo in photos[i : i + batch]:
            image = load_image(photo.path)
            views.append(typing_view(classifier, image, None, focus_on_piece(image)[0]))
        rows.append(classifier.predict_proba(views))
    return np.concatenate(rows)


def type_results(variant: str, photos: list[Photo], folds: int, work: Path,
                 epochs: int | None) -> dict:
    classifier_name, embedder_name, precision = VARIANTS[variant]
    truth, predicted, confidence, decided, styles, fold_accuracy = [], [], [], [], [], []
    by_margin: dict[float, dict] = defaultdict(lambda: {"thresholds": [], "decided": []})
    for f, (train, test) in enumerate(shop_folds(photos, folds)):
        products = [CatalogProduct(f"p{i}", photos[i].type, (photos[i].path,)) for i in train]
        home, seconds = build_home(work / f"{variant}-types-{f}", products, classifier_name,
                                   embedder_name, precision, index=False, epochs=epochs)
        classifier = load_classifier(home.models_dir, classifier_name,
                                     backbone=Backbone.for_home(home))
        threshold = float(getattr(classifier, "decision_threshold",
                                  DEFAULT_CONFIDENCE_THRESHOLD))
        rules = margin_thresholds(home, classifier_name)
        held = [photos[i] for i in test]
        probabilities = classify(classifier, held)
        answers = [classifier.classes[j] for j in probabilities.argmax(1)]
        best = probabilities.max(1)
        right = [a == p.type for a, p in zip(answers, held, strict=True)]
        fold_accuracy.append(float(np.mean(right)))
        truth += [p.type for p in held]
        predicted += answers
        confidence += best.tolist()
        decided += (best >= threshold).tolist()
        for z, rule_threshold in rules.items():
            by_margin[z]["thresholds"].append(round(rule_threshold, 4))
            by_margin[z]["decided"] += (best >= rule_threshold).tolist()
        styles += [p.style for p in held]
        print(f"  {variant} fold {f + 1}/{folds}: {len(train)} catalog photos, {len(held)} "
              f"queries, accuracy {fold_accuracy[-1]:.3f}, threshold {threshold:.3f}, "
              f"train {seconds['train']:.0f}s", flush=True)
    truth_a, predicted_a = np.array(truth), np.array(predicted)
    right_a, decided_a = truth_a == predicted_a, np.array(decided)
    per_style = {s: float(right_a[np.array(styles) == s].mean()) for s in sorted(set(styles))}
    confusion = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    return {
        "accuracy": float(right_a.mean()),
        "fold_accuracy": fold_accuracy,
        "per_style": per_style,
        "decided_coverage": float(decided_a.mean()),
        "decided_accuracy": float(right_a[decided_a].mean()) if decided_a.any() else None,
        "selective": selective_points(np.array(confidence), right_a),
        "margins": {f"{z:g}": {"thresholds": m["thresholds"],
                               **decided_share(m["decided"], right_a)}
                    for z, m in by_margin.items()},
        "answers": {"confidence": np.round(confidence, 4).tolist(),
                    "right": right_a.astype(int).tolist()},
        "confusions": {f"{t}->{p}": n for (t, p), n in confusion.most_common(6)},
    }


def margin_thresholds(home: Home, classifier_name: str) -> dict[float, float]:
    """The threshold each margin of MARGINS_Z would have set, from the out-of-fold answers the
    classifier kept in its training notes (empty when it kept none)."""
    record = model_folder(home.models_dir, "classifier", classifier_name) / "training.json"
    answers = json.loads(record.read_text()).get("notes", {}).get("heldout_answers")
    if not answers:
        return {}
    confidence, right = np.array(answers["confidence"]), np.array(answers["right"], bool)
    return {z: threshold_for(confidence, right, DECIDED_ACCURACY, z) for z in MARGINS_Z}


def decided_share(decided: list[bool], right: np.ndarray) -> dict[str, float | None]:
    """The share of answers decided alone and how often those were right."""
    mask = np.array(decided, bool)
    return {"coverage": float(mask.mean()),
            "accuracy": float(right[mask].mean()) if mask.any() else None}


def selective_points(confidence: np.ndarray, right: np.ndarray) -> dict[str, float]:
    """Accuracy of the most confident answers at several coverages."""
    order = np.argsort(-confidence, kind="stable")
    return {f"{q:.0%}": float(right[order[: max(1, round(q * len(order)))]].mean())
            for q in (0.33, 0.5, 0.7, 0.75, 0.9, 1.0)}


# -- retrieval --------------------------------------------------------------------------------
def found_within(ranks: list[int | None], k: int) -> np.ndarray:
    """1.0 for each query whose product came within the first k, else 0.0."""
    return np.array([r is not None and r <= k for r in ranks], dtype=float)


def interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-query values (one query per product here, so
    resampling queries resamples products): what 130 queries can and cannot tell apart."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    draws = np.random.default_rng(seed).integers(0, len(values), (BOOTSTRAP_DRAWS, len(values)))
    means = values[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_difference(ranks: list[int | None], baseline: list[int | None],
                      k: int) -> dict[str, float]:
    """Recall@k of `ranks` minus `baseline`'s on the same queries, with its 95% interval (the
    pairs resampled together, so the queries both find or both miss add no noise)."""
    if len(ranks) != len(baseline):
        raise ValueError("paired rows need the same queries")
    difference = found_within(ranks, k) - found_within(baseline, k)
    low, high = interval(difference)
    return {"difference": float(difference.mean()), "low": low, "high": high}


def retrieval_results(variant: str, distractors: list[Photo], groups: dict[str, list[Photo]],
                      work: Path, epochs: int | None) -> dict:
    classifier_name, embedder_name, precision = VARIANTS[variant]
    products = [CatalogProduct(f"d{i}", p.type, (p.path,)) for i, p in enumerate(distractors)]
    group_ids = {g: f"g{i}" for i, g in enumerate(sorted(groups))}
    products += [CatalogProduct(group_ids[g], photos[0].type, tuple(p.path for p in photos[1:]))
                 for g, photos in sorted(groups.items())]
    home, seconds = build_home(work / f"{variant}-retrieval", products, classifier_name,
                               embedder_name, precision, index=True, epochs=epochs)
    recommender = Recommender.open(home)
    recommender.recommend(next(iter(groups.values()))[0].path, k=10)  # warm-up
    ranks, cpu, by_type, type_right, type_decided = [], [], defaultdict(list), [], []
    for group, photos in sorted(groups.items()):
        query = photos[0]
        start = time.process_time()
        answer = recommender.recommend(query.path, k=SEARCH_DEPTH)
        cpu.append(time.process_time() - start)
        ids = [r.id for r in answer.results]
        rank = ids.index(group_ids[group]) + 1 if group_ids[group] in ids else None
        ranks.append(rank)
        by_type[query.type].append(rank)
        type_right.append(answer.type == query.type)
        type_decided.append(bool(getattr(answer, "type_decided", True)))

    def recall(rs: list[int | None], k: int) -> float:
        return float(found_within(rs, k).mean())

    def mean_ap(rs: list[int | None]) -> float:
        return float(np.mean([1.0 / r if r else 0.0 for r in rs]))

    return {
        "queries": len(ranks),
        "catalog_products": len(products),
        **{f"recall@{k}": recall(ranks, k) for k in RECALL_AT},
        **{f"recall@{k}_95": interval(found_within(ranks, k)) for k in RECALL_AT},
        "mAP": mean_ap(ranks),
        "ranks": ranks,  # per query, in the groups' order (None: not within SEARCH_DEPTH)
        "per_type": {t: {f"recall@{k}": recall(rs, k) for k in RECALL_AT} | {"queries": len(rs)}
                     for t, rs in sorted(by_type.items())},
        "query_type_accuracy": float(np.mean(type_right)),
        "query_type_decided": float(np.mean(type_decided)),
        "query_cpu_ms_p50": float(np.median(cpu) * 1000),
        "query_cpu_ms_mean": float(np.mean(cpu) * 1000),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--folds", type=int, default=5, help="shop folds for the type table")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--quick", action="store_true", help="2 folds, no prototype")
    parser.add_argument("--skip-types", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs for the prototype's models (their default: 15)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the homes here (default: a temporary folder)")
    args = parser.parse_args()
    real, groups_data = args.data / "real-jewelry", args.data / "real-groups-dev"
    for needed in (real / "manifest.csv", groups_data / "groups.csv"):
        if not needed.exists():
            print(f"no real photos at {needed}: nothing to measure (../shared/data is absent)")
            return 1
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.quick:
        args.folds = min(args.folds, 2)
        variants = [v for v in variants if v != "prototype"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    photos = read_real_jewelry(real)
    groups = read_groups(groups_data)
    overlap = overlapping_files(groups_data)
    distractors = [p for p in photos if str(p.path.relative_to(real)) not in overlap]
    print(f"{len(photos)} real photos from {len({p.source_repo for p in photos})} shops; "
          f"{len(groups)} products with galleries; {len(distractors)} distractors; "
          f"{load_note()}", flush=True)
    results: dict[str, dict] = {"machine": machine(), "folds": args.folds}
    with tempfile.TemporaryDirectory(prefix="jewelrec-real-") as tmp:
        work = args.work or Path(tmp)
        for variant in variants:
            row: dict = {}
            if not args.skip_types:
                row["types"] = type_results(variant, photos, args.folds, work, args.epochs)
            if not args.skip_retrieval:
                row["retrieval"] = retrieval_results(variant, distractors, groups, work,
                                                     args.epochs)
            results[variant] = row
    report(results, variants)
    results["load_after"] = load_note()
    print(f"\n{load_note()}")
    write_results("real_photos", results)
    return 0


def report(results: dict, variants: list[str]) -> None:
    typed = [v for v in variants if "types" in results[v]]
    if typed:
        print(f"\nTypes on shops outside the catalog ({results['folds']}-fold by source_repo)")
        styles = sorted({s for v in typed for s in results[v]["types"]["per_style"]})
        print_table(
            ["variant", "accuracy", *styles, "decided", "decided acc", "acc@top 75%",
             "acc@top 33%"],
            [[v, f"{t['accuracy']:.3f}", *(f"{t['per_style'].get(s, float('nan')):.3f}"
                                           for s in styles),
              f"{t['decided_coverage']:.3f}",
              "-" if t["decided_accuracy"] is None else f"{t['decided_accuracy']:.3f}",
              f"{t['selective']['75%']:.3f}", f"{t['selective']['33%']:.3f}"]
             for v in typed for t in [results[v]["types"]]])
        for v in typed:
            print(f"  {v}: most frequent confusions {results[v]['types']['confusions']}")
        margins = [(v, z, m) for v in typed for z, m in results[v]["types"]["margins"].items()]
        if margins:
            print("\nWhat each margin of the decision threshold would decide (heads.py's z; "
                  "thresholds from each fold's own out-of-fold answers)")
            print_table(["variant", "z", "decided", "decided acc", "thresholds"],
                        [[v, z, f"{m['coverage']:.3f}",
                          "-" if m["accuracy"] is None else f"{m['accuracy']:.3f}",
                          " ".join(f"{t:.3f}" for t in m["thresholds"])]
                         for v, z, m in margins])
    found = [v for v in variants if "retrieval" in results[v]]
    if found:
        print("\nSame product among real distractors (first photo as the query, the rest as "
              "one gallery product)")
        print_table(
            ["variant", "R@1", "R@1 95%", "R@5", "R@10", "R@10 95%", "mAP", "type acc",
             "decided", "query CPU ms", "train s", "index s"],
            [[v, f"{r['recall@1']:.3f}", bounds(r["recall@1_95"]), f"{r['recall@5']:.3f}",
              f"{r['recall@10']:.3f}", bounds(r["recall@10_95"]),
              f"{r['mAP']:.3f}", f"{r['query_type_accuracy']:.3f}",
              f"{r['query_type_decided']:.3f}", f"{r['query_cpu_ms_mean']:.1f}",
              f"{r['seconds']['train']:.0f}", f"{r['seconds'].get('index', 0):.0f}"]
             for v in found for r in [results[v]["retrieval"]]])
        for v in found:
            per_type = results[v]["retrieval"]["per_type"]
            print(f"  {v} R@10 per type: " + ", ".join(
                f"{t} {s['recall@10']:.2f} ({s['queries']})" for t, s in per_type.items()))
        if "default" in found:
            baseline = results["default"]["retrieval"]["ranks"]
            for v in found:
                if v == "default":
                    continue
                ranks = results[v]["retrieval"]["ranks"]
                print(f"  {v} over default, same queries: " + ", ".join(
                    f"R@{k} {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                    for k in (1, 10) for d in [paired_difference(ranks, baseline, k)]))
        if "first-wave" in found and "default" in found:
            base = results["first-wave"]["retrieval"]["query_cpu_ms_mean"]
            ratio = results["default"]["retrieval"]["query_cpu_ms_mean"] / base
            print(f"  query CPU time, default / first-wave: {ratio:.2f}x")


def bounds(pair: list[float] | tuple[float, float]) -> str:
    return f"{pair[0]:.2f}-{pair[1]:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
