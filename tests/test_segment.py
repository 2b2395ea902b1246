"""Segmentation: boxes, crops and earring pairs on drawn photos and on real product photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jewelrec.imaging.io import load_image
from jewelrec.imaging.segment import (
    Box,
    crop,
    earring_pair_boxes,
    foreground_mask,
    largest_object_box,
    largest_object_crop,
    object_boxes,
    split_earring_pair,
    upper_quartile,
)

GOLD = (212, 175, 55)
SILVER = (170, 172, 178)
WHITE = (250, 250, 250)
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-jewelry"
TOLERANCE = 3  # the mask is computed on a copy shrunk by up to 2x: boxes snap to even pixels


def canvas(w: int, h: int, colour=WHITE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (w, h), colour)
    return img, ImageDraw.Draw(img)


def near(box: Box, expected: tuple[int, int, int, int], tolerance: int = TOLERANCE) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box.as_tuple(), expected, strict=True))


def gold_pixels(arr: np.ndarray) -> int:
    return int((np.abs(arr.astype(int) - GOLD).sum(axis=2) < 40).sum())


def hoop_pair() -> np.ndarray:
    img, draw = canvas(384, 256)
    draw.ellipse((50, 70, 150, 190), outline=GOLD, width=9)
    draw.ellipse((230, 66, 330, 186), outline=GOLD, width=9)
    return np.asarray(img).copy()


# --- Box --------------------------------------------------------------------------------------


def test_box_measures_and_tuple():
    box = Box(10, 20, 40, 30)
    assert (box.width, box.height, box.area) == (30, 10, 300)
    assert box.as_tuple() == (10, 20, 40, 30)
    with pytest.raises(AttributeError):
        box.x0 = 3  # frozen


def test_box_rejects_nonsense():
    with pytest.raises(ValueError):
        Box(10, 0, 5, 5)  # x1 < x0
    with pytest.raises(ValueError):
        Box(-1, 0, 5, 5)
    with pytest.raises(ValueError):
        Box(0.5, 0, 5, 5)
    assert Box(np.int64(1), 2, 3, 4).as_tuple() == (1, 2, 3, 4)


def test_box_clip():
    assert Box(10, 10, 500, 90).clip(100, 80).as_tuple() == (10, 10, 100, 80)
    assert Box(200, 200, 300, 300).clip(100, 80).area == 0


def test_box_expand_is_symmetric_then_clipped():
    assert Box(100, 100, 200, 150).expand(0.1, 1000, 1000).as_tuple() == (90, 90, 210, 160)
    assert Box(5, 100, 105, 150).expand(0.1, 110, 1000).as_tuple() == (0, 90, 110, 160)


@pytest.mark.parametrize(
    ("text", "expected"), [("1,2,30,40", (1, 2, 30, 40)), (" 0, 0 ,5, 6 ", (0, 0, 5, 6))]
)
def test_box_parse(text: str, expected: tuple[int, int, int, int]):
    assert Box.parse(text).as_tuple() == expected


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "-1,0,5,5", "1.5,0,5,5",
                                  "10,0,5,5", "0,0,0,5"])
def test_box_parse_rejects(text: str):
    with pytest.raises(ValueError, match="box"):
        Box.parse(text)


def test_crop_clips_and_refuses_outside():
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert crop(img, Box(15, 5, 40, 40)).shape == (5, 5, 3)
    assert crop(img, Box(0, 0, 20, 10)).flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError, match="outside"):
        crop(img, Box(30, 0, 40, 5))


# --- drawn photos -----------------------------------------------------------------------------


def test_two_gold_hoops_on_white_split_into_two():
    img = hoop_pair()
    boxes = object_boxes(img)
    assert len(boxes) == 2
    assert near(sorted(boxes, key=lambda b: b.x0)[0], (50, 70, 151, 191))
    left, right = earring_pair_boxes(img)
    assert left.x1 <= right.x0  # neither crop shows the other earring
    assert left.x0 <= 50 and left.y0 <= 70 and left.x1 >= 151 and left.y1 >= 191
    assert right.x0 <= 230 and right.y0 <= 66 and right.x1 >= 331 and right.y1 >= 187
    crops = split_earring_pair(img)
    assert len(crops) == 2
    total = gold_pixels(img)
    for piece in crops:
        assert piece.shape[0] < img.shape[0] and piece.shape[1] < img.shape[1] / 2
        assert 0.45 * total < gold_pixels(piece) < 0.55 * total


def test_one_ring_on_dark_background_gets_a_symmetric_margin():
    img, draw = canvas(384, 384, (18, 18, 24))  # the prototype's inverse threshold fails here
    draw.ellipse((120, 140, 260, 240), outline=GOLD, width=10)
    arr = np.asarray(img)
    (found,) = object_boxes(arr)
    assert near(found, (120, 140, 261, 241))
    box = largest_object_box(arr, margin=0.1)
    pads = (found.x0 - box.x0, found.y0 - box.y0, box.x1 - found.x1, box.y1 - found.y1)
    assert len(set(pads)) == 1 and abs(pads[0] - 14) <= 1  # 10% of the 141 px longer side
    assert largest_object_crop(arr, margin=0.1).shape == (box.height, box.width, 3)
    assert split_earring_pair(arr)[0].shape == largest_object_crop(arr).shape


def gradient(w: int, h: int, start, stop) -> Image.Image:
    t = (np.linspace(0, 1, w)[None, :] + np.linspace(0, 1, h)[:, None]) / 2
    colours = np.array(start) + t[..., None] * (np.array(stop) - np.array(start))
    return Image.fromarray(colours.round().astype(np.uint8))


def vignette(w: int, h: int, centre, edge) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2)) / np.sqrt(2)
    colours = np.array(centre) + (r**2)[..., None] * (np.array(edge) - np.array(centre))
    return Image.fromarray(colours.round().astype(np.uint8))


@pytest.mark.parametrize(
    "background",
    [
        gradient(384, 300, (235, 235, 250), (120, 90, 70)),  # light to dark, corner to corner
        vignette(384, 300, (250, 250, 250), (150, 150, 160)),  # studio light fall-off
        Image.new("RGB", (384, 300), (245, 205, 215)),  # a pink card
    ],
    ids=["gradient", "vignette", "coloured"],
)
def test_pendant_on_uneven_background(background: Image.Image):
    img = background.copy()
    draw = ImageDraw.Draw(img)
    draw.line((190, 0, 190, 120), fill=GOLD, width=3)  # the chain, running off the top
    draw.polygon([(150, 120), (230, 120), (190, 220)], fill=GOLD)
    arr = np.asarray(img)
    mask = foreground_mask(arr)
    assert mask.shape == arr.shape[:2]
    outside = np.ones_like(mask)
    outside[:, 140:240] = False
    assert mask[outside].mean() < 0.01  # the background stays background
    assert mask[125:170, 180:200].all()  # the pendant is found
    (found,) = object_boxes(arr)
    assert near(found, (150, 0, 231, 221))


def test_pure_noise_falls_back_to_the_whole_photo():
    arr = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert not foreground_mask(arr).any()
    assert object_boxes(arr) == [] and largest_object_box(arr) is None
    assert largest_object_crop(arr) is arr
    assert len(split_earring_pair(arr)) == 1 and split_earring_pair(arr)[0] is arr


def test_flat_photo_has_no_object():
    arr = np.full((120, 90, 3), 200, dtype=np.uint8)
    assert not foreground_mask(arr).any() and object_boxes(arr) == []


def test_a_photo_that_is_all_object_is_not_an_object():
    arr = np.full((100, 100, 3), 250, dtype=np.uint8)
    arr[2:98, 2:98] = GOLD  # a close-up: only a thin line of background round the edge
    assert not foreground_mask(arr).any() and largest_object_box(arr) is None


def test_chain_with_small_gaps_stays_one_object():
    img, draw = canvas(384, 384)
    for x in range(40, 340, 10):  # links 8 px long, 2 px apart
        draw.line((x, 200, x + 7, 200), fill=GOLD, width=4)
    (found,) = object_boxes(np.asarray(img))
    assert near(found, (40, 198, 338, 203))


def test_unequal_objects_are_not_a_pair():
    img, draw = canvas(384, 256)
    draw.ellipse((40, 60, 190, 210), fill=GOLD)
    draw.ellipse((260, 120, 290, 150), fill=GOLD)
    arr = np.asarray(img)
    assert earring_pair_boxes(arr) == []
    (single,) = split_earring_pair(arr)
    assert single.shape == largest_object_crop(arr).shape


def test_stacked_objects_are_not_a_pair():
    img, draw = canvas(256, 384)
    draw.ellipse((80, 40, 170, 150), fill=GOLD)
    draw.ellipse((80, 230, 170, 340), fill=GOLD)
    assert earring_pair_boxes(np.asarray(img)) == []
    assert len(split_earring_pair(np.asarray(img))) == 1


def test_three_alike_are_not_a_pair():
    img, draw = canvas(384, 200)
    for x in (30, 150, 270):
        draw.ellipse((x, 50, x + 80, 150), fill=GOLD)
    assert earring_pair_boxes(np.asarray(img)) == []


def test_detached_studs_join_their_drops():
    img, draw = canvas(384, 320)
    for x in (70, 240):
        draw.ellipse((x + 25, 30, x + 45, 50), fill=GOLD)  # stud
        draw.polygon([(x, 80), (x + 70, 80), (x + 35, 260)], fill=GOLD)  # drop, 30 px below
    left, right = earring_pair_boxes(np.asarray(img))
    assert left.y0 <= 30 and right.y0 <= 30  # the studs are inside
    assert left.x1 <= 240 and right.x0 >= 140


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (385, 251), (1000, 37)])
def test_any_size_works(shape: tuple[int, int]):
    arr = np.full((*shape, 3), 255, dtype=np.uint8)
    arr[shape[0] // 3 : 2 * shape[0] // 3 + 1, shape[1] // 3 : 2 * shape[1] // 3 + 1] = GOLD
    mask = foreground_mask(arr)
    assert mask.shape == shape and mask.dtype == bool
    for box in object_boxes(arr):
        assert box.x1 <= shape[1] and box.y1 <= shape[0]
    assert all(p.ndim == 3 and p.size for p in split_earring_pair(arr))


def test_mask_follows_the_photo_at_full_size():
    arr = hoop_pair()
    mask = foreground_mask(arr)
    gold = np.abs(arr.astype(int) - GOLD).sum(axis=2) < 40
    assert mask[gold].mean() > 0.95  # every gold pixel is in the mask
    assert mask.sum() < 1.5 * gold.sum()  # and not much else


# --- real product photos ----------------------------------------------------------------------


def product_earring_photos(count: int) -> list[Path]:
    """One product-style earring photo from each of the first `count` sources (sorted)."""
    if not (REAL / "manifest.csv").is_file():
        pytest.skip(f"real photos not found at {REAL} (shared test data absent)")
    with (REAL / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["type"] == "earring"]
    chosen: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["file"]):
        if row["style"] == "product" and row["source_repo"] not in chosen:
            chosen[row["source_repo"]] = row["file"]
    return [REAL / name for name in sorted(chosen.values())[:count]]


def rough_foreground(arr: np.ndarray) -> np.ndarray:
    """An independent, cruder estimate: far from the border's median colour."""
    border = np.concatenate([arr[:4].reshape(-1, 3), arr[-4:].reshape(-1, 3),
                             arr[:, :4].reshape(-1, 3), arr[:, -4:].reshape(-1, 3)])
    distance = np.sqrt(((arr.astype(float) - np.median(border, axis=0)) ** 2).sum(axis=2))
    return distance > 60


