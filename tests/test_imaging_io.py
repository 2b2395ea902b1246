"""Safe image loading: every colour mode comes out RGB uint8, every bad input as one ImageError."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jewelrec.errors import ImageError
from jewelrec.imaging.io import (
    MAX_ASPECT_RATIO,
    center_crop,
    image_to_jpeg_bytes,
    image_to_png_bytes,
    load_image,
    resize_exact,
    resize_short_side,
    sniff_image_type,
)

RED = (255, 0, 0)


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def assert_pure_red(arr: np.ndarray) -> None:
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr[..., 0].min() > 250, arr[..., 0].min()
    assert arr[..., 1:].max() < 5, arr[..., 1:].max()


def png_rgb16(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A 48-bit RGB PNG written by hand (PIL cannot write 16 bits per channel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + struct.pack(">3H", *rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# --- bad input: one clear error type, a readable message -------------------------------------


def test_zero_bytes():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(str(tmp_path / "nope.jpg"))


def test_folder_is_not_an_image(tmp_path: Path):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_a_pipe_or_a_device_is_refused_without_reading_it(tmp_path: Path):
    """A FIFO would block the reader forever; /dev/zero reported itself as 0 bytes."""
    import os

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(path)


def test_not_an_image():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"name,price\nring,10\n")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt: str):
    noisy = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), fmt)
    with pytest.raises(ImageError) as caught:
        load_image(data[: len(data) // 2])
    assert "the photo" in str(caught.value)


def test_corrupt_body_after_valid_header():
    data = bytearray(encode(Image.new("RGB", (64, 64), RED), "PNG"))
    data[60:] = bytes(len(data) - 60)  # header kept, compressed pixels zeroed
    with pytest.raises(ImageError):
        load_image(bytes(data))


def test_error_names_the_file(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("not a photo")
    with pytest.raises(ImageError, match="notes.txt"):
        load_image(path)


# --- size limit: checked from the header, before decoding ------------------------------------


def test_pixel_limit_from_header():
    data = encode(Image.new("L", (3000, 2000)), "PNG")  # small file, 6 megapixels
    with pytest.raises(ImageError, match="megapixel"):
        load_image(data, max_pixels=1_000_000)
    assert load_image(data, max_pixels=6_000_000).shape == (2000, 3000, 3)


def test_pixel_limit_message_just_over_shows_numbers_that_differ():
    """Just over the limit read '1.0 megapixels, more than the 1.0 megapixel limit'."""
    data = encode(Image.new("L", (1001, 1000)), "PNG")
    with pytest.raises(ImageError) as caught:
        load_image(data, max_pixels=1_000_000)
    message = str(caught.value)
    assert "1001x1000 = 1,001,000 pixels" in message and "1,000,000-pixel" in message
    assert "(1.0 megapixel) limit" in message


def test_pil_bomb_error_and_warning_do_not_leak(monkeypatch):
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")  # 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)  # more than twice: PIL refuses
    with pytest.raises(ImageError, match="too large") as caught:
        load_image(data, max_pixels=3_000_000)
    message = str(caught.value)
    assert "3.0 megapixel limit" in message  # our limit, not PIL's
    assert "2000" not in message and "4000" not in message and "bomb" not in message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8_000)  # over, not twice: PIL only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_pure_red(load_image(data))


@pytest.mark.parametrize("size", [(1, 39_000), (39_000, 1), (1, 21), (300, 6_100)])
def test_extreme_aspect_ratio_is_refused_from_the_header(size: tuple[int, int]):
    data = encode(Image.new("L", size), "PNG")  # a few hundred bytes
    with pytest.raises(ImageError, match=f"beyond the {MAX_ASPECT_RATIO}:1 limit") as caught:
        load_image(data)
    assert f"{size[0]}x{size[1]}" in str(caught.value)


@pytest.mark.parametrize(("size", "shown"), [((300, 6_001), "20.003:1"),
                                             ((2_001, 100), "20.01:1"),
                                             ((1, 21), "21:1")])
def test_aspect_ratio_just_over_the_limit_is_shown_beyond_it(size, shown):
    """300x6001 read 'an aspect ratio of 20:1, beyond the 20:1 limit'."""
    with pytest.raises(ImageError) as caught:
        load_image(encode(Image.new("L", size), "PNG"))
    assert f"an aspect ratio of {shown}, beyond the {MAX_ASPECT_RATIO}:1 limit" in str(
        caught.value)


@pytest.mark.parametrize("size", [(1, 20), (20, 1), (300, 6_000), (1, 1)])
def test_aspect_ratio_up_to_the_limit_is_read(size: tuple[int, int]):
    assert load_image(encode(Image.new("L", size), "PNG")).shape == (size[1], size[0], 3)


def peak_traced_bytes(data: bytes) -> tuple[np.ndarray, int]:
    tracemalloc.start()
    try:
        arr = load_image(data)
        return arr, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sixteen_bit_near_the_pixel_limit_stays_within_a_memory_budget():
    side = 6300  # the 40-megapixel 16-bit grey PNG (once 1.1 GB of float64 copies)
    values = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16)
    data = encode(Image.fromarray(values.reshape(side, side)))
    del values
    arr, peak = peak_traced_bytes(data)
    assert arr.shape == (side, side, 3) and arr.dtype == np.uint8
    flat = arr.reshape(-1, 3)
    assert flat[:2, 0].tolist() == [0, 0] and flat[257 * 200, 0] == 200 and flat[65535, 0] == 255
    # The RGB result (3 bytes a pixel) plus the decoded 16-bit pixels, plus small slices.
    budget = side * side * (3 + 2) + 32_000_000
    assert peak < budget, f"{peak / 1e6:.0f} MB traced, budget {budget / 1e6:.0f} MB"


def test_float_grey_is_converted_in_slices():
    side = 2000
    values = np.linspace(0.0, 1.0, side * side, dtype=np.float32).reshape(side, side)
    values[0, :4] = [np.nan, np.inf, -np.inf, 0.5]
    arr, peak = peak_traced_bytes(encode(Image.fromarray(values), "TIFF"))
    assert arr[0, :4, 0].tolist() == [0, 255, 0, 128] and arr[-1, -1, 0] == 255
    assert peak < side * side * (3 + 4) + 32_000_000, f"{peak / 1e6:.0f} MB traced"


# --- colour modes --------------------------------------------------------------------------


def test_rgb_file_and_bytes_agree(tmp_path: Path):
    data = encode(Image.new("RGB", (8, 6), RED), "PNG")
    path = tmp_path / "red.png"
    path.write_bytes(data)
    from_file, from_bytes = load_image(path), load_image(data)
    assert from_file.shape == (6, 8, 3)
    assert np.array_equal(from_file, from_bytes)
    assert_pure_red(from_file)
    from_file[0, 0] = 0  # a fresh array the caller may change


def test_palette_and_palette_with_transparency():
    img = Image.new("RGB", (10, 10), RED).quantize(4)
    assert img.mode == "P"
    assert_pure_red(load_image(encode(img)))
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    arr = load_image(encode(img, "PNG", transparency=1))
    assert tuple(arr[0, 0]) == RED
    assert tuple(arr[0, 1]) == (255, 255, 255)  # the transparent entry lands on white


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_grey(fmt: str):
    arr = load_image(encode(Image.new("L", (5, 4), 77), fmt))
    assert arr.shape == (4, 5, 3) and (arr == 77).all()


def test_grey_with_alpha_on_white():
    img = Image.new("LA", (2, 1), (0, 255))
    img.putpixel((1, 0), (0, 0))
    arr = load_image(encode(img))
    assert tuple(arr[0, 0]) == (0, 0, 0) and tuple(arr[0, 1]) == (255, 255, 255)


def test_one_bit():
    arr = load_image(encode(Image.new("1", (3, 3), 1)))
    assert (arr == 255).all()


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    arr = load_image(encode(img))
    assert arr[0, :, 0].tolist() == [0, 100, 255]


def test_thirty_two_bit_grey():
    img = Image.fromarray(np.array([[0, 128 * 257, 65535]], dtype=np.int32))
    assert img.mode == "I"
    arr = load_image(encode(img, "TIFF"))
    assert arr[0, :, 0].tolist() == [0, 128, 255]
    small = Image.fromarray(np.array([[0, 100, 200]], dtype=np.int32))  # already 0..255
    assert load_image(encode(small, "TIFF"))[0, :, 0].tolist() == [0, 100, 200]


def test_sixteen_bit_rgb():
    arr = load_image(png_rgb16(4, 3, (65535, 0, 0)))
    assert arr.shape == (3, 4, 3)
    assert_pure_red(arr)


def test_cmyk():
    arr = load_image(encode(Image.new("CMYK", (6, 6), (0, 255, 255, 0)), "JPEG", quality=95))
    assert_pure_red(arr)


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (3, 1), (255, 0, 0, 255))
    img.putpixel((1, 0), (255, 0, 0, 0))
    img.putpixel((2, 0), (0, 0, 0, 128))
    arr = load_image(encode(img))
    assert tuple(arr[0, 0]) == RED
    assert tuple(arr[0, 1]) == (255, 255, 255)  # fully transparent: white, not red or black
    assert all(abs(int(v) - 127) <= 1 for v in arr[0, 2])  # half-transparent black: mid grey


def test_webp_with_alpha():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    arr = load_image(encode(img, "WEBP", lossless=True))
    assert (arr == 255).all()


# --- EXIF orientation ----------------------------------------------------------------------


def test_exif_orientation_6_is_applied():
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high
    stored[:, :20] = RED  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    arr = load_image(data)
    assert arr.shape == (40, 20, 3)  # now portrait
    top, bottom = arr[:15].reshape(-1, 3).mean(0), arr[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the stored left side is now on top
    assert bottom[2] > 200 and bottom[0] < 60


# --- pure colours survive the helpers -------------------------------------------------------


def test_pure_red_through_encoders_and_resizers():
    red = np.zeros((30, 50, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert_pure_red(load_image(image_to_png_bytes(red)))
    assert np.array_equal(load_image(image_to_png_bytes(red)), red)
    assert_pure_red(load_image(image_to_jpeg_bytes(red)))
    assert_pure_red(resize_exact(red, 17))
    assert_pure_red(resize_short_side(red, 60))
    assert_pure_red(center_crop(red, 20))


def test_resize_helpers_shapes():
    img = np.zeros((30, 50, 3), dtype=np.uint8)
    assert resize_exact(img, 100).shape == (100, 100, 3)
    assert resize_short_side(img, 60).shape == (60, 100, 3)
    assert resize_short_side(img.transpose(1, 0, 2), 15).shape == (25, 15, 3)
    assert center_crop(img, 20).shape == (20, 20, 3)
    assert center_crop(img, 40).shape == (30, 40, 3)  # the shorter side stays whole


def test_resize_then_crop_keeps_the_centre():
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, 140:160] = (0, 255, 0)  # a green stripe in the middle
    out = center_crop(resize_short_side(img, 50), 50)
    assert out.shape == (50, 50, 3)
    assert out[:, 25, 1].min() > 200 and out[:, 0, 1].max() == 0


def test_encoders_reject_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB uint8"):
        image_to_png_bytes(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        image_to_jpeg_bytes(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="quality"):
        image_to_jpeg_bytes(np.zeros((4, 4, 3), dtype=np.uint8), quality=0)


def test_jpeg_bytes_are_a_jpeg():
    data = image_to_jpeg_bytes(np.zeros((4, 4, 3), dtype=np.uint8), quality=80)
    assert sniff_image_type(data) == "jpeg"


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
     ("TIFF", "tiff")],
)
def test_sniff_image_type(fmt: str, kind: str):
    data = encode(Image.new("RGB", (4, 4), RED), fmt)
    assert sniff_image_type(data) == kind
    assert load_image(data).shape == (4, 4, 3)


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7", b"<html>", b"RIFF\x00\x00\x00\x00WAVE", b"B"])
def test_sniff_rejects_non_images(data: bytes):
    assert sniff_image_type(data) is None


def test_formats_beyond_photos_are_refused():
    data = encode(Image.new("RGB", (4, 4), RED), "PPM")  # PIL reads it, we do not
    with pytest.raises(ImageError, match="not an image we can read"):
        load_image(data)


def test_multi_picture_jpeg_from_a_phone():
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    assert sniff_image_type(data) == "jpeg"
    assert_pure_red(load_image(data))  # the first picture


def _noisy_jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image_to_jpeg_bytes(pixels)


def test_reduced_jpeg_decoding_keeps_the_short_side_at_least_the_asked_size():
    data = _noisy_jpeg(2400, 1800)
    full = load_image(data)
    reduced = load_image(data, reduce_to=400)
    assert full.shape == (1800, 2400, 3)
    assert reduced.shape == (450, 600, 3)  # 1/4 scale: 1/8 would give a 225-pixel short side
    assert reduced.dtype == np.uint8


def test_reduced_decoding_leaves_small_jpegs_and_other_formats_alone():
    small = _noisy_jpeg(500, 400)
    assert load_image(small, reduce_to=400).shape == (400, 500, 3)
    png = image_to_png_bytes(np.zeros((1800, 2400, 3), np.uint8))
    assert load_image(png, reduce_to=400).shape == (1800, 2400, 3)
