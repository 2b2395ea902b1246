"""Large query photos are decoded reduced (issue 11): a JPEG much larger than the models need is
decoded at 1/2, 1/4 or 1/8 scale, while everything the caller sees stays in the photo's own
pixels: the crop asked (API `crop`, CLI `--crop`), the answer's `crop` and its pieces' boxes.
Catalog images ("more like this"), small photos and PNGs are decoded as they are."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from set_photo import BACKDROP, SET_TYPES, set_photo

from jewelrec import recommend
from jewelrec.cli import main
from jewelrec.imaging.io import (
    QUERY_SHORT_SIDE,
    DecodedPhoto,
    decode_photo,
    image_to_jpeg_bytes,
    load_image,
    map_box,
)
from jewelrec.imaging.segment import Box, crop
from jewelrec.models.pieces import find_pieces, iou
from jewelrec.recommend import Recommender
from jewelrec.server.app import create_app

WIDTH, HEIGHT = 3000, 2000  # decoded at 1/2 (1500x1000): 1/4 would leave 500 < QUERY_SHORT_SIDE
REDUCED, WHOLE = (HEIGHT // 2, WIDTH // 2, 3), (HEIGHT, WIDTH, 3)
RIGHT_HALF = Box(1503, 101, 2997, 1901)  # holds the ring only; odd corners, off the 1/2 grid
SCALE = 5  # the set photo (SIDE x 2 cells) is laid on the large backdrop this much enlarged
TOLERANCE = 0.03  # a box side may move by this share of the photo's side between the decodes


@pytest.fixture(scope="module")
def large_set(tiny_catalog) -> tuple[bytes, list[tuple[str, tuple[int, int, int, int]]]]:
    """A 3000x2000 JPEG of the set (necklace, ring) and where each piece lies in it."""
    photo, laid = set_photo(tiny_catalog)
    small = Image.open(io.BytesIO(photo)).convert("RGB")
    big = small.resize((small.width * SCALE, small.height * SCALE), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (WIDTH, HEIGHT), BACKDROP)
    left, top = (WIDTH - big.width) // 2, (HEIGHT - big.height) // 2
    canvas.paste(big, (left, top))
    boxes = [(t, (left + SCALE * x0, top + SCALE * y0, left + SCALE * x1, top + SCALE * y1))
             for t, (x0, y0, x1, y1) in laid]
    return image_to_jpeg_bytes(np.asarray(canvas), quality=92), boxes


@pytest.fixture(scope="module")
def large_file(large_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "large-set.jpg"
    path.write_bytes(large_set[0])
    return path


@pytest.fixture(scope="module")
def recommender(tiny_home) -> Recommender:
    return Recommender.open(tiny_home)


@pytest.fixture(scope="module")
def full_answer(recommender, large_set):
    """The same photo decoded whole (an array is never reduced): what a reduced decode must
    agree with."""
    return recommender.recommend(load_image(large_set[0]), k=3)


@pytest.fixture(scope="module")
def client(tiny_home):
    with TestClient(create_app(tiny_home)) as test_client:
        yield test_client


@pytest.fixture
def seen_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of the images the piece finder is given (the work image of each query)."""
    shapes: list[tuple[int, ...]] = []
    monkeypatch.setattr(recommend, "find_pieces",
                        lambda image, *a, **kw: shapes.append(image.shape) or
                        find_pieces(image, *a, **kw))
    return shapes


def assert_near(box, expected, what) -> None:
    """Each side within TOLERANCE of the photo's side."""
    limits = (WIDTH, HEIGHT, WIDTH, HEIGHT)
    assert all(abs(a - b) <= TOLERANCE * side for a, b, side in zip(box, expected, limits,
                                                                     strict=True)), (
        what, box, expected)


def assert_pieces_in_photo_pixels(pieces: list[dict], full, laid) -> None:
    assert len(pieces) == len(full.pieces) == len(SET_TYPES)
    for got, want in zip(pieces, full.pieces, strict=True):
        x0, y0, x1, y1 = got["box"]
        assert 0 <= x0 < x1 <= WIDTH and 0 <= y0 < y1 <= HEIGHT
        assert got["type"] == want.type
        assert_near(got["box"], want.box, got["type"])
    for ptype, box in laid:  # found where each piece was laid, in the photo's pixels
        found = next(p for p in pieces if p["type"] == ptype)
        assert iou(found["box"], box) >= 0.5, (ptype, found, box)


# -- decoding and mapping ----------------------------------------------------------------------
def test_decode_photo_says_the_photos_own_size(large_set):
    decoded = decode_photo(large_set[0], reduce_to=QUERY_SHORT_SIDE)
    assert decoded.size == (WIDTH, HEIGHT)
    assert decoded.image.shape == REDUCED and decoded.reduced
    whole = decode_photo(large_set[0])
    assert whole.size == (WIDTH, HEIGHT) and not whole.reduced


