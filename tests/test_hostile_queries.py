"""What a hostile but fair user found on the query path (crops, pieces, words, large JPEGs, the
CLI's recommend / synth / train): each test failed before its fix, or guards a corner that
held (marked so). Boxes in answers stay inside the photo; bad input gets a 4xx or a one-line
CLI message naming the problem, never a traceback."""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jewelrec.imaging.segment import Box
from jewelrec.server.app import create_app

ROTATED = 6  # EXIF orientation: stored landscape, shown upright as portrait


@pytest.fixture(scope="module")
def client(tiny_home):
    with TestClient(create_app(tiny_home), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def recommender(tiny_home):
    from jewelrec.recommend import Recommender

    return Recommender.open(tiny_home)


def jpeg(photo: bytes, size: tuple[int, int], orientation: int | None = None) -> bytes:
    """The photo scaled to `size` as stored, with an EXIF orientation when given."""
    img = Image.open(io.BytesIO(photo)).convert("RGB").resize(size)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


def post(client, photo: bytes, **fields):
    return client.post("/api/recommend", files={"photo": ("p.jpg", photo, "image/jpeg")},
                       data={k: str(v) for k, v in fields.items()})


# -- crops ---------------------------------------------------------------------------------
def test_a_crop_too_small_is_named_so_not_outside(client, tiny_query_photo):
    """A 1x1 crop inside the photo was answered 'lies outside the photo'."""
    answer = post(client, tiny_query_photo, crop="0,0,1,1")
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "keeps only 1x1 pixels" in detail and "at least 2x2" in detail
    assert "outside" not in detail
    beyond = post(client, tiny_query_photo, crop="300,300,310,310")  # the photo is 256x256
    assert beyond.status_code == 422 and "lies outside the 256x256 photo" in beyond.json()[
        "detail"]


@pytest.mark.parametrize("text", ["²,0,5,5", "0,0," + "9" * 5000 + ",5", "0,0,5,5\x00"])
def test_a_crop_of_odd_digits_gets_the_box_rule_not_pythons_words(client, tiny_query_photo,
                                                                    text):
    """'²' passed isdigit() and reached int(); 5,000 digits hit Python's digit limit: both
    answered in Python's words ('invalid literal for int()', 'sys.set_int_max_str_digits')."""
    with pytest.raises(ValueError, match="four whole non-negative numbers"):
        Box.parse(text)
    answer = post(client, tiny_query_photo, crop=text)
    assert answer.status_code == 422
    assert "four whole non-negative numbers" in answer.json()["detail"]
    assert "int()" not in answer.json()["detail"]


def test_cli_crop_outside_a_rotated_photo_names_the_box_asked(tiny_home, tiny_query_photo,
                                                              tmp_path, capsys):
    """The message showed the box clipped to the photo ((1200, 0, 1200, 100) 'is empty'),
    not the one asked for."""
    from jewelrec.cli import main

    photo = tmp_path / "turned.jpg"  # stored 1600x1200, upright 1200x1600
    photo.write_bytes(jpeg(tiny_query_photo, (1600, 1200), ROTATED))
    code = main(["recommend", str(photo), "--home", str(tiny_home), "--crop", "1500,0,1600,100"])
    err = capsys.readouterr().err
    assert code == 1
    assert "(1500, 0, 1600, 100) lies outside the 1200x1600 photo" in err
    assert "Traceback" not in err


def test_guard_every_box_of_a_combined_query_on_a_large_turned_jpeg_is_in_the_photo(
        client, tiny_query_photo):
    """Guard (held): piece + crop + words + filters + prefer_brand on a large EXIF-rotated
    JPEG decoded reduced: the crop, pieces and views come back in the upright photo's pixels."""
    photo = jpeg(tiny_query_photo, (3000, 2000), ROTATED)  # upright 2000x3000
    for fields in ({}, {"piece": 0, "q": "but in silver", "prefer_brand": "Kestrel Atelier"},
                   {"piece": 0, "crop": "1990,2990,2500,3500", "q": "under 2000",
                    "min_price": 1, "max_price": 5000, "type": "any"}):
        answer = post(client, photo, **fields)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert (data["photo_size"]["width"], data["photo_size"]["height"]) == (2000, 3000)
        boxes = [data["crop"], *(p["box"] for p in data["pieces"]),
                 *(p["view"] for p in data["pieces"] if p.get("view"))]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 2000 and 0 <= y0 < y1 <= 3000, (fields, boxes)
    assert client.get("/healthz").status_code == 200


# -- words with a type -----------------------------------------------------------------------
def test_words_naming_another_type_than_the_callers_are_not_claimed_applied(recommender,
                                                                            tiny_query_photo):
    """`recommend --words earring --type ring` searched rings but said the words applied the
    type earring (the API, whose type is a filter, said nothing)."""
    one = recommender.recommend(tiny_query_photo, text="earring", type="ring")
    every = recommender.recommend_pieces(tiny_query_photo, text="earring", type="ring")
    for answer in (one, *every):
        assert answer.searched_types == ["ring"]
        assert answer.applied["types"] == []
        assert {r.type for r in answer.results} == {"ring"}


# -- the HTML page ---------------------------------------------------------------------------
def test_html_page_embeds_a_thumbnail_not_the_whole_large_photo(tiny_query_photo):
    """A 12-megapixel query photo was decoded whole and embedded at full size (megabytes of
    base64 on the page, once per piece answered)."""
    from jewelrec.html_report import THUMBNAIL_SIDE, _thumbnail_data_uri

    uri = _thumbnail_data_uri(jpeg(tiny_query_photo, (4000, 3000)))
    embedded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(embedded.size) == THUMBNAIL_SIDE
    assert embedded.size[0] > embedded.size[1]  # the photo's shape is kept


# -- synth --sets ----------------------------------------------------------------------------
def test_synth_refuses_too_many_sets_before_drawing_anything(tmp_path, capsys):
    """A huge --sets listed a choice per set photo before drawing one (hours, gigabytes)."""
    from jewelrec.catalog.synthetic import MAX_SETS
    from jewelrec.cli import EXIT_USAGE, main

    out = tmp_path / "demo"
    code = main(["synth", "--out", str(out), "--products", "40", "--views", "1", "--sets",
                 str(10**15), "--no-progress"])
    assert code == EXIT_USAGE
    assert f"at most {MAX_SETS:,} set photos" in capsys.readouterr().err
    assert not out.exists()


def test_synth_refuses_sets_it_cannot_draw_before_the_catalog(tmp_path, capsys):
    """Sets needing more of a type than the catalog has were refused after the catalog was
    drawn and written."""
    from jewelrec.cli import EXIT_USAGE, main

    out = tmp_path / "demo"
    code = main(["synth", "--out", str(out), "--products", "2", "--views", "1", "--sets", "1",
                 "--no-progress"])
    assert code == EXIT_USAGE
    assert "draw more products" in capsys.readouterr().err
    assert not (out / "catalog.csv").exists()


@pytest.mark.parametrize("extra", [[], ["--sets", "1"]])
def test_synth_refuses_too_many_products_before_drawing_anything(tmp_path, capsys, monkeypatch,
                                                                 extra):
    """--products had no upper limit: a huge N listed a job per product, then drew for ever."""
    from jewelrec.catalog import synthetic
    from jewelrec.cli import EXIT_USAGE, main

    def started(*args, **kwargs):
        raise AssertionError("drawing started")

    monkeypatch.setattr(synthetic, "_run_jobs", started)
    monkeypatch.setattr(synthetic, "_products_by_type", started)
    out = tmp_path / "demo"
    code = main(["synth", "--out", str(out), "--products", "100001", "--views", "1",
                 "--no-progress", *extra])
    assert code == EXIT_USAGE
    assert "--products 100,001: at most 100,000 products" in capsys.readouterr().err
    assert synthetic.MAX_PRODUCTS == 100_000
    assert not out.exists()


@pytest.mark.parametrize("extra", [[], ["--sets", "1"]])
@pytest.mark.parametrize(("option", "too_many", "message"), [
    ("--views", "21", "--views 21: at most 20 photos of each product"),
    ("--query-photos", "100001", "--query-photos 100,001: at most 100,000 shopper photos"),
])
def test_synth_refuses_too_many_views_or_query_photos_before_drawing_anything(
        tmp_path, capsys, monkeypatch, extra, option, too_many, message):
    """--views and --query-photos had no upper limit: a huge N drew for ever, after writing."""
    from jewelrec.catalog import synthetic
    from jewelrec.cli import EXIT_USAGE, main

    def started(*args, **kwargs):
        raise AssertionError("drawing started")

    monkeypatch.setattr(synthetic, "_run_jobs", started)
    monkeypatch.setattr(synthetic, "_products_by_type", started)
    out = tmp_path / "demo"
    code = main(["synth", "--out", str(out), "--products", "40", "--no-progress", option,
                 too_many, *extra])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert (synthetic.MAX_VIEWS, synthetic.MAX_QUERY_PHOTOS) == (20, 100_000)
    assert not out.exists()


# -- train --adapt-seconds -------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--adapt-seconds", "30"],  # the home's embedder (efficientnet) does not adapt
    ["--adapt-seconds", "-5", "--embedder", "efficientnet-adapted"],
])
def test_a_refused_adapt_budget_trains_nothing(tiny_home, tmp_path, capsys, argv):
    """The budget was checked when the embedder's turn came: the classifier was trained and
    saved first (a refused command replaced the served type classifier)."""
    from jewelrec.cli import EXIT_USAGE, main

    home = tmp_path / "home"
    shutil.copytree(tiny_home, home)
    models = sorted(p for p in (home / "models").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in models}
    code = main(["train", "--home", str(home), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "--adapt-seconds" in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in models} == before
    assert sorted(p for p in (home / "models").rglob("*") if p.is_file()) == models


# -- more like this ------------------------------------------------------------------------
def test_more_like_this_with_a_broken_catalog_image_names_no_server_path(tiny_home, tmp_path):
    """A catalog image damaged or gone on disk was answered 422 (the shopper's fault) with the
    server's absolute path in the message."""
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.home import Home

    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home, home.root)
    product = next(iter(CatalogStore.open(home, read_only=True).all_products()))
    image = home.image_path(product.image)
    others = [home.image_path(name) for name in product.images[1:]]

    def gone() -> None:  # every photo of it (one still there would stand in: Home.shown_image)
        for path in (image, *others):
            path.unlink()

    with TestClient(create_app(home.root), raise_server_exceptions=False) as client:
        for damage in (lambda: image.write_bytes(b"not a jpeg"), gone):
            damage()
            answer = client.get(f"/api/products/{product.id}/similar", params={"q": "in silver"})
            assert answer.status_code == 503, answer.text
            assert str(home.root) not in answer.text and "images/" not in answer.text
            assert product.id in answer.json()["detail"]
        assert client.get("/healthz").status_code == 200


