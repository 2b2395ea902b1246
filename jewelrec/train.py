"""`jewelrec train`: fit the home's type classifier and embedder on its catalog.

Held-out views (catalog/views.py) never reach training, so `jewelrec evaluate` stays honest.
Each model is saved under models/<kind>-<name>/ with a loss-curve PNG and a training.json that
records the training-data fingerprint, seed and epochs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jewelrec.catalog import hygiene
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.views import split_views
from jewelrec.console import check_seed
from jewelrec.errors import ImageError, JewelrecError, NotReadyError
from jewelrec.feature_store import attached_to_home
from jewelrec.home import Home, atomic_write_json, replaced_folder
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.models.attributes import (
    KIND,
    NAME,
    AttributeHeads,
    attributes_folder,
    product_attributes,
)
from jewelrec.models.backbone import Backbone
from jewelrec.models.base import (
    Embedder,
    FitReport,
    TypeClassifier,
    model_folder,
    new_classifier,
    new_embedder,
)

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    kind: str
    name: str
    folder: Path
    seconds: float
    report: FitReport
    data_warnings: list[str] = field(default_factory=list)  # what the photos given risk

    @property
    def warnings(self) -> list[str]:
        """What the operator should know of this training (said by `train`, in its --json)."""
        held, classes = self.report.notes.get("heldout_accuracy"), self.report.notes.get("classes")
        if (self.kind == "classifier" and isinstance(held, float) and isinstance(classes, int)
                and classes > 1 and held < 1 / classes):
            return [f"the type classifier typed {held:.0%} of the photos it held out by style "
                    "right, no better than chance: its answers will rarely be decided alone "
                    "(every answer near even odds). The held-out styles were unlike the rest "
                    "(one look per type?) or tuning had too little time: train again with a "
                    "larger --tune-seconds, or `--classifier efficientnet-head`",
                    *self.data_warnings]
        return list(self.data_warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "folder": str(self.folder),
            "seconds": round(self.seconds, 2),
            "warnings": self.warnings,
            "final_train_loss": self.report.train_loss[-1] if self.report.train_loss else None,
            "final_val_loss": self.report.val_loss[-1] if self.report.val_loss else None,
            "final_val_accuracy": (
                self.report.val_accuracy[-1] if self.report.val_accuracy else None
            ),
        }


@dataclass
class TrainingImages:
    """The catalog's non-held-out views: each as the piece found (what embedders see) and as the
    whole photo (what a head that wants the context sees), with its type label."""

    pieces: list[np.ndarray]
    photos: list[np.ndarray]
    labels: list[str]
    fingerprint: str
    products: list[str] = field(default_factory=list)  # each view's product id (galleries)
    # each view: whether the piece stood out on a plain backdrop (a product shot) or not (worn,
    # staged); None when framing is off
    on_backdrop: list[bool] | None = None
    # per attribute (metal, stone), each view's label or None (models/attributes.py)
    attributes: dict[str, list[str | None]] = field(default_factory=dict)

    def for_model(self, model: object) -> list[np.ndarray]:
        return self.photos if getattr(model, "whole_photo", False) else self.pieces


def load_training_images(
    home: Home, *, auto_crop: bool = True, progress: bool = True
) -> TrainingImages:
    """Every non-held-out view, framed both ways, with labels and the data fingerprint."""
    home.require_catalog()
    store = CatalogStore.open(home)
    products = store.all_products()
    flagged = hygiene.excluded_views(store.meta(hygiene.META_KEY))  # placeholders, shared photos
    fit_views, _ = split_views(products, flagged)
    if not fit_views and any(p.images for p in products):
        raise NotReadyError(
            f"every photo of the catalog in {home.root} is a placeholder or a photo shared by "
            "several products, which ingest leaves out: give products photos of their own, or "
            "ingest again with --keep-duplicates")
    if not fit_views:
        raise home.empty_catalog()
    pieces, photos, labels, products, on_backdrop = [], [], [], [], []
    for product, name in tqdm(fit_views, desc="loading images", unit="img", disable=not progress):
        try:
            image = load_image(home.image_path(name))
        except ImageError as exc:  # one bad file must not cost the whole training, as in index
            log.warning("skipping image %s: %s", name, exc)
            continue
        photos.append(image)
        piece, box = focus_on_piece(image, auto=auto_crop)
        pieces.append(piece)
        on_backdrop.append(box is not None)
        labels.append(product.type)
        products.append(product)
    if not photos:
        raise NotReadyError(f"none of the catalog's photos in {home.root} could be read: run "
                            "`jewelrec ingest` with the catalog again to store them anew")
    return TrainingImages(pieces, photos, labels, store.fingerprint(),
                          products=[p.id for p in products],
                          attributes=product_attributes(products),
                          on_backdrop=on_backdrop if auto_crop else None)


def train_home(
    home: Home,
    *,
    embedder: str | None = None,
    classifier: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    kinds: tuple[str, ...] = ("classifier", "embedder"),
    adapt_seconds: float | None = None,
    tune_seconds: float | None = None,
    precision: str | None = None,
) -> list[TrainedModel]:
    """Train the classifier and the embedder named (or recorded in the home) and save them;
    `kinds` narrows that to one of the two (a benchmark of the type head alone). They run on
    one backbone opened for this home, which reads and fills the home's feature store.
    `adapt_seconds`: the budget of an embedder that adapts the network to the catalog;
    `tune_seconds`: that of a classifier that fine-tunes it for the type. `precision`: how the
    backbone computes (int8 or fp32; default what the home records), recorded for `index`."""
    from jewelrec.models.training import plot_loss_curves

    # refused before anything loads: epochs 0 saved an untrained model over a trained one
    if epochs is not None and epochs < 1:
        raise JewelrecError(f"--epochs must be at least 1, got {epochs}")
    check_seed(seed)
    home.require_catalog()
    settings = home.settings()
    names = {
        "classifier": classifier or settings.classifier,
        "embedder": embedder or settings.embedder,
    }
    precision = precision or settings.precision
    backbone = Backbone.for_home(home, precision)
    factories = {"classifier": new_classifier, "embedder": new_embedder}
    models = {kind: factories[kind](names[kind], backbone=backbone) for kind in kinds}
    if adapt_seconds is not None and "embedder" in models:
        # refused before anything is loaded or trained: a refused command changes no model
        models["embedder"] = with_adapt_budget(models["embedder"], adapt_seconds)
    if tune_seconds is not None and "classifier" in models:
        models["classifier"] = with_tune_budget(models["classifier"], tune_seconds)
    data = load_training_images(
        home, auto_crop=settings.auto_crop, progress=progress
    )
    trained = []
    for kind, model in models.items():
        start = time.perf_counter()
        images = data.for_model(model)
        with attached_to_home(home, backbone):  # backbone features `index` will read back
            gallery = {"products": data.products} if kind == "embedder" else {}
            report = model.fit(images, data.labels, epochs=epochs, seed=seed, progress=progress,
                               **gallery)
        folder = model_folder(home.models_dir, kind, names[kind])
        with replaced_folder(folder) as fresh:  # the whole model, or the previous one whole
            model.save(fresh)
            if report.train_loss:
                plot_loss_curves(report, fresh / "loss.png", title=f"{kind}: {names[kind]}")
            seconds = time.perf_counter() - start
            atomic_write_json(
                fresh / "training.json",
                {
                    "training_data_fingerprint": data.fingerprint,
                    "images": len(images),
                    "epochs": epochs,
                    "seed": seed,
                    "seconds": round(seconds, 2),
                    "train_loss": report.train_loss,
                    "val_loss": report.val_loss,
                    "val_accuracy": report.val_accuracy,
                    "notes": report.notes,
                    "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
        risks = (style_warnings(data.labels, data.on_backdrop)
                 if kind == "classifier" and data.on_backdrop is not None else [])
        trained.append(TrainedModel(kind, names[kind], folder, seconds, report, risks))
    if "classifier" in kinds:
        trained += train_attributes(home, data, seed=seed, progress=progress,
                                    backbone=backbone)
    home.update_settings(precision=precision, **{kind: names[kind] for kind in kinds})
    return trained


WORN_SHARE = 0.2  # a type with fewer of its photos on a plain backdrop than this...
PACKSHOT_SHARE = 0.6  # ...while the other types have at least this share on one


def style_warnings(labels: Sequence[str], on_backdrop: Sequence[bool]) -> list[str]:
    """A type shown (nearly) only worn or staged while the other types are product shots: the
    classifier learns the look for the type. A shop whose anklets were all on legs had its
    shoppers' worn earrings, rings and bracelets typed "anklet" at 0.8-0.96, some decided."""
    counts: dict[str, list[int]] = {}
    for label, plain in zip(labels, on_backdrop, strict=True):
        counts.setdefault(label, [0, 0])[plain] += 1
    share = {t: plain / (plain + worn) for t, (worn, plain) in counts.items()}
    warnings = []
    for t, plain in sorted(share.items()):
        rest = [counts[o] for o in counts if o != t]
        others = sum(c[1] for c in rest) / max(1, sum(sum(c) for c in rest))
        if plain < WORN_SHARE and others >= PACKSHOT_SHARE:
            warnings.append(
                f"{plain:.0%} of the photos of {t} are product shots on a plain backdrop, "
                f"against {others:.0%} of the other types': the rest show it worn or staged, so "
                f"the type classifier may take any worn photo for {t} (a shopper's ring on a hand, "
                f"earrings on an ear). Add product shots of {t}, or worn photos of the other "
                "types, and train again")
    return warnings


