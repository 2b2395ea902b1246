"""Catalog importers: formats, row numbers, the ShopStyle mapping, and field validation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from jewelrec.catalog.importers import (
    CSV_PARSE_LIMIT,
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


def test_a_european_spreadsheet_csv_with_semicolons_and_decimal_commas(tmp_path: Path) -> None:
    """Excel in most of Europe saves CSV with ';' between values and prices as "19,99": it
    was 'not a product CSV' although its header named every column."""
    path = tmp_path / "catalog.csv"
    path.write_text(
        "\ufeffid;title;type;price;url;image\r\n"
        "a;Bague, or;ring;1.299,00;https://x.example/a;a.jpg\r\n"
        "b;Ohrringe;earring;19,99;https://x.example/b;b.jpg\r\n",
        encoding="utf-8",
    )
    rows = rows_of(path)
    assert [(r.fields["title"], r.fields["price"]) for r in rows] == [
        ("Bague, or", "1.299,00"), ("Ohrringe", "19,99")]
    assert [parse_price(r.fields["price"]) for r in rows] == [Decimal("1299.00"),
                                                              Decimal("19.99")]


def test_a_row_with_more_values_than_columns_is_rejected(tmp_path: Path) -> None:
    """An unquoted comma shifts every later value: the last ones would be dropped silently."""
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,title,type,price,url,image,tags\n"
        "a,Hoop,earring,1,https://x.example/a,a.jpg,gold,hoop\n"  # tags "gold,hoop" unquoted
        "b,Band,ring,2,https://x.example/b,b.jpg,plain,\n",  # a trailing comma: nothing extra
        encoding="utf-8",
    )
    first, second = rows_of(path)
    assert first.problem == ("8 values where the header names 7 columns (a comma inside a "
                             "value that is not quoted?); the extra: 'hoop'")
    assert first.fields["id"] == "a"  # its id still counts as listed (prune keeps it)
    assert second.problem is None and second.fields["tags"] == "plain"


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


def test_control_and_bidi_characters_never_reach_what_people_read() -> None:
    """A title with terminal escapes (ESC, BEL) would restyle or retitle the shop's terminal
    when a command prints it; a right-to-left override would make it read as another title."""
    row = validate_fields(
        {**GOOD, "title": "Hoop \x1b[31mred\x1b[0m \x1b]0;pwned\x07 \u202eesrever",
         "brand": "Aure\x1b[2Jlia", "metal": "Gold\x00", "tags": "a\x1b|\u2066b\u2069"},
        2,
    )
    assert isinstance(row, CatalogRow)
    shown = [row.title, row.brand, row.metal, *row.tags]
    assert not any(ch in text for text in shown for ch in "\x1b\x07\x00\u202e\u2066\u2069")
    assert row.title == "Hoop [31mred [0m ]0;pwned esrever" and row.brand == "Aure [2Jlia"
    assert row.metal == "gold" and row.tags == ("a", "b")
    # the rest of Unicode is kept: accents, other scripts, emoji sequences with a joiner
    row = validate_fields({**GOOD, "title": "Créole مُذهّب 👩\u200d👩 hoop"}, 3)
    assert isinstance(row, CatalogRow) and row.title == "Créole مُذهّب 👩\u200d👩 hoop"


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


@pytest.mark.parametrize(("text", "amount"), [
    ("1,299.00", "1299.00"), ("1,299", "1299"), ("12,345,678.5", "12345678.5"),
    ("1.299,00", "1299.00"), ("1.299.000", "1299000"), ("19,99", "19.99"),
    ("1 299,00", "1299.00"), ("1\u202f299.50", "1299.50"), (" 1,299.00 ", "1299.00"),
])
def test_prices_with_thousands_separators_or_a_decimal_comma_parse(text: str, amount: str) -> None:
    """Spreadsheet exports write "1,299.00" or "1.299,00": rejecting the row lost the product."""
    assert parse_price(text) == Decimal(amount)


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("-5", "negative price: -5"),
        ("-0.01", "negative price"),
        ("NaN", "bad price"),
        ("inf", "bad price"),
        ("-Infinity", "bad price"),
        ("$12", "bad price"),
        ("1,2,3", "bad price"),
        ("1,2345.6", "bad price"),
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
     "https:///path", "http://x.example/a\tb", "data:text/html,hi", "//x.example/a"],
)
def test_links_must_be_http_or_https_with_a_host(url: str) -> None:
    reason = validate_fields({**GOOD, "url": url}, 2)
    assert isinstance(reason, str) and "URL" in reason


def test_spaces_inside_links_are_sent_encoded_as_a_browser_would() -> None:
    row = validate_fields({**GOOD, "url": "https://shop.example/p/gold ring",
                           "image": "https://cdn.example/img/gold ring 1.jpg|local photo.jpg"}, 2)
    assert not isinstance(row, str), row
    assert row.url == "https://shop.example/p/gold%20ring"
    # a file on disk keeps its name; only web references are encoded
    assert row.image_refs == ("https://cdn.example/img/gold%20ring%201.jpg", "local photo.jpg")


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


# -- hostile catalogs: one bad row is one rejection, never the whole file ----------------------


def test_a_csv_field_over_the_limit_rejects_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    rows = [",".join(["id", "title", "type", "price", "url", "image", "notes"])]
    for i in range(1, 4):
        notes = "x" * (200_000 if i == 2 else 10)  # over Python's own 131,072 csv limit
        rows.append(f"p{i},Piece {i},ring,1,https://x.example/{i},a.jpg,{notes}")
    path.write_text("\n".join(rows) + "\n")
    results = [(r.row, validate_fields(r.fields, r.row)) for r in rows_of(path)]
    assert [row for row, _ in results] == [2, 3, 4]
    assert isinstance(results[0][1], CatalogRow) and isinstance(results[2][1], CatalogRow)
    assert results[1][1] == ("field 'notes' is 200,000 characters long, over the "
                             "131,072-character limit")


def test_a_csv_field_beyond_any_reason_fails_the_file_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    huge = "y" * (CSV_PARSE_LIMIT + 10)
    path.write_text(f"id,title,type,price,url,image\na,A,ring,1,https://x.example/a,a.jpg\n"
                    f"b,{huge},ring,1,https://x.example/b,b.jpg\n")
    with pytest.raises(CatalogError, match=r"not valid CSV \(row 3\)"):
        rows_of(path)


def test_a_csv_header_missing_a_required_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,title,type,url,image\na,A,ring,https://x.example/a,a.jpg\n")
    with pytest.raises(CatalogError, match="lacks the required column price "):
        rows_of(path)


def test_deep_or_huge_jsonl_lines_reject_only_themselves(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join([
        json.dumps(GOOD),
        "[" * 100_000,
        '{"id": "deep", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"id": "big", "price": ' + "9" * 5000 + "}",
        json.dumps({**GOOD, "id": "p2"}),
    ]) + "\n")
    rows = rows_of(path)
    assert [(r.row, r.problem) for r in rows][:4] == [
        (1, None), (2, "invalid JSON: nested too deeply"), (3, "invalid JSON: nested too deeply"),
        (4, rows[3].problem)]
    assert rows[3].problem.startswith("invalid JSON")
    assert rows[4].row == 5 and rows[4].problem is None


def test_a_deeply_nested_json_document_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"products": ' + "[" * 100_000)
    with pytest.raises(CatalogError, match="nested too deeply"):
        rows_of(path)
    path = tmp_path / "deep.txt"  # no extension: told from the content, then one bad line
    path.write_text('{"products": ' + "[" * 100_000)
    assert [(r.row, r.problem) for r in rows_of(path)] == [(1, "invalid JSON: nested too deeply")]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("type", ["ring", "earring"], "bad type <a list of 2>: expected text, not a list"),
        ("title", {"en": "Hoop"}, "bad title <an object of 1>: expected text, not an object"),
        ("brand", True, "bad brand True: expected text, not true/false"),
        ("metal", 5, "bad metal 5: expected text, not a number"),
        ("url", ["https://x.example/a"], "bad url <a list of 1>: expected text"),
        ("currency", 840, "bad currency 840: expected text"),
        ("image", [{"url": "a.jpg"}], "bad image <a list of 1>: expected text or a list of "
                                      "text, found an object"),
        ("tags", ["a", 1], "bad tags <a list of 2>: expected text or a list of text, found a"),
        ("price", ["12"], "bad price <a list of 1>: expected a number"),
        ("id", ["p1"], "bad id <a list of 1>: expected text or a whole number"),
    ],
)
def test_values_of_the_wrong_kind_are_rejected_not_stored_as_reprs(
    field: str, value: object, reason: str
) -> None:
    result = validate_fields({**GOOD, field: value}, 3)
    assert isinstance(result, str) and result.startswith(reason), result


@pytest.mark.parametrize("bad_id", ["a/b", "a\x00b", "a\nb", "tab\there", "\u202eevil", "a\\b",
                                    ".", "..", "zero\u200bwidth", "bell\x07"])
def test_ids_that_cannot_be_part_of_an_address_are_rejected(bad_id: str) -> None:
    result = validate_fields({**GOOD, "id": bad_id}, 2)
    assert isinstance(result, str) and result.startswith("bad id"), result


@pytest.mark.parametrize("good_id", ["SKU-1_2.3", "a b", "bague-été", "x?y", "100%", "...a"])
def test_ordinary_ids_are_kept(good_id: str) -> None:
    assert validate_fields({**GOOD, "id": good_id}, 2).id == good_id


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"title": "t" * 501}, "title is 501 characters long, over the 500 limit"),
        ({"title": "t" * 1_000_000}, "field 'title' is 1,000,000 characters long"),
        ({"id": "i" * 201}, "id is 201 characters long, over the 200 limit"),
        ({"url": "https://x.example/" + "u" * 5000}, "url is 5,018 characters long"),
        ({"image": ["a.jpg", "b" * 5000]}, "image reference 'bbbb"),
        ({"tags": "a|" + "t" * 300}, "tag 'tttt"),
    ],
)
def test_overlong_fields_are_rejected_not_truncated(changes: dict, reason: str) -> None:
    result = validate_fields({**GOOD, **changes}, 2)
    assert isinstance(result, str) and result.startswith(reason), result
    assert len(result) < 200  # the value itself is not echoed whole


def test_the_longest_allowed_title_is_kept_whole() -> None:
    assert validate_fields({**GOOD, "title": "t" * 500}, 2).title == "t" * 500


def test_printed_results_neutralise_control_characters_of_older_stores() -> None:
    """A store ingested before the text was cleaned may still hold escapes: the CLI's result
    lines must not hand them to the terminal."""
    from jewelrec.commands import format_results
    from jewelrec.recommend import Result

    stored = Result(id="e1", title="Esc \x1b[31mRED\x1b]0;pwned\x07", type="ring",
                    brand="B\x1b[2J", price=10.0, currency="USD",
                    url="https://shop.example/e1", image="a.jpg", score=0.9)
    (line,) = format_results([stored])
    assert "\x1b" not in line and "\x07" not in line and "Esc  [31mRED ]0;pwned" in line
