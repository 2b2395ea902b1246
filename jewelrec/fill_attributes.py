"""Attributes the catalog lacks, read from its photos (issue 12, item 2), at `jewelrec index`.

A shop whose catalog has no `metal` (or `stone`) column still gets metal filters, facets and
text search: the home's attribute heads (models/attributes.py: fitted by `train` on this
catalog's labelled products, or copied from a home that had labels) read each product's main
photo, and the value is stored in the product's own column, named in `predicted` (see
catalog/store.py). Rules:
- a value the catalog gives is never replaced; predictions are refreshed at every index (the
  heads may have been retrained) from the backbone features `train` already cached;
- metal is predicted for every product without one;
- stone only when the catalog names no stone itself: where it names some, a piece without one
  has none (models/attributes.py), and earlier stone predictions are dropped;
- all of it in ONE store transaction: a killed index leaves the previous state whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from jewelrec.catalog import hygiene
from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import ImageError
from jewelrec.feature_store import attached_to_home
from jewelrec.home import Home
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.models.attributes import (
    AttributeGuess,
    AttributeHeads,
    catalog_names_stones,
    load_attributes,
)
from jewelrec.models.backbone import Backbone

BATCH = 32
log = logging.getLogger(__name__)


@dataclass
class FillReport:
    """What one pass predicted: products looked at and changed, per attribute."""

    looked_at: int = 0
    changed: int = 0
    predicted: dict[str, int] = field(default_factory=dict)  # attribute -> products holding one
    cleared: int = 0  # stone predictions dropped because the catalog now names stones

    def to_dict(self) -> dict[str, Any]:
        return {"looked_at": self.looked_at, "changed": self.changed,
                "predicted": self.predicted, "cleared": self.cleared}


def wanted_attributes(products: Sequence[Product], heads: AttributeHeads) -> dict[str, list[str]]:
    """product id -> the attributes to predict for it (those the heads know and the catalog
    does not give)."""
    names_stones = catalog_names_stones(products)
    wanted: dict[str, list[str]] = {}
    for p in products:
        names = [name for name in heads.heads
                 if (name == "metal" and (p.metal is None or "metal" in p.predicted))
                 or (name == "stone" and not names_stones
                     and (p.stone is None or "stone" in p.predicted))]
        if names:
            wanted[p.id] = names
    return wanted


def fill_missing_attributes(
    home: Home,
    store: CatalogStore,
    products: Sequence[Product],
    *,
    backbone: Backbone,
    auto_crop: bool = True,
    progress: bool = True,
) -> FillReport:
    """Predict and store the attributes `products` lack (see the module docstring) with the
    home's heads on the home's `backbone`; a home without attribute heads is left as it is."""
    report = FillReport()
    heads = load_attributes(home.models_dir, backbone=backbone)
    stale = ([p.id for p in products if "stone" in p.predicted]
             if catalog_names_stones(products) else [])
    wanted = wanted_attributes(products, heads) if heads is not None else {}
    if not wanted and not stale:
        return report
    flagged = hygiene.excluded_views(store.meta(hygiene.META_KEY))
    by_id = {p.id: p for p in products}
    guesses: dict[str, dict[str, AttributeGuess]] = {}
    ids = list(wanted)
    bar = tqdm(total=len(ids), desc="attributes", unit="img", disable=not progress or not ids)
    for start in range(0, len(ids), BATCH):
        batch, images = [], []
        for pid in ids[start:start + BATCH]:
            image = _main_photo(home, by_id[pid], flagged, heads, auto_crop)
            if image is not None:
                batch.append(pid)
                images.append(image)
        if images:
            with attached_to_home(home, backbone):  # features `train` cached are read back
                guesses.update(zip(batch, heads.predict(images), strict=True))
        bar.update(len(ids[start:start + BATCH]))
    bar.close()
    report.looked_at = len(ids)
    with store.transaction() as tx:
        for pid, guess in guesses.items():
            values = {name: guess[name].value for name in wanted[pid] if name in guess}
            report.changed += tx.set_predicted(pid, values)
        for pid in stale:
            changed = tx.clear_predicted(pid, ["stone"])
            report.cleared += changed
            report.changed += changed
    for pid, guess in guesses.items():
        for name in wanted[pid]:
            if name in guess:
                report.predicted[name] = report.predicted.get(name, 0) + 1
    return report


def _main_photo(
    home: Home, product: Product, flagged: set[tuple[str, str]], heads: AttributeHeads,
    auto_crop: bool,
) -> np.ndarray | None:
    """The product's first readable photo that ingest did not flag, framed as the heads read a
    query (whole photo, or the piece found); None when it has none."""
    for name in product.images:
        if (product.id, name) in flagged:
            continue
        try:
            image = load_image(home.image_path(name))
        except (ImageError, OSError, ValueError) as exc:
            log.warning("cannot read %s for its attributes: %s", name, exc)
            continue
        return image if heads.whole_photo else focus_on_piece(image, auto=auto_crop)[0]
    return None
