"""The default type classifier: a calibrated logistic-regression head on frozen backbone features.

ImageNet has no earring, ring or bracelet classes, so the type is learned from the catalog's own
labels: a multinomial logistic regression on L2-normalised 1280-d EfficientNet-Lite0 features,
which trains in seconds on a CPU. Its logits are divided by a temperature fitted on out-of-fold
predictions (minimum log-loss), so that "70% ring" is right about 70% of the time: the
Recommender searches every type when the confidence is low, and that only works if it means
something. Prediction is plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jewelrec.errors import NotReadyError
from jewelrec.models.backbone import (
    BACKBONE,
    WHOLE_SHORT_SIDE,
    backbone_config,
    default_onnx_path,
    image_features,
    l2_rows,
    shared_backbone,
)
from jewelrec.models.base import FitReport, Image

CALIBRATION_FOLDS = 5


@dataclass(frozen=True)
class HeadSettings:
    """The levers measured in benchmarks/real_photos_types.py; defaults are what helped there."""

    crop_fraction: float = WHOLE_SHORT_SIDE  # share of the short side the 224 crop covers
    c: float = 10.0  # inverse L2 strength of the logistic regression (sklearn's C)
    standardise: bool = False  # per-dimension z-scoring after L2 normalisation
    calibrate: bool = True  # fit a temperature on out-of-fold logits


@dataclass
class Head:
    """Everything predict needs, as plain arrays (saved as safetensors)."""

    classes: list[str]
    coef: np.ndarray  # (K, D)
    intercept: np.ndarray  # (K,)
    mean: np.ndarray  # (D,) subtracted after L2 normalisation (zeros unless standardising)
    scale: np.ndarray  # (D,) divided by after that (ones unless standardising)
    temperature: float = 1.0

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (l2_rows(features) - self.mean) / self.scale
        return x @ self.coef.T + self.intercept


def fit_head(
    features: np.ndarray, labels: Sequence[str], settings: HeadSettings, *, seed: int = 0
) -> tuple[Head, dict[str, float]]:
    """Fit on raw pooled features (N, D); returns the head and notes (out-of-fold accuracy...)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise NotReadyError("a type classifier needs photos of at least two types")
    y = np.searchsorted(classes, labels)
    x = l2_rows(features)
    mean, scale = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
    if settings.standardise:
        mean, scale = x.mean(0), x.std(0) + 1e-6
    head = Head(classes, *_logistic_regression((x - mean) / scale, y, len(classes), settings.c),
                mean, scale)
    notes: dict[str, float] = {"c": settings.c}
    folds = min(CALIBRATION_FOLDS, int(np.bincount(y).min()))
    if settings.calibrate and folds >= 2:
        oof = np.zeros((len(y), len(classes)), np.float32)
        split = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for train, held in split.split(x, y):
            part = Head(classes, *_logistic_regression(
                (x[train] - mean) / scale, y[train], len(classes), settings.c), mean, scale)
            oof[held] = part.logits(features[held])
        head.temperature = fit_temperature(oof, y)
        notes.update(heldout_accuracy=float((oof.argmax(1) == y).mean()),
                     heldout_log_loss=log_loss(oof / head.temperature, y))
    notes["temperature"] = head.temperature
    return head, notes


def head_probabilities(head: Head, features: np.ndarray) -> np.ndarray:
    """(N, D) raw features -> (N, K) calibrated probabilities, rows summing to 1."""
    return softmax(head.logits(features) / head.temperature)


def _logistic_regression(x: np.ndarray, y: np.ndarray, k: int, c: float):
    """Multinomial logistic regression; -> (coef (K, D), intercept (K,)) for softmax, any K."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if k == 2:  # sklearn's binary model is one sigmoid: softmax([0, z]) gives the same
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return coef, intercept


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the log-loss of softmax(logits / T) (one convex 1-d problem)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda t: log_loss(logits / np.exp(t), y), bounds=(-4, 4),
                             method="bounded")
    return float(np.exp(result.x))


class EfficientNetHeadClassifier:
    """TypeClassifier "efficientnet-head": frozen EfficientNet-Lite0 + calibrated linear head."""

    name = "efficientnet-head"

    def __init__(self, settings: HeadSettings | None = None, *, onnx_path: Path | None = None):
        self.settings = settings or HeadSettings()
        self.onnx_path = onnx_path
        self.head: Head | None = None
        if onnx_path is not None:
            shared_backbone().use_onnx(onnx_path)

    @property
    def classes(self) -> list[str]:
        return self.head.classes if self.head is not None else []

    def fit(
        self,
        images: Sequence[Image],
        labels: Sequence[str],
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """`epochs` is ignored: the head is a convex problem solved to convergence."""
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        features = image_features(
            images, crop_fraction=self.settings.crop_fraction, progress=progress
        )
        self.head, notes = fit_head(features, labels, self.settings, seed=seed)
        report = FitReport(notes={**notes, "images": len(images)})
        if "heldout_accuracy" in notes:
            report.val_accuracy.append(notes["heldout_accuracy"])
        return report

    def predict_proba(self, images: Sequence[Image]) -> np.ndarray:
        if self.head is None:
            raise NotReadyError("the efficientnet-head classifier is not trained yet")
        features = image_features(images, crop_fraction=self.settings.crop_fraction)
        return head_probabilities(self.head, features)

    def save(self, folder: Path) -> None:
        import torch

        from jewelrec.models.weights import save_weights

        if self.head is None:
            raise NotReadyError("nothing to save: the efficientnet-head classifier is not trained")
        arrays = {k: getattr(self.head, k) for k in ("coef", "intercept", "mean", "scale")}
        config = {
            "model": self.name,
            "classes": self.head.classes,
            "temperature": self.head.temperature,
            "settings": asdict(self.settings),
            **backbone_config(),
        }
        save_weights(folder, {k: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in arrays.items()}, config)
        shared_backbone().use_onnx(self.onnx_path or default_onnx_path(folder))

    @classmethod
    def load(cls, folder: Path) -> EfficientNetHeadClassifier:
        from jewelrec.models.weights import damaged_model_error, expect_model, load_weights

        state, config = load_weights(folder)
        expect_model(config, cls.name, folder)
        if config.get("backbone") != BACKBONE:
            raise damaged_model_error(folder, f"it was trained on {config.get('backbone')!r}")
        try:
            arrays = {k: state[k].numpy() for k in ("coef", "intercept", "mean", "scale")}
            head = Head(list(config["classes"]), temperature=float(config["temperature"]),
                        **arrays)
            settings = HeadSettings(**config.get("settings", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged_model_error(folder, f"incomplete head: {exc}") from exc
        model = cls(settings, onnx_path=default_onnx_path(folder))
        model.head = head
        return model