def covered(mask: np.ndarray, boxes: list[Box]) -> float:
    inside = np.zeros_like(mask)
    for box in boxes:
        inside[box.y0 : box.y1, box.x0 : box.x1] = True
    return float(mask[inside].sum() / max(1, mask.sum()))


def bounding_area(mask: np.ndarray) -> int:
    rows, cols = np.nonzero(mask)
    return 0 if rows.size == 0 else int(np.ptp(rows) + 1) * int(np.ptp(cols) + 1)


def test_real_product_earrings_are_cropped_around_the_jewelry():
    photos = product_earring_photos(24)
    failures, pairs, framed = [], 0, 0
    for path in photos:
        arr = load_image(path)
        photo_area = arr.shape[0] * arr.shape[1]
        pair = earring_pair_boxes(arr)
        pairs += bool(pair)
        boxes = pair or [b for b in [largest_object_box(arr)] if b is not None]
        crops = split_earring_pair(arr)
        rough = rough_foreground(arr)
        coverage = covered(rough, boxes)
        problem = ""
        if not boxes:
            problem = "no object found"
        elif coverage < 0.8:
            problem = f"the boxes hold only {coverage:.0%} of the foreground"
        elif bounding_area(rough) < 0.6 * photo_area:  # the piece does not fill the frame
            framed += 1
            if sum(c.shape[0] * c.shape[1] for c in crops) >= 0.9 * photo_area:
                problem = "the crops are not smaller than the photo"
        if problem:
            failures.append(f"{path.name}: {problem}")
    assert len(photos) >= 12
    assert framed >= len(photos) // 3  # the size check above did run on many
    assert len(failures) <= len(photos) // 8, "\n".join(failures)
    assert pairs >= len(photos) // 2  # most product earring photos show a pair


def test_upper_quartile_is_numpys_bit_for_bit():
    rng = np.random.default_rng(1)
    for n in [*range(1, 70), 200]:
        for scale in (1e-3, 1.0, 1e4):
            values = rng.standard_normal(n) ** 2 * scale
            assert upper_quartile(values) == np.quantile(values, 0.75)
    assert upper_quartile(np.array([2.0, 2.0, 2.0])) == 2.0
