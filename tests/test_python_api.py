"""The Python API as a developer calls it (README "Python and HTTP APIs"): the filters read as
the CLI and the HTTP API read theirs, and a wrong argument is a clear error naming it, never an
empty answer or an error from deep inside."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jewelrec.errors import JewelrecError, UnknownProductError
from jewelrec.recommend import PieceError, Recommender
from jewelrec.search.filters import Filters
from jewelrec.server.app import create_app
from jewelrec.text.search import TextSearcher


@pytest.fixture(scope="module")
def recommender(tiny_home) -> Recommender:
    return Recommender.open(tiny_home)


@pytest.fixture(scope="module")
def facets(recommender) -> dict:
    return recommender.store.facets()


def test_types_and_brands_are_read_as_the_catalog_spells_them(recommender, facets,
                                                             tiny_query_photo):
    """"RING", "any" and "maison verel" found nothing: only the catalog's exact spelling
    matched, and "any" was taken for a type named any."""
    a_type, brand = facets["types"][0], facets["brands"][0]
    shouted = recommender.recommend(tiny_query_photo, k=3, type=a_type.upper())
    assert shouted.searched_types == [a_type] and shouted.results
    assert {r.type for r in shouted.results} == {a_type}
    every = recommender.recommend(tiny_query_photo, k=3, type="any")
    assert sorted(every.searched_types) == sorted(facets["types"])
    by_brand = recommender.recommend(tiny_query_photo, k=3, type="any",
                                     filters=Filters.build(brands=brand.lower()))
    assert by_brand.results and {r.brand for r in by_brand.results} == {brand}
    typed = recommender.recommend(tiny_query_photo, k=3,
                                  filters=Filters.build(types=[a_type.title()]))
    assert {r.type for r in typed.results} == {a_type}
    words = TextSearcher.open(recommender.home).search(
        "jewelry", k=3, filters=Filters.build(brands=brand.upper()))
    assert words.results and {r.brand for r in words.results} == {brand}


@pytest.mark.parametrize(("asked", "said"), [
    ({"type": "spaceship"}, "unknown type 'spaceship'"),
    ({"filters": Filters.build(brands="No Such Maker")}, "unknown brand 'No Such Maker'"),
    ({"filters": Filters.build(metals="unobtainium")}, "unknown metal 'unobtainium'"),
    ({"k": -1}, "at least 1"),
    ({"k": 0}, "at least 1"),
    ({"k": 2.5}, "whole number"),
    ({"k": "5"}, "whole number"),
    ({"crop": (0, 0, 10)}, "crop: a Box or four whole numbers"),
    ({"crop": (0, 0, 10.5, 20)}, "crop: box x1 must be a whole number"),
    ({"crop": (10, 5, 3, 4)}, r"crop: box \(10, 5, 3, 4\) needs 0 <= x0 <= x1"),
])
def test_a_wrong_argument_is_a_value_error_naming_it(recommender, tiny_query_photo, asked, said):
    with pytest.raises(ValueError, match=said):
        recommender.recommend(tiny_query_photo, **asked)


def test_other_wrong_arguments_say_what_is_expected(recommender, tiny_query_photo):
    with pytest.raises(PieceError, match="piece's number"):
        recommender.recommend(tiny_query_photo, piece="0")
    with pytest.raises(TypeError, match="a photo is a path, bytes"):
        recommender.recommend(12)
    with pytest.raises(ValueError, match="at least 1"):
        TextSearcher.open(recommender.home).search("gold", k=-5)  # was 95 results
    with pytest.raises(ValueError, match="at least 1"):
        recommender.similar_to_product(recommender.store.all_products()[0].id, k=-5)
    with pytest.raises(UnknownProductError, match="no product with id 'nosuch'") as caught:
        recommender.similar_to_product("nosuch")
    assert isinstance(caught.value, JewelrecError) and isinstance(caught.value, KeyError)


def test_a_photo_may_be_a_pil_image_an_open_file_or_a_crop_as_four_numbers(
        recommender, tiny_query_photo):
    by_bytes = recommender.recommend(tiny_query_photo, k=3)
    picture = Image.open(io.BytesIO(tiny_query_photo))
    assert [r.id for r in recommender.recommend(picture, k=3).results] == [
        r.id for r in by_bytes.results]
    assert [r.id for r in recommender.recommend(io.BytesIO(tiny_query_photo), k=3).results] == [
        r.id for r in by_bytes.results]
    cropped = recommender.recommend(tiny_query_photo, k=3, crop=(10, 12, 120, 100))
    assert cropped.crop.as_tuple() == (10, 12, 120, 100)
    with pytest.raises(JewelrecError, match="binary mode"):
        recommender.recommend(io.StringIO("not a photo"))
    closed = Image.open(io.BytesIO(tiny_query_photo))
    closed.close()
    with pytest.raises(JewelrecError, match="cannot be read"):
        recommender.recommend(closed)


def test_the_api_refuses_a_type_the_models_know_but_the_shop_does_not_sell(tiny_home):
    """A type the classifier learnt and the catalog since dropped searched nothing and answered
    an empty 200; it is a 422 naming the types the shop sells."""
    recommender = Recommender.open(tiny_home)

    class KnowsMore:
        def __init__(self, inner) -> None:
            self.inner = inner
            self.classes = [*inner.classes, "brooch"]

    recommender.swap(replace(recommender.snapshot,
                             classifier=KnowsMore(recommender.classifier)))
    with TestClient(create_app(tiny_home, recommender=recommender)) as client:
        answer = client.get("/api/search", params={"q": "gold", "type": "brooch"})
    assert answer.status_code == 422
    assert "unknown type 'brooch'" in answer.json()["detail"]


def test_more_like_a_product_whose_only_photo_is_a_placeholder_is_refused(tiny_home, tmp_path):
    """"More like this" searched by the "coming soon" picture itself: random pieces, typed and
    decided with no reason; the widget on that product's page showed them."""
    import shutil

    from jewelrec.catalog import hygiene
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.home import Home
    from jewelrec.recommend import NoPhotoError

    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    store = CatalogStore.open(home)
    first, second, third, fourth = store.all_products()[:4]
    # the first shows only placeholders; the second one of them among its own photos; the
    # third a photo it shares with the fourth, which keeps it (a variant's shot shows the piece)
    placeholders = [*first.images, second.images[0]]
    with store.transaction() as tx:
        tx.set_meta(hygiene.META_KEY, hygiene.HygieneFindings(
            groups=[hygiene.ImageGroup("placeholder", placeholders, [first.id, second.id]),
                    hygiene.ImageGroup("duplicate", list(third.images), [fourth.id, third.id],
                                       fourth.id)],
            excluded=[(first.id, image) for image in first.images]
            + [(second.id, second.images[0])]
            + [(third.id, image) for image in third.images]).to_dict())
    store.close()
    recommender = Recommender.open(home)
    with pytest.raises(NoPhotoError, match="no photo of its own"):
        recommender.similar_to_product(first.id)
    assert recommender.similar_to_product(second.id, k=2).results  # by its other photo
    assert recommender.similar_to_product(third.id, k=2).results  # by a shared one
    with TestClient(create_app(home.root, recommender=recommender)) as client:
        answer = client.get(f"/api/products/{first.id}/similar")
    assert answer.status_code == 409 and "no photo of its own" in answer.json()["detail"]


def test_a_filter_value_dropped_by_an_ingest_meanwhile_is_a_422_not_a_500(
        tiny_home, tiny_query_photo, monkeypatch):
    """The API checks the filters against its cached facets, the recommender against the
    catalog's: an ingest between the two that drops the brand made a ValueError, a 500."""
    import jewelrec.recommend as recommend_module
    from jewelrec.recommend import FilterError

    recommender = Recommender.open(tiny_home)
    brand = recommender.store.facets()["brands"][0]
    with TestClient(create_app(tiny_home, recommender=recommender)) as client:
        def dropped(filters, facets):
            raise ValueError(f"unknown brand {brand!r}: use one of (none left)")

        monkeypatch.setattr(recommend_module, "spelled_as_catalog", dropped)
        answer = client.post("/api/recommend", data={"brand": brand},
                             files={"photo": ("p.jpg", tiny_query_photo, "image/jpeg")})
        assert answer.status_code == 422 and "unknown brand" in answer.json()["detail"]
        product = recommender.store.all_products()[0].id
        answer = client.get(f"/api/products/{product}/similar", params={"brand": brand})
        assert answer.status_code == 422
    assert issubclass(FilterError, ValueError) and issubclass(FilterError, JewelrecError)
