"""Remote catalog images: address checks, limits, redirects, and ShopStyle ingest over HTTP.

Every download here goes to an http.server on 127.0.0.1 started by the test (port 0) and
stopped after; nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jewelrec.catalog.fetch as fetch
from jewelrec.catalog.fetch import FetchError, check_address, fetch_image
from jewelrec.catalog.ingest import ingest
from jewelrec.catalog.store import CatalogStore
from jewelrec.home import Home

SHOPSTYLE_SAMPLE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "shopstyle"
    / "products-sample.json"
)
CDN = "https://img.shopstyle-cdn.com"


def png_bytes(name: str) -> bytes:
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class ImageHost:
    base: str
    port: int
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    host: ImageHost  # set on the per-test subclass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.host.requests.append(self.path)
        path = self.path.split("?")[0]
        if path.startswith("/img/"):
            self._send(png_bytes(path))
        elif path == "/big":
            self._send(b"x" * 5000)
        elif path == "/endless":  # no Content-Length: the body ends when the server closes
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"y" * 1000)
        elif path == "/slow":
            time.sleep(1.5)
            self._send(png_bytes(path))
        elif path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", path[len("/to/"):].replace("_", "/"))
            self.end_headers()
        elif path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif path == "/accented":  # a redirect to a name as WordPress keeps it, sent as UTF-8
            self.send_response(302)
            self.send_header("Location", "/img/bagué.png".encode().decode("latin-1"))
            self.end_headers()
        elif path == "/spaced":  # a redirect to a file name with a space, as some CMSs send
            self.send_response(302)
            self.send_header("Location", "/img/gold ring.png")
            self.end_headers()
        elif path == "/trickle":  # a whole image promised, 100 bytes every 0.1 s
            body = png_bytes(path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 100):
                self.wfile.write(body[start:start + 100])
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    handler.host = ImageHost(f"http://127.0.0.1:{port}", port)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield handler.host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "224.0.0.1",
     "0.0.0.0", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
     "ff02::1"],
)
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    problem = check_address(address)
    assert problem and "refused" in problem and "--allow-private-urls" in problem
    assert check_address(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert check_address(address) is None


def test_fetch_downloads_an_image_when_private_addresses_are_allowed(
    image_host: ImageHost,
) -> None:
    data = fetch_image(f"{image_host.base}/img/a.png?size=best", allow_private=True)
    assert data == png_bytes("/img/a.png")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_fetch_refuses_loopback_by_default(image_host: ImageHost, host: str) -> None:
    with pytest.raises(FetchError, match="loopback address .* refused"):
        fetch_image(f"http://{host}:{image_host.port}/img/a.png")
    assert image_host.requests == []  # refused before connecting


def test_redirects_are_followed_and_every_hop_is_checked(
    image_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = fetch_image(f"{image_host.base}/to/_img_b.png", allow_private=True)
    assert ok == png_bytes("/img/b.png")
    with pytest.raises(FetchError, match="not http"):
        fetch_image(f"{image_host.base}/to/ftp:__example.com_a.png", allow_private=True)
    with pytest.raises(FetchError, match="redirects"):
        fetch_image(f"{image_host.base}/loop", allow_private=True)

    # Trust 127.0.0.1 only: a redirect to another loopback address must still be refused.
    real_check = fetch.check_address
    monkeypatch.setattr(fetch, "check_address", lambda address, allow_private=False: (
        None if address == "127.0.0.1" else real_check(address, allow_private=allow_private)))
    hop = f"http:__127.0.0.2:{image_host.port}_img_c.png"
    with pytest.raises(FetchError, match="127.0.0.2.*refused"):
        fetch_image(f"{image_host.base}/to/{hop}")


def test_size_limit_stops_large_downloads(image_host: ImageHost) -> None:
    with pytest.raises(FetchError, match="over the 1,000-byte limit"):
        fetch_image(f"{image_host.base}/big", allow_private=True, max_bytes=1000)
    with pytest.raises(FetchError, match="over the 10,000-byte limit"):
        fetch_image(f"{image_host.base}/endless", allow_private=True, max_bytes=10_000)


def test_slow_servers_time_out(image_host: ImageHost) -> None:
    with pytest.raises(FetchError, match="timed out"):
        fetch_image(f"{image_host.base}/slow", allow_private=True, timeout=0.3)


def test_urls_with_accented_or_spaced_names_are_fetched_percent_encoded(
    image_host: ImageHost,
) -> None:
    """'bagué.jpg' (WordPress keeps accented names) crashed the whole ingest with a
    UnicodeEncodeError; now it is requested as a browser does, in a link and in a redirect."""
    assert fetch_image(f"{image_host.base}/img/bagué.png?taille=moyenne",
                       allow_private=True) == png_bytes("/img/bagu%C3%A9.png")
    assert image_host.requests[-1] == "/img/bagu%C3%A9.png?taille=moyenne"
    assert fetch_image(f"{image_host.base}/accented", allow_private=True) == png_bytes(
        "/img/bagu%C3%A9.png")
    assert image_host.requests[-1] == "/img/bagu%C3%A9.png"
    assert fetch_image(f"{image_host.base}/spaced", allow_private=True) == png_bytes(
        "/img/gold%20ring.png")
    assert image_host.requests[-1] == "/img/gold%20ring.png"


def test_a_trickling_server_is_cut_off_at_the_total_time_limit(image_host: ImageHost) -> None:
    """Each read waited for a whole 64 KiB chunk, so the deadline was only checked between
    chunks: a server sending 100 bytes a second held an ingest worker for 93 s, not 30."""
    start = time.monotonic()
    with pytest.raises(FetchError, match="took too long"):
        fetch_image(f"{image_host.base}/trickle", allow_private=True, timeout=0.2)
    assert time.monotonic() - start < 0.2 * fetch.TOTAL_TIME_FACTOR + 0.5


def test_http_errors_and_unknown_hosts_are_reported(image_host: ImageHost) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_image(f"{image_host.base}/missing.png", allow_private=True)
    with pytest.raises(FetchError, match="cannot resolve host"):
        fetch_image("http://no-such-host.invalid/a.png")


# -- ingesting the ShopStyle sample with its images served locally ---------------------------

@pytest.fixture
def shopstyle_catalog(tmp_path: Path, image_host: ImageHost) -> Path:
    if not SHOPSTYLE_SAMPLE.exists():
        pytest.skip(f"ShopStyle sample not found at {SHOPSTYLE_SAMPLE} (../shared/data is absent)")
    text = SHOPSTYLE_SAMPLE.read_text().replace(CDN, f"{image_host.base}/img")
    path = tmp_path / "products.json"
    path.write_text(text)
    return path


def test_shopstyle_ingest_fetches_images_from_an_allowed_private_host(
    shopstyle_catalog: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    home = Home(tmp_path / "home")
    summary = ingest(shopstyle_catalog, home, fetch_images=True, allow_private_urls=True,
                     progress=False)
    assert summary.format == "shopstyle" and summary.ok, summary.to_dict()
    assert summary.added == 3 and summary.images_added == 4
    store = CatalogStore.open(home)
    hoop = store.get("780112102")
    assert (hoop.type, hoop.brand, hoop.metal, hoop.price) == ("earring", "Madewell", "gold",
                                                               29.5)
    assert len(hoop.images) == 2
    source = json.loads(shopstyle_catalog.read_text())["products"][0]["image"]
    best = source["sizes"]["Best"]["url"].removeprefix(image_host.base)
    assert home.image_path(hoop.image).read_bytes() == png_bytes(best)
    assert store.facets()["types"] == ["earring", "necklace", "ring"]

    fetched = len(image_host.requests)
    again = ingest(shopstyle_catalog, home, fetch_images=True, allow_private_urls=True,
                   progress=False)
    assert again.unchanged == 3 and len(image_host.requests) == fetched  # not downloaded again


def test_shopstyle_ingest_refuses_a_private_host_without_the_flag(
    shopstyle_catalog: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    summary = ingest(shopstyle_catalog, tmp_path / "home", fetch_images=True, progress=False)
    assert summary.added == 0 and [r.row for r in summary.rejected] == [1, 2, 3]
    for rejection in summary.rejected:
        assert "loopback address 127.0.0.1 refused" in rejection.reason
        assert "--allow-private-urls" in rejection.reason
    assert image_host.requests == []


def test_shopstyle_ingest_without_fetch_images_says_how_to_fetch(
    shopstyle_catalog: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    summary = ingest(shopstyle_catalog, tmp_path / "home", progress=False)
    assert summary.added == 0 and len(summary.rejected) == 3
    assert all(r.reason.startswith("remote image: rerun with --fetch-images")
               for r in summary.rejected)
    assert image_host.requests == []
