"""A catalog given as an http(s) URL (a shop's live feed address): fetched into a temporary
file under the same guards as catalog images (public addresses only unless allowed, redirects
checked, a size and time limit), then read like a local file. Image paths relative to such a
feed have no folder to stand in and are rejected as not found."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jewelrec.catalog.fetch import FetchError, fetch_url
from jewelrec.errors import CatalogError
from jewelrec.links import is_http_ref

MAX_FEED_BYTES = 1024 * 1024 * 1024  # a 1 GiB feed is ~1M products; larger is not a feed
FEED_TIMEOUT_S = 60.0  # per connect/read; the whole download gets 3x this


@contextmanager
def local_catalog(
    source: str | os.PathLike, *, allow_private: bool = False
) -> Iterator[Path]:
    """The path to read: `source` itself, or a temporary copy of the feed at that URL."""
    if not (isinstance(source, str) and is_http_ref(source)):
        yield Path(source)
        return
    try:
        data = fetch_url(source, accept="*/*", allow_private=allow_private,
                         timeout=FEED_TIMEOUT_S, max_bytes=MAX_FEED_BYTES)
    except FetchError as exc:
        raise CatalogError(f"catalog feed not fetched: {exc}") from exc
    # Keep the URL's file name: its extension helps tell CSV from JSON Lines.
    name = Path(unquote(urlsplit(source).path)).name or "feed"
    name = "".join(c for c in name if c.isalnum() or c in "._-")[:100] or "feed"
    with tempfile.TemporaryDirectory(prefix="jewelrec-feed-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            yield path
        except CatalogError as exc:  # named by the address the operator gave, not a gone copy
            raise CatalogError(str(exc).replace(str(path), source)) from exc
