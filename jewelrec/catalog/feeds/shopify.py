"""Shopify products CSV export (Products > Export): several rows per product `Handle`.

The first row of a handle carries the product (Title, Vendor, Type, Product Category, Tags,
Status, Published); every row may add a variant (Option values, `Variant Price`) and/or an
image (`Image Src`, `Image Position`). One handle is one product:

- handle -> id; Title -> title; Vendor -> brand; Tags -> tags; link:
  `<--shop-url>/products/<handle>` (the export has none; a `URL` column wins when present).
- price: the lowest `Variant Price` ("from" price: the cheapest variant a shopper can buy);
  currency: `--currency` (the export states none; default USD).
- images: `Image Src` ordered by `Image Position`, then `Variant Image`s not already listed.
- type: `Type`, then `Product Category`, by the type rules. metal: the first option named
  Metal/Material/Color (any of the usual languages) whose value names a metal colour.
- `Status` draft or archived, or `Published` false: skipped and counted, not rejected (the
  shop chose not to sell them; `--prune` removes ones stored before).
Row number: the spreadsheet row of the handle's first row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jewelrec.catalog.feeds.common import (
    FeedOptions,
    csv_records,
    lowest_price,
    metal_of,
    path_part,
    split_list,
)
from jewelrec.catalog.feeds.type_rules import TypeDecision
from jewelrec.catalog.importers import RawRow

MARKERS = {"handle", "variant price"}
SKIPPED_STATUSES = {"draft", "archived"}
METAL_OPTIONS = {"metal", "material", "color", "colour", "metall", "farbe", "couleur", "métal",
                 "matière", "matériau", "color del metal", "metal color", "metal colour"}


def is_shopify_header(names: list[str]) -> bool:
    return MARKERS <= set(names) or {"handle", "image src", "title"} <= set(names)


@dataclass
class _Product:
    row: int
    handle: str
    first: dict[str, str]
    prices: list[str] = field(default_factory=list)
    images: list[tuple[float, int, str]] = field(default_factory=list)
    variant_images: list[str] = field(default_factory=list)
    metal: str | None = None


def read_shopify(path: Path, options: FeedOptions) -> Iterator[RawRow]:
    products: dict[str, _Product] = {}
    unnamed: list[RawRow] = []
    for number, raw in csv_records(path, required=("handle",), kind="Shopify products export"):
        record = {name.lower(): value for name, value in raw.items()}
        handle = record.get("handle", "")
        if not handle:
            unnamed.append(RawRow(number, {}, "no Handle: every Shopify row names its product"))
            continue
        product = products.setdefault(handle, _Product(number, handle, record))
        _add_row(product, record)
    for product in products.values():
        yield _row(product, options)
    yield from unnamed


def _add_row(product: _Product, record: dict[str, str]) -> None:
    if record.get("variant price"):
        product.prices.append(record["variant price"])
        if product.metal is None:
            product.metal = metal_of(*(
                record.get(f"option{i} value") for i in (1, 2, 3)
                if (record.get(f"option{i} name") or "").strip().lower() in METAL_OPTIONS
            ))
    if record.get("image src"):
        try:
            position = float(record.get("image position") or "inf")
        except ValueError:
            position = float("inf")
        product.images.append((position, len(product.images), record["image src"]))
    if record.get("variant image"):
        product.variant_images.append(record["variant image"])


def _row(product: _Product, options: FeedOptions) -> RawRow:
    first = product.first
    status = (first.get("status") or "").lower()
    if status in SKIPPED_STATUSES:
        return RawRow(product.row, {"id": product.handle}, skipped=status)
    if (first.get("published") or "").lower() == "false":  # active, but not on the online
        # store (sold in person or on another channel): its product page is not found
        return RawRow(product.row, {"id": product.handle}, skipped="unpublished")
    images = [src for _, _, src in sorted(product.images)]
    images += [src for src in product.variant_images if src not in images]
    fields: dict[str, Any] = {
        "id": product.handle,
        "title": first.get("title"),
        "price": lowest_price(product.prices),
        "currency": options.currency,
        "brand": first.get("vendor"),
        "url": first.get("url") or options.product_link(
            "Shopify", f"/products/{path_part(product.handle)}"),
        "image": images,
        "metal": product.metal,
        "tags": split_list(first.get("tags")),
    }
    decided = options.types.classify([[first.get("type")], [first.get("product category")]])
    if not isinstance(decided, TypeDecision):
        return RawRow(product.row, fields, decided)
    fields["type"] = str(decided)
    return RawRow(product.row, fields)

