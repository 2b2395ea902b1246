"""The one rule for links that come from outside (a catalog's product pages and image URLs, a
feed's address, a redirect): http or https, with a host, nothing a browser or http.client would
read differently (no spaces or control characters). Ingest shows and stores only such links,
the fetcher downloads only them, pages link only to them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

HTTP_SCHEMES = frozenset({"http", "https"})
# what http.client refuses in a request target, and what would change a link's meaning on a page
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def is_http_ref(ref: str) -> bool:
    """Whether `ref` names something on the web (http or https) rather than a file: remote
    references are then checked by `link_problem` (or the fetcher), not read from disk."""
    try:
        scheme = urlsplit(ref).scheme
    except ValueError:  # a malformed host ("http://[x"): still meant for the web, and refused there
        scheme = ref.partition(":")[0].strip()
    return scheme.lower() in HTTP_SCHEMES


def spaces_encoded(ref: str) -> str:
    """An http(s) reference with its inner spaces written as %20, as a browser sends them: shop
    exports carry image names such as "gold ring.jpg"; other references are returned as given."""
    return ref.replace(" ", "%20") if is_http_ref(ref) else ref


def link_problem(url: str) -> str | None:
    """None when `url` is an http(s) link with a host, else why not (a sentence)."""
    if _CONTROL.search(url):
        return f"bad URL {url!r}: contains spaces or control characters"
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # the port raises when no number, or too big
    except ValueError:
        return f"bad URL {url!r}: malformed"
    if parts.scheme.lower() not in HTTP_SCHEMES:
        return f"URL is not http(s): {url!r}"
    if not host:
        return f"URL has no host: {url!r}"
    return None


def safe_link(url: str | None) -> str | None:
    """`url` when a page may link to it (see `link_problem`), else None."""
    return url if url and link_problem(url) is None else None