def test_decode_photo_size_is_upright_per_exif():
    img = Image.fromarray(np.zeros((1600, 2400, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    stream = io.BytesIO()
    img.save(stream, format="JPEG", exif=exif)
    decoded = decode_photo(stream.getvalue(), reduce_to=400)
    assert decoded.image.shape == (600, 400, 3) and decoded.size == (1600, 2400)
    assert decoded.to_photo((0, 0, 400, 600)) == (0, 0, 1600, 2400)


def test_a_crop_keeps_its_detail(large_set):
    """A crop's short side keeps QUERY_SHORT_SIDE pixels too (or all it has): a small crop of a
    large photo is decoded whole, a large one as reduced as that allows."""
    data = large_set[0]
    assert decode_photo(data, reduce_to=QUERY_SHORT_SIDE, keep=(0, 0, 600, 500)).image.shape == (
        WHOLE)
    half = decode_photo(data, reduce_to=QUERY_SHORT_SIDE, keep=RIGHT_HALF.as_tuple())
    assert half.image.shape == REDUCED
    hanging = (WIDTH - 600, HEIGHT - 500, 9000, 9000)  # 600x500 inside the photo
    assert decode_photo(data, reduce_to=QUERY_SHORT_SIDE, keep=hanging).image.shape == WHOLE
    img = Image.fromarray(np.zeros((1600, 2400, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # shown 1600 wide, 2400 high: the crop is clipped to the photo as shown
    stream = io.BytesIO()
    img.save(stream, format="JPEG", exif=exif)
    turned = decode_photo(stream.getvalue(), reduce_to=400, keep=(0, 1200, 1600, 9000))
    assert turned.size == (1600, 2400) and turned.image.shape == (1200, 800, 3)  # 1/2: 800 wide


def test_map_box_rounds_outward_clips_and_maps_back():
    photo, image = (3001, 2000), (376, 250)  # a 1/8 decode rounds the odd side up
    inner = map_box((801, 9, 1603, 1999), photo, image)
    assert inner == (100, 1, 201, 250)  # outward: the region stays whole
    back = map_box(inner, image, photo)
    assert back[0] <= 801 and back[1] <= 9 and back[2] >= 1603 and back[3] >= 1999
    assert back[2] - 1603 < 9 and 801 - back[0] < 9  # by less than one decoded pixel
    assert map_box((0, 0, 5000, 5000), photo, image) == (0, 0, 376, 250)  # clipped
    assert map_box((10, 20, 30, 40), (64, 48), (64, 48)) == (10, 20, 30, 40)  # same size
    whole = DecodedPhoto.of(np.zeros((48, 64, 3), np.uint8))
    assert whole.size == (64, 48) and not whole.reduced


# -- the Recommender and the CLI ---------------------------------------------------------------
def test_a_large_jpeg_is_searched_reduced_and_answered_in_its_own_pixels(
    recommender, large_set, large_file, full_answer, seen_shapes
):
    answer = recommender.recommend(large_file, k=3)
    assert seen_shapes == [REDUCED]  # the pieces were found reduced
    assert_pieces_in_photo_pixels([p.to_dict() for p in answer.pieces], full_answer,
                                  large_set[1])
    assert answer.type == full_answer.type
    assert answer.crop.as_tuple() == answer.pieces[answer.piece].box
    assert_near(answer.crop.as_tuple(), full_answer.crop.as_tuple(), "crop")


def test_a_crop_in_the_photos_pixels_selects_the_same_region(recommender, large_set, large_file):
    ptype, _ = large_set[1][1]  # the ring
    asked = RIGHT_HALF
    prepared = recommender.prepare(large_file, crop=asked)
    assert prepared.size == (WIDTH, HEIGHT) and prepared.image.shape == REDUCED
    inner = prepared.image_crop
    back = prepared.to_photo(inner)  # what the reduced crop covers, in the photo's pixels
    assert back.x0 <= asked.x0 < back.x0 + 2 and back.y0 <= asked.y0 < back.y0 + 2
    assert back.x1 - 2 < asked.x1 <= back.x1 and back.y1 - 2 < asked.y1 <= back.y1
    whole = load_image(large_set[0])
    same = np.asarray(Image.fromarray(crop(whole, back)).resize(
        (inner.width, inner.height), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(same - crop(prepared.image, inner)).mean() < 6  # the same pixels, halved

    reduced = recommender.recommend(large_file, k=3, crop=asked)
    full = recommender.recommend(whole, k=3, crop=asked)
    assert reduced.crop == full.crop == asked  # as asked, not as the reduced image rounds it
    assert reduced.piece is None and reduced.type == full.type == ptype
    assert [r.id for r in reduced.results][:1] == [r.id for r in full.results][:1]


def test_a_small_crop_of_a_large_photo_is_searched_in_full_detail(recommender, large_set,
                                                                   large_file):
    _, ring = large_set[1][1]
    prepared = recommender.prepare(large_file, crop=Box(*ring))
    assert prepared.size is None and prepared.image.shape == WHOLE
    assert prepared.image_crop == Box(*ring)


def test_cli_json_answers_in_the_photos_pixels(tiny_home, large_set, large_file, full_answer,
                                               seen_shapes, capsys):
    assert main(["recommend", str(large_file), "--home", str(tiny_home), "--json",
                 "-k", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert seen_shapes == [REDUCED]
    assert_pieces_in_photo_pixels(answer["pieces"], full_answer, large_set[1])
    _, ring = large_set[1][1]
    assert main(["recommend", str(large_file), "--home", str(tiny_home), "--json", "-k", "3",
                 "--crop", ",".join(str(v) for v in ring)]) == 0
    cropped = json.loads(capsys.readouterr().out)
    assert cropped["piece"] is None and cropped["type"] == "ring"
    assert seen_shapes[-1] == WHOLE  # a small crop: decoded whole, in full detail
    half = ",".join(str(v) for v in RIGHT_HALF.as_tuple())
    assert main(["recommend", str(large_file), "--home", str(tiny_home), "--json", "-k", "3",
                 f"--crop={half}"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "ring"
    assert seen_shapes[-1] == REDUCED


def test_cli_all_pieces_answers_each_piece_in_the_photos_pixels(
    tiny_home, large_set, large_file, full_answer, seen_shapes, capsys
):
    assert main(["recommend", str(large_file), "--home", str(tiny_home), "--json", "-k", "2",
                 "--all-pieces"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert seen_shapes == [REDUCED]  # found once, reduced
    assert len(answers) == len(SET_TYPES)
    for a in answers:
        assert_pieces_in_photo_pixels(a["pieces"], full_answer, large_set[1])
        assert a["type"] == a["pieces"][a["piece"]]["type"]


def test_small_photos_and_pngs_are_decoded_as_they_are(recommender, tiny_query_photo, large_set):
    small = recommender.prepare(tiny_query_photo)
    assert small.size is None and np.array_equal(small.image, load_image(tiny_query_photo))
    png = io.BytesIO()
    Image.open(io.BytesIO(large_set[0])).save(png, format="PNG")
    large_png = recommender.prepare(png.getvalue())
    assert large_png.size is None and large_png.image.shape == (HEIGHT, WIDTH, 3)


def test_more_like_this_reads_the_catalog_image_whole(recommender, monkeypatch):
    decoded = []
    monkeypatch.setattr(recommend, "decode_photo",
                        lambda *a, **kw: decoded.append(kw) or decode_photo(*a, **kw))
    product = recommender.store.all_products()[0]
    assert recommender.similar_to_product(product.id, k=2).results
    assert decoded == []  # load_image, whole, as the index read it


# -- the API -----------------------------------------------------------------------------------
def post(client, photo: bytes, **fields):
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/api/recommend", files={"photo": ("large.jpg", photo, "image/jpeg")},
                       data=data)


def test_api_searches_a_large_jpeg_reduced_and_answers_in_its_pixels(
    client, large_set, full_answer, seen_shapes
):
    response = post(client, large_set[0], k=3)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert seen_shapes == [REDUCED]
    assert answer["photo_size"] == {"width": WIDTH, "height": HEIGHT}
    assert_pieces_in_photo_pixels(answer["pieces"], full_answer, large_set[1])
    assert answer["crop"] == answer["pieces"][answer["piece"]]["box"]


def test_api_crop_is_in_the_photos_pixels(client, large_set, seen_shapes):
    x0, y0, x1, y1 = RIGHT_HALF.as_tuple()
    answer = post(client, large_set[0], k=3, crop=f"{x0},{y0},{x1},{y1}").json()
    assert answer["crop"] == [x0, y0, x1, y1] and answer["type"] == "ring"
    assert seen_shapes == [REDUCED]
    # clipped to the photo's own size, not the reduced image's
    edge = post(client, large_set[0], k=3, crop=f"{WIDTH - 1600},{HEIGHT - 1500},9000,9000")
    assert edge.json()["crop"] == [WIDTH - 1600, HEIGHT - 1500, WIDTH, HEIGHT]
    assert seen_shapes[-1] == REDUCED
    outside = post(client, large_set[0], crop=f"{WIDTH + 10},0,{WIDTH + 90},50")
    assert outside.status_code == 422 and f"{WIDTH}x{HEIGHT} photo" in outside.json()["detail"]
    _, ring = large_set[1][1]  # a small crop: decoded whole, in full detail
    small = post(client, large_set[0], k=3, crop=",".join(map(str, ring))).json()
    assert small["crop"] == list(ring) and small["type"] == "ring"
    assert seen_shapes[-1] == WHOLE
