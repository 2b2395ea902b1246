"""The demo catalog generator: files, columns, determinism, and pictures a person can read."""

from __future__ import annotations

import colorsys
import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jewelrec.catalog import synthetic
from jewelrec.catalog.synthetic import generate_catalog, product_spec, render_view
from jewelrec.errors import JewelrecError

COLUMNS = ["id", "title", "type", "price", "currency", "brand", "url", "image", "metal", "stone",
           "family", "tags"]
SIZE = 128


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    csv_path = generate_catalog(out, products=12, views=2, seed=3, query_photos=3,
                                image_size=SIZE, progress=False)
    assert csv_path == out / "catalog.csv"
    return out


def test_csv_has_the_agreed_columns_and_well_formed_values(tiny: Path) -> None:
    with open(tiny / "catalog.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == COLUMNS
    rows = read_csv(tiny / "catalog.csv")
    assert [r["id"] for r in rows] == [f"P{i:05d}" for i in range(1, 13)]
    for r in rows:
        assert re.fullmatch(r"\d+\.\d\d", r["price"]) and float(r["price"]) > 0
        assert r["currency"] == "USD"
        assert r["metal"] in {"gold", "silver", "rose gold"}
        assert r["stone"] in {"", "diamond", "ruby", "emerald", "sapphire", "amethyst", "pearl"}
        assert re.fullmatch(r"https://shop\.example\.com/products/[a-z0-9-]+-" + r["id"].lower(),
                            r["url"])
        assert re.fullmatch(r"[a-z]+-" + r["type"] + r"-\d+", r["family"])
        assert r["metal"].title() in r["title"]
        assert r["type"] in r["tags"].split("|")


def test_every_image_exists_and_is_rgb_of_the_requested_size(tiny: Path) -> None:
    for row in read_csv(tiny / "catalog.csv"):
        names = row["image"].split("|")
        assert names == [f"images/{row['id'].lower()}_v{v}.jpg" for v in range(2)]
        for name in names:
            with Image.open(tiny / name) as img:
                assert img.format == "JPEG"
                assert img.mode == "RGB" and img.size == (SIZE, SIZE)


def test_all_four_types_in_equal_shares(tiny: Path) -> None:
    types = [r["type"] for r in read_csv(tiny / "catalog.csv")]
    assert sorted(set(types)) == ["bracelet", "earring", "necklace", "ring"]
    assert all(types.count(t) == 3 for t in set(types))


def test_query_photos_name_catalog_products(tiny: Path) -> None:
    catalog = {r["id"]: r for r in read_csv(tiny / "catalog.csv")}
    queries = read_csv(tiny / "queries" / "queries.csv")
    assert len(queries) == 3
    for q in queries:
        assert set(q) == {"file", "product_id", "type", "metal"}
        product = catalog[q["product_id"]]
        assert (q["type"], q["metal"]) == (product["type"], product["metal"])
        with Image.open(tiny / "queries" / q["file"]) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    query_bytes = {(tiny / "queries" / q["file"]).read_bytes() for q in queries}
    view_bytes = {p.read_bytes() for p in (tiny / "images").iterdir()}
    assert not query_bytes & view_bytes, "a shopper photo must not be a catalog view"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_catalog(tmp_path: Path) -> None:
    def draw(folder: str, seed: int) -> dict[str, bytes]:
        generate_catalog(tmp_path / folder, products=6, views=2, seed=seed, query_photos=1,
                         image_size=64, progress=False)
        return _files(tmp_path / folder)

    first, again, other = draw("a", 11), draw("b", 11), draw("c", 12)
    assert first == again
    assert first.keys() == other.keys()
    assert first["catalog.csv"] != other["catalog.csv"]
    assert any(first[name] != other[name] for name in first if name.endswith(".jpg"))


def test_views_of_a_product_differ(tiny: Path) -> None:
    for row in read_csv(tiny / "catalog.csv"):
        v0, v1 = (np.asarray(Image.open(tiny / n), dtype=float) for n in row["image"].split("|"))
        assert np.abs(v0 - v1).mean() > 2.0, row["id"]


def foreground(img: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the backdrop (median of the image border)."""
    border = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3),
                             img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)])
    backdrop = np.median(border, axis=0)
    return np.abs(img.astype(float) - backdrop).max(axis=2) > 40


def test_earrings_come_in_separated_pairs() -> None:
    earrings = [s for s in (product_spec(0, i) for i in range(40)) if s.type == "earring"]
    assert {s.style for s in earrings} == {"hoop", "stud", "drop"}
    for spec in earrings:
        for view in range(2):
            mask = foreground(render_view(spec, view, SIZE))
            columns = np.flatnonzero(mask.any(axis=0))
            left, right = columns.min(), columns.max()
            middle = (left + right) // 2
            assert mask[:, left:middle].sum() > 30 and mask[:, middle:right + 1].sum() > 30
            empty = ~mask[:, left:right + 1].any(axis=0)
            assert empty.any(), f"{spec.family} view {view}: the two earrings touch"


def mean_hue_saturation(img: np.ndarray) -> tuple[float, float]:
    pixels = img[foreground(img)].mean(axis=0) / 255.0
    hue, saturation, _ = colorsys.rgb_to_hsv(*pixels)
    return hue * 360.0, saturation


def test_metals_have_their_own_colour() -> None:
    plain = [s for s in (product_spec(5, i) for i in range(120)) if s.stone is None]
    seen = set()
    for spec in plain:
        hue, saturation = mean_hue_saturation(render_view(spec, 0, SIZE))
        label = f"{spec.family} {spec.metal}: hue {hue:.0f}, saturation {saturation:.2f}"
        if spec.metal == "gold":  # yellow
            assert 30 <= hue <= 60 and saturation > 0.35, label
        elif spec.metal == "rose gold":  # pink-red, paler than gold
            assert (hue <= 20 or hue >= 340) and 0.15 < saturation < 0.5, label
        else:  # silver: grey
            assert saturation < 0.15, label
        seen.add(spec.metal)
    assert seen == {"gold", "silver", "rose gold"}


def test_price_follows_metal_and_stone() -> None:
    specs = [product_spec(2, i) for i in range(400)]

    def median_price(**attrs: object) -> float:
        prices = [s.price for s in specs if all(getattr(s, k) == v for k, v in attrs.items())]
        return float(np.median(prices))

    assert median_price(metal="gold") > median_price(metal="rose gold") > median_price(
        metal="silver")
    assert median_price(type="ring", stone="diamond") > median_price(type="ring", stone=None)


@pytest.mark.parametrize("kwargs", [{"products": 0}, {"views": 0}, {"query_photos": -1},
                                    {"image_size": 8}])
def test_bad_arguments_are_refused_with_a_clear_error(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(JewelrecError):
        generate_catalog(tmp_path, progress=False, **{"products": 2, "views": 1, **kwargs})


def test_pool_and_single_process_draw_the_same_bytes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-product seeds: which worker draws a product must not change a byte."""
    settings = {"products": synthetic.POOL_MIN_JOBS, "views": 1, "seed": 4, "image_size": 48,
                "progress": False}
    monkeypatch.setattr(synthetic, "_cores", lambda: 2)
    generate_catalog(tmp_path / "pool", **settings)
    monkeypatch.setattr(synthetic, "POOL_MIN_JOBS", 10**9)
    generate_catalog(tmp_path / "single", **settings)
    assert _files(tmp_path / "pool") == _files(tmp_path / "single")


def test_every_style_has_a_design() -> None:
    styles = {(kind, style) for kind, by_style in synthetic.STYLES.items() for style in by_style}
    assert styles == set(synthetic.DESIGNS)


def test_render_view_gives_an_rgb_array() -> None:
    img = render_view(product_spec(0, 0), 0, 96)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
