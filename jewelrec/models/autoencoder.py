"""The 2019 prototype's image features: a small convolutional autoencoder on 100x100 RGB.

Encoder: three 3x3 convs (16, 8, 8 filters, ReLU, "same" padding), each followed by a 2x2
max-pool; the last pool uses `ceil_mode` (Keras' "same" pooling) so 25 becomes 13, not 12.
Decoder: the Keras autoencoder recipe mirrored, nearest-neighbour upsampling, with one unpadded
conv to land back on 100 (13 -> 26 -> 52 -> conv 50 -> 100). Trained unsupervised with binary
cross-entropy between the sigmoid output and the input. The feature vector is the encoder output
flattened: 8 x 13 x 13 = 1352 numbers, L2-normalised so a dot product is a cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jewelrec.errors import NotReadyError
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
from jewelrec.search.index import l2_normalise

IMAGE_SIZE = 100
CODE_SHAPE = (8, 13, 13)  # encoder output for a 100x100 input
CODE_DIM = 8 * 13 * 13  # 1352


def conv(cin: int, cout: int, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=padding), nn.ReLU())


class ConvAutoencoder(nn.Module):
    """The network; input (N, 3, 100, 100) float RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            conv(3, 16),  # (N, 16, 100, 100)
            nn.MaxPool2d(2),  # (N, 16, 50, 50)
            conv(16, 8),  # (N, 8, 50, 50)
            nn.MaxPool2d(2),  # (N, 8, 25, 25)
            conv(8, 8),  # (N, 8, 25, 25)
            nn.MaxPool2d(2, ceil_mode=True),  # (N, 8, 13, 13): the code
        )
        self.decoder = nn.Sequential(
            conv(8, 8),  # (N, 8, 13, 13)
            nn.Upsample(scale_factor=2),  # (N, 8, 26, 26)
            conv(8, 8),  # (N, 8, 26, 26)
            nn.Upsample(scale_factor=2),  # (N, 8, 52, 52)
            conv(8, 16, padding=0),  # (N, 16, 50, 50)
            nn.Upsample(scale_factor=2),  # (N, 16, 100, 100)
            nn.Conv2d(16, 3, 3, padding=1),  # (N, 3, 100, 100) logits; sigmoid -> image
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits (N, 3, 100, 100); BCE-with-logits is the stable sigmoid + BCE."""
        return self.decoder(self.encoder(x))


class AutoencoderEmbedder:
    """Embedder (see base.py): photo -> 1352-d L2-normalised encoder code."""

    name = "autoencoder"

    def __init__(
        self,
        *,
        epochs: int = 15,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        val_fraction: float = 0.1,
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.data_fingerprint: str | None = None  # recorded in config.json when set
        self.network: ConvAutoencoder | None = None

    @property
    def dim(self) -> int:
        return CODE_DIM

    def fit(
        self,
        images: Sequence[Image],
        labels: Sequence[str] | None = None,
        *,
        epochs: int | None = None,
        seed: int = 0,
        progress: bool = True,
        products: Sequence[str] | None = None,  # unused: every photo is its own target
    ) -> FitReport:
        """Learn to reconstruct the images (labels are ignored: unsupervised)."""
        if not len(images):
            raise ValueError("no images to train the autoencoder on")
        set_seed(seed)
        train_idx, val_idx = train_val_split(len(images), self.val_fraction, seed)
        network = ConvAutoencoder()
        report = train_network(
            network,
            F.binary_cross_entropy_with_logits,
            to_uint8_tensor([images[i] for i in train_idx], IMAGE_SIZE),
            to_uint8_tensor([images[i] for i in val_idx], IMAGE_SIZE),
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            lr=self.learning_rate,
            seed=seed,
            progress=progress,
            desc=self.name,
            channels_last=True,
        )
        self.network = network
        return report

    def embed(
        self, images: Sequence[Image], masks: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(N, 1352) float32, unit length (an all-zero code stays zero); the whole frame, so
        `masks` are not needed."""
        encoder = self._trained().encoder
        return l2_normalise(run_batches(encoder, images, IMAGE_SIZE, CODE_DIM))

    def reconstruct(self, images: Sequence[Image]) -> np.ndarray:
        """(N, 100, 100, 3) uint8 RGB: what the autoencoder makes of each image (for eyeballing)."""
        network = self._trained()
        flat = run_batches(lambda x: torch.sigmoid(network(x)), images, IMAGE_SIZE, 3 * 100 * 100)
        pixels = flat.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
        return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)

    def save(self, folder: Path) -> None:
        config = {
            "model": self.name,
            "image_size": IMAGE_SIZE,
            "dim": CODE_DIM,
            "normalisation": "RGB / 255",
            "settings": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
                "val_fraction": self.val_fraction,
            },
        }
        if self.data_fingerprint:
            config["training_data_fingerprint"] = self.data_fingerprint
        save_weights(Path(folder), self._trained().state_dict(), config)

    @classmethod
    def load(cls, folder: Path) -> AutoencoderEmbedder:
        state, config = load_weights(Path(folder))
        expect_model(config, cls.name, folder)
        try:
            model = cls(**config.get("settings", {}))
        except TypeError as exc:
            raise damaged_model_error(folder, f"config.json is incomplete: {exc!r}") from exc
        model.data_fingerprint = config.get("training_data_fingerprint")
        model.network = restore_module(ConvAutoencoder(), state, folder)
        return model

    def _trained(self) -> ConvAutoencoder:
        if self.network is None:
            raise NotReadyError("the autoencoder is not trained: run `jewelrec train`")
        return self.network.eval()