# -- price words -----------------------------------------------------------------------------
@pytest.mark.parametrize("words", ["under 1e309", "under 1.2.3", "under 5k"])
def test_a_price_the_parser_cannot_read_is_not_misread(client, tiny_query_photo, words):
    """'under 1e309' read as 'under 1', '1.2.3' as 1, '5k' as 5: every result filtered
    away, and the answer said so as if asked."""
    from jewelrec.text.query import Vocabulary, parse_query

    assert parse_query(words, Vocabulary.build({})).max_price is None
    answer = post(client, tiny_query_photo, q=words).json()
    assert answer["applied"]["max_price"] is None and answer["results"]
    search = client.get("/api/search", params={"q": words}).json()
    assert search["applied"]["max_price"] is None
    assert parse_query("under 100usd, gold", Vocabulary.build({})).max_price == 100.0


@pytest.mark.parametrize("words", ["between 100 and 50", "between 50 and 100 dollars",
                                   "between $50 and $100"])
def test_a_price_range_is_read_whichever_end_comes_first(client, tiny_query_photo, words):
    """'between 100 and 50' (any 'between') was silently ignored: every price shown."""
    from jewelrec.text.query import Vocabulary, parse_query

    parsed = parse_query(f"gold ring {words}", Vocabulary.build({}))
    assert (parsed.min_price, parsed.max_price) == (50.0, 100.0)
    assert parsed.terms == ("gold", "ring") and not parsed.notes
    search = client.get("/api/search", params={"q": words}).json()
    assert (search["applied"]["min_price"], search["applied"]["max_price"]) == (50.0, 100.0)
    assert all(50 <= r["price"] <= 100 for r in search["results"])


