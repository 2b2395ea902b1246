"""The product-page widget (GET /widget.js, CORS for allowed origins only) and the offline API
docs (GET /docs from the swagger-ui-py package's files, under the page's CSP).

The browser tests serve a shop page from a second loopback origin (another port of 127.0.0.1)
and check that the widget renders there, and renders nothing on an origin not allowed."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from uvicorn_server import serving_on

from jewelrec.cli import main
from jewelrec.recommend import Recommendation, Result
from jewelrec.server.app import create_app
from jewelrec.server.embed import DOCS_ASSETS, check_origin

SHOP = "http://127.0.0.1:9"  # an allowed origin for the in-process tests (nothing listens)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def client(tiny_home) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_home, allow_origins=[SHOP + "/"])) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def product_id(client) -> str:
    return client.get("/api/examples").json()[0]["id"]


# -- widget.js and CORS, in process --------------------------------------------------------------

def test_widget_js_is_a_static_script(client) -> None:
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    body = response.text
    assert "data-jewelrec-similar" in body and "/similar?k=" in body
    assert "innerHTML" not in body and "textContent" in body


def test_cors_answers_an_allowed_origin_on_the_widget_route_only(client, product_id) -> None:
    similar = f"/api/products/{product_id}/similar?k=3"
    allowed = client.get(similar, headers={"Origin": SHOP})
    assert allowed.status_code == 200 and len(allowed.json()["results"]) == 3
    assert allowed.headers["access-control-allow-origin"] == SHOP
    refused = client.get(similar, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    preflight = client.options(similar, headers={
        "Origin": SHOP, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == SHOP
    for origin, method, said in ((SHOP, "DELETE", "method"), ("http://evil.example", "GET",
                                                                "origin")):
        refused = client.options(similar, headers={
            "Origin": origin, "Access-Control-Request-Method": method})
        assert refused.status_code == 400 and refused.headers["content-type"].startswith(
            "application/json")
        assert f"its {said} may not call this route" in refused.json()["detail"]
    # Other routes stay same-origin, even for an allowed origin.
    for path in ("/api/facets", f"/api/products/{product_id}", "/healthz"):
        answer = client.get(path, headers={"Origin": SHOP})
        assert "access-control-allow-origin" not in answer.headers, path


def test_no_cors_at_all_without_allow_origin(tiny_home, product_id) -> None:
    with TestClient(create_app(tiny_home)) as plain:
        answer = plain.get(f"/api/products/{product_id}/similar", headers={"Origin": SHOP})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("origin", ["shop.example", "https://shop.example/path", "ftp://x.example",
                                    "https://", "*"])
def test_a_bad_allow_origin_is_one_clear_error(origin: str, capsys) -> None:
    with pytest.raises(Exception, match="expected an origin such as https://shop.example"):
        check_origin(origin)
    code = main(["serve", "--home", "/nonexistent-home", "--allow-origin", origin])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("jewelrec serve: --allow-origin") and "Traceback" not in err


def test_check_origin_normalises() -> None:
    assert check_origin(" HTTPS://Shop.Example:8443/ ") == "https://shop.example:8443"
    # written as browsers send Origin (they compare exactly): no default port, punycode host;
    # kept as typed, these never matched and the widget stayed empty without a word
    assert check_origin("https://shop.example:443") == "https://shop.example"
    assert check_origin("http://shop.example:80") == "http://shop.example"
    assert check_origin("http://shop.example:443") == "http://shop.example:443"
    assert check_origin("https://bijoux-é.example") == "https://xn--bijoux--hya.example"
    assert check_origin("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.parametrize(("origin", "said"), [
    ("https://*.shop.example", "wildcards are not supported"),
    ("https://shop.example:99999", "expected an origin"),
    ("https://user@shop.example", "expected an origin"),
])
def test_an_origin_that_could_never_match_is_refused(origin: str, said: str) -> None:
    with pytest.raises(Exception, match=said):
        check_origin(origin)


# -- /docs offline -------------------------------------------------------------------------------

def test_docs_reference_only_local_assets_and_they_are_served(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references, html
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in references), references
    assert "<script>" not in html and "cdn" not in html.lower()
    for ref in references:
        answer = client.get(ref)
        assert answer.status_code == 200, ref
        assert len(answer.content) > 100, ref
    assert "/docs/assets/swagger-ui-bundle.js" in references
    assert "SwaggerUIBundle" in client.get("/static/docs.js").text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_docs_assets_are_an_allowlist(client) -> None:
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2F__init__.py").status_code == 404
    assert client.get("/docs/assets/swagger-initializer.js").status_code == 404
    assert set(DOCS_ASSETS) >= {"swagger-ui.css", "swagger-ui-bundle.js"}


# -- in Chromium: a shop page on another origin ---------------------------------------------------

def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def origins(tiny_home, tmp_path_factory) -> Iterator[dict[str, str]]:
    """{'api', 'shop', 'other', 'hostile'}: jewelrec on one port allowing 'shop' only, a stub
    with hostile catalog text on another; 'shop' and 'other' serve the same static shop page
    from two more ports of 127.0.0.1."""
    site = tmp_path_factory.mktemp("shop-site")
    urls = {"site": str(site)}
    servers = []
    for name in ("shop", "other"):
        handler = lambda *a, **k: _Quiet(*a, directory=str(site), **k)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls[name] = f"http://127.0.0.1:{server.server_address[1]}"
    sockets = {name: _free_socket() for name in ("api", "hostile")}
    urls.update({name: f"http://127.0.0.1:{s.getsockname()[1]}" for name, s in sockets.items()})
    app = create_app(tiny_home, allow_origins=[urls["shop"]])
    hostile = create_app(recommender=HostileRecommender(), allow_origins=[urls["shop"]],
                         reload_interval_s=3600)
    try:
        with serving_on(app, sockets["api"]), serving_on(hostile, sockets["hostile"]):
            yield urls
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


class HostileRecommender:
    """Answers "similar" with catalog text a shop's page must show as text, never run."""

    index_version = "hostile-1"
    home = None

    class store:  # noqa: N801 - stands in for the CatalogStore
        @staticmethod
        def get(product_id: str) -> object:
            return object()

    def reload_if_changed(self) -> bool:
        return False

    def similar_to_product(self, product_id: str, *, k: int, filters: object) -> Recommendation:
        def result(i: int, title: str, url: str) -> Result:
            return Result(id=f"h{i}", title=title, type="ring", brand=None, price=5.0 + i,
                          currency="USD", url=url, image="aa/none.png", score=0.9)

        return Recommendation(photo=product_id, type="ring", type_confidence=None, results=[
            result(1, '<img src=x onerror="window.pwned=1">Evil', "javascript:window.pwned=2"),
            result(2, "Fine & <b>bold</b>", "https://shop.example/h2"),
            result(3, "Data", "data:text/html,<script>window.pwned=3</script>"),
        ][:k])


