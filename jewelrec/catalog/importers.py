"""Catalog files in, validated rows out: CSV, JSON Lines, or a ShopStyle-style product export.

Reader -> mapper: each reader yields `RawRow`s (a row number and a plain dict of fields); one
function, `validate_fields`, turns a dict into a `CatalogRow` or a rejection reason, whatever the
file format. Images are only *referenced* here (a path or a URL); `jewelrec.catalog.ingest`
loads and checks them.

Rules a catalog author needs to know:

- Row numbers are the ones a person would look up. CSV: as a spreadsheet counts them, the header
  is row 1 and the first product is row 2 (a quoted value spanning several lines is still one
  row). JSON Lines: the line number in the file (blank lines count as lines). ShopStyle: the
  product's 1-based position in the `products` list.
- Required: id, title, type, price, url, image. Optional: currency (default USD), brand, metal,
  stone, tags. Other columns are ignored.
- type, metal and stone are stored lower-case with spaces collapsed ("Rose  Gold" -> "rose gold")
  so filters and facets match regardless of how the catalog spells them.
- price: a plain decimal number >= 0 ("19.90"); no currency signs, no NaN or infinity.
- url: http or https with a host. image: a path relative to the catalog file's folder, or an
  http(s) URL; several separated by `|` in CSV (a list, or a `|` string, in JSON Lines).
- tags: separated by `|` or `,` in CSV; a list (or such a string) in JSON Lines.
- Text fields must be text: a list, an object, true/false or a number where text is expected is
  rejected (never stored as its Python spelling); an id may also be a whole number.
- Sizes (a row breaking one is rejected, never truncated, so what is stored is what the shop
  wrote): any field at most 131,072 characters; title at most 500; id at most 200; type,
  metal, stone, brand and each tag at most 200; url and each image reference at most 4,096.
  A CSV file whose single field exceeds 16 MiB, or a JSON document nested deeper than Python
  can parse, cannot be read at all; a JSON Lines line that is too deep or too long rejects
  only that line.
- ids: no `/` or `\\`, no control or invisible format characters, not `.` or `..`: an id is
  part of a product's address (`/api/products/{id}`), so such an id could never be reached.
- The CSV header must name every required column; a file with none of its rows valid changes
  nothing (ingest exits non-zero).
- The same id twice: the first row with valid fields wins. A later row with identical fields is
  ignored silently (catalogs concatenated from overlapping exports); one that differs is
  rejected as a duplicate id, so a conflicting edit never replaces the first silently.

ShopStyle mapping (see ../shared/data/shopstyle/README.md): name -> title, brand.name -> brand,
clickUrl -> url, categories[].id -> type (the first category that is a jewelry type, e.g.
`earrings` -> earring; a product without one is rejected), colors[0].name -> metal when it names
a metal colour, image.sizes.Best.url (else the largest size given) then each alternateImage the
same way -> images. Price: the salePrice when it is set and below price (what a shopper pays
today), else price. Out-of-stock products are kept: the catalog decides what it lists.
"""

from __future__ import annotations

import csv
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from jewelrec.catalog.prices import plain_amount
from jewelrec.errors import CatalogError
from jewelrec.links import link_problem, spaces_encoded

if TYPE_CHECKING:
    from jewelrec.catalog.feeds import FeedOptions

REQUIRED_FIELDS = ("id", "title", "type", "price", "url", "image")
DEFAULT_CURRENCY = "USD"
MAX_PRICE = Decimal("1e12")  # beyond any real price; keeps the float the store keeps exact enough

# ShopStyle category ids that are a jewelry type, and the type each one gives.
SHOPSTYLE_TYPES = {
    "earrings": "earring",
    "necklaces": "necklace",
    "rings": "ring",
    "bracelets": "bracelet",
    "watches": "watch",
    "womens-watches": "watch",
    "mens-watches": "watch",
    "brooches": "brooch",
    "brooches-and-pins": "brooch",
    "anklets": "anklet",
    "charms": "charm",
    "pendants": "pendant",
    "cufflinks": "cufflink",
    "body-jewelry": "body jewelry",
}
METAL_COLOURS = frozenset({
    "gold", "yellow gold", "white gold", "rose gold", "silver", "sterling silver", "platinum",
    "bronze", "copper", "brass", "gunmetal", "gold-tone", "silver-tone", "rose gold-tone",
    "titanium", "steel", "stainless steel",
})
# Sizes ShopStyle names, smallest first, for when "Best" is missing and no width is given.
SHOPSTYLE_SIZES = ("Small", "Medium", "Large", "Original", "IPhoneSmall", "IPhone", "XLarge",
                   "Best")

