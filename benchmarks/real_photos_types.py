"""Frozen EfficientNet-Lite0 features on real jewelry photos: type accuracy and retrieval levers.

Data: ../shared/data/real-jewelry (earring, necklace, ring, bracelet; other/ ignored). Photos from
one source repository look alike, so every split is a 5-fold GroupKFold by source_repo: the head
is trained, and the retrieval gallery built, from repositories the test photos do not come from.
Each row is one lever; "vs first row" is the paired difference with a 95% interval from
resampling whole repositories, so a lever is kept only where that interval excludes zero.

- head (jewelrec.models.heads): type accuracy, log-loss, calibration error (ECE, 10 bins) of the
  top-1 confidence, the temperature fitted, and how many photos clear the Recommender's
  confidence threshold (it searches all types below it) and how often those are right;
- retrieval (jewelrec.models.backbone): type precision@1/@10 of cosine kNN, query = a held-out
  photo, gallery = the other folds; inst@1 = the object-crop view of a photo finds that photo.

Features (1280-d, pooled) are cached under benchmarks/results/ so reruns skip the network.
Usage: python benchmarks/real_photos_types.py [--data DIR] [--no-cache]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import GroupKFold

from jewelrec.models.backbone import (
    IMAGENET_CROP,
    WHOLE_SHORT_SIDE,
    RetrievalSettings,
    default_onnx_path,
    fit_retrieval,
    project,
    shared_backbone,
)
from jewelrec.models.heads import HeadSettings, fit_head, head_probabilities

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real-jewelry"
RESULTS = ROOT / "benchmarks" / "results"
TYPES = ("bracelet", "earring", "necklace", "ring")
FOLDS, K = 5, 10
CONFIDENCE_THRESHOLDS = (0.5, 0.7, 0.9)


def load_manifest(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["type"] in TYPES]


def flip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def focus(image: np.ndarray) -> np.ndarray:
    from jewelrec.imaging.focus import focus_on_piece

    return focus_on_piece(image)[0]


# variant -> (share of the short side the 224 crop covers, image transform)
VARIANTS: dict[str, tuple[float, Callable | None]] = {
    "whole": (WHOLE_SHORT_SIDE, None),  # what the models ship with
    "whole_flip": (WHOLE_SHORT_SIDE, flip),
    "whole_focus": (WHOLE_SHORT_SIDE, focus),
    "crop0.875": (IMAGENET_CROP, None),  # ImageNet's evaluation framing
    "crop0.875_flip": (IMAGENET_CROP, flip),
    "crop0.875_focus": (IMAGENET_CROP, focus),
}


def load_features(data: Path, rows: list[dict[str, str]], variant: str, cache: bool) -> np.ndarray:
    """Raw pooled features (N, 1280) of every photo, as the shipped backbone computes them."""
    names = [r["file"] for r in rows]
    key = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    path = RESULTS / f"real_photos_{variant}_{key}.npy"
    if cache and path.exists():
        return np.load(path)
    crop_fraction, transform = VARIANTS[variant]
    backbone = shared_backbone()
    backbone.use_onnx(default_onnx_path(RESULTS))
    start, chunks = time.perf_counter(), []
    for i in range(0, len(names), 64):
        images = [np.asarray(Image.open(data / n).convert("RGB")) for n in names[i : i + 64]]
        if transform is not None:
            images = [transform(im) for im in images]
        chunks.append(backbone.run_images(images, crop_fraction=crop_fraction)[0])
    features = np.concatenate(chunks).astype(np.float32)
    seconds = time.perf_counter() - start
    print(f"  {variant}: {len(names)} images in {seconds:.1f} s ({len(names) / seconds:.0f} img/s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    return features


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    confidence, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def paired_interval(a: np.ndarray, b: np.ndarray, groups: np.ndarray, rounds: int = 1000):
    """95% interval of mean(a - b), resampling whole source repositories (they look alike)."""
    diff = a.astype(np.float64) - b
    names, index = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(index, diff), np.bincount(index)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(names), size=(rounds, len(names)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def evaluate_head(splits, labels, train_x, test_x, settings: HeadSettings, train_extra=None):
    """Out-of-group accuracy / log-loss / ECE, and per-photo correctness for paired intervals.
    `train_extra` adds augmented training rows with the same labels."""
    classes = sorted(set(labels.tolist()))
    y = np.searchsorted(classes, labels)
    probs = np.zeros((len(y), len(classes)), np.float32)
    temperatures = []
    for train, test in splits:
        x, lab = train_x[train], labels[train]
        if train_extra is not None:
            x, lab = np.concatenate([x, train_extra[train]]), np.concatenate([lab, lab])
        head, _ = fit_head(x, lab, settings)
        temperatures.append(head.temperature)
        probs[test] = head_probabilities(head, test_x[test])
    correct = probs.argmax(1) == y
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    result = {"accuracy": float(correct.mean()), "log_loss": nll,
              "ece": expected_calibration_error(probs, y),
              "temperature": float(np.mean(temperatures))}
    for threshold in CONFIDENCE_THRESHOLDS:  # the Recommender searches all types below one
        sure = probs.max(1) >= threshold
        result[f"share_confident@{threshold}"] = float(sure.mean())
        result[f"accuracy_confident@{threshold}"] = float(correct[sure].mean())
    return result, correct


def evaluate_retrieval(splits, labels, features, settings: RetrievalSettings, other_view=None):
    """Type precision@1/@10, held-out photos against a gallery of the other repositories; and,
    when `other_view` (features of another framing of every photo) is given, instance recall@1:
    that view finds its own photo among all photos."""
    p1, p10 = np.zeros(len(labels)), np.zeros(len(labels))
    for train, test in splits:
        arrays = fit_retrieval(features[train], settings)
        gallery, queries = project(features[train], arrays), project(features[test], arrays)
        top = np.argsort(-(queries @ gallery.T), axis=1)[:, :K]
        same = labels[train][top] == labels[test][:, None]
        p1[test], p10[test] = same[:, 0], same.mean(1)
    result = {"precision@1": float(p1.mean()), "precision@10": float(p10.mean())}
    if other_view is not None:
        arrays = fit_retrieval(features, settings)
        scores = project(other_view, arrays) @ project(features, arrays).T
        result["instance_recall@1"] = float((scores.argmax(1) == np.arange(len(labels))).mean())
    return result, p10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-cache", action="store_true", help="recompute the features")
    args = parser.parse_args()
    if not (args.data / "manifest.csv").exists():
        print(f"no real photos at {args.data}: nothing to measure")
        return 1
    rows = load_manifest(args.data)
    labels = np.array([r["type"] for r in rows])
    groups = np.array([r["source_repo"] for r in rows])
    print(f"{len(rows)} photos, {len(set(groups))} source repositories, {FOLDS}-fold GroupKFold")
    variants = [v for v in VARIANTS if "focus" not in v]
    try:
        import jewelrec.imaging.focus  # noqa: F401 - the object crop, where it exists

        variants += [v for v in VARIANTS if "focus" in v]
    except ImportError:
        print("  (jewelrec.imaging.focus not found: object-crop rows skipped)")
    feats = {v: load_features(args.data, rows, v, not args.no_cache) for v in variants}
    splits = list(GroupKFold(FOLDS).split(feats["whole"], labels, groups))
    whole, imagenet = feats["whole"], feats["crop0.875"]
    whole_tta = (whole + feats["whole_flip"]) / 2

    def interval(a, b) -> str:
        lo, hi = paired_interval(a, b, groups)
        return f"{a.mean() - b.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"

    head_rows: dict[str, dict] = {}
    reference: list[np.ndarray] = []
    print(f"\n{'type head (logistic regression)':<40} {'acc':>6} {'vs first row, 95% CI':>25}"
          f" {'log-loss':>8} {'ECE':>6} {'T':>5}")

    def head(name: str, train_x, test_x, settings: HeadSettings, extra=None) -> None:
        result, correct = evaluate_head(splits, labels, train_x, test_x, settings, extra)
        if not reference:
            reference.append(correct)
        result["vs_first_row"] = interval(correct, reference[0])
        head_rows[name] = result
        print(f"{name:<40} {result['accuracy']:6.3f} {result['vs_first_row']:>25}"
              f" {result['log_loss']:8.3f} {result['ece']:6.3f} {result['temperature']:5.2f}")

    shipped = HeadSettings()
    assert shipped.crop_fraction == WHOLE_SHORT_SIDE
    head(f"shipped: whole short side, C={shipped.c:g}, T", whole, whole, shipped)
    for threshold in CONFIDENCE_THRESHOLDS:
        first = next(iter(head_rows.values()))
        print(f"    confidence >= {threshold}: {first[f'share_confident@{threshold}']:.0%} of"
              f" photos, {first[f'accuracy_confident@{threshold}']:.3f} of those right")
    head("no temperature", whole, whole, replace(shipped, calibrate=False))
    for c in (0.3, 1.0, 3.0, 30.0, 100.0):
        head(f"C={c:g}", whole, whole, replace(shipped, c=c))
    head("standardised features", whole, whole, replace(shipped, standardise=True))
    head("standardised, C=0.1", whole, whole, replace(shipped, standardise=True, c=0.1))
    head("flip-augmented training", whole, whole, shipped, extra=feats["whole_flip"])
    head("flip TTA at test", whole, whole_tta, shipped)
    head("ImageNet framing (short side 256, crop 224)", imagenet, imagenet, shipped)
    head("ImageNet framing + flip TTA", imagenet, (imagenet + feats["crop0.875_flip"]) / 2,
         shipped)
    both = np.hstack([imagenet, whole])
    head("concat ImageNet framing + whole", both, both, shipped)
    if "whole_focus" in feats:
        head("object crop (focus_on_piece)", feats["whole_focus"], feats["whole_focus"], shipped)
        head("object crop, ImageNet framing", feats["crop0.875_focus"], feats["crop0.875_focus"],
             shipped)

    retrieval_rows: dict[str, dict] = {}
    reference.clear()
    print(f"\n{'kNN retrieval (cosine)':<40} {'P@10':>6} {'vs first row, 95% CI':>25}"
          f" {'P@1':>8} {'inst@1':>6}")

    def retrieval(name: str, features: np.ndarray, settings: RetrievalSettings, other=None):
        result, p10 = evaluate_retrieval(splits, labels, features, settings, other)
        if not reference:
            reference.append(p10)
        result["vs_first_row"] = interval(p10, reference[0])
        retrieval_rows[name] = result
        instance = result.get("instance_recall@1")
        print(f"{name:<40} {result['precision@10']:6.3f} {result['vs_first_row']:>25}"
              f" {result['precision@1']:8.3f} {'-' if instance is None else f'{instance:.3f}':>6}")

    shipped_retrieval = RetrievalSettings()
    assert shipped_retrieval.crop_fraction == WHOLE_SHORT_SIDE
    raw = RetrievalSettings(centre=False, pca_dim=None)
    other = feats.get("whole_focus", imagenet)  # another framing of each photo: instance recall
    retrieval("raw cosine, whole short side (1280-d)", whole, raw, other)
    retrieval(f"shipped: centred + PCA {shipped_retrieval.pca_dim}", whole, shipped_retrieval,
              other)
    retrieval("raw, ImageNet framing", imagenet, raw, feats.get("crop0.875_focus", whole))
    retrieval("centred only", whole, replace(raw, centre=True), other)
    for dim in (128, 512):
        retrieval(f"centred + PCA {dim}", whole, replace(raw, pca_dim=dim), other)
    retrieval("centred + PCA 256 whitened", whole, replace(raw, pca_dim=256, whiten=True), other)
    retrieval("raw + flip TTA", whole_tta, raw)
    retrieval("centred + flip TTA", whole_tta, replace(raw, centre=True))
    retrieval("raw, mean of ImageNet framing + whole", (imagenet + whole) / 2, raw)
    if "whole_focus" in feats:
        retrieval("raw, object crop (focus_on_piece)", feats["whole_focus"], raw)
        retrieval("shipped, object crop (focus_on_piece)", feats["whole_focus"],
                  shipped_retrieval)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "real_photos_types.json"
    out.write_text(json.dumps({
        "photos": len(rows), "folds": FOLDS, "split": "GroupKFold by source_repo",
        "head": head_rows, "retrieval": retrieval_rows,
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