@pytest.fixture(scope="module")
def browser(origins):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _shop_page(origins: dict[str, str], product_id: str, api: str = "api") -> str:
    page = Path(origins["site"]) / f"product-{api}.html"
    page.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>A shop</title>"
        f"<script src='{origins[api]}/widget.js' defer></script></head><body>"
        "<h1>Our product</h1>"
        f"<div id='similar' data-jewelrec-similar='{product_id}' data-k='4'></div>"
        "</body></html>", encoding="utf-8")
    return "/" + page.name


@pytest.mark.browser
@pytest.mark.slow
def test_widget_renders_on_an_allowed_origin_and_not_on_another(
    browser, origins, product_id
) -> None:
    path = _shop_page(origins, product_id)
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(origins["shop"] + path)
    page.wait_for_selector("#similar .jewelrec-card")
    cards = page.eval_on_selector_all("#similar .jewelrec-card", """cards => cards.map(c => ({
        id: c.dataset.id, href: c.href, target: c.target, rel: c.rel,
        title: c.querySelector('.jewelrec-title').textContent,
        price: c.querySelector('.jewelrec-price').textContent,
        img: c.querySelector('img') && c.querySelector('img').src}))""")
    assert len(cards) == 4 and product_id not in {c["id"] for c in cards}
    for card in cards:
        assert card["href"].startswith(("http://", "https://")) and card["title"]
        assert card["target"] == "_blank" and "noopener" in card["rel"]
        assert card["img"].startswith(origins["api"] + "/images/")
        assert re.search(r"\d", card["price"])
    page.wait_for_function(
        "() => [...document.querySelectorAll('#similar img')]"
        ".every(i => i.complete && i.naturalWidth > 0)")

    # an element a theme adds later is filled as it appears (it never was); a busy server's
    # 503 is asked again after its Retry-After
    other_id = json.dumps(cards[0]["id"])
    busy = {"left": 1}

    def once_busy(route):
        if busy["left"]:
            busy["left"] -= 1
            route.fulfill(status=503, headers={"Retry-After": "0",
                                               "Access-Control-Allow-Origin": origins["shop"]},
                          json={"detail": "busy"})
        else:
            route.continue_()

    page.route("**/api/products/*/similar?k=2", once_busy)
    page.evaluate(f"""() => {{ const late = document.createElement('div'); late.id = 'late';
        late.dataset.jewelrecSimilar = {other_id}; late.dataset.k = '2';
        document.body.appendChild(late); }}""")
    page.wait_for_selector("#late .jewelrec-card")
    assert len(page.query_selector_all("#late .jewelrec-card")) == 2 and busy["left"] == 0
    # a new product in the same slot (a shop's client-side navigation) is filled again
    page.evaluate(f"() => {{ document.querySelector('#similar').dataset.jewelrecSimilar = "
                  f"{other_id}; }}")
    page.wait_for_function(f"""() => {{ const el = document.querySelector('#similar');
        return el.dataset.jewelrecFor === {other_id} && el.dataset.jewelrecState === 'shown'; }}""")
    shown = page.eval_on_selector_all("#similar .jewelrec-card", "cs => cs.map(c => c.dataset.id)")
    assert shown and json.loads(other_id) not in shown
    assert errors == []

    other = context.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(origins["other"] + path)
    other.wait_for_function(
        "() => document.querySelector('#similar').dataset.jewelrecState === 'failed'")
    assert other.query_selector_all("#similar .jewelrec-card") == []
    context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_docs_render_in_chromium_under_the_csp_with_no_network(browser, origins) -> None:
    context = browser.new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(origins["api"] + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")  # the operations of /openapi.json
    assert "/api/recommend" in page.inner_text(".swagger-ui")
    assert problems == []
    assert requested and all(url.startswith(origins["api"]) for url in requested), requested
    context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_widget_shows_hostile_catalog_text_as_text_and_drops_bad_links(browser, origins) -> None:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(origins["shop"] + _shop_page(origins, "any", api="hostile"))
    page.wait_for_function("() => document.querySelectorAll('#similar .jewelrec-card').length == 3")
    cards = page.eval_on_selector_all("#similar .jewelrec-card", """cards => cards.map(c => ({
        tag: c.tagName, href: c.getAttribute('href'),
        title: c.querySelector('.jewelrec-title').textContent}))""")
    assert cards[0] == {"tag": "DIV", "href": None,
                        "title": '<img src=x onerror="window.pwned=1">Evil'}
    assert cards[1] == {"tag": "A", "href": "https://shop.example/h2",
                        "title": "Fine & <b>bold</b>"}
    assert cards[2]["tag"] == "DIV" and cards[2]["href"] is None
    assert page.query_selector_all("#similar b, #similar script, #similar img[src='x']") == []
    assert page.evaluate("() => window.pwned") is None and errors == []
    page.close()
