"""What the shop-feed readers share: their options, CSV opening, money text and metal words.

Every reader yields `RawRow`s with the same flat fields the CSV importer reads (id, title,
type, price, currency, brand, url, image, metal, tags), so `validate_fields` and the ingest's
image and store stages are the same for every format.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from jewelrec.catalog.feeds.type_rules import TypeRules
from jewelrec.catalog.importers import (
    END_OF_FILE,
    METAL_COLOURS,
    at_end_marker,
    delimiter_of,
    with_end_marker,
)
from jewelrec.catalog.prices import plain_amount
from jewelrec.errors import CatalogError
from jewelrec.links import link_problem

# A field larger than this in a shop export is not product data (csv's default is 128 kB).
MAX_CSV_FIELD = 4 * 1024 * 1024
# the amount may hold spaces between its digits ("1 299,00 EUR": a French shop's thousands)
_MONEY = re.compile(
    r"^\s*(?:(?P<cur1>[A-Za-z]{3})\s+)?(?P<amount>[^\sA-Za-z](?:[^A-Za-z]*[^\sA-Za-z])?)\s*"
    r"(?P<cur2>[A-Za-z]{3})?\s*$"
)


@dataclass(frozen=True)
class FeedOptions:
    """Settings a feed cannot carry itself.

    shop_url: the shop's address, for exports that list no product links (Shopify:
    <shop_url>/products/<handle>; WooCommerce: <shop_url>/?p=<ID>). currency: for exports that
    state none (Shopify, WooCommerce); None leaves the catalog default (USD).
    """

    types: TypeRules = field(default_factory=TypeRules.defaults)
    shop_url: str | None = None
    currency: str | None = None

    def product_link(self, fmt: str, path: str) -> str:
        """<shop_url><path>, or CatalogError when the export has no links and no shop_url."""
        if not self.shop_url:
            raise CatalogError(
                f"a {fmt} export lists no product links: rerun with --shop-url "
                "https://your-shop.example"
            )
        problem = link_problem(self.shop_url)
        if problem:
            raise CatalogError(f"--shop-url: {problem}")
        return self.shop_url.rstrip("/") + path


def money(text: Any) -> tuple[str | None, str | None]:
    """"19.99 USD" -> ("19.99", "USD"); "19.99" -> ("19.99", None); blank -> (None, None).
    Text that is not an amount is passed on as it is, so validation names it in its reason."""
    if text is None or not str(text).strip():
        return None, None
    match = _MONEY.match(str(text))
    if not match:
        return str(text).strip(), None
    currency = match["cur1"] or match["cur2"]
    return match["amount"], currency.upper() if currency else None


def metal_of(*values: str | None) -> str | None:
    """The first value that names a metal colour ("Rose Gold", "Sterling Silver"), else None."""
    for value in values:
        words = " ".join((value or "").lower().split())
        if words in METAL_COLOURS:
            return words
    return None


def sale_in_effect(starts: str | None, ends: str | None, now: datetime | None = None) -> bool:
    """Whether a sale price applies now: before its start or after its end (a sale scheduled
    ahead, or one that ran out) the shopper pays the regular price. A date given alone
    ("2025-01-31") covers that whole day; a date that cannot be read does not stop the sale.
    Dates without a zone are the shop's local time, compared with this machine's."""
    def moment(text: str | None, end: bool) -> datetime | None:
        text = (text or "").strip()
        try:
            when = datetime.fromisoformat(text) if text else None
        except ValueError:
            return None
        if when is not None and end and len(text) == 10:  # a bare date: the end of that day
            when += timedelta(days=1)
        return when

    for when, end in ((moment(starts, False), False), (moment(ends, True), True)):
        if when is None:
            continue
        current = now or datetime.now(when.tzinfo or None)
        if when.tzinfo is None and current.tzinfo is not None:
            current = current.replace(tzinfo=None)
        elif when.tzinfo is not None and current.tzinfo is None:
            current = current.astimezone()
        if (current >= when) if end else (current < when):
            return False
    return True


def lowest_price(texts: list[str | None]) -> str | None:
    """The cheapest of several price texts (a product's variants: its "from" price). A text
    that is not a number is returned as it is, so validation rejects the row naming it."""
    parsed: list[tuple[Decimal, str]] = []
    for text in texts:
        if not text:
            continue
        try:
            value = Decimal(plain_amount(text))
        except InvalidOperation:
            return text
        if value.is_finite():
            parsed.append((value, text))
    return min(parsed)[1] if parsed else None


def split_list(text: str | None, separator: str = ",") -> list[str]:
    return [part.strip() for part in (text or "").split(separator) if part.strip()]


_NEXT_LINK = re.compile(r",\s*(?=https?://)", re.IGNORECASE)


def split_links(text: str | None) -> list[str]:
    """Comma-separated links, split only where the next one starts: a comma inside a link
    ("https://cdn.example/w_400,h_400/ring.jpg") stays in it."""
    return [part.strip() for part in _NEXT_LINK.split(text or "") if part.strip()]


def path_part(text: str) -> str:
    """A handle or id as it may stand in a link's path."""
    return quote(text.strip(), safe="-_.~")


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """A catalog file as UTF-8 text (a BOM is fine), with read errors as CatalogError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            yield fh
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise CatalogError(f"{path} is not valid CSV: {exc}") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def csv_records(
    path: Path, delimiter: str | None = None, *, required: tuple[str, ...] = (),
    kind: str = "CSV",
) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number as a spreadsheet shows it, {header: value}) for each record of a CSV/TSV
    file; header names are kept as written but stripped, values stripped. CatalogError when
    the header lacks a `required` column (lower case), naming the `kind` of file expected.
    `delimiter`: the header's (`header_of`) unless given: a Google feed downloaded from Sheets
    as CSV, a Shopify export saved as TSV."""
    if delimiter is None:
        found = header_of(path)
        delimiter = found[0] if found else ","
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    with open_text(path) as fh:
        reader = csv.reader(with_end_marker(fh), delimiter=delimiter)
        header = next(reader, None)
        if not header or header == [END_OF_FILE]:
            raise CatalogError(f"{path} is empty: expected a header row")
        names = [name.strip() for name in header]
        missing = [r for r in required if r not in {" ".join(n.lower().split()) for n in names}]
        if missing:
            raise CatalogError(f"{path} is not a {kind}: its header has no "
                               f"{', '.join(repr(m) for m in missing)} column")
        for number, values in enumerate(reader, start=2):
            if at_end_marker(values, path, number):
                return
            if not any(v.strip() for v in values):
                continue
            pairs = zip(names, values, strict=False)  # short rows: the missing columns are blank
            yield number, {name: (value or "").strip() for name, value in pairs}


def header_of(path: Path) -> tuple[str, list[str]] | None:
    """(delimiter, header names in lower case) of a CSV or TSV file, or None if the first
    line is not a plausible header."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline(64 * 1024)
    except (OSError, UnicodeDecodeError):
        return None
    if not first.strip() or first.lstrip().startswith(("<", "{", "[")):
        return None
    delimiter = delimiter_of(first)
    try:
        row = next(csv.reader([first], delimiter=delimiter), [])
    except csv.Error:
        return None
    return delimiter, [" ".join(name.lower().split()) for name in row]
