"""Adapt the backbone's last block to one shop's catalog at `train` (issue 9).

Why: frozen ImageNet features find the same product first in about half of the real queries;
the shop's own catalog teaches what "the same piece" looks like there, for free: several photos
of one product (a gallery) and augmented views of every photo (crops and zoom, rotation, mirror,
brightness and contrast; never hue, since colour is part of what makes two pieces the same). The
last MBConv block and the 1x1 head convolution (about 1M weights) learn, with a contrastive loss
(views of one product close, the other products in the batch far) and the type as an auxiliary
target, to map those views together. The frozen trunk (stem to block 14) runs once per view on
onnxruntime; only the tail trains, on torch, within a time budget, so 2,000 photos adapt in a
few minutes on 2 CPU cores. Measured on real photos of other shops in benchmarks/real_photos.py.

Training-only code: torch is imported inside the functions, never on the query path.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage
from PIL import ImageEnhance

from jewelrec.models.backbone import (
    BACKBONE,
    GEM_POWER,
    PIXEL_MEAN,
    PIXEL_SCALE,
    TAIL_ARRAY_PREFIX,
    export_graph,
    load_torch_model,
    preprocess,
)

if TYPE_CHECKING:
    from jewelrec.models.efficientnet_lite import EfficientNetLite0

BLOCKS = 16  # MBConv blocks in EfficientNet-Lite0 (Lite1: 21)
TRUNK_BLOCKS = 15  # blocks 0..14 stay frozen; block 15, the head conv and its norm adapt
ARRAY_PREFIX = TAIL_ARRAY_PREFIX
MAX_IMAGES = 3000  # a seeded sample this large teaches the tail as well as a bigger catalog
TRUNK_BATCH = 16


@dataclass(frozen=True)
class AdaptSettings:
    """How long and on what the tail trains (defaults measured on the real-photo benchmark)."""

    seconds: float = 300.0  # training budget after the views are computed (0: no adaptation)
    views: int = 2  # augmented views per photo, besides the photo itself
    epochs: int = 3  # at most; the budget usually ends training first on large catalogs
    batch: int = 64  # products per step, two views each
    learning_rate: float = 1e-4
    temperature: float = 0.05
    type_weight: float = 0.5  # weight of the auxiliary type loss


@dataclass
class Adapted:
    """The tail's new weights and what training did."""

    arrays: dict[str, np.ndarray]  # "tail.<parameter>" -> weights, as saved with the embedder
    notes: dict[str, float | str]
    clean_features: np.ndarray  # (N, 1280) GeM features of the photos themselves, adapted