# Size limits (module docstring): a field this long is junk or an attack, and would be carried
# by every response that shows the product.
MAX_FIELD_CHARS = 131_072
MAX_LENGTHS = {"id": 200, "title": 500, "type": 200, "brand": 200, "metal": 200, "stone": 200,
               "url": 4096, "currency": 200}
MAX_REF_CHARS = 4096  # each image reference
MAX_TAG_CHARS = 200
# What the CSV parser accepts in one field before giving up on the whole file (Python's default,
# 131,072, made one long description fail a 10,000-row catalog with no row number). Beyond
# MAX_FIELD_CHARS the row is rejected; beyond this the file is not read.
CSV_PARSE_LIMIT = 16 * 1024 * 1024
MAX_JSONL_LINE_CHARS = CSV_PARSE_LIMIT
# Fed to the CSV reader after the file's last line (see read_csv); no catalog holds it
END_OF_FILE = "\x1ejewelrec: end of the catalog file\x1e"
TEXT_FIELDS = ("id", "title", "type", "currency", "brand", "url", "metal", "stone")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (Cc)
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


class RawRow(NamedTuple):
    """One product as the file gives it. `problem` is set when the row could not even be
    mapped to fields (a JSON line that does not parse, a ShopStyle product with no type)."""

    row: int
    fields: dict[str, Any]
    problem: str | None = None
    skipped: str | None = None  # why the shop itself withholds it (a draft): counted, not stored


@dataclass(frozen=True)
class CatalogRow:
    """A row whose fields are valid; its images are references not yet loaded."""

    row: int
    id: str
    title: str
    type: str
    price: Decimal
    currency: str
    url: str
    image_refs: tuple[str, ...]
    brand: str | None = None
    metal: str | None = None
    stone: str | None = None
    tags: tuple[str, ...] = ()

    def same_fields(self, other: CatalogRow) -> bool:
        """Equal in everything but the row number (an identical repeat)."""
        return self._key() == other._key()

    def _key(self) -> tuple:
        return (self.id, self.title, self.type, self.price, self.currency, self.url,
                self.image_refs, self.brand, self.metal, self.stone, self.tags)


# -- formats ---------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    """'csv', 'jsonl' or 'json' (a JSON document: ShopStyle export or a list of products),
    from the extension, else from the first characters."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".json":
        return "json"
    head = _read_head(path)
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        try:
            with open(path, encoding="utf-8-sig") as fh:
                json.load(fh)
        except (ValueError, OSError, RecursionError):
            return "jsonl"  # several objects, one a line
        return "json"
    return "csv"


