"""Download a catalog image from an http(s) URL, refusing what a catalog must not make us fetch.

A catalog comes from outside, so its image URLs are untrusted: one could point at the cloud
metadata service (169.254.169.254), a database on localhost, or a file of endless bytes. So:

- http and https only, on every redirect hop too (redirects are followed by hand, at most
  MAX_REDIRECTS, each new URL checked like the first);
- the host name is resolved here and *every* address it resolves to must be public (not
  loopback, private, link-local, multicast, reserved or unspecified), unless
  allow_private=True; the connection then goes to one of those checked addresses, so a second
  DNS answer cannot swap in another (DNS rebinding). TLS still verifies the certificate
  against the host name;
- `timeout` seconds to connect and for each read, and the whole download must end within
  TOTAL_TIME_FACTOR times that (a server trickling bytes cannot hold the ingest forever);
- at most `max_bytes`, read in chunks: a larger Content-Length is refused before reading, and
  a body that grows past the limit is cut off at once;
- a URL or redirect with non-ASCII characters (WordPress keeps "bagué.jpg") is requested
  percent-encoded, as a browser would;
- environment proxies are not used (a proxy would connect on our behalf to addresses we could
  not check).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, urljoin, urlsplit

from jewelrec.errors import ImageError
from jewelrec.links import link_problem, spaces_encoded

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 5
TOTAL_TIME_FACTOR = 3
CHUNK = 64 * 1024
USER_AGENT = "jewelrec-ingest/0.1"
PRIVATE_HINT = "rerun with --allow-private-urls to allow it"


class FetchError(ImageError):
    """An image URL could not or must not be downloaded; the message says which and why."""


def fetch_image(
    url: str,
    *,
    allow_private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """The body of `url` (following up to MAX_REDIRECTS redirects), or FetchError."""
    return fetch_url(url, allow_private=allow_private, timeout=timeout, max_bytes=max_bytes)


def fetch_url(
    url: str,
    *,
    accept: str = "image/*",
    allow_private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """Any body (a product feed: accept="*/*") under the same guards as an image."""
    fetched = fetch_conditional(url, accept=accept, allow_private=allow_private,
                                timeout=timeout, max_bytes=max_bytes)
    if fetched.body is None:  # cannot happen: no validators were sent
        raise FetchError(f"no body for {url}")
    return fetched.body


@dataclass(frozen=True)
class Fetched:
    """A download's body, or None when the server said it is unchanged (304), and the
    validators to send next time (ETag, Last-Modified), as the server gave them."""

    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None


def fetch_conditional(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = "image/*",
    allow_private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Fetched:
    """`fetch_url` with a conditional request (If-None-Match / If-Modified-Since) when
    validators from an earlier download are given: an unchanged resource costs no body."""
    deadline = time.monotonic() + timeout * TOTAL_TIME_FACTOR
    headers = {"Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        answer = _get_once(current, allow_private, timeout, max_bytes, deadline, headers)
        if answer.location is None:
            if answer.status == 304 and (etag or last_modified):
                return Fetched(None, etag, last_modified)
            if answer.status != 200:
                raise FetchError(f"HTTP {answer.status} for {current}")
            return Fetched(answer.body, answer.etag, answer.last_modified)
        current = spaces_encoded(urljoin(current, _location_text(answer.location)))
    raise FetchError(f"more than {MAX_REDIRECTS} redirects from {url}")


def check_address(address: str, *, allow_private: bool = False) -> str | None:
    """None if we may connect to this IP address, else why not."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return None
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    ):
        if flag:
            return f"{label} address {ip} refused ({PRIVATE_HINT})"
    if not ip.is_global:
        return f"non-public address {ip} refused ({PRIVATE_HINT})"
    return None


