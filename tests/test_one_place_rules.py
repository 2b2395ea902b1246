"""Rules written once (issue 10, design): the 'no catalog, run ingest' error every stage
gives, the one http(s) link check ingest, the fetcher and pages share, and the API's response
models that follow the pipeline's dataclasses."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from jewelrec import recommend
from jewelrec.catalog.fetch import FetchError, fetch_image
from jewelrec.catalog.importers import validate_fields
from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import CatalogError, NotReadyError
from jewelrec.evaluate import evaluate_home
from jewelrec.home import Home
from jewelrec.indexing import build_index
from jewelrec.links import is_http_ref, link_problem, safe_link
from jewelrec.models.attributes import AttributeGuess
from jewelrec.models.pieces import Piece
from jewelrec.recommend import Recommender
from jewelrec.report import build_report
from jewelrec.server import app as api
from jewelrec.server import embed, schemas
from jewelrec.server.app import create_app
from jewelrec.train import load_training_images, train_home

NO_CATALOG = "no catalog in {root}: run `jewelrec ingest` first"
EMPTY = "the catalog in {root} is empty: run `jewelrec ingest` first"


@pytest.mark.parametrize("stage", [
    lambda home: build_index(home, progress=False),
    lambda home: train_home(home, progress=False),
    lambda home: load_training_images(home, progress=False),
    lambda home: evaluate_home(home, progress=False),
    lambda home: build_report(home, home.root / "report.html"),
    lambda home: Recommender.open(home),
], ids=["index", "train", "training-images", "evaluate", "report", "recommend"])
def test_every_stage_says_the_same_when_there_is_no_catalog(tmp_path: Path, stage) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(NotReadyError) as caught:
        stage(home)
    assert str(caught.value) == NO_CATALOG.format(root=home.root)


def test_a_read_only_store_that_is_missing_is_a_catalog_error(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(CatalogError) as caught:
        CatalogStore.open(home, read_only=True)
    assert str(caught.value) == NO_CATALOG.format(root=home.root)
    assert not home.catalog_db.exists()


@pytest.mark.parametrize("stage", [
    lambda home: build_index(home, progress=False),
    lambda home: load_training_images(home, progress=False),
    lambda home: build_report(home, home.root / "report.html"),
], ids=["index", "training-images", "report"])
def test_every_stage_says_the_same_when_the_catalog_is_empty(tmp_path: Path, stage) -> None:
    home = Home(tmp_path / "home")
    CatalogStore.open(home).close()  # an empty store
    with pytest.raises(NotReadyError) as caught:
        stage(home)
    assert str(caught.value) == EMPTY.format(root=home.root)


@pytest.mark.parametrize(("url", "problem"), [
    ("https://shop.example/p/1", None),
    ("HTTP://shop.example:8080/x?y=1", None),
    ("javascript:alert(1)", "URL is not http(s): 'javascript:alert(1)'"),
    ("ftp://shop.example/a.jpg", "URL is not http(s)"),
    ("file:///etc/passwd", "URL is not http(s)"),
    ("https:///nohost", "URL has no host"),
    ("https://shop.example/a\tb.jpg", "contains spaces or control characters"),
    ("https://shop.example/\x00", "contains spaces or control characters"),
    ("http://[::1/a.jpg", "malformed"),
    ("http://shop.example:99999/", "malformed"),
    ("http://shop.example:port/", "malformed"),
])
def test_one_link_rule_for_ingest_fetch_and_pages(url: str, problem: str | None) -> None:
    found = link_problem(url)
    if problem is None:
        assert found is None
        assert safe_link(url) == url
        return
    assert found is not None and problem in found
    assert safe_link(url) is None
    # a catalog row with that product link is rejected with the same words
    row = {"id": "p1", "title": "Ring", "type": "ring", "price": "10", "url": url,
           "image": "a.jpg"}
    rejected = validate_fields(row, 2)
    assert isinstance(rejected, str) and problem in rejected
    # the fetcher refuses the same link, before any connection, with the same words
    with pytest.raises(FetchError) as caught:
        fetch_image(url)
    assert str(caught.value) == found


def test_web_references_are_told_from_file_paths() -> None:
    assert is_http_ref("https://cdn.example/a.jpg") and is_http_ref("HTTP://x/a.jpg")
    assert is_http_ref("http://[::1/a.jpg")  # malformed, but meant for the web: refused there
    assert not is_http_ref("images/a.jpg") and not is_http_ref("C:/photos/a.jpg")
    assert not is_http_ref("ftp://x/a.jpg")


# -- the API's models follow the pipeline's dataclasses ----------------------------------------
def _names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def test_answered_as_is_dataclasses_are_the_response_models_fields() -> None:
    assert _names(schemas.Result) == [
        *[f.name for f in fields(recommend.Result)][:9], "image_url",
        *[f.name for f in fields(recommend.Result)][9:]]
    assert _names(schemas.TypeAlternative) == [f.name for f in fields(recommend.TypeAlternative)]
    assert _names(schemas.AttributeGuess) == [f.name for f in fields(AttributeGuess)]
    # required in the API exactly where the dataclass has no default
    required = {name for name, info in schemas.Result.model_fields.items() if info.is_required()}
    assert required == {f.name for f in fields(recommend.Result)
                        if f.default is MISSING and f.default_factory is MISSING} | {"image_url"}


def test_a_field_added_to_a_dataclass_is_answered_and_a_stale_description_fails() -> None:
    @dataclass
    class Answer:
        id: str
        new_field: list[str] = field(default_factory=list)

    model = schemas.model_of(Answer, descriptions={"new_field": "added"},
                             extra={"url": (str, Field(description="served at"))}, after="id")
    assert _names(model) == ["id", "url", "new_field"]
    assert model(id="a", url="/x").model_dump() == {"id": "a", "url": "/x", "new_field": []}
    assert model.model_json_schema()["properties"]["new_field"]["description"] == "added"
    with pytest.raises(TypeError, match="has no field gone"):
        schemas.model_of(Answer, descriptions={"gone": "a field since removed"})


def test_written_out_response_models_keep_the_dataclasses_fields() -> None:
    """The answer, a piece and a product differ in shape (boxes as lists, image URLs), so their
    models are written out: a field added to one side only fails here."""
    answer = recommend.Recommendation(photo=None, type=None, type_confidence=None, results=[])
    assert set(schemas.Recommendation.model_fields) == (
        {f.name for f in fields(recommend.Recommendation)} | {"photo_size"})
    assert set(answer.to_dict()) <= set(schemas.Recommendation.model_fields)
    piece = Piece(box=(1, 2, 3, 4), type="ring", confidence=0.5, score=1.0)
    assert set(schemas.Piece.model_fields) == set(piece.to_dict())
    assert set(schemas.Product.model_fields) == (
        {f.name for f in fields(Product)} | {"image_url", "image_urls"})


# -- one filter dependency for every route that filters ----------------------------------------
FILTER_FIELDS = {"min_price", "max_price", "type", "brand", "metal"}
FILTERING_ROUTES = {("POST", "/api/recommend"), ("GET", "/api/search"),
                    ("GET", "/api/products/{product_id}/similar")}


def test_every_filtering_route_takes_its_filters_from_the_one_dependency() -> None:
    seen = set()
    for route in [*api.router.routes, *embed.router.routes]:  # every route the app includes
        if not isinstance(route, APIRoute):
            continue
        names = {p.name for p in route.dependant.query_params + route.dependant.body_params}
        for dependency in route.dependant.dependencies:
            names |= {p.name for p in dependency.query_params + dependency.body_params}
        if not names & FILTER_FIELDS:
            continue
        for method in route.methods:
            seen.add((method, route.path))
        own = {p.name for p in route.dependant.query_params + route.dependant.body_params}
        assert not own & FILTER_FIELDS, route.path  # none declared by the route itself
        shared = [d for d in route.dependant.dependencies
                  if d.call is not None and d.call.__qualname__.startswith("filter_params.")]
        assert len(shared) == 1, route.path
        assert {p.name for p in shared[0].query_params + shared[0].body_params} == FILTER_FIELDS
    assert seen == FILTERING_ROUTES


class _Store:
    product = Product("p1", "Ring", "ring", 10.0, "https://shop.example/p1", ("p1.png",))

    def get(self, product_id: str) -> Product | None:
        return self.product if product_id == "p1" else None

    def facets(self) -> dict:
        return {"types": ["ring"], "brands": [], "metals": [], "price_min": 10.0,
                "price_max": 10.0, "currency": "USD"}

    def data_version(self) -> int:  # the catalog never changes under this test
        return 1


class _Recommender:
    home = None
    index_version = "v1"
    store = _Store()
    classifier = SimpleNamespace(classes=["ring", "necklace"])

    def reload_if_changed(self) -> bool:
        return False


@pytest.mark.parametrize(("params", "detail"), [
    ({"min_price": "-1"}, "min_price: Input should be greater than or equal to 0"),
    ({"max_price": "nan"}, "max_price: Input should be a finite number"),
    ({"min_price": "9", "max_price": "1"},
     "min_price (9) is above max_price (1): swap or widen them"),
    # the types the shop sells, not those the models know (a necklace here finds nothing)
    ({"type": "spoon"}, "unknown type 'spoon': use one of ring (or 'any')"),
])
def test_every_filtering_route_refuses_bad_filters_in_the_same_words(params, detail) -> None:
    with TestClient(create_app(recommender=_Recommender())) as client:
        answers = [
            client.post("/api/recommend", data=params,
                        files={"photo": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}),
            client.get("/api/search", params={"q": "ring", **params}),
            client.get("/api/products/p1/similar", params=params),
        ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"] == detail