@pytest.mark.parametrize("words", ["under -5", "over -5 dollars", "< -5", "between -5 and 20",
                                   "under $-5"])
def test_a_negative_price_is_said_not_understood_not_ignored(client, tiny_query_photo, words):
    """'under -5' was silently ignored (left as the words 'under' and '5' to rank by)."""
    from jewelrec.text.query import Vocabulary, parse_query

    parsed = parse_query(f"rings {words}", Vocabulary.build({}))
    assert (parsed.min_price, parsed.max_price) == (None, None)
    assert parsed.terms == ("rings",)
    assert len(parsed.notes) == 1 and "-5" in parsed.notes[0] and "below 0" in parsed.notes[0]
    for answer in (client.get("/api/search", params={"q": words}),
                   post(client, tiny_query_photo, q=words)):
        assert answer.status_code == 200, answer.text
        applied = answer.json()["applied"]
        assert applied["notes"] == list(parsed.notes) and applied["max_price"] is None
        assert answer.json()["results"]


def test_text_sent_as_the_photo_is_answered_in_words(client):
    """A form field `photo=hello` (text, not a file) was answered "Value error, Expected
    UploadFile, received: <class 'str'>"."""
    answer = client.post("/api/recommend", data={"photo": "hello"},
                         files={"other": ("x.txt", b"x", "text/plain")})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "photo: expected a file upload, got text"
    assert "class" not in answer.text


