"""WooCommerce products CSV export (Products > Export, the built-in exporter's columns).

One row per product, plus one row per variation of a variable product (`Type` variation,
`Parent` "id:<ID>" or the parent's SKU):

- ID (else SKU) -> id; Name -> title; link: a `Permalink`/`URL` column when the export has
  one, else `<--shop-url>/?p=<ID>` (WordPress redirects it to the product page).
- price: `Sale price` when set and within its `Date sale price starts`/`ends`, else
  `Regular price`; a variable product takes its cheapest enabled variation's. currency:
  `--currency` (the export states none; default USD).
- images: `Images`, comma-separated URLs, the first being the main image.
- type: `Categories` ("Jewellery > Rings, Sale": comma-separated paths that must agree) by the
  type rules. brand: `Brands`, else an attribute named Brand (Marke, Marque, Marca).
  metal: an attribute named Metal/Material/Color whose value names a metal colour.
- `Published` -1 (draft) or 0 (private), `Visibility in catalog` hidden, grouped products
  (containers of other products) and variable products whose every variation is disabled are
  skipped and counted. A variation whose parent is not in the file is rejected.
Row number: the spreadsheet row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jewelrec.catalog.feeds.common import (
    FeedOptions,
    csv_records,
    lowest_price,
    metal_of,
    path_part,
    sale_in_effect,
    split_list,
)
from jewelrec.catalog.feeds.type_rules import TypeDecision
from jewelrec.catalog.importers import RawRow

MARKERS = {"id", "type", "name", "regular price"}
BRAND_ATTRIBUTES = {"brand", "brands", "marke", "marque", "marca", "pa_brand"}
METAL_ATTRIBUTES = {"metal", "material", "color", "colour", "metall", "farbe", "couleur",
                    "métal", "matière", "pa_metal", "pa_material", "pa_color"}
SKIPPED_PUBLISHED = {"-1": "draft", "0": "private"}


def is_woocommerce_header(names: list[str]) -> bool:
    return MARKERS <= set(names)


def read_woocommerce(path: Path, options: FeedOptions) -> Iterator[RawRow]:
    records = [(number, {name.lower(): value for name, value in raw.items()})
               for number, raw in csv_records(path, required=("type", "name"),
                                                 kind="WooCommerce products export")]
    parents = {}
    for _, record in records:
        if "variation" not in _kinds(record):
            if record.get("id"):
                parents[f"id:{record['id']}"] = record
            if record.get("sku"):
                parents[record["sku"]] = record
    variations: dict[int, list[dict[str, str]]] = {}
    for number, record in records:
        if "variation" not in _kinds(record):
            continue
        parent = parents.get(record.get("parent", ""))
        if parent is None:
            yield RawRow(number, {"id": record.get("id") or record.get("sku")},
                         f"variation of unknown parent {record.get('parent')!r}")
            continue
        variations.setdefault(id(parent), []).append(record)
    for number, record in records:
        kinds = _kinds(record)
        if "variation" in kinds:
            continue
        yield _row(number, record, kinds, variations.get(id(record), []), options)


def _row(
    number: int, record: dict[str, str], kinds: set[str], variations: list[dict[str, str]],
    options: FeedOptions,
) -> RawRow:
    identity = {"id": record.get("id") or record.get("sku")}
    skipped = SKIPPED_PUBLISHED.get(record.get("published", "").strip())
    if skipped:
        return RawRow(number, identity, skipped=skipped)
    if record.get("visibility in catalog", "").lower() == "hidden":
        return RawRow(number, identity, skipped="hidden")
    if "grouped" in kinds:
        return RawRow(number, identity, skipped="grouped")
    price = _price(record)
    if "variable" in kinds and variations:
        enabled = [v for v in variations if v.get("published", "1").strip() in {"", "1"}]
        if not enabled:  # every variation switched off: nothing of it can be bought
            return RawRow(number, identity, skipped="no enabled variation")
        price = lowest_price([_price(v) for v in enabled]) or price
    link = record.get("permalink") or record.get("url")
    if not link and record.get("id"):
        link = options.product_link("WooCommerce", f"/?p={path_part(record['id'])}")
    attributes = _attributes(record)
    brands = split_list(record.get("brands")) or [
        v for name, values in attributes if name in BRAND_ATTRIBUTES for v in values]
    fields: dict[str, Any] = {
        **identity,
        "title": record.get("name"),
        "price": price,
        "currency": options.currency,
        "brand": brands[0] if brands else None,
        "url": link,
        "image": split_list(record.get("images")),
        "metal": metal_of(*(v for name, values in attributes if name in METAL_ATTRIBUTES
                            for v in values)),
        "tags": split_list(record.get("tags")),
    }
    decided = options.types.classify([split_list(record.get("categories"))])
    if not isinstance(decided, TypeDecision):
        return RawRow(number, fields, decided)
    fields["type"] = str(decided)
    if not link:  # the link is built from the ID: a row with a SKU alone has none
        return RawRow(number, fields, "no product link: the row has no ID to build "
                      "<shop-url>/?p=<ID> from, and the export no Permalink column")
    return RawRow(number, fields)


def _kinds(record: dict[str, str]) -> set[str]:
    return {kind.lower() for kind in split_list(record.get("type"))}


def _price(record: dict[str, str]) -> str | None:
    """The sale price while its dates allow (scheduled sales are exported ahead), else the
    regular price."""
    sale = record.get("sale price")
    if sale and sale_in_effect(record.get("date sale price starts"),
                               record.get("date sale price ends")):
        return sale
    return record.get("regular price") or None


def _attributes(record: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(attribute name in lower case, its values) for `Attribute N name` columns."""
    found = []
    for key, name in record.items():
        if key.startswith("attribute ") and key.endswith(" name") and name:
            number = key.removeprefix("attribute ").removesuffix(" name")
            values = split_list(record.get(f"attribute {number} value(s)"))
            found.append((name.strip().lower(), values))
    return found

