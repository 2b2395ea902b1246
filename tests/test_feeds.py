"""Shop feeds: Google Merchant (RSS, Atom, TSV), Shopify and WooCommerce exports, the type rules,
detection from content, refused XML bombs, and a feed and its images fetched over HTTP."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from PIL import Image

from jewelrec.catalog.feeds import FeedOptions, TypeRules, detect_feed
from jewelrec.catalog.ingest import ingest, read_rows
from jewelrec.catalog.store import CatalogStore
from jewelrec.cli import main
from jewelrec.errors import CatalogError
from jewelrec.home import Home

DATA = Path(__file__).resolve().parent / "data"
SHOP = FeedOptions(shop_url="https://shop.example", currency="EUR")


def by_id(parsed) -> dict:
    return {row.id: row for row in parsed.rows}


def reasons(parsed) -> dict:
    return {r.id: r.reason for r in parsed.rejected}


# -- Google Merchant ----------------------------------------------------------------------------

def test_google_rss_sample_counts_prices_images_and_groups() -> None:
    parsed = read_rows(DATA / "google_feed.xml")
    assert parsed.format == "google"
    rows = by_id(parsed)
    assert sorted(rows) == ["G-100-R", "G-100-Y", "G-200", "G-300", "G-400"]
    hoop = rows["G-100-Y"]
    assert (hoop.type, str(hoop.price), hoop.currency) == ("earring", "39.00", "USD")  # sale
    assert hoop.image_refs == tuple(f"https://cdn.shop.example/hoop-y-{i}.jpg" for i in (1, 2, 3))
    assert hoop.metal == "yellow gold" and hoop.brand == "Aurum"
    # Variants of one design stay separate products, grouped by a tag.
    assert "group:G-100" in hoop.tags and "group:G-100" in rows["G-100-R"].tags
    assert str(rows["G-100-R"].price) == "49.00"
    assert rows["G-200"].type == "ring"  # google_product_category given as taxonomy id 200
    assert rows["G-200"].metal == "platinum"  # from material when color says nothing
    assert rows["G-300"].type == "necklace"
    assert (rows["G-400"].type, rows["G-400"].currency) == ("bracelet", "EUR")  # "Armbänder"
    rejected = reasons(parsed)
    assert sorted(rejected) == ["G-500", "G-600", "G-700", "G-800"]
    assert "no type rule matches" in rejected["G-500"] and "Jewelry" in rejected["G-500"]
    assert rejected["G-600"].startswith("bad price 'free'")
    assert "several types (earring, necklace)" in rejected["G-700"]
    assert "not http(s)" in rejected["G-800"]


def test_google_atom_sample_reads_links_and_other_languages() -> None:
    parsed = read_rows(DATA / "google_feed_atom.xml")
    rows = by_id(parsed)
    assert not parsed.rejected
    assert {i: (r.type, str(r.price), r.currency) for i, r in rows.items()} == {
        "L-1": ("earring", "35.00", "EUR"),  # "Boucles d’oreilles", typographic apostrophe
        "L-2": ("ring", "22.00", "EUR"),  # "EUR 22.00", "Anillos"
        "L-3": ("necklace", "51.20", "EUR"),  # sale price; "Bijoux / Colliers"
    }
    assert rows["L-1"].url == "https://lune.example/produits/creoles"


def test_google_tsv_sample() -> None:
    parsed = read_rows(DATA / "google_feed.tsv")
    rows = by_id(parsed)
    assert parsed.format == "google" and sorted(rows) == ["T-1", "T-2", "T-3"]
    assert len(rows["T-1"].image_refs) == 3  # additional_image_link: comma-separated
    assert rows["T-1"].type == "necklace"  # "Necklaces > Pendants"
    assert (rows["T-2"].type, str(rows["T-2"].price)) == ("bracelet", "64.00")  # id 191, sale
    assert rows["T-3"].metal == "brass"
    assert [(r.row, r.id, r.reason) for r in parsed.rejected] == [
        (5, "T-4", "missing field 'image'")]


@pytest.mark.parametrize("name", ["billion_laughs.xml", "external_entity.xml"])
def test_xml_entities_are_refused_before_anything_is_stored(tmp_path: Path, name: str) -> None:
    if name == "external_entity.xml":
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP SECRET")
        (tmp_path / name).write_text(
            f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
            '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>x</g:id>'
            "<g:title>&xxe;</g:title></item></channel></rss>\n"
        )
        path = tmp_path / name
    else:
        path = DATA / name
    home = Home(tmp_path / "home")
    with pytest.raises(CatalogError, match="refused: the XML declares or refers to entities"):
        ingest(path, home, progress=False)
    assert not (home.root / "catalog.sqlite").exists()


def test_xml_that_is_not_a_feed_or_not_well_formed_is_one_clear_error(tmp_path: Path) -> None:
    svg = tmp_path / "feed.xml"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    with pytest.raises(CatalogError, match=r"RSS 2.0 \(<rss>\) or Atom \(<feed>\), not <svg>"):
        read_rows(svg)
    broken = tmp_path / "broken.xml"
    broken.write_text("<rss><channel><item><g:id>1</item></channel></rss>")
    with pytest.raises(CatalogError, match="not well-formed XML"):
        read_rows(broken)


# -- Shopify and WooCommerce --------------------------------------------------------------------

def test_shopify_export_needs_a_shop_url_for_its_links() -> None:
    with pytest.raises(CatalogError, match="--shop-url"):
        read_rows(DATA / "shopify_products.csv")


def test_shopify_sample_groups_rows_by_handle_and_counts_drafts() -> None:
    parsed = read_rows(DATA / "shopify_products.csv", options=SHOP)
    assert parsed.format == "shopify"
    rows = by_id(parsed)
    assert sorted(rows) == ["gold-hoop-earrings", "pearl-necklace", "silver-band-ring"]
    hoop = rows["gold-hoop-earrings"]
    assert (hoop.type, str(hoop.price), hoop.currency) == ("earring", "49.00", "EUR")  # cheapest
    assert hoop.url == "https://shop.example/products/gold-hoop-earrings"
    assert hoop.image_refs == tuple(f"https://cdn.shopify.example/hoop-{i}.jpg" for i in (1, 2, 3))
    assert (hoop.brand, hoop.metal, hoop.tags) == ("Aurum", "yellow gold", ("gold", "hoops"))
    assert rows["silver-band-ring"].type == "ring"  # "Ringe"
    pearl = rows["pearl-necklace"]
    assert pearl.type == "necklace"  # from Product Category, Type being empty
    assert pearl.image_refs[:2] == ("https://cdn.shopify.example/pearl-1.jpg",
                                    "https://cdn.shopify.example/pearl-2.jpg")  # by position
    assert parsed.skipped == {"draft": 1, "archived": 1}
    rejected = reasons(parsed)
    assert sorted(rejected) == ["mystery-item", "no-image-ring"]
    assert "'Accessories'" in rejected["mystery-item"]
    assert rejected["no-image-ring"] == "missing field 'image'"
    assert "draft-necklace" not in parsed.listed_ids  # --prune removes what became a draft


def test_woocommerce_sample_merges_variations_and_skips_drafts() -> None:
    parsed = read_rows(DATA / "woocommerce_products.csv", options=SHOP)
    assert parsed.format == "woocommerce"
    rows = by_id(parsed)
    assert sorted(rows) == ["101", "102", "108"]
    drop = rows["101"]
    assert (drop.type, str(drop.price), drop.brand, drop.metal) == (
        "earring", "29.90", "Luna", "silver")  # sale price, Brands column, Metal attribute
    assert len(drop.image_refs) == 2 and drop.url == "https://shop.example/?p=101"
    ring = rows["102"]
    assert (ring.type, str(ring.price), ring.brand) == ("ring", "35.00", "Orbit")  # variation
    assert rows["108"].metal == "rose gold"
    assert parsed.skipped == {"draft": 1, "private": 1, "grouped": 1}
    rejected = reasons(parsed)
    assert sorted(rejected) == ["109", "110", "111"]
    assert "several types (ring, necklace)" in rejected["109"]
    assert "unknown parent 'id:999'" in rejected["110"]
    assert "'Uncategorized'" in rejected["111"]


def test_unpublished_and_hidden_products_are_skipped(tmp_path: Path) -> None:
    """Older exports have no Status; an active product not published on the online store has
    no product page there (it was stored, and its link answered 404)."""
    for status, hidden, shown in (("", "false", "true"), (",active", "FALSE", "TRUE")):
        shopify = tmp_path / f"shopify{status}.csv"
        shopify.write_text(
            f"Handle,Title,Vendor,Type,Variant Price,Image Src,Published{status and ',Status'}\n"
            f"hidden-ring,Hidden,Orbit,Rings,10.00,https://cdn.example/a.jpg,{hidden}{status}\n"
            f"shown-ring,Shown,Orbit,Rings,12.00,https://cdn.example/b.jpg,{shown}{status}\n")
        parsed = read_rows(shopify, options=SHOP)
        assert sorted(by_id(parsed)) == ["shown-ring"] and parsed.skipped == {"unpublished": 1}
    woo = tmp_path / "woo.csv"
    woo.write_text(
        "ID,Type,SKU,Name,Published,Visibility in catalog,Regular price,Categories,Images,"
        "Permalink\n"
        "1,simple,A,Hidden,1,hidden,5,Rings,https://cdn.example/1.jpg,\n"
        "2,simple,B,Shown,1,visible,6,Rings,https://cdn.example/2.jpg,https://woo.example/shown\n")
    parsed = read_rows(woo)  # a Permalink column: no --shop-url needed
    assert parsed.skipped == {"hidden": 1}
    assert by_id(parsed)["2"].url == "https://woo.example/shown"


def test_google_tsv_accepts_header_names_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "feed.txt"
    path.write_text("ID\tTitle\tLink\tImage link\tPrice\tProduct type\n"
                    "s1\tStud\thttps://x.example/s1\thttps://x.example/s1.jpg\t9.99 GBP\t"
                    "Earrings\n")
    parsed = read_rows(path)
    assert parsed.format == "google"
    row = by_id(parsed)["s1"]
    assert (row.type, str(row.price), row.currency) == ("earring", "9.99", "GBP")


GOOGLE_RSS = ('<?xml version="1.0"?>\n<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'
              '<channel>{items}</channel></rss>\n')


def google_item(item_id: str, **extra: str) -> str:
    fields = {"id": item_id, "title": f"Ring {item_id}", "link": f"https://s.example/{item_id}",
              "image_link": f"https://cdn.example/{item_id}.jpg", "price": "200.00 USD",
              "product_type": "Rings", **extra}
    return "<item>" + "".join(f"<g:{k}>{v}</g:{k}>" for k, v in fields.items()) + "</item>"


def test_google_feeds_as_shops_write_them(tmp_path: Path) -> None:
    """Prices with spaced thousands, sales outside their dates, comma-separated extra images
    (a comma inside a CDN link kept), and Atom's rel="self" link: each once lost a product or
    stored a wrong price or link."""
    feed = tmp_path / "feed.xml"
    feed.write_text(GOOGLE_RSS.format(items="".join([
        google_item("fr", price="1\u00a0299,00 EUR"),
        google_item("ended", sale_price="20.00 USD",
                    sale_price_effective_date="2020-01-01T00:00-0800/2020-01-31T23:59-0800"),
        google_item("ahead", sale_price="20.00 USD",
                    sale_price_effective_date="2099-01-01T00:00Z/2099-02-01T00:00Z"),
        google_item("on", sale_price="20.00 USD",
                    sale_price_effective_date="2020-01-01T00:00Z/2099-02-01T00:00Z"),
        google_item("more", additional_image_link="https://cdn.example/w_400,h_400/a.jpg,"
                    "https://cdn.example/b.jpg"),
    ])), encoding="utf-8")
    rows = by_id(read_rows(feed))
    assert (str(rows["fr"].price), rows["fr"].currency) == ("1299.00", "EUR")
    prices = {key: str(rows[key].price) for key in ("ended", "ahead", "on")}
    assert prices == {"ended": "200.00", "ahead": "200.00", "on": "20.00"}
    assert rows["more"].image_refs == ("https://cdn.example/more.jpg",
                                       "https://cdn.example/w_400,h_400/a.jpg",
                                       "https://cdn.example/b.jpg")
    atom = tmp_path / "atom.xml"
    atom.write_text(
        '<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:g="http://base.google.com/ns/1.0"><entry><g:id>a3</g:id><title>Ring</title>'
        '<link rel="self" href="https://s.example/api/a3.xml"/>'
        '<link rel="alternate" href="https://s.example/p/a3"/>'
        '<g:image_link>https://cdn.example/a3.jpg</g:image_link><g:price>9.99 USD</g:price>'
        '<g:product_type>Rings</g:product_type></entry></feed>\n', encoding="utf-8")
    assert by_id(read_rows(atom))["a3"].url == "https://s.example/p/a3"


def test_a_google_feed_saved_as_csv_is_read_with_its_commas(tmp_path: Path) -> None:
    """A feed downloaded from Google Sheets as CSV was detected as Google and then read as TSV:
    'its header has no id column'."""
    feed = tmp_path / "feed.csv"
    feed.write_text("id,title,link,image_link,price,product_type\n"
                    'c1,"Ring, gold",https://s.example/c1,https://cdn.example/c1.jpg,'
                    '"1,299.00 USD",Rings\n')
    parsed = read_rows(feed)
    row = by_id(parsed)["c1"]
    assert parsed.format == "google" and (row.title, str(row.price)) == ("Ring, gold", "1299.00")


def test_a_woocommerce_sale_counts_only_within_its_dates(tmp_path: Path) -> None:
    woo = tmp_path / "woo.csv"
    woo.write_text(
        "ID,Type,Name,Published,Date sale price starts,Date sale price ends,Sale price,"
        "Regular price,Categories,Images,Permalink\n"
        "1,simple,Later,1,2099-01-01 00:00:00,,10.00,100.00,Rings,https://c.example/1.jpg,"
        "https://w.example/1\n"
        "2,simple,Over,1,2020-01-01,2020-01-31,10.00,100.00,Rings,https://c.example/2.jpg,"
        "https://w.example/2\n"
        "3,simple,Now,1,2020-01-01,,10.00,100.00,Rings,https://c.example/3.jpg,"
        "https://w.example/3\n"
        "4,simple,Plain,1,,,10.00,100.00,Rings,https://c.example/4.jpg,https://w.example/4\n")
    prices = {key: str(row.price) for key, row in by_id(read_rows(woo)).items()}
    assert prices == {"1": "100.00", "2": "100.00", "3": "10.00", "4": "10.00"}


def test_a_variable_product_with_every_variation_disabled_is_skipped(tmp_path: Path) -> None:
    """Its disabled variations' prices were taken: a product nobody can buy was recommended."""
    woo = tmp_path / "woo.csv"
    woo.write_text("ID,Type,SKU,Parent,Name,Published,Regular price,Categories,Images,Permalink\n"
                   "5,variable,V,,Ring,1,,Rings,https://c.example/5.jpg,https://w.example/5\n"
                   "6,variation,V-S,id:5,Ring S,0,10.00,,,\n"
                   "7,variation,V-M,id:5,Ring M,0,12.00,,,\n")
    parsed = read_rows(woo)
    assert not parsed.rows and parsed.skipped == {"no enabled variation": 1}


