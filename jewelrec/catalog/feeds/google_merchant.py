"""Google Merchant Center product feeds: RSS 2.0 or Atom XML with the `g:` namespace, or the
tab-separated text feed with the same attribute names.

Mapping (attribute -> field): id -> id; title -> title; link -> url; image_link then every
additional_image_link -> images (repeated elements, or comma-separated links); sale_price when
present and within its sale_price_effective_date, else price ("19.99 USD": amount and
currency) -> price, currency; brand -> brand;
color, else material, when it names a metal colour -> metal; product_type, then
google_product_category (text or taxonomy id) -> type by the type rules; item_group_id -> the
tag `group:<id>` (variants of one design stay separate products and can be grouped by it).
availability is not a filter: out-of-stock items are kept, as the catalog lists them.

XML is parsed with defusedxml: a feed that declares entities (a "billion laughs" bomb) or
refers to external ones is refused as a whole, before any row is stored. Row numbers: the
item's 1-based position in the XML; the spreadsheet row in TSV (header = row 1).
"""

from __future__ import annotations

import xml.etree.ElementTree as StdET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from jewelrec.catalog.feeds.common import (
    FeedOptions,
    csv_records,
    metal_of,
    money,
    sale_in_effect,
    split_links,
)
from jewelrec.catalog.feeds.type_rules import TypeDecision
from jewelrec.catalog.importers import RawRow
from jewelrec.errors import CatalogError
from jewelrec.home import atomic_write_bytes

GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
ITEM_TAGS = {"item", "entry"}
ROOT_TAGS = {"rss", "feed"}
# A TSV header with these (and without the CSV importer's `image`) is a Google text feed.
TSV_MARKERS = {"id", "image_link"}

Values = Callable[[str], list[str]]


def is_google_header(names: list[str]) -> bool:
    keys = {_key(name) for name in names}
    return TSV_MARKERS <= keys and "image" not in keys


def read_google(path: Path, options: FeedOptions) -> Iterator[RawRow]:
    """Rows of a Google feed, XML or TSV (told apart by the first character)."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return _read_xml(path, options)
    return _read_tsv(path, options)


def map_google_item(values: Values, options: FeedOptions) -> tuple[dict[str, Any], str | None]:
    """One item's attribute values -> our flat fields, and a problem when it has none."""

    def first(name: str) -> str | None:
        found = values(name)
        return found[0] if found else None

    amount, currency = money(first("price"))
    sale_amount, sale_currency = money(first("sale_price"))
    problem = None
    starts, _, ends = (first("sale_price_effective_date") or "").partition("/")
    if sale_amount is not None and sale_in_effect(starts, ends):
        if sale_currency and currency and sale_currency != currency:
            problem = f"sale_price is in {sale_currency} but price in {currency}"
        amount, currency = sale_amount, sale_currency or currency
    group = first("item_group_id")
    fields: dict[str, Any] = {
        "id": first("id"),
        "title": first("title"),
        "url": first("link"),
        "image": values("image_link")[:1] + values("additional_image_link"),
        "price": amount,
        "currency": currency,
        "brand": first("brand"),
        "metal": metal_of(first("color"), first("material")),
        "tags": [f"group:{group}"] if group else [],
    }
    decided = options.types.classify([values("product_type"), values("google_product_category")])
    if not isinstance(decided, TypeDecision):
        return fields, problem or decided
    fields["type"] = str(decided)
    return fields, problem


# -- XML ---------------------------------------------------------------------------------------