def with_adapt_budget(model: Embedder, seconds: float) -> Embedder:
    """The embedder with its adaptation budget set; refused for one that does not adapt."""
    return _with_budget(model, "adapt_seconds", seconds, "the embedder efficientnet-adapted")


def with_tune_budget(model: TypeClassifier, seconds: float) -> TypeClassifier:
    """The classifier with its fine-tuning budget set; refused for one that does not tune."""
    return _with_budget(model, "tune_seconds", seconds, "the classifier efficientnet-tuned")


def _with_budget(model, field: str, seconds: float, applies_to: str):
    """`model` with `settings.<field>` set to `seconds`; refused (before anything trains) for a
    model without that budget, or a budget outside 0 s .. a day."""
    flag = "--" + field.replace("_", "-")
    settings = getattr(model, "settings", None)
    if settings is None or not getattr(settings, field, 0):
        raise JewelrecError(f"{flag} applies to {applies_to}, not {model.name}")
    if not 0 <= seconds <= 24 * 3600:
        raise JewelrecError(f"{flag} must be between 0 and 86400, got {seconds:g}")
    model.settings = replace(settings, **{field: seconds})
    return model


def train_attributes(
    home: Home,
    data: TrainingImages,
    *,
    seed: int = 0,
    progress: bool = True,
    backbone: Backbone | None = None,
) -> list[TrainedModel]:
    """Metal and stone heads beside the classifier when the catalog can teach them; a stale
    folder goes when it no longer can (its values would be another catalog's). `backbone`: the
    one the home was opened with (by default a new one for `home`)."""
    import shutil

    start = time.perf_counter()
    folder = attributes_folder(home.models_dir)
    backbone = backbone if backbone is not None else Backbone.for_home(home)
    with attached_to_home(home, backbone):
        heads, notes = AttributeHeads.fit(data.photos, data.attributes, seed=seed,
                                          progress=progress, backbone=backbone)
    if heads is None:
        shutil.rmtree(folder, ignore_errors=True)
        return []
    with replaced_folder(folder) as fresh:
        heads.save(fresh)
        seconds = time.perf_counter() - start
        atomic_write_json(fresh / "training.json", {
            "training_data_fingerprint": data.fingerprint, "images": len(data.photos),
            "seed": seed, "seconds": round(seconds, 2), "notes": notes,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return [TrainedModel(KIND, NAME, folder, seconds, FitReport(notes=notes))]


def describe(trained: list[TrainedModel]) -> str:
    return "\n".join(json.dumps(t.to_dict()) for t in trained)
