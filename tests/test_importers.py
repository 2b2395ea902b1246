"""Catalog importers: formats, row numbers, the ShopStyle mapping, and field validation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from jewelrec.catalog.importers import (
    CatalogRow,
    detect_format,
    map_shopstyle_product,
    parse_price,
    read_catalog,
    validate_fields,
)
from jewelrec.errors import CatalogError

SHOPSTYLE_SAMPLE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "shopstyle"
    / "products-sample.json"
)
GOOD = {"id": "p1", "title": "Hoop", "type": "Earring", "price": "19.90",
        "url": "https://shop.example.com/p1", "image": "images/p1.jpg"}


def rows_of(path: Path) -> list:
    return list(read_catalog(path)[1])


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    # A BOM (Excel's UTF-8 export), a quoted value spanning two lines, an extra column.
    path.write_text(
        "\ufeffID,Title,Type,Price,URL,Image,Family\n"
        'a,"Two\nlines",ring,1,https://x.example/a,a.jpg,f1\n'
        "b,Plain,ring,2,https://x.example/b,b.jpg,f2\n",
        encoding="utf-8",
    )
    rows = rows_of(path)
    assert [r.row for r in rows] == [2, 3]
    assert rows[0].fields["id"] == "a" and rows[0].fields["title"] == "Two\nlines"
    assert rows[1].problem is None


def test_jsonl_rows_are_line_numbers_and_a_broken_line_is_one_rejection(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        json.dumps({**GOOD, "image": ["a.jpg", "b.jpg"], "tags": ["x", "y"]}) + "\n"
        "\n"
        "{not json\n"
        "[1, 2]\n",
        encoding="utf-8",
    )
    rows = rows_of(path)
    assert [r.row for r in rows] == [1, 3, 4]
    assert rows[0].problem is None and rows[0].fields["image"] == ["a.jpg", "b.jpg"]
    assert rows[1].problem.startswith("invalid JSON")
    assert rows[2].problem == "not a JSON object"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("c.csv", "id,title\n", "csv"),
        ("c.jsonl", "{}\n", "jsonl"),
        ("c.ndjson", "{}\n", "jsonl"),
        ("c.json", '{"products": []}', "json"),
        ("c.txt", '{"id": 1}\n{"id": 2}\n', "jsonl"),
        ("c.txt", '{"products": []}', "json"),
        ("c.txt", "id,title,price\n", "csv"),
        ("c", "[]", "json"),
    ],
)
def test_format_is_detected_by_extension_then_content(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert detect_format(path) == expected


def test_json_document_is_shopstyle_when_it_has_a_products_list(tmp_path: Path) -> None:
    shop = tmp_path / "shop.json"
    shop.write_text(json.dumps({"products": [{"id": 1, "name": "x", "categories": []}]}))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([GOOD]))
    assert read_catalog(shop)[0] == "shopstyle"
    assert read_catalog(plain)[0] == "json"
    assert rows_of(plain)[0].fields == GOOD


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "not found"),
        ("latin1.csv", "id,title\n1,Bo\xeete\n".encode("latin-1"), "not UTF-8"),
        ("empty.csv", b"", "empty"),
        ("other.csv", b"name,colour\nx,y\n", "does not look like a product CSV"),
        ("broken.json", b'{"products": [', "not valid JSON"),
        ("number.json", b"42", "expected"),
    ],
)
def test_an_unreadable_file_raises_catalog_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CatalogError, match=message):
        rows_of(path)


def test_a_valid_row_is_normalised() -> None:
    row = validate_fields(
        {**GOOD, "type": "  Rose  Ring ", "currency": "eur", "brand": " Aurelia ",
         "metal": "Rose Gold", "stone": "", "tags": "a|b, c|a", "image": "x.jpg| y.jpg |x.jpg"},
        7,
    )
    assert isinstance(row, CatalogRow)
    assert row.row == 7 and row.id == "p1" and row.type == "rose ring"
    assert row.price == Decimal("19.90") and row.currency == "EUR"
    assert row.brand == "Aurelia" and row.metal == "rose gold" and row.stone is None
    assert row.tags == ("a", "b", "c") and row.image_refs == ("x.jpg", "y.jpg")


def test_currency_defaults_to_usd_and_must_look_like_iso_4217() -> None:
    assert validate_fields({**GOOD, "currency": ""}, 2).currency == "USD"
    assert "bad currency" in validate_fields({**GOOD, "currency": "EURO"}, 2)
    assert "bad currency" in validate_fields({**GOOD, "currency": "€"}, 2)


def test_missing_fields_are_named() -> None:
    assert validate_fields({**GOOD, "title": "  "}, 2) == "missing field 'title'"
    reason = validate_fields({"id": "x", "type": "ring", "image": "a.jpg"}, 2)
    assert reason == "missing fields 'title', 'price', 'url'"
    assert validate_fields({**GOOD, "image": " | "}, 2) == "missing field 'image'"


@pytest.mark.parametrize("price", ["0", "19.90", "1e3", 12, Decimal("3.5"), 4.25])
def test_good_prices_parse_exactly(price: object) -> None:
    assert parse_price(price) == Decimal(str(price))


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("-5", "negative price: -5"),
        ("-0.01", "negative price"),
        ("NaN", "bad price"),
        ("inf", "bad price"),
        ("-Infinity", "bad price"),
        ("$12", "bad price"),
        ("12,50", "bad price"),
        ("abc", "bad price"),
        ("1e400", "bad price"),
        (True, "bad price"),
        (None, "bad price"),
        (float("nan"), "bad price"),
    ],
)
def test_bad_prices_are_rejected_with_a_reason(price: object, reason: str) -> None:
    result = parse_price(price)
    assert isinstance(result, str) and result.startswith(reason)


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "ftp://x.example/a", "file:///etc/passwd", "http://",
     "https:///path", "http://x.example/a b", "data:text/html,hi", "//x.example/a"],
)
def test_links_must_be_http_or_https_with_a_host(url: str) -> None:
    reason = validate_fields({**GOOD, "url": url}, 2)
    assert isinstance(reason, str) and "URL" in reason


def test_ids_are_text_or_whole_numbers() -> None:
    assert validate_fields({**GOOD, "id": 780112102}, 1).id == "780112102"
    assert "bad id" in validate_fields({**GOOD, "id": Decimal("1.5")}, 1)
    assert "bad id" in validate_fields({**GOOD, "id": True}, 1)


def test_jsonl_lists_and_strings_are_both_accepted_for_images_and_tags() -> None:
    as_lists = validate_fields({**GOOD, "image": ["a.jpg", "b.jpg"], "tags": ["x", "y"]}, 1)
    as_text = validate_fields({**GOOD, "image": "a.jpg|b.jpg", "tags": "x,y"}, 1)
    assert as_lists.image_refs == as_text.image_refs == ("a.jpg", "b.jpg")
    assert as_lists.tags == as_text.tags == ("x", "y")


def test_identical_rows_have_the_same_fields_whatever_their_row_number() -> None:
    first, again = validate_fields(GOOD, 2), validate_fields(dict(GOOD), 9)
    changed = validate_fields({**GOOD, "price": "20"}, 10)
    assert first.same_fields(again) and not first.same_fields(changed)


@pytest.fixture
def shopstyle_sample() -> Path:
    if not SHOPSTYLE_SAMPLE.exists():
        pytest.skip(f"ShopStyle sample not found at {SHOPSTYLE_SAMPLE} (../shared/data is absent)")
    return SHOPSTYLE_SAMPLE


def test_shopstyle_sample_maps_to_valid_rows(shopstyle_sample: Path) -> None:
    fmt, raw = read_catalog(shopstyle_sample)
    assert fmt == "shopstyle"
    rows = [validate_fields(r.fields, r.row) for r in raw]
    assert all(isinstance(r, CatalogRow) for r in rows), rows
    hoop, pearl, stack = rows
    assert (hoop.row, hoop.id, hoop.type, hoop.brand, hoop.metal) == (
        1, "780112102", "earring", "Madewell", "gold")
    assert hoop.price == Decimal("29.5") and hoop.currency == "USD"
    assert hoop.url.startswith("https://api.shopstyle.com/action/apiVisitRetailer")
    assert len(hoop.image_refs) == 2 and all("_best/" in u for u in hoop.image_refs)
    assert pearl.type == "necklace" and pearl.metal == "silver"
    assert pearl.price == Decimal("54.4")  # the sale price, being lower
    assert stack.type == "ring" and stack.price == Decimal("118.0")
    assert len(stack.image_refs) == 1


def test_shopstyle_takes_the_first_jewelry_category_and_rejects_none() -> None:
    product = {
        "id": 5, "name": "Watch", "price": 10, "clickUrl": "https://x.example/5",
        "image": {"sizes": {"Small": {"url": "https://i.example/s.jpg", "width": 10,
                                      "height": 10},
                            "Large": {"url": "https://i.example/l.jpg", "width": 300,
                                      "height": 300}}},
        "categories": [{"id": "jewelry"}, {"id": "womens-watches"}, {"id": "rings"}],
        "colors": [{"name": "Blue"}], "salePrice": 12,
    }
    fields, problem = map_shopstyle_product(product)
    assert problem is None and fields["type"] == "watch"
    assert fields["image"] == ["https://i.example/l.jpg"]  # the largest when Best is missing
    assert fields["metal"] is None  # blue is not a metal colour
    assert fields["price"] == 10  # a sale price above the price is ignored
    fields, problem = map_shopstyle_product({**product, "categories": [{"id": "handbags"}]})
    assert problem == "no jewelry category (categories: handbags)"
