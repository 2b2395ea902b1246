"""The two model contracts, scikit-learn style: settings in the constructor, `fit`, then
`embed` / `predict_proba`; `save(folder)` and `load(folder)` with safetensors + a JSON of settings.

Images are always RGB uint8 arrays of shape (H, W, 3), any size: each model resizes as it needs.
Models on the pretrained backbone (`uses_backbone = True`) take the runtime as `backbone=`, from
whoever opened the home (models/backbone.py); the others never see it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from jewelrec.models.backbone import Backbone

Image = np.ndarray  # RGB uint8, (H, W, 3)


@dataclass
class FitReport:
    """What a training run produced: per-epoch losses (for the loss-curve PNG) and notes."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    notes: dict[str, float | str] = field(default_factory=dict)


@runtime_checkable
class Embedder(Protocol):
    """Image -> L2-normalised float32 vector; similar pieces give a high dot product."""

    name: str

    @property
    def dim(self) -> int: ...

    def fit(
        self,
        images: Sequence[Image],
        labels: Sequence[str],
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
        products: Sequence[str] | None = None,  # each image's product id: a gallery's photos
    ) -> FitReport: ...

    def embed(
        self, images: Sequence[Image], masks: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """`masks`: per image, the piece's foreground as framing found it (imaging/focus.py
        `Framed.mask`), or None; an embedder describing the piece's own pixels uses it instead
        of segmenting again (the index and the query hand the same), the others ignore it."""
        ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> Embedder: ...


@runtime_checkable
class TypeClassifier(Protocol):
    """Image -> probability per catalog type (columns ordered as `classes`)."""

    name: str
    classes: list[str]

    def fit(
        self,
        images: Sequence[Image],
        labels: Sequence[str],
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport: ...

    def predict_proba(self, images: Sequence[Image]) -> np.ndarray: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> TypeClassifier: ...


# name -> "module:ClassName", imported on demand so the CLI starts fast.
EMBEDDERS: dict[str, str] = {
    "autoencoder": "jewelrec.models.autoencoder:AutoencoderEmbedder",
    "efficientnet": "jewelrec.models.backbone:EfficientNetEmbedder",
    "efficientnet-gap": "jewelrec.models.backbone:EfficientNetGapEmbedder",
    "efficientnet-adapted": "jewelrec.models.backbone:EfficientNetAdaptedEmbedder",
}
CLASSIFIERS: dict[str, str] = {
    "seed-cnn": "jewelrec.models.seed_cnn:SeedCNNClassifier",
    "efficientnet-head": "jewelrec.models.heads:EfficientNetHeadClassifier",
    "efficientnet-head-gap": "jewelrec.models.heads:EfficientNetGapHeadClassifier",
    "efficientnet-tuned": "jewelrec.models.heads:EfficientNetTunedHeadClassifier",
}


def _resolve(table: dict[str, str], name: str, kind: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")
    module_name, class_name = table[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)


def embedder_class(name: str) -> type:
    return _resolve(EMBEDDERS, name, "embedder")


def classifier_class(name: str) -> type:
    return _resolve(CLASSIFIERS, name, "classifier")


def model_folder(models_dir: Path, kind: str, name: str) -> Path:
    """Where a trained model lives in a home: models/<kind>-<name>/ (kind: embedder/classifier)."""
    return models_dir / f"{kind}-{name}"


def _runtime(cls: type, backbone: Backbone | None) -> dict[str, Any]:
    """The keyword a model class takes its backbone by (none for models that do not use one)."""
    return {"backbone": backbone} if getattr(cls, "uses_backbone", False) else {}


def new_embedder(name: str, *, backbone: Backbone | None) -> Embedder:
    """An untrained embedder by name, on `backbone` if it uses one."""
    cls = embedder_class(name)
    return cls(**_runtime(cls, backbone))


def new_classifier(name: str, *, backbone: Backbone | None) -> TypeClassifier:
    """An untrained classifier by name, on `backbone` if it uses one."""
    cls = classifier_class(name)
    return cls(**_runtime(cls, backbone))


def load_embedder(models_dir: Path, name: str, *, backbone: Backbone | None) -> Embedder:
    """The home's trained embedder `name`, on the home's `backbone` if it uses one."""
    return _load(models_dir, "embedder", name, embedder_class(name), backbone)


def load_classifier(models_dir: Path, name: str, *, backbone: Backbone | None) -> TypeClassifier:
    """The home's trained classifier `name`, on the home's `backbone` if it uses one."""
    return _load(models_dir, "classifier", name, classifier_class(name), backbone)


def _load(models_dir: Path, kind: str, name: str, cls: type, backbone: Backbone | None):
    from jewelrec.errors import NotReadyError

    folder = model_folder(models_dir, kind, name)
    if not folder.exists():
        raise NotReadyError(
            f"no trained {kind} {name!r} in {models_dir.parent}: "
            f"run `jewelrec train --home {shlex.quote(str(models_dir.parent))} --{kind} {name}` "
            "first"
        )
    return cls.load(folder, **_runtime(cls, backbone))