# -- the CLI's positionals -----------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["recommend", "a.jpg", "--all-pieces", "b.jpg", "--json", "c.jpg"],
    ["recommend", "--json", "a.jpg", "-k", "3", "b.jpg", "c.jpg"],
])
def test_recommend_takes_photos_after_options(argv):
    """`recommend a.jpg --all-pieces b.jpg` failed with 'unrecognized arguments: b.jpg':
    argparse stopped taking the photos at the first option."""
    from jewelrec.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.photos == ["a.jpg", "b.jpg", "c.jpg"]
    assert args.json


def test_guard_recommend_takes_dash_photos_after_a_double_dash():
    """Guard (held before; the intermixed parse alone would drop the "--")."""
    from jewelrec.cli import build_parser

    args = build_parser().parse_args(["recommend", "--json", "--", "-a.jpg", "b.jpg"])
    assert args.photos == ["-a.jpg", "b.jpg"] and args.json


def test_search_takes_words_after_options():
    """Same for search's words: `search rose gold --json earrings`."""
    from jewelrec.cli import build_parser

    args = build_parser().parse_args(["search", "rose", "gold", "--json", "earrings", "-k", "2"])
    assert args.query == ["rose", "gold", "earrings"] and args.json and args.k == 2


def test_recommend_json_keeps_one_line_per_photo_when_one_fails(tiny_home, tiny_query_photo,
                                                                  tmp_path, capsys):
    """An unreadable photo printed only a line on stderr: a script reading one JSON line per
    photo paired the next photo's answer with it."""
    import json

    from jewelrec.cli import main

    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(tiny_query_photo)
    bad.write_bytes(b"not a photo")
    code = main(["recommend", str(bad), str(good), "--home", str(tiny_home), "--json",
                 "--all-pieces", "-k", "2"])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 2
    assert lines[0]["photo"] == str(bad) and lines[0]["error"] in captured.err
    assert isinstance(lines[1], list) and lines[1][0]["photo"] == str(good)