def resolve_checked(host: str, port: int, *, allow_private: bool = False) -> list[str]:
    """Every address `host` resolves to, each checked; FetchError if any one is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    for address in addresses:
        problem = check_address(address, allow_private=allow_private)
        if problem:
            raise FetchError(f"{host}: {problem}")
    return addresses


class _Answer(NamedTuple):
    status: int
    location: str | None = None  # where a redirect points
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


def _get_once(
    url: str, allow_private: bool, timeout: float, max_bytes: int, deadline: float,
    headers: dict[str, str],
) -> _Answer:
    """One request, no redirects followed; `url` checked first (each redirect hop too)."""
    problem = link_problem(url)
    if problem:
        raise FetchError(problem)
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    addresses = resolve_checked(host, port, allow_private=allow_private)
    connection = _open_connection(scheme, host, port, addresses, timeout)
    target = request_target(parts.path, parts.query)
    try:
        connection.request("GET", target, headers={
            "User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers,
        })
        response = connection.getresponse()
        if response.status in {301, 302, 303, 307, 308}:
            location = response.getheader("Location")
            if not location:
                raise FetchError(f"HTTP {response.status} without a Location for {url}")
            return _Answer(response.status, location)
        if response.status != 200:
            return _Answer(response.status)
        body = _read_limited(response, connection, url, max_bytes, timeout, deadline)
        return _Answer(200, None, body, _header(response, "ETag"),
                       _header(response, "Last-Modified"))
    except FetchError:
        raise
    except TimeoutError as exc:
        raise FetchError(f"timed out after {timeout:g}s fetching {url}") from exc
    except ssl.SSLError as exc:
        raise FetchError(f"TLS error fetching {url}: {exc.reason or exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"could not fetch {url}: {exc or type(exc).__name__}") from exc
    except (UnicodeError, ValueError) as exc:  # a header or URL http.client cannot send
        raise FetchError(f"could not fetch {url}: {exc}") from exc
    finally:
        connection.close()


def _header(response: http.client.HTTPResponse, name: str) -> str | None:
    """A validator header as sent, if it is short printable text (it goes back verbatim)."""
    value = (response.getheader(name) or "").strip()
    if not value or len(value) > 200 or not value.isprintable():
        return None
    return value


def request_target(path: str, query: str) -> str:
    """The path and query as sent: characters a request line cannot carry (non-ASCII, spaces)
    percent-encoded as UTF-8, escapes already there kept."""
    reserved = "/%:@!$&'()*+,;=-._~"
    target = quote(path or "/", safe=reserved)
    return target + (f"?{quote(query, safe=reserved + '?')}" if query else "")


def _location_text(location: str) -> str:
    """A Location header as its sender meant it: http.client reads header bytes as Latin-1, so
    a server sending UTF-8 ("/img/bagué.jpg") is read back as UTF-8 where that decodes."""
    try:
        return location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return location


def _read_limited(
    response: http.client.HTTPResponse, connection: http.client.HTTPConnection, url: str,
    max_bytes: int, timeout: float, deadline: float,
) -> bytes:
    """The body, in what each read brings (`read1`: a trickling server cannot make one read
    wait for a whole chunk), every read allowed only the time left before the deadline."""
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url} is {int(length):,} bytes, over the "
                         f"{max_bytes:,}-byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"download of {url} took too long")
        if connection.sock is not None:
            connection.sock.settimeout(min(timeout, left))
        try:
            chunk = response.read1(CHUNK)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise FetchError(f"download of {url} took too long") from None
            raise
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(f"{url} is over the {max_bytes:,}-byte limit")
        chunks.append(chunk)


def _open_connection(
    scheme: str, host: str, port: int, addresses: list[str], timeout: float
) -> http.client.HTTPConnection:
    """An http.client connection that connects to an address we checked, not a fresh lookup."""
    if scheme == "https":
        return _PinnedHTTPS(host, port, timeout=timeout, addresses=addresses)
    return _PinnedHTTP(host, port, timeout=timeout, addresses=addresses)


def _connect_any(addresses: list[str], port: int, timeout: float) -> socket.socket:
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, timeout: float, addresses: list[str]) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, timeout: float, addresses: list[str]) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._addresses = addresses

    def connect(self) -> None:
        sock = _connect_any(self._addresses, self.port, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
