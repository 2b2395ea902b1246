"""Shop feeds: the exports shops already keep, read into the importers' plain rows.

- `google`: Google Merchant Center feed, RSS 2.0 / Atom XML or tab-separated text;
- `shopify`: Shopify products CSV export;
- `woocommerce`: WooCommerce products CSV export.

`detect_feed` tells them apart by content (XML root, CSV header), whatever the file's name;
`read_feed` is the one entry point `jewelrec.catalog.importers.read_catalog` calls. Category
text becomes a type by `TypeRules` (`--types rules.toml`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from jewelrec.catalog.feeds.common import FeedOptions, header_of
from jewelrec.catalog.feeds.google_merchant import is_google_header, read_google
from jewelrec.catalog.feeds.shopify import is_shopify_header, read_shopify
from jewelrec.catalog.feeds.type_rules import TypeRules
from jewelrec.catalog.feeds.woocommerce import is_woocommerce_header, read_woocommerce
from jewelrec.catalog.importers import RawRow
from jewelrec.errors import CatalogError

__all__ = ["FEED_FORMATS", "FORMATS", "FeedOptions", "TypeRules", "detect_feed", "read_feed"]

FeedReader = Callable[[Path, FeedOptions], Iterator[RawRow]]
FEED_FORMATS: dict[str, FeedReader] = {
    "google": read_google,
    "shopify": read_shopify,
    "woocommerce": read_woocommerce,
}
# Everything `jewelrec ingest --format` accepts.
FORMATS = ("auto", "csv", "jsonl", "shopstyle", *FEED_FORMATS)


def detect_feed(path: Path) -> str | None:
    """'google', 'shopify' or 'woocommerce' when the content says so, else None (the
    importers' own CSV / JSON detection decides)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    if head.startswith(b"<"):
        return "google"  # the only XML format: the reader checks it is RSS or Atom
    header = header_of(path)
    if header is None:
        return None
    _, names = header
    if is_shopify_header(names):
        return "shopify"
    if is_woocommerce_header(names):
        return "woocommerce"
    if is_google_header(names):
        return "google"
    return None


def read_feed(
    path: Path, fmt: str, options: FeedOptions | None = None
) -> tuple[str, Iterator[RawRow]] | None:
    """(format, rows) when `fmt` (or, for 'auto', the content) is a shop feed, else None."""
    if fmt not in FORMATS:
        raise CatalogError(f"unknown catalog format {fmt!r}: use one of {', '.join(FORMATS)}")
    chosen = detect_feed(path) if fmt == "auto" else fmt
    if chosen not in FEED_FORMATS:
        return None
    return chosen, FEED_FORMATS[chosen](path, options or FeedOptions())
