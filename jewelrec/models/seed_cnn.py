"""The 2019 prototype's type classifier: a small CNN on 100x100 RGB photos.

Three conv blocks (32, 64, 128 filters; 3x3, ReLU, 2x2 max-pool; Keras' default "valid"
padding), dense 128 with ReLU and dropout 0.5, then one output per catalog type with softmax (the
prototype had a single sigmoid for earring vs necklace). Adam at 1e-3, batch 32, 15 epochs.

As in the prototype, earring photos (they show a pair) are split into single earrings for
training, each single earring becoming a sample of its own; the pair photo is kept too by default
(`keep_pair_photos`), because at prediction time the whole photo (or the caller's crop) is
classified and the network should have seen that view as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jewelrec.errors import JewelrecError, NotReadyError
from jewelrec.models.base import FitReport, Image
from jewelrec.models.training import (
    run_batches,
    set_seed,
    to_uint8_tensor,
    train_network,
    train_val_split,
)
from jewelrec.models.weights import (
    damaged_model_error,
    expect_model,
    load_weights,
    restore_module,
    save_weights,
)

EARRING_TYPES = ("earring", "earrings")


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv (no padding) + ReLU + 2x2 max-pool: side s -> (s - 2) // 2."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(), nn.MaxPool2d(2))


def feature_side(image_size: int) -> int:
    side = image_size
    for _ in range(3):
        side = (side - 2) // 2
    return side


class SeedCNN(nn.Module):
    """The network; shapes for the default 100x100 input in the comments."""

    def __init__(self, n_classes: int, image_size: int = 100) -> None:
        super().__init__()
        side = feature_side(image_size)  # 10
        self.features = nn.Sequential(
            conv_block(3, 32),  # (N, 3, 100, 100) -> conv (N, 32, 98, 98) -> pool (N, 32, 49, 49)
            conv_block(32, 64),  # -> conv (N, 64, 47, 47) -> pool (N, 64, 23, 23)
            conv_block(64, 128),  # -> conv (N, 128, 21, 21) -> pool (N, 128, 10, 10)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 12800)
            nn.Linear(128 * side * side, 128),  # (N, 128)
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, n_classes),  # (N, n_classes) logits; softmax in predict_proba
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, H, W) float RGB in [0, 1]
        return self.classifier(self.features(x))


class SeedCNNClassifier:
    """TypeClassifier (see base.py): photo -> probability per catalog type."""

    name = "seed-cnn"

    def __init__(
        self,
        *,
        image_size: int = 100,
        epochs: int = 15,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        val_fraction: float = 0.1,
        split_earrings: bool = True,
        keep_pair_photos: bool = True,
    ) -> None:
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.split_earrings = split_earrings
        self.keep_pair_photos = keep_pair_photos
        self.classes: list[str] = []
        self.data_fingerprint: str | None = None  # recorded in config.json when set
        self.network: SeedCNN | None = None

    def fit(
        self,
        images: Sequence[Image],
        labels: Sequence[str],
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """Train from scratch; `val_fraction` of the photos (whole, never split) validates."""
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise JewelrecError(
                f"the seed-cnn classifier needs photos of at least two types, got {classes}; "
                "the default classifier (train without --classifier) serves a shop of one type"
            )
        set_seed(seed)
        index = {label: i for i, label in enumerate(classes)}
        train_idx, val_idx = train_val_split(len(images), self.val_fraction, seed)
        train_images, train_labels, split_photos = self._training_samples(
            [images[i] for i in train_idx], [labels[i] for i in train_idx]
        )
        network = SeedCNN(len(classes), self.image_size)
        report = train_network(
            network,
            F.cross_entropy,
            to_uint8_tensor(train_images, self.image_size),
            to_uint8_tensor([images[i] for i in val_idx], self.image_size),
            train_targets=torch.tensor([index[label] for label in train_labels]),
            val_targets=torch.tensor([index[labels[i]] for i in val_idx], dtype=torch.long),
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            lr=self.learning_rate,
            seed=seed,
            progress=progress,
            desc=self.name,
        )
        report.notes.update(train_photos=len(train_idx), earring_photos_split=split_photos)
        self.classes, self.network = classes, network
        return report

    def _training_samples(
        self, images: list[Image], labels: list[str]
    ) -> tuple[list[Image], list[str], int]:
        """Each earring pair photo becomes its single earrings (+ the photo itself if kept);
        a photo where no pair is found stays one sample, as do photos of other types."""
        if not self.split_earrings or not any(label in EARRING_TYPES for label in labels):
            return images, labels, 0
        split = _earring_splitter()
        samples, sample_labels, split_photos = [], [], 0
        for image, label in zip(images, labels, strict=True):
            crops = list(split(image)) if label in EARRING_TYPES else []
            if len(crops) >= 2:
                split_photos += 1
                crops += [image] if self.keep_pair_photos else []
            else:
                crops = [image]
            samples += crops
            sample_labels += [label] * len(crops)
        return samples, sample_labels, split_photos

    def predict_proba(self, images: Sequence[Image]) -> np.ndarray:
        """(N, len(classes)) float32, rows summing to 1; columns ordered as `classes`."""
        network = self._trained()
        return run_batches(
            lambda x: torch.softmax(network(x), dim=1), images, self.image_size, len(self.classes)
        )

    def predict(self, images: Sequence[Image]) -> list[str]:
        """The most likely type of each image."""
        return [self.classes[i] for i in self.predict_proba(images).argmax(axis=1)]

    def save(self, folder: Path) -> None:
        network = self._trained()
        config = {
            "model": self.name,
            "classes": self.classes,
            "image_size": self.image_size,
            "normalisation": "RGB / 255",
            "settings": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
                "val_fraction": self.val_fraction,
                "split_earrings": self.split_earrings,
                "keep_pair_photos": self.keep_pair_photos,
            },
        }
        if self.data_fingerprint:
            config["training_data_fingerprint"] = self.data_fingerprint
        save_weights(Path(folder), network.state_dict(), config)

    @classmethod
    def load(cls, folder: Path) -> SeedCNNClassifier:
        state, config = load_weights(Path(folder))
        expect_model(config, cls.name, folder)
        try:
            model = cls(image_size=int(config["image_size"]), **config.get("settings", {}))
            model.classes = [str(c) for c in config["classes"]]
            network = SeedCNN(len(model.classes), model.image_size)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise damaged_model_error(folder, f"config.json is incomplete: {exc!r}") from exc
        model.data_fingerprint = config.get("training_data_fingerprint")
        model.network = restore_module(network, state, folder)
        return model

    def _trained(self) -> SeedCNN:
        if self.network is None:
            raise NotReadyError("the seed CNN classifier is not trained: run `jewelrec train`")
        return self.network.eval()


def _earring_splitter() -> Callable[[Image], list[Image]]:
    """The segmentation step, imported only when earrings are present (it pulls scikit-image)."""
    try:
        from jewelrec.imaging.segment import split_earring_pair
    except ImportError as exc:
        raise ImportError(
            "training on earring photos needs jewelrec.imaging.segment.split_earring_pair, "
            f"which could not be imported ({exc}); pass split_earrings=False to train without it"
        ) from exc
    return split_earring_pair