def test_a_woocommerce_row_without_an_id_says_why_it_has_no_link(tmp_path: Path) -> None:
    woo = tmp_path / "woo.csv"
    woo.write_text("ID,Type,SKU,Name,Published,Regular price,Categories,Images\n"
                   ",simple,RING-1,Ring,1,10.00,Rings,https://c.example/1.jpg\n")
    (reason,) = reasons(read_rows(woo, options=SHOP)).values()
    assert reason.startswith("no product link: the row has no ID")


def test_a_shop_export_with_a_quote_never_closed_is_one_clear_error(tmp_path: Path) -> None:
    """The csv module would read the rest of the export as one value, products lost unsaid."""
    options = FeedOptions(shop_url="https://shop.example")
    for sample in ("shopify_products.csv", "woocommerce_products.csv", "google_feed.tsv"):
        text = (DATA / sample).read_text(encoding="utf-8").rstrip("\n")
        head, last = text.rsplit("\n", 1)
        broken = tmp_path / sample
        broken.write_text(f'{head}\n"{last}\n', encoding="utf-8")  # the last row opens a quote
        assert read_rows(DATA / sample, options=options).rows  # the sample itself reads
        with pytest.raises(CatalogError, match=r"row \d+ opens a quoted field"):
            read_rows(broken, options=options)


