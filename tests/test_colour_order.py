"""Colour order is RGB end to end. The prototype read BGR with OpenCV and showed gold as blue;
here a pure red photo goes through every stage and must still be red."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from jewelrec.imaging.io import image_to_jpeg_bytes, image_to_png_bytes, load_image

RED = (255, 0, 0)


def red_photo(size: int = 120) -> np.ndarray:
    """A red square on white, so segmentation has a piece to find."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    image[30:90, 30:90] = RED
    return image


def assert_red(pixel) -> None:
    r, g, b = (float(v) for v in pixel)
    assert r > 240 and g < 20 and b < 20, f"expected red, got {(r, g, b)}"


def test_loading_and_encoding_keep_red():
    photo = red_photo()
    for data in (image_to_png_bytes(photo), image_to_jpeg_bytes(photo, quality=95)):
        assert_red(load_image(data)[60, 60])


def test_framing_keeps_red():
    from jewelrec.imaging.focus import focus_on_piece

    framed, box = focus_on_piece(red_photo())
    assert box is not None
    assert_red(framed[framed.shape[0] // 2, framed.shape[1] // 2])


def test_model_inputs_keep_channel_order():
    from jewelrec.models.backbone import preprocess
    from jewelrec.models.training import to_tensor_batch

    solid = np.zeros((64, 64, 3), dtype=np.uint8)
    solid[..., 0] = 255
    seed_input = to_tensor_batch([solid], 100)[0]  # (3, H, W) in [0, 1]
    assert seed_input[0].mean() > 0.99 and seed_input[1:].abs().max() < 0.01
    pretrained = np.asarray(preprocess(solid))  # (3, 224, 224), (x - 127) / 128
    assert pretrained.shape[0] == 3
    assert np.allclose(pretrained[0], 1.0) and np.allclose(pretrained[1:], -127 / 128)


def test_ingest_store_and_html_keep_red(tmp_path):
    from jewelrec.catalog.ingest import ingest
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.home import Home

    Image.fromarray(red_photo()).save(tmp_path / "red.png")
    (tmp_path / "catalog.csv").write_text(
        "id,title,type,price,url,image\nR1,Red,ring,10,https://shop.example.com/r1,red.png\n"
    )
    home = Home(tmp_path / "home").ensure()
    assert not ingest(tmp_path / "catalog.csv", home, progress=False).rejected
    product = CatalogStore.open(home).get("R1")
    assert_red(load_image(home.image_path(product.image))[60, 60])

    from jewelrec.html_report import _thumbnail_data_uri

    uri = _thumbnail_data_uri(home.image_path(product.image).read_bytes())
    thumbnail = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
    assert_red(thumbnail.getpixel((60, 60)))


def test_synthetic_gold_is_not_blue(tiny_catalog):
    """Rendered gold stays warm (R > B) after writing and reading the catalog's JPEGs."""
    import csv

    rows = [r for r in csv.DictReader(open(tiny_catalog / "catalog.csv")) if r["metal"] == "gold"]
    assert rows
    image = load_image(tiny_catalog / rows[0]["image"].split("|")[0]).astype(float)
    background = np.median(np.concatenate([image[0], image[-1]]), axis=0)
    piece = image[np.abs(image - background).sum(axis=2) > 60]
    r, g, b = piece.mean(axis=0)
    assert r > b + 30 and g > b, (r, g, b)
