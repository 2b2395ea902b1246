"""What every small model here needs for training and inference: seeding, image batches,
a train/validation split, one epoch loop with a progress bar, and the loss-curve figure.

Images arrive as RGB uint8 arrays of any size; they are resized with PIL and kept as uint8 until
a batch is used (6,000 photos at 100x100 are 180 MB as uint8, four times that as float).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from jewelrec import plots
from jewelrec.home import atomic_path
from jewelrec.models.base import FitReport

INFERENCE_BATCH = 64


def set_seed(seed: int) -> None:
    """Seed torch, numpy and random, so the same seed gives the same weights.

    Deterministic algorithms are requested with `warn_only`: on CPU the ops used here are
    deterministic already, and an op without a deterministic version warns instead of failing.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resize_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8, RGB kept; each image squashed to a square like the prototype."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out


def to_uint8_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 tensor: the compact form training keeps in memory."""
    return torch.from_numpy(resize_images(images, size)).permute(0, 3, 1, 2).contiguous()


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [0, 1], the only normalisation the seed models use."""
    return batch.float().div_(255.0)


def to_tensor_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1] from RGB uint8 images of any size."""
    return to_float(to_uint8_tensor(images, size))


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) positions; at least one of each once n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n >= 2 else 0
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@torch.no_grad()
def run_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[np.ndarray],
    size: int,
    out_dim: int,
) -> np.ndarray:
    """`forward` over batches of 64 images (resized batch by batch) -> float32 (N, out_dim)."""
    outputs = [np.zeros((0, out_dim), dtype=np.float32)]
    for start in range(0, len(images), INFERENCE_BATCH):
        batch = to_tensor_batch(images[start : start + INFERENCE_BATCH], size)
        outputs.append(forward(batch).reshape(len(batch), -1).numpy().astype(np.float32))
    return np.concatenate(outputs)


def train_network(
    network: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_inputs: torch.Tensor,
    val_inputs: torch.Tensor,
    *,
    train_targets: torch.Tensor | None = None,
    val_targets: torch.Tensor | None = None,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    channels_last: bool = False,
) -> FitReport:
    """Adam over shuffled mini-batches, one progress bar per epoch showing the running loss.

    Inputs are uint8 (N, 3, H, W) tensors. Targets: class indices (then validation accuracy is
    reported too), or None to reconstruct the inputs themselves (an autoencoder).
    `channels_last` trains in NHWC memory layout (an autoencoder epoch is ~1.5x faster on CPU
    that way; the seed CNN is not); the network is returned to the default layout afterwards.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    network.to(memory_format=layout)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    report = FitReport()
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(train_inputs), generator=shuffle)
        total, seen = 0.0, 0
        with tqdm(
            total=len(order),
            desc=f"{desc} epoch {epoch}/{epochs}",
            unit="img",
            disable=not progress,
            leave=True,
        ) as bar:
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                x, y = _batch(train_inputs, train_targets, picked, layout)
                loss = loss_fn(network(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(picked)
                seen += len(picked)
                bar.update(len(picked))
                bar.set_postfix(loss=f"{total / seen:.4f}")
            report.train_loss.append(total / max(seen, 1))
            if len(val_inputs):
                val_loss, val_accuracy = _evaluate(network, loss_fn, val_inputs, val_targets)
                report.val_loss.append(val_loss)
                postfix = {"loss": f"{total / max(seen, 1):.4f}", "val_loss": f"{val_loss:.4f}"}
                if val_accuracy is not None:
                    report.val_accuracy.append(val_accuracy)
                    postfix["val_acc"] = f"{val_accuracy:.3f}"
                bar.set_postfix(postfix)
    network.to(memory_format=torch.contiguous_format).eval()
    seconds = time.perf_counter() - started
    report.notes.update(
        epochs=epochs,
        train_samples=len(train_inputs),
        val_samples=len(val_inputs),
        seconds=round(seconds, 3),
        seconds_per_epoch=round(seconds / max(epochs, 1), 3),
    )
    return report


def _batch(
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    picked: torch.Tensor | slice,
    layout: torch.memory_format = torch.contiguous_format,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_float(inputs[picked]).contiguous(memory_format=layout)
    return x, (x if targets is None else targets[picked])


@torch.no_grad()
def _evaluate(
    network: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
) -> tuple[float, float | None]:
    """Mean loss (and accuracy when targets are classes) over a held-out set, in eval mode."""
    network.eval()
    total, correct = 0.0, 0
    for start in range(0, len(inputs), INFERENCE_BATCH):
        x, y = _batch(inputs, targets, slice(start, start + INFERENCE_BATCH))
        output = network(x)
        total += loss_fn(output, y).item() * len(x)
        if targets is not None:
            correct += int((output.argmax(dim=1) == y).sum())
    accuracy = correct / len(inputs) if targets is not None else None
    return total / len(inputs), accuracy


def plot_loss_curves(report: FitReport, path: Path, title: str) -> Path:
    """PNG of train and validation loss per epoch (validation accuracy beside it when known)."""
    panels = 2 if report.val_accuracy else 1
    figure = plots.figure(5.5 * panels, 4)
    loss_axes = figure.add_subplot(1, panels, 1)
    for values, label in ((report.train_loss, "train"), (report.val_loss, "validation")):
        if values:
            loss_axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
    loss_axes.set(title=f"{title}: loss", xlabel="epoch", ylabel="loss")
    loss_axes.legend(loc="upper right")
    loss_axes.grid(alpha=0.3)
    if report.val_accuracy:
        accuracy_axes = figure.add_subplot(1, panels, 2)
        epochs = range(1, len(report.val_accuracy) + 1)
        accuracy_axes.plot(epochs, report.val_accuracy, marker="o", color="tab:green")
        accuracy_axes.set(
            title=f"{title}: validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02)
        )
        accuracy_axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
