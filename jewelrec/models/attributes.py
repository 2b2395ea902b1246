"""Attributes read from the photo (issue 12, item 2): metal colour and main stone.

Calibrated heads (`fit_head`, the type head's recipe) on the type head's own frozen EfficientNet
features (R-MAC, whole photo), so a query's features come from the backbone's cache of the type
pass. Fitted at `jewelrec train` only when the catalog labels enough photos (MIN_VALUES values
with MIN_PHOTOS photos each); saved beside the classifier as models/attributes-efficientnet/.
A piece without a stone is the value NO_STONE when the catalog names other pieces' stones (a
catalog that names none says nothing about stones). Each guess carries its calibrated
confidence; `known` keeps only those at or above the head's decision threshold (answers that
confident were right 95% of the time out of fold), the ones a result's reasons may cite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.models.backbone import BACKBONE, Backbone, backbone_config, image_features
from jewelrec.models.heads import DEFAULT_HEAD, Head, HeadSettings, fit_head, head_probabilities

ATTRIBUTES = ("metal", "stone")
MIN_VALUES = 2  # an attribute with fewer well-represented values has nothing to tell apart
MIN_PHOTOS = 5  # photos a value needs to be learned (rarer values are left out of training)
NO_STONE = "none"
MODEL = "attribute-heads"
KIND, NAME = "attributes", "efficientnet"  # models/attributes-efficientnet/
ARRAYS = ("coef", "intercept", "mean", "scale")


@dataclass(frozen=True)
class AttributeGuess:
    value: str | None  # None: no stone
    confidence: float


def product_attributes(products: Sequence[Any]) -> dict[str, list[str | None]]:
    """Each attribute's label per product (None: unknown): metals as given; stones as given, or
    NO_STONE for a piece without one when the catalog names stones at all. Values the heads
    predicted (`Product.predicted`) are no labels: a head never learns from its own guesses."""
    def given(product: Any, name: str) -> str | None:
        return None if name in getattr(product, "predicted", ()) else getattr(product, name)

    names_stones = catalog_names_stones(products)
    return {
        "metal": [given(p, "metal") or None for p in products],
        "stone": [given(p, "stone") or (NO_STONE if names_stones else None) for p in products],
    }


def catalog_names_stones(products: Sequence[Any]) -> bool:
    """Whether the catalog itself names stones (then a piece without one has none)."""
    return any(p.stone and "stone" not in getattr(p, "predicted", ()) for p in products)


def learnable(labels: Sequence[str | None]) -> set[str]:
    """The values with MIN_PHOTOS photos; empty when fewer than MIN_VALUES of them."""
    counts = Counter(v for v in labels if v)
    values = {v for v, n in counts.items() if n >= MIN_PHOTOS}
    return values if len(values) >= MIN_VALUES else set()


class AttributeHeads:
    """One calibrated head per attribute the catalog could teach, on the `backbone` it is given
    (the home's, shared with the type head's pass; without one, a private `Backbone()`)."""

    def __init__(
        self,
        heads: dict[str, Head],
        settings: HeadSettings = DEFAULT_HEAD,
        *,
        backbone: Backbone | None = None,
    ) -> None:
        self.heads = heads
        self.settings = settings
        self.backbone = backbone if backbone is not None else Backbone()

    @property
    def whole_photo(self) -> bool:
        """Which view the Recommender hands over (see recommend.typing_view)."""
        return self.settings.whole_photo

    def _features(self, images: Sequence[np.ndarray], *, progress: bool = False) -> np.ndarray:
        s = self.settings
        return image_features(self.backbone, images, crop_fraction=s.crop_fraction,
                              size=s.input_size, pooling=s.pooling, progress=progress)

    @classmethod
    def fit(
        cls,
        images: Sequence[np.ndarray],
        labels: dict[str, Sequence[str | None]],
        *,
        settings: HeadSettings = DEFAULT_HEAD,
        seed: int = 0,
        progress: bool = False,
        backbone: Backbone | None = None,
    ) -> tuple[AttributeHeads | None, dict[str, Any]]:
        """Heads for the attributes `labels` can teach (None when none); notes per attribute
        (values, photos, out-of-fold accuracy)."""
        teachable = {name: learnable(values) for name, values in labels.items()}
        teachable = {name: values for name, values in teachable.items() if values}
        if not teachable:
            return None, {}
        model = cls({}, settings, backbone=backbone)
        features = model._features(images, progress=progress)
        notes: dict[str, Any] = {}
        for name, values in teachable.items():
            rows = [i for i, v in enumerate(labels[name]) if v in values]
            head, head_notes = fit_head(features[rows], [labels[name][i] for i in rows],
                                        settings, seed=seed)
            model.heads[name] = head
            notes[name] = {"values": sorted(values), "photos": len(rows),
                           **{k: head_notes[k] for k in ("heldout_accuracy", "temperature",
                                                         "decision_threshold")
                              if k in head_notes}}
        return model, notes

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, AttributeGuess]]:
        """Per image, each attribute's most likely value with its calibrated confidence."""
        if not images:
            return []
        features = self._features(images)
        out: list[dict[str, AttributeGuess]] = [{} for _ in images]
        for name, head in self.heads.items():
            probabilities = head_probabilities(head, features)
            for row, p in zip(out, probabilities, strict=True):
                best = int(np.argmax(p))
                value = head.classes[best]
                row[name] = AttributeGuess(None if name == "stone" and value == NO_STONE
                                           else value, round(float(p[best]), 6))
        return out

    def known(self, guesses: dict[str, AttributeGuess]) -> dict[str, str | None]:
        """The guesses confident enough to count as evidence (see the module's docstring)."""
        return {name: g.value for name, g in guesses.items()
                if name in self.heads and g.confidence >= self.heads[name].decision_threshold}

    def save(self, folder: Path) -> None:
        from jewelrec.models.weights import save_weights

        arrays = {f"{name}.{k}": getattr(head, k)
                  for name, head in self.heads.items() for k in ARRAYS}
        config = {
            "model": MODEL,
            "heads": {name: {"classes": head.classes, "temperature": head.temperature,
                             "decision_threshold": head.decision_threshold}
                      for name, head in self.heads.items()},
            "settings": asdict(self.settings),
            **backbone_config(self.backbone.precision),
        }
        save_weights(folder, arrays, config)

    @classmethod
    def load(cls, folder: Path, *, backbone: Backbone | None = None) -> AttributeHeads:
        from jewelrec.models.weights import damaged_model_error, expect_model, load_weights

        state, config = load_weights(folder)
        expect_model(config, MODEL, folder)
        if config.get("backbone") != BACKBONE:
            raise damaged_model_error(folder, f"it was trained on {config.get('backbone')!r}")
        try:
            heads = {
                name: Head(list(head["classes"]), temperature=float(head["temperature"]),
                           decision_threshold=float(head["decision_threshold"]),
                           **{k: state[f"{name}.{k}"] for k in ARRAYS})
                for name, head in config["heads"].items()
            }
            settings = HeadSettings(**config.get("settings", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise damaged_model_error(folder, f"incomplete attribute heads: {exc}") from exc
        return cls(heads, settings, backbone=backbone)


def attributes_folder(models_dir: Path) -> Path:
    return models_dir / f"{KIND}-{NAME}"


def load_attributes(models_dir: Path, *, backbone: Backbone | None) -> AttributeHeads | None:
    """The home's attribute heads on the home's `backbone`, None when `train` fitted none."""
    folder = attributes_folder(models_dir)
    if not (folder / "config.json").exists():
        return None
    return AttributeHeads.load(folder, backbone=backbone)
