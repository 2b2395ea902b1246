"""The shopper's page end to end in headless Chromium: upload, filter by price, "more like this",
the type question, and the hotspots of a photo of several pieces.

Set JEWELREC_SCREENSHOT=path/to/file.png to also save a 1280x900 screenshot of the results (the
one in docs/ is made this way).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from set_photo import SET_TYPES, set_photo
from uvicorn_server import serving

from jewelrec.recommend import Recommender
from jewelrec.server.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000  # first queries warm the models up on a small shared CPU
ANY_CHIP = "any"
HEIC_START = b"\x00\x00\x00\x18ftypheic"  # an iPhone photo's first bytes: no server reads it

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_url(tiny_home) -> Iterator[str]:
    with serving(create_app(tiny_home)) as url:
        yield url


class NeverSure:
    """The home's classifier with a flattened answer and a threshold it never reaches, so every
    photo gets the type question (the page's other path)."""

    decision_threshold = 1.01

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.classes = inner.classes

    def predict_proba(self, images):
        flat = self.inner.predict_proba(images) ** 0.2
        return flat / flat.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def unsure_server_url(tiny_home) -> Iterator[str]:
    recommender = Recommender.open(tiny_home)
    recommender.swap(replace(recommender.snapshot, classifier=NeverSure(recommender.classifier)))
    with serving(create_app(tiny_home, recommender=recommender)) as url:
        yield url


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def shown_prices(page) -> list[float]:
    return [float(p) for p in page.eval_on_selector_all(
        "#results .card", "cards => cards.map(c => c.dataset.price)")]


def shown_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")


def wait_until_idle(page) -> None:
    page.wait_for_function("() => !document.body.classList.contains('loading')")


def test_upload_filter_by_price_and_more_like_this(page, server_url, tiny_query_photo):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")  # facets loaded
    page.wait_for_selector("#example-list .example")

    page.set_input_files(
        "#photo-input",
        files=[{"name": "my-photo.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}],
    )
    page.wait_for_selector("#results .card")
    wait_until_idle(page)
    detected = page.inner_text("#detected").lower()
    assert "looks like" in detected and "%" in detected
    checked = page.eval_on_selector("#type-chips input:checked", "i => i.value")
    assert checked in detected or checked == "any"
    first_prices = shown_prices(page)
    assert first_prices
    assert "$" in page.inner_text("#results .card .price")
    buy = page.query_selector("#results .card a.buy")
    assert buy.get_attribute("target") == "_blank"
    assert set(buy.get_attribute("rel").split()) >= {"noopener", "noreferrer"}
    assert buy.get_attribute("href").startswith(("http://", "https://"))
    # each card says why it matches, as chips (the server's reasons, shown as text)
    chips = page.eval_on_selector_all("#results .card >> nth=0 >> .why-chip",
                                      "cs => cs.map(c => c.textContent)")
    assert any(c.startswith("looks ") and c.endswith("% alike") for c in chips), chips
    assert page.is_visible("#results .card >> nth=0 >> .why-chip >> nth=0")

    if os.environ.get("JEWELREC_SCREENSHOT"):
        page.wait_for_function(
            "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=os.environ["JEWELREC_SCREENSHOT"])

    # Lower the maximum price: results follow without re-picking the photo.
    limit = sorted(first_prices)[len(first_prices) // 2]
    page.fill("#max-price", f"{limit:.2f}")
    page.wait_for_function(
        "limit => { const cards = [...document.querySelectorAll('#results .card')];"
        " return cards.length > 0 && cards.every(c => Number(c.dataset.price) <= limit)"
        " && !document.body.classList.contains('loading'); }",
        arg=limit,
    )
    assert all(price <= limit for price in shown_prices(page))
    assert page.is_hidden("#empty")

    # "More like this" on the first result: other products, same price limit.
    before = shown_ids(page)
    chosen = before[0]
    page.click("#results .card >> nth=0 >> button.more")
    page.wait_for_function("() => document.querySelector('#results-heading')"
                           ".textContent.startsWith('More like')")
    wait_until_idle(page)
    after = shown_ids(page)
    assert after and chosen not in after
    assert all(price <= limit for price in shown_prices(page))
    assert not page.is_visible("#error")
    assert errors == []


def test_an_undecided_type_is_asked_and_one_click_searches_that_type(page, unsure_server_url,
                                                                      tiny_query_photo):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(unsure_server_url + "/")
    page.wait_for_selector("#type-chips input")
    page.set_input_files(
        "#photo-input",
        files=[{"name": "unsure.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}],
    )
    page.wait_for_selector("#type-question:not([hidden]) #type-answers button.chip")
    wait_until_idle(page)
    question = page.inner_text("#type-question-text")
    choices = page.eval_on_selector_all("#type-answers button", "bs => bs.map(b => b.dataset.type)")
    assert question.startswith("Is this ") and question.endswith("?")
    assert len(choices) >= 2 and all(choice in question for choice in choices)
    assert "likely types" in page.inner_text("#detected")
    assert question in page.inner_text("#status")  # a screen reader hears the question too

    chosen = choices[1]  # not the most likely one: the click must be what decides
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.click(f"#type-answers button[data-type='{chosen}']")
    answer = sent.value.json()  # the search ran again, with the chosen type fixed
    assert answer["searched_types"] == [chosen] and answer["type_decided"] is True
    page.wait_for_selector("#type-question", state="hidden")  # the type is the shopper's now
    wait_until_idle(page)
    shown = page.eval_on_selector_all("#results .card .card-type",
                                      "ts => ts.map(t => t.textContent)")
    assert shown and set(shown) == {chosen}
    # the shopper fixed the type: every card says so
    reasons = page.eval_on_selector_all("#results .card .why", "ws => ws.map(w => w.textContent)")
    assert len(reasons) == len(shown) and all(f"{chosen} like yours" in r for r in reasons)
    assert page.eval_on_selector("#type-chips input:checked", "i => i.value") == chosen
    assert errors == []


def shown_types(page) -> set[str]:
    return set(page.eval_on_selector_all("#results .card .card-type",
                                         "ts => ts.map(t => t.textContent)"))


def test_a_set_gets_one_hotspot_per_piece_and_a_click_searches_that_piece(page, server_url,
                                                                          tiny_catalog):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    photo, laid = set_photo(tiny_catalog)
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")
    page.set_input_files(
        "#photo-input", files=[{"name": "set.png", "mimeType": "image/png", "buffer": photo}])
    page.wait_for_selector("#hotspots:not([hidden]) button.hotspot")
    wait_until_idle(page)
    spots = page.eval_on_selector_all(
        "#hotspots button.hotspot",
        "bs => bs.map(b => ({type: b.dataset.type, pressed: b.getAttribute('aria-pressed'),"
        " text: b.textContent, label: b.getAttribute('aria-label')}))")
    assert sorted(s["type"] for s in spots) == sorted(SET_TYPES)
    assert [s["pressed"] for s in spots] == ["true", "false"]  # the first piece is searched
    for s in spots:
        assert s["text"] == s["type"].capitalize() and s["type"] in s["label"]
    assert shown_types(page) == {spots[0]["type"]}
    assert "2 pieces" in page.inner_text("#detected")
    # each hotspot sits on its piece: its centre, in the photo's pixels, lies in the laid box
    photo_box = page.query_selector("#photo").bounding_box()
    width = page.eval_on_selector("#photo", "i => i.naturalWidth")
    scale = width / photo_box["width"]
    for i, s in enumerate(spots):
        b = page.query_selector(f"#hotspots button[data-piece='{i}']").bounding_box()
        x = (b["x"] + b["width"] / 2 - photo_box["x"]) * scale
        y = (b["y"] + b["height"] / 2 - photo_box["y"]) * scale
        x0, y0, x1, y1 = dict(laid)[s["type"]]
        assert x0 <= x <= x1 and y0 <= y <= y1, (s, (x, y))

    # a click on the other piece searches that piece: its type, its results
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.click("#hotspots button[data-piece='1']")
    answer = sent.value.json()
    assert answer["piece"] == 1 and answer["type"] == spots[1]["type"]
    page.wait_for_selector("#hotspots button[data-piece='1'][aria-pressed='true']")
    wait_until_idle(page)
    assert shown_types(page) == {spots[1]["type"]}
    assert spots[1]["type"] in page.inner_text("#detected").lower()

    # keyboard: from the second hotspot, Shift+Tab reaches the first, its focus ring shows,
    # and Space searches it
    page.focus("#hotspots button[data-piece='1']")
    page.keyboard.press("Shift+Tab")
    focused = page.evaluate(
        "() => { const a = document.activeElement; return {piece: a.dataset.piece,"
        " visible: a.matches(':focus-visible'), outline: getComputedStyle(a).outlineStyle}; }")
    assert focused == {"piece": "0", "visible": True, "outline": "solid"}
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.keyboard.press("Space")
    assert sent.value.json()["piece"] == 0
    page.wait_for_selector("#hotspots button[data-piece='0'][aria-pressed='true']")
    wait_until_idle(page)
    assert shown_types(page) == {spots[0]["type"]}
    assert errors == []


def card_metals(page) -> list[str]:
    return page.eval_on_selector_all("#results .card",
                                     "cards => cards.map(c => c.dataset.metal || '')")


def test_the_search_box_and_a_same_in_another_metal_chip(page, server_url, tiny_query_photo):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")
    metals = page.eval_on_selector_all("#metal option", "os => os.map(o => o.value)")[1:]
    types = page.eval_on_selector_all("#type-chips input", "is => is.map(i => i.value)")[1:]
    welcome = page.inner_text("#welcome-types")  # what this shop sells, not a fixed list
    assert all(t in welcome for t in types) and welcome.count(",") == len(types) - 2

    # the box's example words are this catalog's, and find something in it
    example = page.get_attribute("#query", "placeholder").split("”")[0].lstrip("“")
    assert example.split()[0] in metals and "under" in example
    with page.expect_response(lambda r: "/api/search?" in r.url) as sent:
        page.fill("#query", example)
        page.press("#query", "Enter")
    assert sent.value.json()["results"] and sent.value.json()["applied"]["max_price"]

    # words alone search the catalog; the page says what they filtered
    with page.expect_response(lambda r: "/api/search?" in r.url) as sent:
        page.fill("#query", "silver")
        page.press("#query", "Enter")
    assert sent.value.json()["applied"]["metals"] == ["silver"]
    page.wait_for_selector("#results .card")
    wait_until_idle(page)
    assert set(card_metals(page)) == {"silver"}
    assert "silver" in page.inner_text("#applied")
    assert page.is_hidden("#applied-notes")

    # words that rule a value out are said as such, and nothing of it comes
    with page.expect_response(lambda r: "/api/search?" in r.url) as sent:
        page.fill("#query", "jewelry not silver")
        page.press("#query", "Enter")
    assert sent.value.json()["applied"]["excluded"] == {"metals": ["silver"]}
    wait_until_idle(page)
    assert "not silver" in page.inner_text("#applied")
    assert card_metals(page) and "silver" not in card_metals(page)

    # words nothing matches: said so, with no offer to "search every type" (it was searched;
    # the page offered it, and the click dropped the words' filters)
    with page.expect_response(lambda r: "/api/search?" in r.url):
        page.fill("#query", "silver under 0.01")
        page.press("#query", "Enter")
    page.wait_for_selector("#empty:not([hidden])")
    said = page.inner_text("#empty-text")
    assert said.startswith("Nothing in the catalog matches") and "silver" in said
    assert page.is_hidden("#widen")

    # words the server read but could not use are said under the results, as text: the
    # server's own note, and one with markup slipped into the answer, which must stay text
    hostile = '<img src="x" id="pwned">'

    def slip_in(route):
        response = route.fetch()
        answer = response.json()
        answer["applied"]["notes"].append(hostile)
        route.fulfill(response=response, json=answer)

    page.route("**/api/search?*", slip_in)
    with page.expect_response(lambda r: "/api/search?" in r.url) as sent:
        page.fill("#query", "silver under -5")
        page.press("#query", "Enter")
    notes = sent.value.json()["applied"]["notes"]
    assert len(notes) == 2 and "under -5" in notes[0] and notes[1] == hostile
    page.wait_for_selector("#applied-notes:not([hidden]) li")
    wait_until_idle(page)
    page.unroute("**/api/search?*", slip_in)
    shown_notes = page.eval_on_selector_all("#applied-notes li", "ls => ls.map(l => l.textContent)")
    assert shown_notes == notes
    assert page.query_selector("#pwned") is None
    assert page.query_selector("#applied-notes img") is None
    assert set(card_metals(page)) == {"silver"}

    # a photo: the words were their own search, the photo starts afresh
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.set_input_files("#photo-input", files=[
            {"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}])
    assert sent.value.json()["applied"] is None
    wait_until_idle(page)
    assert page.input_value("#query") == "" and page.is_hidden("#applied")
    assert page.is_hidden("#applied-notes")
    own = card_metals(page)[0]
    offered = page.eval_on_selector_all("#results .card >> nth=0 >> .same-in button",
                                        "bs => bs.map(b => b.dataset.metal)")
    assert offered and own not in offered and set(offered) <= set(metals)
    assert len(offered) == len(set(metals) - {own})
    target = offered[0]

    # "same, in <metal>": more like that card's product, with the words "in <metal>"
    chosen = page.eval_on_selector("#results .card", "c => c.dataset.id")
    with page.expect_response(lambda r: "/similar?" in r.url) as sent:
        page.click("#results .card >> nth=0 >> .same-in button >> nth=0")
    assert f"/api/products/{chosen}/similar?" in sent.value.url
    answer = sent.value.json()
    assert answer["applied"]["metals"] == [target]
    wait_until_idle(page)
    assert page.input_value("#query") == f"in {target}"
    assert page.inner_text("#results-heading").startswith("More like")
    shown = card_metals(page)
    assert shown and set(shown) == {target} and chosen not in shown_ids(page)
    reasons = page.eval_on_selector_all("#results .card .why", "ws => ws.map(w => w.textContent)")
    assert all(f"{target} as you asked" in r for r in reasons)
    assert not page.is_visible("#error")
    assert errors == []


def test_a_failed_search_keeps_the_answer_retries_a_busy_server_and_new_words_pick_the_type(
    page, server_url, tiny_query_photo
):
    """An error emptied the results with no way to retry; a 503 was never asked again; a type
    chip chosen for the last search silently won over new words naming another type."""
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")
    page.set_input_files("#photo-input", files=[
        {"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}])
    page.wait_for_selector("#results .card")
    wait_until_idle(page)
    before = shown_ids(page)

    calls = {"n": 0}

    def broken_then_fine(route):
        calls["n"] += 1
        if calls["n"] == 1:
            route.fulfill(status=500, json={"detail": "internal error"})
        else:
            route.continue_()

    page.route("**/api/recommend", broken_then_fine)
    page.select_option("#k", "6")  # 12 before
    page.wait_for_selector("#error:not([hidden]) button")
    wait_until_idle(page)
    assert shown_ids(page) == before  # the last answer stays under the message
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")):
        page.click("#error button")  # "Try again"
    wait_until_idle(page)
    assert page.is_hidden("#error") and len(shown_ids(page)) == 6
    page.unroute("**/api/recommend", broken_then_fine)

    busy = {"left": 1}

    def busy_once(route):
        if busy["left"]:
            busy["left"] -= 1
            route.fulfill(status=503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        else:
            route.continue_()

    page.route("**/api/recommend", busy_once)
    with page.expect_response(lambda r: r.url.endswith("/api/recommend") and r.ok) as sent:
        page.select_option("#k", "12")
    wait_until_idle(page)
    assert busy["left"] == 0 and page.is_hidden("#error")  # asked again, by itself
    detected = sent.value.json()["type"]
    page.unroute("**/api/recommend", busy_once)

    # a chip picked, then words naming another type: the words choose
    chips = page.eval_on_selector_all("#type-chips input", "cs => cs.map(c => c.value)")
    other = next(t for t in chips if t not in (ANY_CHIP, detected))
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")):
        page.click(f"label[for='type-{other}']")
    wait_until_idle(page)
    words_type = next(t for t in chips if t not in (ANY_CHIP, other))
    with page.expect_response(lambda r: "/api/search?" in r.url) as sent:
        page.uncheck("#with-photo")
        page.fill("#query", f"{words_type}s")
        page.press("#query", "Enter")
    assert "type=" not in sent.value.url
    assert {r["type"] for r in sent.value.json()["results"]} == {words_type}


def test_on_a_phone_a_huge_photo_is_shrunk_and_the_results_come_into_view(
    page, server_url, tiny_query_photo, tiny_catalog
):
    """A 48 MP phone photo was refused ("larger than 10 MB"); the results lay a screen below
    the photo with no cue; a photo the server cannot read was sent again with every filter; a
    piece's button was a 24-px target for a finger."""
    import io

    import numpy as np
    from PIL import Image

    phone = page.context.browser.new_context(viewport={"width": 375, "height": 667},
                                             is_mobile=True, has_touch=True)
    small = phone.new_page()
    small.set_default_timeout(TIMEOUT_MS)
    small.goto(server_url + "/")
    small.wait_for_selector("#type-chips input")
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(io.BytesIO(tiny_query_photo)).convert("RGB").resize((2600, 2600)))
    noisy = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 10_000_000  # over the server's upload limit as it is
    with small.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        small.set_input_files("#photo-input", files=[
            {"name": "phone.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    assert sent.value.status == 200
    assert max(sent.value.json()["photo_size"].values()) <= 1600
    small.wait_for_selector("#results .card")
    small.wait_for_function(
        "() => document.querySelector('#results-heading').getBoundingClientRect().top"
        " < window.innerHeight")

    with small.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        small.set_input_files("#photo-input", files=[
            {"name": "photo.heic", "mimeType": "image/heic", "buffer": HEIC_START}])
    assert sent.value.status == 415
    small.wait_for_selector("#dropzone:not([hidden])")
    assert small.is_hidden("#stage-wrap") and small.query_selector_all("#results .card") == []

    # a finger a few pixels off a piece's small button still presses it
    photo, _ = set_photo(tiny_catalog)
    small.set_input_files(
        "#photo-input", files=[{"name": "set.png", "mimeType": "image/png", "buffer": photo}])
    small.wait_for_selector("#hotspots:not([hidden]) button[data-piece='1']")
    small.wait_for_function("() => !document.body.classList.contains('loading')")
    button = small.query_selector("#hotspots button[data-piece='1']")
    button.scroll_into_view_if_needed()
    box, photo_box = button.bounding_box(), small.query_selector("#photo").bounding_box()
    assert box["height"] < 30  # the pill itself stays small over the photo
    room_below = photo_box["y"] + photo_box["height"] - (box["y"] + box["height"])
    off = box["y"] + box["height"] + 7 if room_below > 10 else box["y"] - 7
    near = (box["x"] + box["width"] / 2, off)
    hit = small.evaluate("([x, y]) => document.elementFromPoint(x, y)?.dataset.piece ?? null",
                         list(near))
    assert hit == "1"
    with small.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        small.touchscreen.tap(*near)
    assert sent.value.json()["piece"] == 1
    phone.close()


def test_the_address_bar_holds_a_search_back_returns_to_it_and_a_link_reopens_it(
        page, server_url, tiny_query_photo):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")

    # a photo's search: its address holds no photo, and nothing but the default filters
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")):
        page.set_input_files("#photo-input", files=[
            {"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}])
    wait_until_idle(page)
    assert page.url == server_url + "/"
    photo_ids = shown_ids(page)

    # words of their own: a new place in the history; a filter changed there replaces it
    page.uncheck("#with-photo")
    with page.expect_response(lambda r: "/api/search?" in r.url):
        page.fill("#query", "silver")
        page.press("#query", "Enter")
    wait_until_idle(page)
    assert page.url.endswith("/?q=silver")
    words_ids = shown_ids(page)
    limit = sorted(float(p) for p in shown_prices(page))[len(words_ids) // 2]
    with page.expect_response(lambda r: "max_price=" in r.url):
        page.fill("#max-price", f"{limit:.2f}")
    wait_until_idle(page)
    assert f"max_price={limit:.2f}" in page.url and "q=silver" in page.url
    filtered_url = page.url
    filtered_ids = shown_ids(page)

    # more like a result: another place
    chosen = filtered_ids[0]
    title = page.eval_on_selector("#results .card >> nth=0 >> .card-title", "t => t.textContent")
    with page.expect_response(lambda r: "/similar?" in r.url):
        page.click("#results .card >> nth=0 >> button.more")
    wait_until_idle(page)
    assert f"similar={chosen}" in page.url
    similar_url = page.url

    # Back: the words' search as it was left, filter included
    with page.expect_response(lambda r: "/api/search?" in r.url):
        page.go_back()
    wait_until_idle(page)
    assert page.url == filtered_url
    assert page.input_value("#query") == "silver"
    assert page.input_value("#max-price") == f"{limit:.2f}"
    assert page.inner_text("#results-heading") == "Pieces matching your words"
    assert shown_ids(page) == filtered_ids

    # Back again: the photo's search (the photo is still on the page), the filter it had
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")):
        page.go_back()
    wait_until_idle(page)
    assert page.url == server_url + "/"
    assert page.input_value("#query") == "" and page.input_value("#max-price") == ""
    assert page.inner_text("#results-heading") == "Similar pieces"
    assert shown_ids(page) == photo_ids

    # Forward twice: more like the chosen piece, its title remembered
    with page.expect_response(lambda r: "/api/search?" in r.url):
        page.go_forward()
    wait_until_idle(page)
    with page.expect_response(lambda r: "/similar?" in r.url):
        page.go_forward()
    wait_until_idle(page)
    assert page.inner_text("#results-heading") == f"More like “{title}”"

    # the link opened afresh (shared, or reloaded): the same search, the title asked of the API
    fresh = page.context.new_page()
    try:
        with fresh.expect_response(lambda r: "/similar?" in r.url):
            fresh.goto(similar_url)
        fresh.wait_for_function("() => !document.body.classList.contains('loading')")
        assert fresh.inner_text("#results-heading") == f"More like “{title}”"
        assert chosen not in shown_ids(fresh)
        with fresh.expect_response(lambda r: "/api/search?" in r.url):
            fresh.goto(filtered_url)
        fresh.wait_for_function("() => !document.body.classList.contains('loading')")
        assert fresh.input_value("#query") == "silver"
        assert shown_ids(fresh) == filtered_ids
        # an address naming a filter value the shop does not have is read without it, and
        # rewritten in place: Back leaves it (a new entry trapped Back on the same search)
        fresh.goto(server_url + "/?q=gold")
        fresh.wait_for_selector("#results .card")
        with fresh.expect_response(lambda r: "/api/search?" in r.url) as sent:
            fresh.goto(server_url + "/?q=silver&metal=unobtainium&type=spaceship&k=5&utm_x=1")
        assert "metal=" not in sent.value.url and "type=" not in sent.value.url
        assert "k=12" in sent.value.url
        fresh.wait_for_function("() => location.search === '?q=silver'")
        with fresh.expect_response(lambda r: "/api/search?" in r.url) as sent:
            fresh.go_back()
        assert "q=gold" in sent.value.url and fresh.url.endswith("/?q=gold")
    finally:
        fresh.close()
    assert errors == []


def test_by_keyboard_on_a_small_screen_and_in_forced_colours(page, server_url, tiny_query_photo):
    """What a helper's accessibility pass found: no way to search one area without dragging
    (WCAG 2.1.1, 2.5.7); focus lost to the page after a photo was picked; the page wider than a
    320-px screen once a photo was in (1.4.10); the chosen type chip like the others in forced
    colours (1.4.1); an alert at each keystroke of a maximum price passing below the minimum; a
    button named "More like <title>" while it shows "More like this" (2.5.3)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server_url + "/")
    page.wait_for_selector("#type-chips input")
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.set_input_files("#photo-input", files=[
            {"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}])
    wait_until_idle(page)
    assert page.evaluate("() => document.activeElement.id") == "stage"
    width, height = sent.value.json()["photo_size"].values()
    # an example picked by keyboard hands the focus to the photo too (not to the page)
    second = page.context.new_page()
    second.goto(server_url + "/")
    second.wait_for_selector("#example-list .example")
    second.focus("#example-list .example")
    with second.expect_response(lambda r: r.url.endswith("/api/recommend")):
        second.keyboard.press("Enter")
    second.wait_for_function("() => document.activeElement.id === 'stage'")
    second.close()

    # the keyboard's area: Enter places it, arrows move it, Shift+arrow resizes, Enter searches
    page.keyboard.press("Enter")
    assert page.is_visible("#drag-box")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")) as sent:
        page.keyboard.press("Enter")
    step_x, step_y = max(1, round(width / 20)), max(1, round(height / 20))
    x0, y0 = round(width * 0.2) + 2 * step_x, round(height * 0.2)
    expected = [x0, y0, round(width * 0.8) + 2 * step_x, round(height * 0.8) + step_y]
    assert sent.value.json()["crop"] == expected  # the area sent, as the server searched it
    wait_until_idle(page)
    assert page.is_hidden("#drag-box") and page.is_visible("#crop-box")
    page.keyboard.press("Enter")  # Escape lets a placed area go, nothing searched
    page.keyboard.press("Escape")
    assert page.is_hidden("#drag-box")

    # a search under way shows on the photo (on a phone the status line is a screen below)
    held = []
    page.route("**/api/recommend", lambda route: held.append(route))
    page.click("#whole-photo")
    page.wait_for_function("() => document.body.classList.contains('loading')")
    shown = page.evaluate(
        "() => getComputedStyle(document.querySelector('#stage'), '::after').content")
    assert "Searching" in shown
    with page.expect_response(lambda r: r.url.endswith("/api/recommend")):
        held[0].continue_()
    page.unroute("**/api/recommend")
    wait_until_idle(page)

    name = page.get_attribute("#results .card >> nth=0 >> button.more", "aria-label")
    assert name.startswith("More like this")

    # a maximum typed key by key below the minimum on its way: no alert until it is left
    page.evaluate("""() => { window.alerts = 0; new MutationObserver(() => {
        if (!document.querySelector('#error').hidden) window.alerts += 1; })
        .observe(document.querySelector('#error'), {attributes: true, childList: true}); }""")
    page.fill("#min-price", "300")
    page.type("#max-price", "1000", delay=450)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.alerts") == 0
    page.fill("#max-price", "100")
    page.wait_for_selector("#results.stale")  # the results shown are for another range: dimmed
    page.press("#max-price", "Tab")
    page.wait_for_selector("#error:not([hidden])")
    assert "minimum price is above the maximum" in page.inner_text("#error")
    page.fill("#min-price", "")
    page.fill("#max-price", "")
    page.wait_for_selector("#results:not(.stale)")  # searched again

    # forced colours: the chosen type chip keeps a mark of its own
    page.emulate_media(forced_colors="active")
    chip_colours = page.evaluate("""() => [...document.querySelectorAll('#type-chips .chip')]
        .map(c => [document.getElementById(c.htmlFor).checked,
                   getComputedStyle(c).backgroundColor])""")
    chosen = {colour for checked, colour in chip_colours if checked}
    others = {colour for checked, colour in chip_colours if not checked}
    assert len(chosen) == 1 and not chosen & others, chip_colours
    page.emulate_media(forced_colors="none")

    # 320 px wide (a small phone, or 400% zoom): nothing wider than the screen
    small = page.context.browser.new_context(viewport={"width": 320, "height": 568})
    narrow = small.new_page()
    narrow.set_default_timeout(TIMEOUT_MS)
    narrow.goto(server_url + "/")
    narrow.wait_for_selector("#type-chips input")
    with narrow.expect_response(lambda r: r.url.endswith("/api/recommend")):
        narrow.set_input_files("#photo-input", files=[
            {"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": tiny_query_photo}])
    narrow.wait_for_selector("#results .card")
    assert narrow.evaluate("() => document.documentElement.scrollWidth") <= 320
    small.close()
    assert errors == []
