"""Ingest: rejections with reasons, idempotent re-runs, updates, prune, strict, managed images,
and a store that survives kill -9 mid-ingest."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jewelrec.catalog.ingest as ingest_module
from jewelrec.catalog.ingest import LOCK_FILE, STAGING_DIR, ingest
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import CatalogError
from jewelrec.home import Home

COLUMNS = ["id", "title", "type", "price", "currency", "brand", "url", "image", "metal", "stone",
           "tags"]
MANAGED_NAME = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{64})\.(png|jpg|webp|gif)$")


def write_image(path: Path, seed: int, fmt: str = "PNG") -> str:
    """A tiny 32x32 picture, different for every seed; returns its path as a catalog names it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return f"{path.parent.name}/{path.name}"


def row(i: int, folder: Path, **changes: str) -> dict[str, str]:
    image = folder / "images" / f"p{i:03d}.png"
    if not image.exists():
        write_image(image, seed=i)
    base = {
        "id": f"p{i:03d}", "title": f"Piece {i}", "type": ("Ring", "Necklace")[i % 2],
        "price": f"{10 + i}.50", "currency": "USD", "brand": "Aurelia",
        "url": f"https://shop.example.com/p{i:03d}", "image": f"images/p{i:03d}.png",
        "metal": "Gold", "stone": "", "tags": "a|b",
    }
    return {**base, **changes}


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def catalog(folder: Path, ids: range, name: str = "catalog.csv", **changes: str) -> Path:
    return write_csv(folder / name, [row(i, folder, **changes) for i in ids])


