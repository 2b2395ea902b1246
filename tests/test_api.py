"""The HTTP API (jewelrec.server): the contract, filters, bad input, safety and live index reloads.

Most tests talk to one app over the session's tiny data home (real models and index). A few use
a stub Recommender where the real one cannot be made to misbehave on purpose (a crash, a slow
query, a catalog title that tries to inject HTML).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jewelrec.catalog.schema import Product
from jewelrec.home import Home
from jewelrec.recommend import Recommendation, Result
from jewelrec.server.app import STATIC_DIR, create_app

DOCUMENTED_KEYS = {"photo", "type", "type_confidence", "results"}
DOCUMENTED_RESULT_KEYS = {"id", "title", "type", "brand", "price", "currency", "url", "image",
                          "score"}
# these have defaults: not required in the spec
RESULT_KEYS = DOCUMENTED_RESULT_KEYS | {"why", "metal", "stone", "predicted"}


@pytest.fixture(scope="module")
def client(tiny_home):
    with TestClient(create_app(tiny_home)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def facets(client) -> dict:
    return client.get("/api/facets").json()


def post_photo(client, photo: bytes, *, name="photo.jpg", mime="image/jpeg", **fields):
    data = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in fields.items()}
    return client.post("/api/recommend", files={"photo": (name, photo, mime)}, data=data)


def png_bytes(width=64, height=48, colour=(200, 160, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


# -- the contract ------------------------------------------------------------------------------
def test_healthz_reports_products_and_index_version(client):
    answer = client.get("/healthz").json()
    assert answer["status"] == "ok"
    assert answer["products"] > 0
    assert answer["index_version"] and answer["index_refused"] is None


def test_recommend_has_the_cli_json_shape_plus_what_the_page_needs(client, tiny_query_photo):
    response = post_photo(client, tiny_query_photo, name="shopper.jpg", k=4)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) >= DOCUMENTED_KEYS | {"crop", "type_probabilities", "photo_size"}
    assert answer["photo"] == "shopper.jpg"
    assert answer["type"] in answer["type_probabilities"]
    assert 0 < answer["type_confidence"] <= 1
    assert sum(answer["type_probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert 1 <= len(answer["results"]) <= 4
    for result in answer["results"]:
        assert set(result) >= RESULT_KEYS | {"image_url"}
        assert any(w.startswith("looks ") and w.endswith("% alike") for w in result["why"])
        assert result["image_url"].startswith("/images/")
    size = answer["photo_size"]
    with Image.open(io.BytesIO(tiny_query_photo)) as img:
        assert (size["width"], size["height"]) == img.size
    # the shopper photo shows one piece on a plain background: the piece is found and reported
    assert answer["crop"] is not None
    x0, y0, x1, y1 = answer["crop"]
    assert 0 <= x0 < x1 <= size["width"] and 0 <= y0 < y1 <= size["height"]
    assert (x1 - x0) * (y1 - y0) < size["width"] * size["height"]


def test_recommend_answers_what_the_recommender_answers(client, tiny_query_photo):
    """The server adds fields but re-implements nothing: same products, same order, same scores."""
    direct = client.app.state.shop.recommender.recommend(tiny_query_photo, k=5).to_dict()
    answer = post_photo(client, tiny_query_photo, k=5).json()
    assert answer["type"] == direct["type"]
    assert [{k: r[k] for k in RESULT_KEYS} for r in answer["results"]] == [
        {**r, "score": pytest.approx(r["score"], abs=1e-6)} for r in direct["results"]
    ]


def test_result_images_are_served(client, tiny_query_photo):
    answer = post_photo(client, tiny_query_photo, k=2).json()
    response = client.get(answer["results"][0]["image_url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/")
    Image.open(io.BytesIO(response.content)).verify()


def test_max_price_is_respected_and_k_results_come_back_when_enough_match(
    client, tiny_query_photo
):
    products = client.app.state.shop.recommender.store.all_products()
    ring_prices = sorted(p.price for p in products if p.type == "ring")
    limit = ring_prices[2]  # exactly three rings at or under the limit
    answer = post_photo(client, tiny_query_photo, k=3, type="ring", max_price=limit).json()
    assert len(answer["results"]) == 3
    assert all(r["price"] <= limit and r["type"] == "ring" for r in answer["results"])


def test_min_price_brand_and_metal_filters(client, tiny_query_photo, facets):
    store = client.app.state.shop.recommender.store
    brand = facets["brands"][0]
    brand_prices = sorted(p.price for p in store.all_products() if p.brand == brand)
    middle = brand_prices[len(brand_prices) // 2]  # at least one product of the brand passes
    expected = {p.id for p in store.all_products() if p.price >= middle and p.brand == brand}
    answer = post_photo(
        client, tiny_query_photo, k=20, type="any", min_price=middle, brand=[brand]
    ).json()
    assert expected and len(expected) <= 20
    assert {r["id"] for r in answer["results"]} == expected  # exactly those, and all of them
    assert all(r["price"] >= middle and r["brand"] == brand for r in answer["results"])
    metal = facets["metals"][0]
    answer = post_photo(client, tiny_query_photo, k=20, type="any", metal=[metal]).json()
    assert answer["results"]
    assert all(store.get(r["id"]).metal == metal for r in answer["results"])
    shouted = post_photo(client, tiny_query_photo, k=20, type="any",  # as a shopper types it
                         metal=[f" {metal.upper()} "]).json()
    assert [r["id"] for r in shouted["results"]] == [r["id"] for r in answer["results"]]
    # a brand in another case is the catalog's; one the catalog lacks is named, not an empty
    # answer that says nothing (metal=plutonium, brand=aurelia found nothing, with a 200)
    lower = post_photo(client, tiny_query_photo, k=20, type="any", brand=[brand.lower()]).json()
    assert lower["results"] and {r["brand"] for r in lower["results"]} == {brand}
    for field, value in (("metal", "plutonium"), ("brand", "No Such House")):
        refused = post_photo(client, tiny_query_photo, k=5, **{field: [value]})
        assert refused.status_code == 422
        assert f"unknown {field} {value!r}: use one of" in refused.json()["detail"]
        searched = client.get("/api/search", params={"q": "ring", field: value})
        assert searched.status_code == 422


def test_type_can_be_chosen_or_opened_to_every_type(client, tiny_query_photo, facets):
    for ptype in facets["types"]:
        answer = post_photo(client, tiny_query_photo, k=5, type=ptype).json()
        assert answer["searched_types"] == [ptype]
        assert {r["type"] for r in answer["results"]} == {ptype}
    answer = post_photo(client, tiny_query_photo, k=50, type="any").json()
    assert set(answer["searched_types"]) >= set(facets["types"])
    assert len({r["type"] for r in answer["results"]}) > 1


def test_crop_is_searched_and_reported(client, tiny_query_photo):
    answer = post_photo(client, tiny_query_photo, k=2, crop="10,12,120,100").json()
    assert answer["crop"] == [10, 12, 120, 100]
    width, height = answer["photo_size"]["width"], answer["photo_size"]["height"]
    oversize = f"5,5,{width + 500},{height + 9}"
    answer = post_photo(client, tiny_query_photo, k=2, crop=oversize).json()
    assert answer["crop"] == [5, 5, width, height]  # clipped to the photo


def test_facets_describe_the_catalog(client, facets):
    products = client.app.state.shop.recommender.store.all_products()
    assert set(facets["types"]) == {p.type for p in products}
    assert set(facets["brands"]) == {p.brand for p in products if p.brand}
    assert facets["price_min"] == pytest.approx(min(p.price for p in products))
    assert facets["price_max"] == pytest.approx(max(p.price for p in products))
    assert facets["currency"] == "USD"


def test_examples_span_types_and_their_images_are_served(client):
    examples = client.get("/api/examples").json()
    assert 4 <= len(examples) <= 12
    assert len({e["type"] for e in examples}) >= 3
    assert client.get(examples[0]["image_url"]).status_code == 200


def test_product_and_more_like_this(client, tiny_query_photo):
    first = post_photo(client, tiny_query_photo, k=1).json()["results"][0]
    product = client.get(f"/api/products/{first['id']}").json()
    assert product["id"] == first["id"] and product["title"] == first["title"]
    assert product["image_url"] == product["image_urls"][0]

    similar = client.get(f"/api/products/{first['id']}/similar", params={"k": 4}).json()
    assert set(similar) >= DOCUMENTED_KEYS
    assert similar["results"]
    assert first["id"] not in {r["id"] for r in similar["results"]}
    assert {r["type"] for r in similar["results"]} == {product["type"]}
    for r in similar["results"]:  # the source product's own data is the evidence
        assert f"{product['type']} like yours" in r["why"]
        same = bool(product["brand"]) and r["brand"] == product["brand"]
        assert ("same brand" in r["why"]) == same

    cheap = sorted(r["price"] for r in similar["results"])[0]
    limited = client.get(
        f"/api/products/{first['id']}/similar", params={"k": 4, "max_price": cheap}
    ).json()
    assert limited["results"] and all(r["price"] <= cheap for r in limited["results"])


def test_unknown_product_is_404(client):
    for path in ("/api/products/no-such-id", "/api/products/no-such-id/similar"):
        response = client.get(path)
        assert response.status_code == 404
        assert "no-such-id" in response.json()["detail"]


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/recommend", "/api/products/{product_id}",
                 "/api/products/{product_id}/similar", "/api/facets", "/api/examples", "/healthz"):
        assert path in spec["paths"], path
    recommendation = spec["components"]["schemas"]["Recommendation"]
    assert set(recommendation["required"]) >= DOCUMENTED_KEYS
    result = spec["components"]["schemas"]["Result"]
    assert set(result["required"]) >= DOCUMENTED_RESULT_KEYS


# -- the page ----------------------------------------------------------------------------------
def test_page_and_its_assets_are_served_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP forbids it anyway
    for path in ("/", "/static/app.js", "/static/style.css", "/api/facets"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "javascript" in client.get("/static/app.js").headers["content-type"]


def test_page_script_never_writes_html():
    """Catalog text goes into the DOM as text: the script has no HTML-writing sinks at all."""
    script = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "ten"}, "k"),
        ({"min_price": -1}, "min_price"),
        ({"max_price": "nan"}, "max_price"),
        ({"max_price": "inf"}, "max_price"),
        ({"min_price": 50, "max_price": 10}, "min_price"),
        ({"type": "spoon"}, "spoon"),
        ({"crop": "1,2,3"}, "crop"),
        ({"crop": "a,b,c,d"}, "crop"),
        ({"crop": "10,10,5,5"}, "crop"),
        ({"crop": "-1,0,5,5"}, "crop"),
        ({"crop": "5000,5000,6000,6000"}, "crop"),
        ({"type": "r" * 201}, "type"),
        ({"brand": ["b" * 201]}, "brand"),
        ({"metal": ["gold"] * 51}, "metal"),
    ],
)
def test_invalid_filters_are_422_with_a_message(client, tiny_query_photo, fields, mentions):
    response = post_photo(client, tiny_query_photo, **fields)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and mentions in detail


def test_invalid_query_parameters_for_similar_are_422(client, tiny_query_photo):
    first = post_photo(client, tiny_query_photo, k=1).json()["results"][0]
    for params in ({"k": 0}, {"min_price": 9, "max_price": 1}, {"type": "spoon"},
                   {"max_price": -3}, {"brand": "b" * 201}, {"brand": ["b"] * 51}):
        response = client.get(f"/api/products/{first['id']}/similar", params=params)
        assert response.status_code == 422, params
        assert isinstance(response.json()["detail"], str)


def test_missing_photo_is_422(client):
    response = client.post("/api/recommend", data={"k": "3"},
                           files={"note": ("note.txt", b"no photo here", "text/plain")})
    assert response.status_code == 422
    assert "photo" in response.json()["detail"]


@pytest.mark.parametrize("sent", [
    {"content": b"\xff\xd8\xff raw jpeg", "headers": {"content-type": "image/jpeg"}},
    {"json": {"photo": "aGVsbG8="}},
    {"data": {"k": "3"}},  # a urlencoded form can carry no file
])
def test_a_photo_not_sent_as_multipart_is_415_saying_how(client, sent):
    """A front-end developer posting the raw photo was told "photo: Field required"."""
    response = client.post("/api/recommend", **sent)
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [b"just some text, not a photo", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", b"<svg></svg>"],
)
def test_non_image_upload_is_415(client, payload):
    response = post_photo(client, payload, name="photo.jpg", mime="image/jpeg")
    assert response.status_code == 415
    assert "photo" in response.json()["detail"]


def test_the_415_message_lists_exactly_the_formats_that_are_accepted(client):
    from jewelrec.imaging.io import READABLE_FORMATS

    detail = post_photo(client, b"plain text").json()["detail"]
    listed = set(re.findall(r"\b[A-Z][A-Za-z]{2,4}\b", detail.split("upload a", 1)[1]))
    assert {name.upper() for name in listed} == set(READABLE_FORMATS)
    for pillow_format in READABLE_FORMATS:  # and each one listed is really accepted
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 160, 40)).save(out, format=pillow_format)
        response = post_photo(client, out.getvalue(), name=f"p.{pillow_format.lower()}")
        assert response.status_code == 200, (pillow_format, response.text)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xd8\xff\xe0" + b"\x00garbage" * 200,  # JPEG magic, nothing after it
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"",
    ],
    ids=["corrupt-jpeg", "corrupt-png", "empty"],
)
def test_corrupt_or_empty_image_is_422(client, payload):
    response = post_photo(client, payload)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_truncated_photo_is_refused_or_read_but_never_crashes(client, tiny_query_photo):
    response = post_photo(client, tiny_query_photo[: len(tiny_query_photo) // 3])
    assert response.status_code in (200, 422)


@pytest.fixture(scope="module")
def small_limit_client(client):
    """Same Recommender, 20 kB upload limit."""
    recommender = client.app.state.shop.recommender
    app = create_app(recommender.home, recommender=recommender, max_upload_bytes=20_000)
    with TestClient(app) as small:
        yield small


def test_photo_over_the_limit_is_413(small_limit_client):
    photo = b"\xff\xd8\xff\xe0" + bytes(30_000)  # over 20 kB, under the multipart allowance
    response = post_photo(small_limit_client, photo)
    assert response.status_code == 413
    assert "MB" in response.json()["detail"]


def test_body_over_the_limit_is_413_by_content_length(small_limit_client):
    response = post_photo(small_limit_client, bytes(200_000))
    assert response.status_code == 413


def test_body_over_the_limit_without_content_length_is_413_while_reading(small_limit_client):
    boundary = "jewelrecboundary"

    def chunks():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; "
               f"filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(20):
            yield bytes(10_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = small_limit_client.post(
        "/api/recommend", content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413


def test_announced_oversize_body_is_refused_before_it_is_read(client):
    """Content-Length over the limit: 413 without reading a single byte of the body."""
    app = create_app(client.app.state.shop.recommender.home, max_upload_bytes=1000)
    sent: list[dict] = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/recommend", "raw_path": b"/api/recommend",
        "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"content-length", b"1000000000"),
                    (b"content-type", b"multipart/form-data; boundary=x")],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


@pytest.mark.parametrize(
    "path",
    [
        "/images/..%2F..%2Fcatalog.sqlite",
        "/images/..%2Fcatalog.sqlite",
        "/images/%2e%2e/catalog.sqlite",
        "/images/..%2Fsettings.json",
        "/images/%2Fetc%2Fpasswd",
        "/images/..%5C..%5Ccatalog.sqlite",
        "/images/",
        "/images/no-such-image.jpg",
        "/images/" + "a" * 300 + ".jpg",  # longer than a file name may be: was a 500
        "/images/" + "ab/" * 2000 + "a.jpg",
    ],
)
def test_images_outside_the_image_folder_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"SQLite" not in response.content and b"root:" not in response.content


def test_a_browsers_current_copy_is_answered_304(client):
    """Every file but /static/ was sent whole again once its cache time ran out (Starlette's
    FileResponse weighs no validators): images, widget.js, the page."""
    image_url = client.get("/api/examples").json()[0]["image_url"]
    for path in (image_url, "/widget.js", "/", "/docs"):
        first = client.get(path)
        assert first.status_code == 200 and first.content, path
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304
        assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": "not a date"}).status_code == 200
    # catalog images are named by their content's hash: they never change
    whole = client.get(image_url)
    assert "immutable" in whole.headers["cache-control"]
    # a range it cannot read is ignored (RFC 9110): the whole file, not a 400 in plain text
    for unreadable in ("items=0-5", "bytes=5-2", "bytes"):
        answer = client.get(image_url, headers={"Range": unreadable})
        assert answer.status_code == 200 and answer.content == whole.content, unreadable
    part = client.get(image_url, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == whole.content[:10]


def test_head_requests_answer_like_get_without_a_body(client):
    image_url = client.get("/api/examples").json()[0]["image_url"]
    for path in ("/healthz", image_url, "/"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
        assert response.headers["content-type"] == client.get(path).headers["content-type"]
    assert client.head("/images/no-such-image.jpg").status_code == 404


# -- with a stub Recommender --------------------------------------------------------------------
SCRIPT_TITLE = '<script>alert("x")</script> Ring'


class StubStore:
    def __init__(self, products: list[Product]) -> None:
        self.products = {p.id: p for p in products}

    def get(self, product_id):
        return self.products.get(product_id)

    def get_many(self, ids):
        return {i: self.products[i] for i in ids if i in self.products}

    def all_products(self):
        return list(self.products.values())

    def count(self):
        return len(self.products)

    def facets(self):
        ps = self.all_products()
        return {"types": sorted({p.type for p in ps}), "brands": [], "metals": [],
                "price_min": min(p.price for p in ps), "price_max": max(p.price for p in ps),
                "currency": "USD"}


class StubRecommender:
    """Answers every photo with the stub catalog; `gate` (if set) holds queries until opened."""

    def __init__(self, home: Path, *, fail: bool = False) -> None:
        self.home = Home(home)
        self.store = StubStore([Product(
            id="xss", title=SCRIPT_TITLE, type="ring", price=10.0,
            url="https://shop.example.com/p/xss", images=("xss.png",), brand="<b>Brand</b>",
        )])
        self.classifier = SimpleNamespace(classes=["ring"])
        self.index_version = "v-stub"
        self.fail = fail
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def recommend(self, photo, *, k=10, filters=None, type=None, crop=None, photo_name=None):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        if self.fail:
            raise RuntimeError("secret detail from /srv/private/model.bin")
        product = self.store.get("xss")
        return Recommendation(photo=photo_name, type="ring", type_confidence=1.0,
                              results=[Result.from_product(product, product.image, 0.9)],
                              type_probabilities={"ring": 1.0}, searched_types=["ring"])

    def similar_to_product(self, product_id, *, k=10, filters=None):
        return self.recommend(b"")

    def reload_if_changed(self) -> bool:
        return False


def stub_client(tmp_path: Path, **kwargs) -> TestClient:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "xss.png").write_bytes(png_bytes())
    recommender = StubRecommender(tmp_path, **kwargs)
    return TestClient(create_app(tmp_path, recommender=recommender), raise_server_exceptions=False)


def test_catalog_text_with_html_is_returned_as_json_data_never_as_html(tmp_path):
    with stub_client(tmp_path) as client:
        product = client.get("/api/products/xss")
        assert product.headers["content-type"] == "application/json"
        assert product.json()["title"] == SCRIPT_TITLE
        answer = post_photo(client, png_bytes(), mime="image/png")
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["results"][0]["title"] == SCRIPT_TITLE
        assert answer.json()["results"][0]["brand"] == "<b>Brand</b>"
        assert "<script>" not in client.get("/").text
        reflected = client.get("/api/products/<script>alert(1)<%2Fscript>")
        assert reflected.status_code == 404
        assert reflected.headers["content-type"] == "application/json"


def test_unexpected_errors_are_500_without_a_traceback_and_logged(tmp_path, caplog):
    with stub_client(tmp_path, fail=True) as client, caplog.at_level(logging.ERROR):
        response = post_photo(client, png_bytes(), mime="image/png")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret" not in response.text and "Traceback" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


def test_a_slow_query_does_not_block_other_requests(tmp_path):
    """Queries run in worker threads: /healthz answers while a query is still running."""
    with stub_client(tmp_path) as client:
        recommender = client.app.state.shop.recommender
        recommender.gate = threading.Event()
        answers: list[int] = []
        worker = threading.Thread(
            target=lambda: answers.append(post_photo(client, png_bytes(), mime="image/png")
                                          .status_code)
        )
        worker.start()
        try:
            assert recommender.entered.wait(timeout=30)
            assert client.get("/healthz").status_code == 200  # the query is still held
            assert not answers
        finally:
            recommender.gate.set()
            worker.join(timeout=30)
        assert answers == [200]


def test_symlink_out_of_the_image_folder_is_404(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    with stub_client(tmp_path) as client:
        (tmp_path / "images" / "link.png").symlink_to(secret)
        assert client.get("/images/link.png").status_code == 404
        assert client.get("/images/xss.png").status_code == 200


# -- a new index is picked up without a restart ---------------------------------------------------
def test_new_index_is_picked_up_without_restart(tiny_home, tiny_catalog, tmp_path):
    """Copy the home, serve it, add a product with `ingest` + `index`: the running server
    answers from the new index within a few polls, and never fails a request meanwhile."""
    from jewelrec.catalog.ingest import ingest
    from jewelrec.indexing import build_index

    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    with open(tiny_catalog / "catalog.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    source_image = tiny_catalog / row["image"].split("|")[0]
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(source_image, extra / "new.jpg")
    row.update(id="NEW-1", title=SCRIPT_TITLE, image="new.jpg", price="1.5")
    with open(extra / "catalog.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    photo = source_image.read_bytes()

    with TestClient(create_app(home, reload_interval_s=0.05)) as client:
        before = client.get("/healthz").json()
        assert client.get("/api/products/NEW-1").status_code == 404
        ingest(extra / "catalog.csv", Home(home), progress=False)
        build_index(Home(home), progress=False)
        for _ in range(600):
            health = client.get("/healthz").json()
            assert post_photo(client, photo, k=1).status_code == 200
            if health["index_version"] != before["index_version"]:
                break
            threading.Event().wait(0.05)
        assert health["index_version"] != before["index_version"]
        assert health["products"] == before["products"] + 1
        answer = post_photo(client, photo, k=3, type=row["type"], max_price=2).json()
        assert [r["id"] for r in answer["results"]] == ["NEW-1"]
        assert answer["results"][0]["title"] == SCRIPT_TITLE
        facets = client.get("/api/facets").json()
        assert facets["price_min"] == pytest.approx(1.5)  # caches follow the index version


def test_two_photos_in_one_request_are_refused_not_guessed(client, tiny_query_photo):
    two = [("photo", ("a.jpg", tiny_query_photo, "image/jpeg")),
           ("photo", ("b.png", png_bytes(), "image/png"))]
    response = client.post("/api/recommend", files=two, data={"k": "2"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "2 photos were sent: send one photo per request"
    assert post_photo(client, tiny_query_photo, k=2).status_code == 200


def test_facets_and_examples_follow_an_ingest_before_the_next_index(tiny_home, tmp_path):
    """They were cached per index version: after `ingest --prune` the page offered a removed
    product as an example and the old price range until the next `index`."""
    from dataclasses import replace

    from jewelrec.catalog.store import CatalogStore

    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    with TestClient(create_app(home, reload_interval_s=3600)) as client:
        before = client.get("/api/facets").json()
        examples = client.get("/api/examples").json()
        gone = examples[0]["id"]
        with CatalogStore.open(home) as store, store.transaction() as tx:
            tx.delete([gone])
            cheapest = min(store.all_products(), key=lambda p: p.price)
            tx.upsert(replace(cheapest, price=0.5))
        assert gone not in [e["id"] for e in client.get("/api/examples").json()]
        after = client.get("/api/facets").json()
        assert after["price_min"] == 0.5 != before["price_min"]


def test_a_search_backend_that_is_down_is_a_503_to_retry_not_the_shoppers_400(tmp_path):
    """Milvus stopped while serving: every search answered 400 Bad Request, which a client
    does not retry and monitoring counts as the shoppers' mistakes."""
    from jewelrec.errors import BackendUnavailableError

    def down(*args, **kwargs):
        raise BackendUnavailableError("Milvus at http://127.0.0.1:19530 could not search: "
                                      "server unavailable")

    with stub_client(tmp_path) as client:
        stub = client.app.state.shop.recommender
        stub.recommend = down
        answer = post_photo(client, png_bytes(), mime="image/png")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert "Milvus" in answer.json()["detail"]
        # /healthz said "ok" meanwhile: it now asks the index once, and says what is down
        stub.index_meta = {"dim": 4}
        stub.index = SimpleNamespace(search=down)
        health = client.get("/healthz")
        assert health.status_code == 503 and "Milvus" in health.json()["detail"]
        stub.index = SimpleNamespace(search=lambda vector, k: [])  # back up
        assert client.get("/healthz").json()["status"] == "ok"