# -- detection and --format ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "expected"),
    [("google_feed.xml", "google"), ("google_feed_atom.xml", "google"),
     ("google_feed.tsv", "google"), ("shopify_products.csv", "shopify"),
     ("woocommerce_products.csv", "woocommerce")],
)
def test_feeds_are_detected_by_content_whatever_their_name(
    tmp_path: Path, name: str, expected: str
) -> None:
    renamed = tmp_path / "export.txt"
    shutil.copy(DATA / name, renamed)
    assert detect_feed(renamed) == expected


def test_our_own_csv_is_not_taken_for_a_feed(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,title,type,price,url,image\n1,a,ring,1,https://x.example/1,a.jpg\n")
    assert detect_feed(path) is None
    assert read_rows(path).format == "csv"


def test_a_forced_format_that_does_not_fit_is_one_clear_error() -> None:
    with pytest.raises(CatalogError, match="not a Shopify products export.*'handle'"):
        read_rows(DATA / "woocommerce_products.csv", "shopify", SHOP)
    with pytest.raises(CatalogError, match="unknown catalog format 'xml'"):
        read_rows(DATA / "google_feed.xml", "xml")


# -- type rules --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("Apparel & Accessories > Jewelry > Earrings", "earring"),
        ("Jewellery / Rings", "ring"),
        ("Ohrringe", "earring"),  # not "ringe" (ring): whole words only
        ("Schmuck > Ringe", "ring"),
        ("Bijoux > Boucles d'oreilles", "earring"),
        ("Bagues", "ring"),
        ("Pendientes", "earring"),
        ("Halsketten", "necklace"),
        ("colliers", "necklace"),
        ("Armbänder", "bracelet"),
        ("Pulseras", "bracelet"),
        ("Jewelry > Rings > Engagement", "ring"),  # the most specific segment that names one
        ("194", "earring"),
    ],
)
def test_default_rules_map_category_text_in_four_languages(category: str, expected: str) -> None:
    assert TypeRules.defaults().classify([[category]]) == expected