def read_catalog(
    path: Path, fmt: str = "auto", options: FeedOptions | None = None
) -> tuple[str, Iterator[RawRow]]:
    """(format name: csv, jsonl, shopstyle, json or a shop feed's, rows); CatalogError when the
    file cannot be read at all. `fmt` forces a format (`jewelrec.catalog.feeds.FORMATS`)."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog file not found: {path}")
    if not path.is_file():
        raise CatalogError(f"not a catalog file: {path}")
    from jewelrec.catalog.feeds import read_feed  # feeds build on this module's rows

    feed = read_feed(path, fmt, options)
    if feed is not None:
        return feed
    fmt = detect_format(path) if fmt == "auto" else {"shopstyle": "json"}.get(fmt, fmt)
    if fmt == "csv":
        return fmt, read_csv(path)
    if fmt == "jsonl":
        return fmt, read_jsonl(path)
    document = _load_json(path)
    if isinstance(document, dict) and isinstance(document.get("products"), list):
        return "shopstyle", shopstyle_rows(document["products"])
    if isinstance(document, list):
        return "json", json_list_rows(document)
    if isinstance(document, dict) and path.suffix.lower() != ".json":
        return "jsonl", read_jsonl(path)  # a JSON Lines file holding a single product
    raise CatalogError(
        f"{path}: expected an object with a \"products\" list (ShopStyle export) "
        "or a list of products"
    )


def delimiter_of(header_line: str) -> str:
    """What separates a file's values, read from its header line: ',' unless tabs or
    semicolons (a European spreadsheet's CSV, whose prices have decimal commas) are more."""
    counts = {mark: header_line.count(mark) for mark in (",", "\t", ";")}
    return max(counts, key=lambda mark: (counts[mark], mark == ","))


def read_csv(path: Path) -> Iterator[RawRow]:
    # The csv module keeps this limit process-wide; only ever raised, to a fixed bound.
    if csv.field_size_limit() < CSV_PARSE_LIMIT:
        csv.field_size_limit(CSV_PARSE_LIMIT)
    next_row = 2  # the spreadsheet row being read, for an error that ends the file
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            delimiter = delimiter_of(fh.readline(64 * 1024))
            fh.seek(0)
            reader = csv.DictReader(with_end_marker(fh), delimiter=delimiter)
            if not reader.fieldnames or reader.fieldnames == [END_OF_FILE]:
                raise CatalogError(f"{path} is empty: expected a header row such as "
                                   f"{','.join(REQUIRED_FIELDS)}")
            header = [(name or "").strip().lower() for name in reader.fieldnames]
            missing = [name for name in REQUIRED_FIELDS if name not in header]
            if len(missing) == len(REQUIRED_FIELDS):
                raise CatalogError(
                    f"{path} does not look like a product CSV: its header has none of the "
                    f"columns {', '.join(REQUIRED_FIELDS)}"
                )
            if missing:
                plural = "s" if len(missing) > 1 else ""
                raise CatalogError(
                    f"{path} lacks the required column{plural} {', '.join(missing)} "
                    f"(its header: {_shown(','.join(header), 200)})"
                )
            reader.fieldnames = header
            for number, record in enumerate(reader, start=2):
                if at_end_marker(list(_texts(record)), path, number):
                    return
                extra = [v for v in record.pop(None, None) or [] if v.strip()]
                if extra:  # values beyond the header's columns: the fields have shifted
                    yield RawRow(number, record, (
                        f"{len(header) + len(extra)} values where the header names "
                        f"{len(header)} columns (a comma inside a value that is not quoted?); "
                        f"the extra: {_shown(', '.join(extra))}"))
                else:  # empty values beyond the header (a trailing comma) are nothing
                    yield RawRow(number, record)
                next_row = number + 1
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise CatalogError(f"{path} is not valid CSV (row {next_row}): {exc}") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def with_end_marker(lines: Iterable[str]) -> Iterator[str]:
    """A CSV file's `lines`, then END_OF_FILE on a line of its own (see `at_end_marker`)."""
    yield from lines
    yield END_OF_FILE + "\n"


def at_end_marker(values: Sequence[str], path: Path, row: int) -> bool:
    """Whether a record read from `with_end_marker` lines (`values`: its texts, in column
    order) is the marker's own row: the file ended outside any quotes. The marker inside a
    value means a quote was never closed and swallowed the rest of the file, which the csv
    module accepts silently (and --prune would then remove every product of the swallowed
    rows): a CatalogError naming the row that opened it."""
    if not any(END_OF_FILE in value for value in values):
        return False
    if list(values) == [END_OF_FILE]:
        return True
    raise CatalogError(f"{path}: row {row} opens a quoted field (\") that is never closed, so "
                       "everything after it would be read as part of that field; close or "
                       "remove the stray quote")


def _texts(record: dict[Any, Any]) -> Iterator[str]:
    """Every text a csv.DictReader record holds, in column order (the marker's own row: only
    its first column; values beyond the header come as a list)."""
    for value in record.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from value


def read_jsonl(path: Path) -> Iterator[RawRow]:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for number, line in enumerate(_bounded_lines(fh, MAX_JSONL_LINE_CHARS), start=1):
                if line is None:
                    yield RawRow(number, {}, f"line longer than {MAX_JSONL_LINE_CHARS:,} "
                                             "characters")
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, parse_float=Decimal)
                except json.JSONDecodeError as exc:
                    yield RawRow(number, {}, f"invalid JSON: {exc.msg}")
                    continue
                except RecursionError:
                    yield RawRow(number, {}, "invalid JSON: nested too deeply")
                    continue
                except ValueError as exc:  # e.g. an integer of more than 4,300 digits
                    yield RawRow(number, {}, f"invalid JSON: {_shown(str(exc), 120)}")
                    continue
                if not isinstance(record, dict):
                    yield RawRow(number, {}, "not a JSON object")
                    continue
                yield RawRow(number, record)
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def json_list_rows(document: list[Any]) -> Iterator[RawRow]:
    """A JSON array of product objects (the JSON Lines fields, in one document)."""
    for number, record in enumerate(document, start=1):
        if isinstance(record, dict):
            yield RawRow(number, record)
        else:
            yield RawRow(number, {}, "not a JSON object")


def shopstyle_rows(products: list[Any]) -> Iterator[RawRow]:
    for number, product in enumerate(products, start=1):
        if not isinstance(product, dict):
            yield RawRow(number, {}, "not a JSON object")
            continue
        fields, problem = map_shopstyle_product(product)
        yield RawRow(number, fields, problem)