def image_files(home: Home) -> set[str]:
    return {p.relative_to(home.images_dir).as_posix() for p in home.images_dir.rglob("*")
            if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def test_done_when_five_bad_rows_give_exactly_five_reasons(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really" * 20)
    good = [row(i, folder) for i in range(1, 5)]
    path = write_csv(folder / "catalog.csv", [
        *good,                                                             # rows 2-5
        row(5, folder, image="images/broken.jpg"),                         # 6 corrupt image
        row(6, folder, price="-5"),                                        # 7 negative price
        row(1, folder, title="Another piece"),                             # 8 duplicate id
        row(7, folder, url="javascript:alert(1)"),                         # 9 not http(s)
        row(8, folder, image="../../etc/passwd"),                          # 10 escapes
        good[1],                                                           # 11 identical repeat
    ])
    summary = ingest(path, home, progress=False)

    rejected = [(r.row, r.id, r.reason) for r in summary.rejected]
    assert [(r, i) for r, i, _ in rejected] == [
        (6, "p005"), (7, "p006"), (8, "p001"), (9, "p007"), (10, "p008")]
    reasons = [reason for _, _, reason in rejected]
    assert reasons[0].startswith("image 'images/broken.jpg' is damaged or cut short")
    assert reasons[1] == "negative price: -5"
    assert reasons[2].startswith("duplicate id 'p001': row 2 has this id")
    assert reasons[3] == "URL is not http(s): 'javascript:alert(1)'"
    assert reasons[4].startswith("image path escapes the catalog folder: '../../etc/passwd': "
                                 "write image paths relative to the catalog file")
    assert (summary.added, summary.updated, summary.unchanged, summary.removed) == (4, 0, 0, 0)

    store = CatalogStore.open(home)
    assert store.ids() == ["p001", "p002", "p003", "p004"]
    assert store.get("p001").title == "Piece 1"  # the first row wins
    p2 = store.get("p002")
    assert (p2.type, p2.metal, p2.price, p2.tags) == ("ring", "gold", 12.5, ("a", "b"))
    as_json = summary.to_dict()
    assert {"added", "updated", "unchanged", "removed", "rejected"} <= set(as_json)
    assert as_json["rejected"][1] == {"row": 7, "id": "p006", "reason": "negative price: -5"}
    json.dumps(as_json)
    text = summary.describe()
    assert "4 added" in text and "row 9 (id p007): URL is not http(s)" in text


def test_thin_wide_and_oversized_images_are_rejected_per_row(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    Image.new("L", (1, 39_000)).save(folder / "images" / "thin.png")  # a few hundred bytes
    Image.new("L", (20_000, 1)).save(folder / "images" / "wide.png")
    path = write_csv(folder / "catalog.csv", [
        row(1, folder), row(2, folder, image="images/thin.png"),
        row(3, folder, image="images/p003.png|images/wide.png"), row(4, folder),
    ])
    summary = ingest(path, home, progress=False)
    assert summary.added == 2 and summary.committed
    reasons = {(r.row, r.id): r.reason for r in summary.rejected}
    assert set(reasons) == {(3, "p002"), (4, "p003")}
    assert reasons[3, "p002"].startswith("image 'images/thin.png' is 1x39000 pixels")
    assert "beyond the 20:1 limit" in reasons[3, "p002"]
    assert reasons[4, "p003"].startswith("image 'images/wide.png' is 20000x1 pixels")
    assert CatalogStore.open(home).ids() == ["p001", "p004"]


def test_images_are_stored_once_by_content_and_readable(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    write_image(folder / "images" / "photo.jpg", seed=1, fmt="JPEG")
    write_image(folder / "images" / "same.bmp", seed=2, fmt="BMP")
    (folder / "images" / "copy.jpg").write_bytes((folder / "images" / "photo.jpg").read_bytes())
    path = write_csv(folder / "catalog.csv", [
        row(1, folder, image="images/photo.jpg|images/same.bmp"),
        row(2, folder, image="images/copy.jpg"),
    ])
    summary = ingest(path, home, progress=False)
    assert summary.ok and summary.images_added == 2
    store = CatalogStore.open(home)
    one, two = store.get("p001"), store.get("p002")
    assert one.images[0] == two.images[0]  # the same bytes, stored once
    assert one.images[1].endswith(".png")  # BMP is re-encoded as PNG for browsers
    for name in one.images:
        prefix, digest, _ = MANAGED_NAME.match(name).groups()
        data = home.image_path(name).read_bytes()
        assert prefix == digest[:2] and hashlib.sha256(data).hexdigest() == digest
        Image.open(home.image_path(name)).verify()
    assert image_files(home) == set(one.images)
    assert not (home.root / STAGING_DIR).exists()


def test_reingesting_the_same_catalog_changes_nothing(
    tmp_path: Path, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = catalog(tmp_path / "shop", range(6))
    first = ingest(path, home, progress=False)
    store = CatalogStore.open(home)
    fingerprint, last = store.fingerprint(), store.meta("last_ingest")
    decoded: list[object] = []
    real_load = ingest_module.load_image
    monkeypatch.setattr(ingest_module, "load_image", lambda d: decoded.append(d) or real_load(d))

    again = ingest(path, home, progress=False)
    assert (first.added, again.added, again.updated, again.unchanged, again.removed) == (
        6, 0, 0, 6, 0)
    assert again.images_added == 0 and again.ok
    assert decoded == []  # seen images are not decoded again
    assert store.fingerprint() == fingerprint
    assert store.meta("last_ingest") == last  # nothing written at all


def test_a_changed_catalog_updates_the_changed_rows(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(5)), home, progress=False)
    write_image(folder / "images" / "new.png", seed=99)
    rows = [row(i, folder) for i in range(5)]
    rows[1]["price"] = "99.00"
    rows[2]["image"] = "images/new.png"
    rows.append(row(5, folder))
    summary = ingest(write_csv(folder / "catalog.csv", rows), home, progress=False)
    assert (summary.added, summary.updated, summary.unchanged, summary.removed) == (1, 2, 3, 0)
    store = CatalogStore.open(home)
    assert store.get("p001").price == 99.0
    assert home.image_path(store.get("p002").image).read_bytes() == (
        folder / "images" / "new.png").read_bytes()
    assert store.count() == 6


def test_a_plural_written_beside_its_singular_is_one_type(tmp_path: Path, home: Home) -> None:
    """"Rings" beside "ring" were two types: a search for rings found a third of them and
    every ring photo asked "ring (79%) or rings (19%)?"."""
    folder = tmp_path / "shop"
    rows = [row(i, folder, type=("Rings", "Ring", "Earrings")[i % 3]) for i in range(6)]
    summary = ingest(write_csv(folder / "catalog.csv", rows), home, progress=False)
    assert summary.types_merged == {"rings": "ring"}
    assert "'rings' as 'ring'" in summary.describe()
    assert CatalogStore.open(home).types() == ["earrings", "ring"]  # no "earring": kept as is


def test_prune_removes_only_products_no_longer_listed(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(5)), home, progress=False)
    store = CatalogStore.open(home)
    kept = store.get("p003")
    rows = [row(i, folder) for i in range(4)]  # p004 is gone
    rows[3]["price"] = "oops"  # p003 is listed but broken this time
    path = write_csv(folder / "catalog.csv", rows)

    plain = ingest(path, home, progress=False)
    assert plain.removed == 0 and store.count() == 5
    pruned = ingest(path, home, prune=True, progress=False)
    assert pruned.removed == 1 and [r.id for r in pruned.rejected] == ["p003"]
    assert store.ids() == ["p000", "p001", "p002", "p003"]
    assert store.get("p003") == kept  # the previous version stays
    assert image_files(home) >= set(kept.images)  # managed images are never deleted


def test_a_quote_never_closed_is_an_error_and_prunes_nothing(tmp_path: Path, home: Home) -> None:
    """One stray quote makes the csv module read the rest of the file as one field; with
    --prune that silently removed every product after it."""
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(5)), home, progress=False)
    fingerprint = CatalogStore.open(home).fingerprint()
    path = catalog(folder, range(5))
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("Piece 1", '"Piece 1')  # row 3 (p001) opens a quote
    path.write_text("".join(lines))
    with pytest.raises(CatalogError, match=r"row 3 opens a quoted field .* never closed"):
        ingest(path, home, prune=True, progress=False)
    assert CatalogStore.open(home).fingerprint() == fingerprint

    # quoted fields over several lines, and a last line without a newline, still read whole
    rows = [row(i, folder, title=f"Piece {i}\nsecond line, with a comma") for i in range(5)]
    path = write_csv(folder / "catalog.csv", rows)
    path.write_text(path.read_text().rstrip("\r\n"))
    summary = ingest(path, home, prune=True, progress=False)
    assert summary.ok and (summary.updated, summary.removed) == (5, 0)
    assert CatalogStore.open(home).get("p004").title == "Piece 4 second line, with a comma"


def test_prune_removes_nothing_when_a_rejected_row_has_no_readable_id(
    tmp_path: Path, home: Home
) -> None:
    folder = tmp_path / "shop"
    lines = [json.dumps({**row(i, folder), "price": 10 + i}) for i in range(4)]
    path = folder / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ingest(path, home, progress=False)
    lines[1] = lines[1][:-1]  # p001's line loses its closing brace: its id cannot be read
    lines.pop()  # p003 is no longer listed
    path.write_text("\n".join(lines) + "\n")

    summary = ingest(path, home, prune=True, progress=False)
    assert summary.removed == 0 and [r.row for r in summary.rejected] == [2]
    assert CatalogStore.open(home).ids() == ["p000", "p001", "p002", "p003"]
    assert "row 2 could not be read as far as an id" in summary.prune_withheld
    assert "--prune removed nothing" in summary.describe()
    assert summary.to_dict()["prune_withheld"] == summary.prune_withheld

    lines[1] = json.dumps({**row(1, folder), "price": 11})  # fixed: now prune removes p003
    path.write_text("\n".join(lines) + "\n")
    summary = ingest(path, home, prune=True, progress=False)
    assert summary.removed == 1 and summary.prune_withheld is None
    assert CatalogStore.open(home).ids() == ["p000", "p001", "p002"]


def test_strict_changes_nothing_when_a_row_is_rejected(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(3)), home, progress=False)
    store = CatalogStore.open(home)
    fingerprint, files = store.fingerprint(), image_files(home)
    rows = [row(i, folder, price="1.00") for i in range(3, 8)]  # new images, new prices
    rows.append(row(8, folder, url="ftp://shop.example.com/8"))
    path = write_csv(folder / "catalog.csv", rows)

    summary = ingest(path, home, strict=True, prune=True, progress=False)
    assert not summary.ok and not summary.committed
    assert [r.row for r in summary.rejected] == [7]
    assert (summary.added, summary.updated, summary.removed) == (0, 0, 0)
    assert "nothing was changed" in summary.describe()
    assert store.fingerprint() == fingerprint and image_files(home) == files
    assert not (home.root / STAGING_DIR).exists()

    ok = ingest(catalog(folder, range(3, 8)), home, strict=True, progress=False)
    assert ok.ok and ok.committed and ok.added == 5