def test_unmapped_and_ambiguous_categories_are_reasons_not_guesses() -> None:
    rules = TypeRules.defaults()
    assert "no type rule matches the category 'Gifts'" in rules.classify([["Gifts"]])
    assert "several types" in rules.classify([["Rings & Earrings"]])
    assert rules.classify([[None, ""]]).startswith("no category")
    # A later source decides only when the first says nothing.
    assert rules.classify([["Sale"], ["Apparel & Accessories > Jewelry > Rings"]]) == "ring"


def test_rules_file_extends_or_replaces_the_defaults(tmp_path: Path) -> None:
    rules = TypeRules.load(DATA / "types.toml")
    assert rules.classify([["Piercings"]]) == "body jewelry"
    assert rules.classify([["190"]]) == "body jewelry"
    assert rules.classify([["Ear jewellery"]]) == "earring"
    assert rules.classify([["Rings"]]) == "ring"  # defaults kept
    only = tmp_path / "only.toml"
    only.write_text('defaults = false\n[types]\ntrinket = ["trinkets"]\n')
    replaced = TypeRules.load(only)
    assert replaced.classify([["Trinkets"]]) == "trinket"
    assert "no type rule" in replaced.classify([["Rings"]])


@pytest.mark.parametrize(
    ("text", "message"),
    [("[types\n", "not valid TOML"), ('[types]\nring = "rings"\n', "must be a list of words"),
     ("colour = 1\n", "unknown keys colour"), ("[google_ids]\nring = [true]\n", "whole numbers")],
)
def test_a_bad_rules_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        TypeRules.load(path)