def augmented_view(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random view (3, size, size), normalised: rotation (background-coloured corners),
    a crop of 25-100% of the area, mirror, brightness and contrast; hue untouched."""
    pil = PILImage.fromarray(image)
    w, h = pil.size
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    if rng.random() < 0.5:
        pil = pil.rotate(rng.uniform(-20, 20), resample=PILImage.BILINEAR, fillcolor=fill)
    area = w * h * rng.uniform(0.25, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = max(1, min(w, round(np.sqrt(area * aspect))))
    ch = max(1, min(h, round(np.sqrt(area / aspect))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    pil = pil.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), PILImage.BILINEAR)
    if rng.random() < 0.5:
        pil = pil.transpose(PILImage.FLIP_LEFT_RIGHT)
    pil = ImageEnhance.Brightness(pil).enhance(rng.uniform(0.75, 1.25))
    pil = ImageEnhance.Contrast(pil).enhance(rng.uniform(0.75, 1.25))
    return ((np.asarray(pil, np.float32) - PIXEL_MEAN) / PIXEL_SCALE).transpose(2, 0, 1)


def tail_prefixes(first_block: int, blocks: int = BLOCKS) -> tuple[str, ...]:
    """The layers that learn when blocks `first_block`.. (of `blocks`) and the head convolution
    train."""
    return (*(f"_blocks.{b}." for b in range(first_block, blocks)), "_conv_head.", "_bn1.")


TAIL_PREFIXES = tail_prefixes(TRUNK_BLOCKS)


def _is_tail(name: str, prefixes: tuple[str, ...] = TAIL_PREFIXES) -> bool:
    """A weight or norm statistic of the adapting layers; batch-norm step counters are left out
    (only training updates them, and a saved 0-d array comes back with shape (1,))."""
    return name.startswith(prefixes) and not name.endswith("num_batches_tracked")


def tail_arrays(
    network: EfficientNetLite0, prefixes: tuple[str, ...] = TAIL_PREFIXES
) -> dict[str, np.ndarray]:
    """The adapting layers' weights (and norm statistics) under their saved names."""
    return {ARRAY_PREFIX + name: value.detach().numpy().copy()
            for name, value in network.state_dict().items() if _is_tail(name, prefixes)}


def adapted_network(arrays: dict[str, np.ndarray], architecture: str = BACKBONE
                    ) -> EfficientNetLite0:
    """The ImageNet network `architecture` with the tail weights from `arrays`: every layer from
    the first block they name to the head convolution (the last block for the embedder, the last
    stages for the tuned type head), strict: a missing or misshapen weight is an error."""
    import torch

    network = copy.deepcopy(load_torch_model(architecture))
    state = network.state_dict()
    tail = {k[len(ARRAY_PREFIX):]: v for k, v in arrays.items() if k.startswith(ARRAY_PREFIX)}
    blocks = [int(k.split(".")[1]) for k in tail if k.startswith("_blocks.")]
    count = len(network._blocks)
    prefixes = tail_prefixes(min(blocks) if blocks else count, count)  # a whole last stretch
    expected = {k for k in state if _is_tail(k, prefixes)}
    if set(tail) != expected:
        raise ValueError(f"adapted tail weights do not match the network: "
                         f"{sorted(set(tail) ^ expected)[:3]}")
    for name, value in tail.items():
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"adapted weight {name} has shape {value.shape}, "
                             f"the network wants {tuple(state[name].shape)}")
        state[name] = torch.from_numpy(np.asarray(value)).to(state[name].dtype)
    network.load_state_dict(state, strict=True)
    return network.eval()