def test_jsonl_catalog_with_lists(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    a = write_image(folder / "pics" / "a.png", seed=1)
    b = write_image(folder / "pics" / "b.jpg", seed=2, fmt="JPEG")
    lines = [
        {"id": 17, "title": "Drop earrings", "type": "earring", "price": 35.0,
         "url": "http://shop.example.com/17", "image": [a, b], "tags": ["drop", "pearl"],
         "stone": "Pearl", "currency": "gbp"},
        {"id": "18", "title": "Band", "type": "ring", "price": "12", "url": "https://x.io/18",
         "image": f"{a}|{b}"},
        {"id": "19", "title": "Broken", "type": "ring", "price": "NaN",
         "url": "https://x.io/19", "image": a},
    ]
    path = folder / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    summary = ingest(path, home, progress=False)
    assert summary.format == "jsonl" and summary.added == 2
    assert [(r.row, r.id) for r in summary.rejected] == [(3, "19")]
    product = CatalogStore.open(home).get("17")
    assert len(product.images) == 2 and product.tags == ("drop", "pearl")
    assert (product.stone, product.currency, product.price) == ("pearl", "GBP", 35.0)


def test_image_paths_must_stay_inside_the_catalog_folder(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    outside = tmp_path / "outside.png"
    write_image(outside, seed=5)
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "link.png").symlink_to(outside)
    write_image(folder / "real.png", seed=6)
    (folder / "images" / "inner.png").symlink_to(folder / "real.png")
    path = write_csv(folder / "catalog.csv", [
        row(1, folder, image="images/link.png"),
        row(2, folder, image=str(outside)),
        row(3, folder, image="images/../../outside.png"),
        row(4, folder, image="images/inner.png"),  # a link that stays inside is fine
        row(5, folder, image="file:///etc/passwd"),
        row(6, folder, image="images/missing.png"),
    ])
    summary = ingest(path, home, progress=False)
    reasons = {r.id: r.reason for r in summary.rejected}
    for product_id in ("p001", "p002", "p003"):
        assert reasons[product_id].startswith("image path escapes the catalog folder")
    assert "neither a path relative to the catalog nor an http(s) URL" in reasons["p005"]
    assert reasons["p006"] == "image not found: 'images/missing.png'"
    assert summary.added == 1


def test_remote_images_need_fetch_images(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    path = write_csv(folder / "catalog.csv", [
        row(1, folder, image="https://img.example.com/a.jpg"), row(2, folder),
        row(3, folder, image="//cdn.example.com/b.jpg")])  # protocol-relative: https
    summary = ingest(path, home, progress=False)
    assert summary.added == 1
    reasons = {r.id: r.reason for r in summary.rejected}
    assert reasons["p001"].startswith("remote image: rerun with --fetch-images")
    assert reasons["p003"] == ("remote image: rerun with --fetch-images "
                               "(https://cdn.example.com/b.jpg)")


def test_one_ingest_per_home_at_a_time(tmp_path: Path, home: Home) -> None:
    fcntl = pytest.importorskip("fcntl")
    path = catalog(tmp_path / "shop", range(2))
    home.root.mkdir(parents=True)
    with open(home.root / LOCK_FILE, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CatalogError, match="another ingest is running"):
            ingest(path, home, progress=False)
    assert ingest(path, home, progress=False).added == 2


def test_an_unreadable_catalog_raises_catalog_error(tmp_path: Path, home: Home) -> None:
    with pytest.raises(CatalogError, match="not found"):
        ingest(tmp_path / "nope.csv", home, progress=False)
    assert not home.root.exists()  # a mistyped path leaves no empty home behind


# -- kill -9 mid-ingest ----------------------------------------------------------------------

# Runs a real ingest in a child process that pauses (and says so) at a chosen point, so the
# test can SIGKILL it there: while staging images, or inside the store transaction.
KILL_SCRIPT = r"""
import sys, time
from jewelrec.catalog import ingest as ingest_module, store

stage, catalog, home = sys.argv[1:4]

def pause_after(calls_before_pause, original):
    calls = 0
    def wrapper(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == calls_before_pause:
            print("paused", flush=True)
            time.sleep(120)
        return result
    return wrapper

if stage == "images":
    ingest_module.ImageStager._store = pause_after(50, ingest_module.ImageStager._store)
else:
    store.StoreWriter.upsert = pause_after(150, store.StoreWriter.upsert)
ingest_module.ingest(catalog, home, prune=True, progress=False)
print("finished", flush=True)
"""


@pytest.mark.parametrize("stage", ["images", "transaction"])
def test_kill_9_mid_ingest_leaves_the_previous_catalog(
    tmp_path: Path, home: Home, stage: str
) -> None:
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(200)), home, progress=False)
    store = CatalogStore.open(home)
    before, fingerprint = store.all_products(), store.fingerprint()
    store.close()
    # The next catalog drops 10 products, reprices 190 and adds 100 with new images.
    rows = [row(i, folder, price=f"{i}.99") for i in range(10, 300)]
    v2 = write_csv(folder / "catalog-v2.csv", rows)

    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, stage, str(v2), str(home.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        said = child.stdout.readline()
        assert said == "paused\n", f"child did not reach the pause: {said!r} {child.stderr.read()}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    store = CatalogStore.open(home)
    assert store.all_products() == before and store.fingerprint() == fingerprint
    for product in before:
        assert all(home.image_path(name).is_file() for name in product.images)

    summary = ingest(v2, home, prune=True, progress=False)
    assert (summary.added, summary.updated, summary.removed, len(summary.rejected)) == (
        100, 190, 10, 0)
    fresh = Home(tmp_path / "fresh")
    ingest(v2, fresh, progress=False)
    assert store.all_products() == CatalogStore.open(fresh).all_products()
    assert not (home.root / STAGING_DIR).exists()


# -- catalogs with nothing to store ----------------------------------------------------------


def test_no_valid_row_changes_nothing_even_with_prune(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    ingest(catalog(folder, range(3)), home, progress=False)
    store = CatalogStore.open(home)
    fingerprint = store.fingerprint()
    broken = write_csv(folder / "broken.csv", [row(i, folder, price="oops") for i in range(5, 8)])
    summary = ingest(broken, home, prune=True, progress=False)
    assert summary.error == "no valid rows: all 3 rows were rejected"
    assert not summary.committed and summary.removed == 0 and len(summary.rejected) == 3
    assert summary.to_dict()["error"] == summary.error
    assert "nothing was changed" in summary.describe()
    assert store.fingerprint() == fingerprint and store.count() == 3

    empty = write_csv(folder / "empty.csv", [])
    summary = ingest(empty, home, prune=True, progress=False)
    assert summary.error == "the catalog lists no products" and store.count() == 3

    unreadable = write_csv(folder / "pictures.csv", [row(9, folder, image="images/none.png")])
    summary = ingest(unreadable, home, prune=True, progress=False)
    assert summary.error == "no valid rows: all 1 rows were rejected" and store.count() == 3
    assert not (home.root / STAGING_DIR).exists()


def test_values_of_the_wrong_kind_never_reach_the_store(tmp_path: Path, home: Home) -> None:
    folder = tmp_path / "shop"
    image = write_image(folder / "pics" / "a.png", seed=1)
    good = {"id": "ok", "title": "Band", "type": "ring", "price": 5, "url": "https://x.io/1",
            "image": image}
    lines = [good, {**good, "id": "two", "type": ["ring", "earring"]},
             {**good, "id": "a/b"}, {**good, "id": "t", "title": "x" * 1_000_000}]
    path = folder / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n" + "[" * 100_000 + "\n")
    summary = ingest(path, home, progress=False)
    assert summary.added == 1 and CatalogStore.open(home).ids() == ["ok"]
    assert [(r.row, r.id) for r in summary.rejected] == [(2, "two"), (3, "a/b"), (4, "t"),
                                                         (5, None)]
    assert len(json.dumps(summary.to_dict())) < 2000  # no megabyte title echoed back


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from jewelrec.cli import main

    code = main(["ingest", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_json_for_catalogs_that_store_nothing(
    tmp_path: Path, home: Home, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "shop"
    broken = write_csv(folder / "broken.csv", [row(1, folder, url="ftp://x.example/1")])
    code, out, err = run_cli(capsys, str(broken), "--home", str(home.root), "--json")
    report = json.loads(out)
    assert code == 1 and report["error"].startswith("no valid rows") and not report["committed"]
    assert report["rejected"][0]["row"] == 2 and "no valid rows" in err
    code, out, _ = run_cli(capsys, str(broken), "--home", str(home.root))
    assert code == 1 and "no valid rows: all 1 rows were rejected; nothing was changed" in out

    no_price = folder / "no-price.csv"
    no_price.write_text("id,title,type,url,image\np1,A,ring,https://x.example/1,a.png\n")
    code, out, err = run_cli(capsys, str(no_price), "--home", str(home.root), "--json")
    assert code == 2 and "lacks the required column price" in err
    report = json.loads(out)
    assert "lacks the required column price" in report["error"] and not report["committed"]

    rows = [row(i, folder) for i in range(3)]
    rows[1]["title"] = "long " * 40_000  # 200,000 characters: once failed the whole file
    long_field = write_csv(folder / "long.csv", rows)
    code, out, _ = run_cli(capsys, str(long_field), "--home", str(home.root), "--json")
    report = json.loads(out)
    assert code == 0 and report["added"] == 2 and report["error"] is None
    assert [r["row"] for r in report["rejected"]] == [3]
    assert "200,000 characters long" in report["rejected"][0]["reason"]


def test_a_catalog_in_several_currencies_is_reported(tmp_path: Path, home: Home) -> None:
    """Price filters compare the numbers: 100 EUR and 100 USD would fall in one range."""
    folder = tmp_path / "shop"
    rows = [row(i, folder, currency=("USD", "USD", "EUR")[i % 3]) for i in range(6)]
    summary = ingest(write_csv(folder / "catalog.csv", rows), home, progress=False)
    assert summary.ok and summary.currencies == {"USD": 4, "EUR": 2}
    assert "prices in 2 currencies (USD 4, EUR 2 products)" in summary.describe()
    assert summary.to_dict()["currencies"] == {"USD": 4, "EUR": 2}
    one = ingest(catalog(folder, range(6), name="usd.csv"), home, prune=True, progress=False)
    assert one.currencies is None and "currencies" not in one.describe()