# -- over HTTP: the feed and its images -----------------------------------------------------------

class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder the test made; counts the requests per path."""

    requests: dict[str, int]
    statuses: list[tuple[str, int]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests[self.path] = self.requests.get(self.path, 0) + 1
        super().do_GET()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.statuses.append((self.path, int(code)))
        super().send_response(code, message)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def shop_site(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, int], list]]:
    """(base URL, folder served, request counts, (path, status) answered): an http.server on
    127.0.0.1, any free port. It answers If-Modified-Since with 304 (no ETags)."""
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    counts: dict[str, int] = {}
    handler = type("Handler", (CountingHandler,), {"requests": counts, "statuses": []})

    def make(*args, **kwargs):
        return handler(*args, directory=str(site), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site, counts, handler.statuses
    finally:
        server.shutdown()
        server.server_close()


def write_google_feed(site: Path, base: str, products: int) -> None:
    types = ["Earrings", "Rings", "Necklaces", "Bracelets"]
    items = []
    for i in range(products):
        for view in (0, 1):
            pixels = np.random.default_rng(i * 10 + view).integers(0, 256, (24, 24, 3), np.uint8)
            Image.fromarray(pixels).save(site / "img" / f"p{i}-{view}.png")
        items.append(
            f"<item><g:id>p{i}</g:id><g:title>{escape(f'Piece {i} & co')}</g:title>"
            f"<g:link>https://shop.example/p{i}</g:link>"
            f"<g:image_link>{base}/img/p{i}-0.png</g:image_link>"
            f"<g:additional_image_link>{base}/img/p{i}-1.png</g:additional_image_link>"
            f"<g:price>{10 + i}.50 USD</g:price><g:product_type>Jewelry &gt; {types[i % 4]}"
            f"</g:product_type><g:item_group_id>g{i // 2}</g:item_group_id></item>"
        )
    (site / "feed.xml").write_text(
        '<?xml version="1.0"?><rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'
        f"<channel>{''.join(items)}</channel></rss>", encoding="utf-8")


def test_a_feed_url_and_its_images_are_fetched_once(tmp_path: Path, shop_site) -> None:
    base, site, counts, _ = shop_site
    write_google_feed(site, base, products=8)
    home = Home(tmp_path / "home")
    with pytest.raises(CatalogError, match="loopback address .* refused"):
        ingest(f"{base}/feed.xml", home, fetch_images=True, progress=False)

    first = ingest(f"{base}/feed.xml", home, fetch_images=True, allow_private_urls=True,
                   progress=False)
    assert (first.format, first.added, first.rejected, first.images_added) == ("google", 8, [], 16)
    assert first.catalog == f"{base}/feed.xml"
    assert sum(n for path, n in counts.items() if path.startswith("/img/")) == 16
    store = CatalogStore.open(home)
    try:
        product = store.get("p5")
        assert (product.type, product.price, len(product.images)) == ("ring", 15.5, 2)
        assert "group:g2" in product.tags and product.title == "Piece 5 & co"
    finally:
        store.close()

    before = dict(counts)
    again = ingest(f"{base}/feed.xml", home, fetch_images=True, allow_private_urls=True,
                   progress=False)
    assert (again.added, again.unchanged, again.images_added) == (0, 8, 0)
    fetched_again = {p: n - before.get(p, 0) for p, n in counts.items() if n != before.get(p, 0)}
    assert fetched_again == {"/feed.xml": 1}  # the feed itself, and no image

    (site / "login.html").write_text("<html><body>Sign in</body></html>")
    with pytest.raises(CatalogError) as refused:  # a feed address answering a login page
        ingest(f"{base}/login.html", home, allow_private_urls=True, progress=False)
    assert f"{base}/login.html" in str(refused.value) and "jewelrec-feed-" not in str(
        refused.value)  # named by its address, not by the temporary copy that is gone


def test_cli_ingests_a_feed_with_format_types_and_json(tmp_path: Path, capsys) -> None:
    code = main(["ingest", str(DATA / "woocommerce_products.csv"), "--home", str(tmp_path / "h"),
                 "--format", "woocommerce", "--types", str(DATA / "types.toml"),
                 "--shop-url", "https://woo.example", "--currency", "eur", "--json"])
    summary = json.loads(capsys.readouterr().out)
    # Every row is rejected (below): nothing stored is a failure, exit 1, the summary says why.
    assert code == 1 and summary["format"] == "woocommerce"
    assert summary["error"] == "no valid rows: all 6 rows were rejected"
    assert summary["skipped"] == {"draft": 1, "private": 1, "grouped": 1}
    # Remote images without --fetch-images, plus the three bad rows.
    assert len(summary["rejected"]) == 6 and summary["added"] == 0
    code = main(["ingest", str(DATA / "shopify_products.csv"), "--home", str(tmp_path / "h")])
    assert code == 2 and "--shop-url" in capsys.readouterr().err


def test_revalidation_downloads_only_what_changed(tmp_path: Path, shop_site) -> None:
    base, site, _, statuses = shop_site
    write_google_feed(site, base, products=4)
    home = Home(tmp_path / "home")
    fetch = {"fetch_images": True, "allow_private_urls": True, "progress": False,
             "fetch_workers": 3}
    assert ingest(f"{base}/feed.xml", home, **fetch).images_added == 8

    statuses.clear()
    again = ingest(f"{base}/feed.xml", home, revalidate_images=True, **fetch)
    images = [code for path, code in statuses if path.startswith("/img/")]
    assert images == [304] * 8  # asked with If-Modified-Since: nothing downloaded
    assert (again.unchanged, again.images_added) == (4, 0)

    changed = site / "img" / "p1-0.png"
    Image.new("RGB", (24, 24), (250, 10, 10)).save(changed)
    later = changed.stat().st_mtime + 5
    os.utime(changed, (later, later))
    statuses.clear()
    third = ingest(f"{base}/feed.xml", home, revalidate_images=True, **fetch)
    assert sorted(code for path, code in statuses if path.startswith("/img/")) == [200] + [304] * 7
    assert (third.updated, third.unchanged, third.images_added) == (1, 3, 1)


class ETagHandler(http.server.BaseHTTPRequestHandler):
    """One PNG at any path, with an ETag; If-None-Match with that tag gets 304."""

    body = b""
    tag = '"v1"'

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("If-None-Match") == self.tag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", self.tag)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_fetch_conditional_sends_the_etag_back() -> None:
    from jewelrec.catalog.fetch import fetch_conditional

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ETagHandler)
    ETagHandler.body = b"first"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
    try:
        first = fetch_conditional(url, allow_private=True)
        assert (first.body, first.etag) == (b"first", '"v1"')
        unchanged = fetch_conditional(url, etag=first.etag, allow_private=True)
        assert unchanged.body is None and unchanged.etag == '"v1"'
        ETagHandler.body, ETagHandler.tag = b"second", '"v2"'
        changed = fetch_conditional(url, etag=first.etag, allow_private=True)
        assert (changed.body, changed.etag) == (b"second", '"v2"')
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_google_feed_of_the_demo_catalog_ingests_trains_and_serves(
    tmp_path: Path, tiny_catalog: Path
) -> None:
    """The demo catalog published as a shop would (Google feed, images over HTTP) goes through
    ingest -> train -> index -> "more like this"; a second ingest downloads no image."""
    import csv

    from jewelrec.catalog.feeds.google_merchant import write_google_feed
    from jewelrec.indexing import build_index
    from jewelrec.recommend import Recommender
    from jewelrec.train import train_home

    counts: dict[str, int] = {}
    handler = type("Handler", (CountingHandler,), {"requests": counts, "statuses": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(tiny_catalog), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with open(tiny_catalog / "catalog.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        feed = tmp_path / "google-feed.xml"
        assert write_google_feed(rows, feed, base) == len(rows)
        home = Home(tmp_path / "home")
        summary = ingest(feed, home, fetch_images=True, allow_private_urls=True, progress=False)
        assert (summary.format, summary.added, summary.rejected) == ("google", len(rows), [])
        downloads = sum(n for path, n in counts.items() if path.startswith("/images/"))
        assert downloads == sum(len(r["image"].split("|")) for r in rows)

        again = ingest(feed, home, fetch_images=True, allow_private_urls=True, progress=False)
        assert again.unchanged == len(rows)
        assert sum(n for path, n in counts.items() if path.startswith("/images/")) == downloads

        train_home(home, epochs=1, progress=False)
        build_index(home, progress=False)
        recommender = Recommender.open(home)
        answer = recommender.similar_to_product(rows[0]["id"], k=5)
        assert len(answer.results) == 5 and rows[0]["id"] not in {r.id for r in answer.results}
        product = recommender.store.get(rows[0]["id"])
        assert product.type == rows[0]["type"] and f"group:{rows[0]['family']}" in product.tags
    finally:
        server.shutdown()
        server.server_close()
