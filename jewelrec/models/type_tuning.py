"""Fine-tune a network's last two stages for the type at `train` (issue 9).

Why: a logistic regression on frozen ImageNet features tells the four types apart on about 84% of
real photos from shops outside the catalog, and no better backbone can be installed here. The
catalog's own labelled photos, with augmented views (crops and zoom, rotation, mirror, brightness
and contrast; never hue), teach the last two stages of EfficientNet-Lite0 (blocks 11-15 and the
head convolution, the 1/32 stages) what separates a bracelet from a necklace: measured with 5
folds by shop on the shared real photos (cached views), 0.84 -> 0.86. The same two stages of
EfficientNet-Lite1 (blocks 15-20, at 256 px), the default, learn it better still: 0.87
(models/heads.py has the pipeline's numbers).

The frozen trunk (stem to the block before those stages) runs once per view on onnxruntime; the
tail trains on torch. The temperature and the decision threshold need predictions on photos the
network did not learn from: the tail is trained once more per style-cluster fold (models/heads.py
explains why clusters), on part of the catalog, and predicts the rest. Training-only: torch is
imported inside the functions, never on the query path (the tuned network is exported to ONNX).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from jewelrec.models.adaptation import Trunk, tail_arrays, tail_prefixes, trunk_views
from jewelrec.models.backbone import (
    BACKBONE,
    GEM_POWER,
    TRUNK_OUTPUT_BLOCKS,
    load_torch_model,
    preprocess,
)

MAX_IMAGES = 3000  # a seeded sample this large teaches the stage as well as a bigger catalog
# Shares of the budget the fixed-cost passes may take; past them the photos are sampled, so a
# large catalog or a short budget still ends near the budget and leaves the trainings time
# (2,168 photos in 720 s: views 34%, held-out passes 11%, nothing sampled).
VIEWS_SHARE = 0.45  # the trunk outputs of the photos learned from and their augmented views
HELDOUT_SHARE = 0.2  # typing the calibration folds' held-out photos
MIN_IMAGES = 100  # learned from, however short the budget (a tuning on fewer is no tuning)
MIN_HELDOUT = 50  # held-out photos a calibration fold keeps, however short the budget
TRUNK_BATCH = 16
PROBE_IMAGES = TRUNK_BATCH  # photos timed (clean and views) to size the sample
PREDICT_BATCH = 128


@dataclass(frozen=True)
class TuneSettings:
    """What trains and for how long (defaults measured on benchmarks/real_photos.py)."""

    architecture: str = BACKBONE  # which ImageNet network is tuned (Lite0 or Lite1)
    first_block: int = TRUNK_OUTPUT_BLOCKS  # blocks first_block.. and the head convolution
    # learn; for Lite0, where the home's pass hands over its trunk output (models/tuned_stage.py)
    views: int = 4  # augmented views per photo, besides the photo itself
    epochs: int = 6  # passes over the photos (one view of each per pass)
    batch: int = 48
    learning_rate: float = 3e-4  # the network's layers (one-cycle schedule)
    head_learning_rate: float = 3e-3  # the new linear layer
    label_smoothing: float = 0.1
    weight_decay: float = 1e-2
    seconds: float = 720.0  # budget for all of it: the views, the calibration folds' trainings
    # and held-out passes, the final training (each training gets its share of what is left)

    @classmethod
    def within(cls, seconds: float, epochs: int | None = None,
               architecture: str = BACKBONE) -> TuneSettings:
        """The defaults for `architecture` (its last two stages learn) with this budget and, if
        given, at most `epochs` passes (`train --epochs`)."""
        from jewelrec.models.efficientnet_lite import last_stages_start

        default = cls(seconds=seconds, architecture=architecture,
                      first_block=last_stages_start(architecture))
        return replace(default, epochs=min(epochs, default.epochs)) if epochs else default


@dataclass
class Tuned:
    """The tuned stage, its linear layer and what training did."""

    arrays: dict[str, np.ndarray]  # "tail.<parameter>" -> weights (models/adaptation.py names)
    coef: np.ndarray  # (K, 1280) on GeM features of the tuned network's last map
    intercept: np.ndarray  # (K,)
    # (V, N, K) out-of-fold logits of the photos in each of the V views asked for, if any
    heldout_logits: np.ndarray | None
    notes: dict[str, float | str]
    # the (train, held) splits the logits are of: the caller's, their held-out photos sampled
    # when typing all of them would not fit the budget
    splits: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


class _Views:
    """Trunk outputs of every photo (N, ...) and of its augmented views (N, views, ...), float16."""

    def __init__(self, images: Sequence[np.ndarray], settings: TuneSettings, crop_fraction: float,
                 size: int, seed: int, progress: bool, trunk: Trunk | None = None) -> None:
        self.clean, self.views = trunk_views(
            images, views=settings.views, blocks=settings.first_block,
            crop_fraction=crop_fraction, size=size, seed=seed, progress=progress,
            desc="type head: views", architecture=settings.architecture, trunk=trunk)


class _Stage:
    """The trainable copy: blocks first_block.., head convolution and norm, GeM, linear."""

    def __init__(self, settings: TuneSettings, classes: int) -> None:
        import torch

        from jewelrec.models.efficientnet_lite import channels_last

        self.network = channels_last(copy.deepcopy(load_torch_model(settings.architecture)).eval())
        self.first_block = settings.first_block
        self.blocks = list(self.network._blocks[settings.first_block:])
        self.linear = torch.nn.Linear(self.network._conv_head.out_channels, classes)
        self.dropout = torch.nn.Dropout(0.2)
        for p in self.network.parameters():
            p.requires_grad = False
        self.trained = [p for m in (*self.blocks, self.network._conv_head, self.network._bn1)
                        for p in m.parameters()]
        for p in self.trained:
            p.requires_grad = True

    def pooled(self, x):  # trunk output -> GeM (N, 1280)
        from jewelrec.models.efficientnet_lite import channels_last, gem

        return gem(self.network.stage(channels_last(x.float()), self.first_block), GEM_POWER)

    def logits(self, clean: np.ndarray) -> np.ndarray:
        import torch

        self.dropout.eval()
        with torch.inference_mode():
            return torch.cat([self.linear(self.pooled(torch.from_numpy(clean[i:i + PREDICT_BATCH])))
                              for i in range(0, len(clean), PREDICT_BATCH)]).numpy()


def _train(views: _Views, rows: np.ndarray, y: np.ndarray, classes: int,
           settings: TuneSettings, seconds: float, seed: int) -> tuple[_Stage, dict]:
    """Train a fresh stage on photos `rows` (their clean photo or a view, at random, per pass);
    stops after `seconds`. Batch norms keep ImageNet's statistics (small batches, few photos)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stage = _Stage(settings, classes)
    batch = min(settings.batch, len(rows))
    steps_per_epoch = max(1, len(rows) // batch)
    total = settings.epochs * steps_per_epoch
    optimiser = torch.optim.AdamW(
        [{"params": stage.trained, "lr": settings.learning_rate},
         {"params": stage.linear.parameters(), "lr": settings.head_learning_rate}],
        weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[settings.learning_rate, settings.head_learning_rate],
        total_steps=total, pct_start=0.15)
    clean, augmented = torch.from_numpy(views.clean), torch.from_numpy(views.views)
    kinds = augmented.shape[1] + 1
    start, done, losses = time.perf_counter(), 0, []
    stage.dropout.train()
    while done < total and time.perf_counter() - start < seconds:
        order = rng.permutation(rows)
        for step in range(steps_per_epoch):
            pick = order[step * batch:(step + 1) * batch]
            kind = rng.integers(0, kinds, len(pick))
            x = torch.stack([clean[i] if k == kinds - 1 else augmented[i, k]
                             for i, k in zip(pick, kind, strict=True)])
            loss = F.cross_entropy(stage.linear(stage.dropout(stage.pooled(x))),
                                   torch.from_numpy(y[pick]),
                                   label_smoothing=settings.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            done += 1
            if done >= total or time.perf_counter() - start >= seconds:
                break
    notes = {"epochs": round(done / steps_per_epoch, 2),
             "stopped_by": "epochs" if done >= total else "time budget",
             "seconds": round(time.perf_counter() - start, 1)}
    if losses:
        notes["last_loss"] = round(float(np.mean(losses[-10:])), 3)
    return stage, notes


def tune_type_network(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    settings: TuneSettings | None = None,
    crop_fraction: float,
    size: int,
    seed: int = 0,
    progress: bool = True,
    heldout_views: Sequence[tuple[int, float]] = (),
) -> Tuned:
    """Tune the last stage on the labelled photos (its linear layer's rows: the sorted distinct
    labels). `splits` (train, held) index pairs give the out-of-fold logits the calibration
    needs, one extra training each; without them `heldout_logits` is None. They are given for
    each (size, crop fraction) of `heldout_views`, the views the tuned network will type on
    (default: the one it trains on, `size` and `crop_fraction`)."""
    settings = settings or TuneSettings()
    heldout_views = list(heldout_views) or [(size, crop_fraction)]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    classes = sorted(set(labels))
    y_all = np.searchsorted(classes, np.asarray(labels))
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    trunks: dict[int, Trunk] = {size: Trunk(size, settings.first_block, settings.architecture)}
    photo_seconds = _photo_seconds(images, settings, crop_fraction, size, trunks[size])
    fits = int(VIEWS_SHARE * settings.seconds / photo_seconds)
    keep = np.arange(len(images))
    learned = min(len(keep), MAX_IMAGES, max(MIN_IMAGES, fits))
    if len(keep) > learned:  # the calibration splits index the photos: sample within them
        keep = np.sort(rng.choice(len(keep), learned, replace=False))
    views_started = time.perf_counter()
    views = _Views([images[i] for i in keep], settings, crop_fraction, size, seed, progress,
                   trunk=trunks[size])
    position = np.full(len(images), -1)
    position[keep] = np.arange(len(keep))
    y = y_all[keep]
    notes: dict[str, float | str] = {
        "tune_images": len(keep),
        "tune_views_seconds": round(time.perf_counter() - views_started, 1),
        "tune_setup_seconds": round(views_started - started, 1),  # the graph and the probe
    }
    pass_seconds = (time.perf_counter() - views_started) / max(1, len(keep) * (settings.views + 1))
    # a held-out photo costs its other views, and the trained one where it was not learned from
    held_photo_seconds = (heldout_pass_seconds(pass_seconds, 1, heldout_views,
                                               (size, crop_fraction))
                          + pass_seconds * (1 - len(keep) / len(images)))
    splits = _held_within(list(splits or []), held_photo_seconds,
                          HELDOUT_SHARE * settings.seconds, rng)
    notes["tune_heldout_photos"] = sum(len(held) for _, held in splits)
    work = [len(train) for train, _ in splits] + [len(images)]
    heldout_seconds = [held_photo_seconds * len(held) for _, held in splits]

    def share(f: int) -> float:
        """Training f's part of the budget left, less the held-out passes still to come (a
        tenth of its planned part at least: a training stopped at once would leave a random
        linear layer)."""
        left = settings.seconds - (time.perf_counter() - started) - sum(heldout_seconds[f:])
        planned = settings.seconds * work[f] / sum(work)
        return max(left * work[f] / sum(work[f:]), planned / 10)

    heldout = None
    if splits:
        heldout = np.zeros((len(heldout_views), len(images), len(classes)), np.float32)
        for f, (train, held) in enumerate(splits):
            rows = position[train][position[train] >= 0]
            stage, fold_notes = _train(views, rows, y, len(classes), settings, share(f),
                                       seed + f + 1)
            predicted = time.perf_counter()
            for v, view in enumerate(heldout_views):
                heldout[v, held] = _logits_for(stage, views, images, held, position, view,
                                               (size, crop_fraction), trunks, settings)
            notes[f"tune_fold_{f + 1}_seconds"] = fold_notes["seconds"]
            notes[f"tune_fold_{f + 1}_heldout_seconds"] = round(
                time.perf_counter() - predicted, 1)
    stage, final_notes = _train(views, np.arange(len(keep)), y, len(classes), settings,
                                share(len(work) - 1), seed)
    notes.update({f"tune_{k}": v for k, v in final_notes.items()})
    notes["tune_total_seconds"] = round(time.perf_counter() - started, 1)
    prefixes = tail_prefixes(settings.first_block, len(stage.network._blocks))
    return Tuned(tail_arrays(stage.network, prefixes),
                 stage.linear.weight.detach().numpy().copy(),
                 stage.linear.bias.detach().numpy().copy(), heldout, notes, splits)


def _photo_seconds(images: Sequence[np.ndarray], settings: TuneSettings, crop_fraction: float,
                   size: int, trunk: Trunk) -> float:
    """What one photo's trunk outputs (as framed and its augmented views) cost here, timed on
    the first few photos after a warm-up run (the first run of a graph is slower)."""
    probe = list(images[:PROBE_IMAGES])
    trunk.run(preprocess(probe[0], crop_fraction, size)[None])
    start = time.perf_counter()
    trunk_views(probe, views=settings.views, blocks=settings.first_block,
                crop_fraction=crop_fraction, size=size, seed=0, progress=False, desc="",
                architecture=settings.architecture, trunk=trunk)
    return max(time.perf_counter() - start, 1e-6) / len(probe)


def _held_within(splits: list[tuple[np.ndarray, np.ndarray]], photo_seconds: float,
                 seconds: float, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splits with each fold's held-out photos sampled alike (MIN_HELDOUT at least) when
    typing all of them would take more than `seconds`; unchanged otherwise."""
    total = sum(len(held) for _, held in splits)
    if not total or total * photo_seconds <= seconds:
        return splits
    share = seconds / (total * photo_seconds)
    sampled = []
    for train, held in splits:
        n = min(len(held), max(MIN_HELDOUT, int(share * len(held))))
        sampled.append((train, np.sort(rng.choice(np.asarray(held), n, replace=False))))
    return sampled


def heldout_pass_seconds(pass_seconds: float, photos: int, views: Sequence[tuple[int, float]],
                         trained_view: tuple[int, float]) -> float:
    """What typing `photos` held-out photos in `views` will cost, given one trunk pass at the
    trained size took `pass_seconds` (a view's cost grows with its area; the trained view's
    trunk outputs are cached). Reserved before the trainings share the budget, so that the
    final training is not the one that shrinks when the held-out passes come."""
    size = trained_view[0]
    return pass_seconds * photos * sum((s / size) ** 2 for s, c in views
                                       if (s, c) != tuple(trained_view))


def _logits_for(stage: _Stage, views: _Views, images: Sequence[np.ndarray], held: np.ndarray,
                position: np.ndarray, view: tuple[int, float], trained_view: tuple[int, float],
                trunks: dict[int, Trunk], settings: TuneSettings) -> np.ndarray:
    """The stage's logits for photos `held` in `view` (size, crop fraction): from the cached
    trunk outputs where training computed that view of the photo, else through a trunk pass (one
    graph per size, kept in `trunks` across folds)."""
    size, crop_fraction = view
    cached = (position[held] >= 0) if view == trained_view else np.zeros(len(held), bool)
    out = np.zeros((len(held), stage.linear.out_features), np.float32)
    if cached.any():
        out[cached] = stage.logits(views.clean[position[held][cached]])
    if (~cached).any():
        if size not in trunks:
            trunks[size] = Trunk(size, settings.first_block, settings.architecture)
        rest = [images[i] for i in np.asarray(held)[~cached]]
        maps = np.concatenate([trunks[size].run(np.stack([preprocess(im, crop_fraction, size)
                                                          for im in rest[i:i + TRUNK_BATCH]]))
                               for i in range(0, len(rest), TRUNK_BATCH)])
        out[~cached] = stage.logits(maps)
    return out