def _read_xml(path: Path, options: FeedOptions) -> Iterator[RawRow]:
    number = 0
    root_checked = False
    try:
        for event, element in SafeET.iterparse(str(path), events=("start", "end")):
            namespace, local = _split_tag(element.tag)
            if not root_checked:
                root_checked = True
                if local not in ROOT_TAGS:
                    raise CatalogError(
                        f"{path}: an XML feed must be RSS 2.0 (<rss>) or Atom (<feed>), "
                        f"not <{local}>"
                    )
                continue
            if event != "end" or local not in ITEM_TAGS or namespace not in {None, ATOM_NS}:
                continue
            number += 1
            fields, problem = map_google_item(_xml_values(element), options)
            element.clear()  # a large feed is read in constant memory
            yield RawRow(number, fields, problem)
    except DefusedXmlException as exc:
        raise CatalogError(
            f"{path}: refused: the XML declares or refers to entities ({type(exc).__name__}); "
            "a product feed never needs them"
        ) from exc
    except StdET.ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise CatalogError(
            f"{path} is not well-formed XML (line {line}, column {column})"
        ) from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _xml_values(item: Any) -> Values:
    """name -> values of an item: the g: attribute first, then plain RSS/Atom elements."""
    google: dict[str, list[str]] = {}
    plain: dict[str, list[str]] = {}
    for child in item:
        namespace, local = _split_tag(child.tag)
        if namespace == GOOGLE_NS:
            target = google
        elif namespace in {None, ATOM_NS}:
            target = plain
        else:
            continue
        text = (child.text or "").strip()
        if local == "link" and not text:
            if child.get("rel", "alternate") != "alternate":
                continue  # Atom's rel="self" / "edit": the feed's own entry, not the product page
            text = (child.get("href") or "").strip()  # Atom: <link href="..."/>
        if text:
            values = split_links(text) if local == "additional_image_link" else [text]
            target.setdefault(local, []).extend(values)
    return lambda name: google.get(name) or plain.get(name) or []


def _split_tag(tag: Any) -> tuple[str | None, str]:
    if not isinstance(tag, str):
        return None, ""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


# -- TSV ---------------------------------------------------------------------------------------

def _read_tsv(path: Path, options: FeedOptions) -> Iterator[RawRow]:
    for number, record in csv_records(path, required=("id",), kind="Google Merchant text feed"):
        keyed: dict[str, str] = {_key(name): value for name, value in record.items()}

        def values(name: str, keyed: dict[str, str] = keyed) -> list[str]:
            value = keyed.get(name) or ""
            if name == "additional_image_link":
                return split_links(value)
            return [value] if value else []

        fields, problem = map_google_item(values, options)
        yield RawRow(number, fields, problem)


def _key(name: str) -> str:
    """Header names as Google accepts them: "image link", "Image_Link", "g:image_link"."""
    return "_".join(name.strip().lower().removeprefix("g:").split())


# -- writing (demo catalogs as a shop would publish them) ------------------------------------------

def write_google_feed(
    rows: Iterable[dict[str, str]], out: Path, image_base: str
) -> int:
    """Our catalog CSV's rows as a Google Merchant RSS feed (what a shop's feed looks like:
    images as URLs under `image_base`, types as "Apparel & Accessories > Jewelry > Rings",
    a design `family` as item_group_id); returns the number of items. For demos and tests."""
    items = []
    for row in rows:
        images = [f"{image_base.rstrip('/')}/{ref.strip()}"
                  for ref in (row.get("image") or "").split("|") if ref.strip()]
        fields = [
            ("id", row.get("id")), ("title", row.get("title")), ("link", row.get("url")),
            ("image_link", images[0] if images else None),
            *(("additional_image_link", url) for url in images[1:]),
            ("price", f"{row.get('price')} {row.get('currency') or 'USD'}"),
            ("brand", row.get("brand")), ("color", row.get("metal")),
            ("google_product_category",
             f"Apparel & Accessories > Jewelry > {(row.get('type') or '').title()}s"),
            ("item_group_id", row.get("family")), ("availability", "in_stock"),
        ]
        items.append("    <item>\n" + "".join(
            f"      <g:{name}>{escape(str(value))}</g:{name}>\n" for name, value in fields if value
        ) + "    </item>\n")
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0" xmlns:g="{GOOGLE_NS}">\n  <channel>\n'
        "    <title>jewelrec demo shop</title>\n" + "".join(items) + "  </channel>\n</rss>\n"
    )
    atomic_write_bytes(out, text.encode("utf-8"))
    return len(items)