def map_shopstyle_product(product: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """ShopStyle's nested product -> our flat fields (and a problem when it has no type)."""
    brand = product.get("brand")
    colors = product.get("colors") or []
    first_colour = colors[0].get("name") if colors and isinstance(colors[0], dict) else None
    metal = _normalise_words(first_colour) if isinstance(first_colour, str) else None
    fields: dict[str, Any] = {
        "id": product.get("id"),
        "title": product.get("name"),
        "price": _shopstyle_price(product.get("price"), product.get("salePrice")),
        "currency": product.get("currency"),
        "brand": brand.get("name") if isinstance(brand, dict) else None,
        "url": product.get("clickUrl"),
        "image": _shopstyle_images(product),
        "metal": metal if metal in METAL_COLOURS else None,
    }
    categories = [c.get("id") for c in product.get("categories") or [] if isinstance(c, dict)]
    for category in categories:
        if isinstance(category, str) and category.lower() in SHOPSTYLE_TYPES:
            fields["type"] = SHOPSTYLE_TYPES[category.lower()]
            return fields, None
    listed = ", ".join(str(c) for c in categories) or "none"
    return fields, f"no jewelry category (categories: {listed})"


def _shopstyle_price(price: Any, sale: Any) -> Any:
    if _is_number(sale) and _is_number(price) and 0 <= sale < price:
        return sale
    return price


def _shopstyle_images(product: dict[str, Any]) -> list[str]:
    images = [product.get("image")] + list(product.get("alternateImages") or [])
    urls = [_best_size_url(image) for image in images if isinstance(image, dict)]
    return [url for url in urls if url]


def _best_size_url(image: dict[str, Any]) -> str | None:
    sizes = image.get("sizes")
    if not isinstance(sizes, dict):
        return None
    candidates = {name: size for name, size in sizes.items()
                  if isinstance(size, dict) and isinstance(size.get("url"), str)}
    if not candidates:
        return None
    if "Best" in candidates:
        return candidates["Best"]["url"]

    def area(item: tuple[str, dict[str, Any]]) -> tuple[float, int]:
        name, size = item
        w, h = size.get("width"), size.get("height")
        pixels = w * h if _is_number(w) and _is_number(h) else -1
        rank = SHOPSTYLE_SIZES.index(name) if name in SHOPSTYLE_SIZES else -1
        return (pixels, rank)

    return max(candidates.items(), key=area)[1]["url"]


# -- validation ------------------------------------------------------------------------------

def validate_fields(fields: dict[str, Any], row: int) -> CatalogRow | str:
    """A `CatalogRow`, or the reason the row is rejected (one line a person can act on)."""
    problem = _shape_problem(fields)
    if problem:
        return problem
    text = {name: _text(fields.get(name)) for name in TEXT_FIELDS}
    text["url"] = spaces_encoded(text["url"])
    image_refs = [spaces_encoded(ref) for ref in _split(fields.get("image"), "|")]
    present = {**text, "price": _text(fields.get("price")), "image": "|".join(image_refs)}
    missing = [name for name in REQUIRED_FIELDS if not present[name]]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        return f"missing field{plural} {', '.join(repr(m) for m in missing)}"
    if not isinstance(fields.get("id"), str | int) or isinstance(fields.get("id"), bool):
        return f"bad id {_shown(fields.get('id'))}: expected text or a whole number"
    problem = _id_problem(text["id"]) or _length_problem(text, image_refs,
                                                         _split(fields.get("tags"), "|,"))
    if problem:
        return problem
    price = parse_price(fields.get("price"))
    if isinstance(price, str):
        return price
    url_problem = link_problem(text["url"])
    if url_problem:
        return url_problem
    currency = (text["currency"] or DEFAULT_CURRENCY).upper()
    if not _CURRENCY.match(currency):
        return f"bad currency {text['currency']!r}: expected a 3-letter code such as USD"
    return CatalogRow(
        row=row,
        id=text["id"],
        title=" ".join(shown_text(text["title"]).split()),
        type=_normalise_words(text["type"]),
        price=price,
        currency=currency,
        url=text["url"],
        image_refs=tuple(dict.fromkeys(image_refs)),
        brand=shown_text(text["brand"]).strip() or None,
        metal=_normalise_words(text["metal"]) or None,
        stone=_normalise_words(text["stone"]) or None,
        tags=tuple(dict.fromkeys(t for t in (shown_text(tag).strip()
                                             for tag in _split(fields.get("tags"), "|,")) if t)),
    )


def parse_price(value: Any) -> Decimal | str:
    """A Decimal >= 0, or a rejection reason. Floats from JSON are taken at their decimal repr;
    text may group thousands and use a decimal comma ("1,299.00", "1.299,00", "19,99")."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return f"bad price {_shown(value)}: expected a number such as 19.99"
    if isinstance(value, float):
        value = repr(value)
    try:
        price = Decimal(plain_amount(str(value)))
    except InvalidOperation:
        return f"bad price {_shown(value)}: expected a number such as 19.99"
    if not price.is_finite():
        return f"bad price {_shown(value)}: expected a number such as 19.99"
    if price < 0:
        return f"negative price: {str(value).strip()[:60]}"
    if price > MAX_PRICE:
        return f"bad price {_shown(value)}: implausibly large"
    return price


def _shape_problem(fields: dict[str, Any]) -> str | None:
    """Why the row's values are not the kinds the fields take (text where text is expected,
    text or a list of text for image and tags), or a value too long to be real."""
    for name, value in fields.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            return (f"field {_shown(name, 60)} is {len(value):,} characters long, over the "
                    f"{MAX_FIELD_CHARS:,}-character limit")
    for name in TEXT_FIELDS:
        value = fields.get(name)
        if value is None or isinstance(value, str) or name == "id":  # id: checked by the caller
            continue
        return f"bad {name} {_shown(value)}: expected text, not {_kind(value)}"
    for name in ("image", "tags"):
        value = fields.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        odd = next((v for v in items if v is not None and not isinstance(v, str)), None)
        if odd is not None:
            return (f"bad {name} {_shown(value)}: expected text or a list of text, "
                    f"found {_kind(odd)}")
    return None


def _id_problem(product_id: str) -> str | None:
    """An id is part of the product's address; one that cannot be in a URL path is refused."""
    if product_id in {".", ".."} or any(
        ch in "/\\" or unicodedata.category(ch)[0] == "C" for ch in product_id
    ):
        return (f"bad id {_shown(product_id)}: an id may not contain '/', '\\' or control "
                "characters, nor be '.' or '..'")
    return None