class Trunk:
    """Stem to block `blocks - 1` of the frozen network on onnxruntime (exported to a temporary
    folder): what the trained tail starts from, computed once per view."""

    def __init__(self, size: int, blocks: int = TRUNK_BLOCKS,
                 architecture: str = BACKBONE) -> None:
        import onnxruntime as ort
        import torch

        network = load_torch_model(architecture)

        class Trunk(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = network  # a submodule, so the exporter sees weights, not constants

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.trunk(x, blocks)

        self._folder = tempfile.TemporaryDirectory(prefix="jewelrec-trunk-")
        path = export_graph(Trunk(), torch.zeros(1, 3, size, size),
                            Path(self._folder.name) / "trunk.onnx", "images", ("maps",),
                            {"images": {0: "batch"}, "maps": {0: "batch"}})
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = [self.session.run(None, {"images": batch[i:i + TRUNK_BATCH]})[0]
               for i in range(0, len(batch), TRUNK_BATCH)]
        return np.concatenate(out).astype(np.float16)


def trunk_views(images: Sequence[np.ndarray], *, views: int, blocks: int, crop_fraction: float,
                size: int, seed: int, progress: bool, desc: str,
                architecture: str = BACKBONE,
                trunk: Trunk | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the frozen trunk (blocks 0..blocks-1 of `architecture`), float16: of every
    photo as framed (N, ...) and of `views` augmented views of each (N, views, ...); what a
    trained tail starts from, computed once. `trunk`: that graph, when the caller has it."""
    from tqdm import tqdm

    trunk = trunk or Trunk(size, blocks, architecture)
    rng = np.random.default_rng(seed)
    clean, augmented = [], []
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(images), TRUNK_BATCH):
        part = images[start:start + TRUNK_BATCH]
        clean.append(trunk.run(np.stack([preprocess(im, crop_fraction, size) for im in part])))
        if views:
            out = trunk.run(np.stack([augmented_view(np.asarray(im), rng, size)
                                      for im in part for _ in range(views)]))
            augmented.append(out.reshape(len(part), views, *out.shape[1:]))
        bar.update(len(part))
    bar.close()
    first = np.concatenate(clean)
    return first, (np.concatenate(augmented) if augmented else first[:, None][:, :0])


def adapt_tail(
    images: Sequence[np.ndarray],
    products: Sequence[str],
    labels: Sequence[str],
    *,
    settings: AdaptSettings,
    crop_fraction: float,
    size: int,
    seed: int = 0,
    progress: bool = True,
) -> Adapted:
    """Train the tail on the catalog's photos (`products[i]` names photo i's product: photos of
    one product are positives for each other) and return its weights."""
    import torch
    import torch.nn.functional as F

    from jewelrec.models.efficientnet_lite import channels_last, gem

    if not len(images) == len(products) == len(labels):
        raise ValueError("images, products and labels must have one entry per photo")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pick = np.arange(len(images))
    if len(pick) > MAX_IMAGES:
        pick = np.sort(rng.choice(len(pick), MAX_IMAGES, replace=False))
    images = [images[i] for i in pick]
    products = [products[i] for i in pick]
    labels = [labels[i] for i in pick]
    clean, views = trunk_views(images, views=settings.views, blocks=TRUNK_BLOCKS,
                               crop_fraction=crop_fraction, size=size, seed=seed,
                               progress=progress, desc="adapting: views")
    view_seconds = time.perf_counter() - start

    network = channels_last(copy.deepcopy(load_torch_model()).eval())
    tail = [network._blocks[TRUNK_BLOCKS], network._conv_head, network._bn1]
    classes = sorted(set(labels))
    type_of = torch.tensor([classes.index(t) for t in labels])
    type_layer = torch.nn.Linear(network._conv_head.out_channels, len(classes))
    for p in network.parameters():
        p.requires_grad = False
    trained = [p for module in tail for p in module.parameters()]
    for p in trained:
        p.requires_grad = True
    optimiser = torch.optim.AdamW(
        [{"params": trained, "lr": settings.learning_rate},
         {"params": type_layer.parameters(), "lr": 1e-3}], weight_decay=1e-4)

    def forward(x: torch.Tensor) -> torch.Tensor:  # trunk output -> GeM (N, 1280)
        return gem(network.stage(channels_last(x.float()), TRUNK_BLOCKS), GEM_POWER)

    by_product: dict[str, list[int]] = {}
    for i, p in enumerate(products):
        by_product.setdefault(p, []).append(i)
    groups = list(by_product.values())
    clean_t, views_t = torch.from_numpy(clean), torch.from_numpy(views)

    def view(i: int) -> torch.Tensor:
        k = int(rng.integers(0, settings.views + 1))
        return clean_t[i] if k == settings.views else views_t[i, k]

    batch = min(settings.batch, len(groups))
    losses: list[float] = []
    epochs_done, stopped = 0.0, "epochs"
    train_start = time.perf_counter()
    if batch >= 2 and settings.seconds > 0:
        steps = max(1, len(groups) // batch)
        for epoch in range(settings.epochs):
            order = rng.permutation(len(groups))
            for step in range(steps):
                chosen = [groups[g] for g in order[step * batch:(step + 1) * batch]]
                first = [int(rng.choice(g)) for g in chosen]
                second = [int(rng.choice(g)) for g in chosen]
                z = F.normalize(forward(torch.stack([view(i) for i in first + second])), dim=1)
                n = len(chosen)
                similarity = (z @ z.T) / settings.temperature
                similarity.fill_diagonal_(-1e9)
                target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
                loss = F.cross_entropy(similarity, target)
                if settings.type_weight:
                    loss = loss + settings.type_weight * F.cross_entropy(
                        type_layer(z * 10.0), type_of[first + second])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
                epochs_done = epoch + (step + 1) / steps
                if time.perf_counter() - train_start > settings.seconds:
                    stopped = "time budget"
                    break
            if stopped == "time budget":
                break
    network.eval()
    with torch.inference_mode():
        features = torch.cat([forward(clean_t[i:i + 256]) for i in range(0, len(clean_t), 256)])
    notes: dict[str, float | str] = {
        "adapt_images": len(images), "adapt_products": len(groups),
        "adapt_epochs": round(epochs_done, 2), "adapt_stopped_by": stopped,
        "adapt_views_seconds": round(view_seconds, 1),
        "adapt_train_seconds": round(time.perf_counter() - train_start, 1),
    }
    if losses:  # none when the budget or the catalog allowed no step
        notes["adapt_first_loss"] = round(float(np.mean(losses[:10])), 3)
        notes["adapt_last_loss"] = round(float(np.mean(losses[-10:])), 3)
    return Adapted(tail_arrays(network), notes, features.numpy())