def _length_problem(text: dict[str, str], image_refs: list[str], tags: list[str]) -> str | None:
    for name, limit in MAX_LENGTHS.items():
        if len(text[name]) > limit:
            return f"{name} is {len(text[name]):,} characters long, over the {limit:,} limit"
    for label, values, limit in (("image reference", image_refs, MAX_REF_CHARS),
                                 ("tag", tags, MAX_TAG_CHARS)):
        long = next((v for v in values if len(v) > limit), None)
        if long is not None:
            return (f"{label} {_shown(long)} is {len(long):,} characters long, over the "
                    f"{limit:,} limit")
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if _is_number(value) or isinstance(value, int | float | Decimal):
        return "a number"
    return type(value).__name__


def _shown(value: Any, limit: int = 80) -> str:
    """A short repr for messages: a 1 MB value must not make a 1 MB rejection line."""
    if isinstance(value, list | tuple | dict):  # no repr of a deep or huge structure
        return f"<{_kind(value)} of {len(value)}>"
    text = repr(value) if not isinstance(value, str) or len(value) <= limit * 2 else (
        repr(value[: limit * 2]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_lines(fh: Any, limit: int) -> Iterator[str | None]:
    """The file's lines; None stands for a line over `limit` characters (read past, not kept)."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith("\n"):
            while (rest := fh.readline(limit)) and not rest.endswith("\n"):
                pass
            yield None
        else:
            yield line


# -- helpers ---------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _split(value: Any, separators: str) -> list[str]:
    """A list or a separated string -> stripped, non-empty strings."""
    items: Iterable[Any]
    if isinstance(value, list | tuple):
        items = value
    elif value is None:
        items = []
    else:
        items = re.split(f"[{re.escape(separators)}]", str(value))
    return [s for s in (_text(item) for item in items) if s]


def _normalise_words(value: str | None) -> str:
    return " ".join(shown_text(value or "").lower().split())


def shown_text(text: str) -> str:
    """Catalog text as people will see it: control characters (ESC, BEL, ...: a title that
    restyles or retitles a shop's terminal) become spaces, and the bidirectional embeddings,
    overrides and isolates that reorder how a line reads (a title disguised as another) go."""
    return _CONTROL.sub(" ", text.translate(_BIDI_CONTROLS))


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | Decimal) and not isinstance(value, bool)
            and math.isfinite(value))


def _read_head(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise CatalogError(f"{path} is not valid JSON: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
