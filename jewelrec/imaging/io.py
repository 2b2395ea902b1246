"""Safe image loading: every stage gets the same RGB uint8 array, or one clear `ImageError`.

Photos come from shoppers and from catalogs we do not control, so a file may be empty, cut short,
not an image at all, or a "decompression bomb" (a small file that decodes to billions of pixels).
The size is checked from the header before any pixel is decoded, and the whole image is decoded
inside the `try`, so a truncated file fails here with a readable message instead of a traceback
later. Odd colour modes (palette, grey, 16-bit, CMYK, alpha) all come out as plain RGB; alpha is
composited on white because catalog cut-outs are meant to be seen on a white page.

The limits live here, once, so ingest, index and every query get the same ones:
- at most `max_pixels` pixels (40 megapixels by default);
- an aspect ratio of at most 20:1 (`MAX_ASPECT_RATIO`). No jewelry photo is that thin (a
  necklace laid out straight on a banner is about 6:1), and later stages scale the SHORT side
  to the model's input: a 1x39000 strip would become 256 x 9,984,000 pixels (gigabytes).
High-bit-depth grey (16-bit, 32-bit, float) is scaled to 8 bits in slices of rows, so a 40
megapixel 16-bit image costs about its 8-bit RGB result plus its own 16-bit pixels, not
float64 copies of the whole image.

A query needs far fewer pixels than a phone camera takes (the models look at 320 pixels at
most), so `load_image(..., reduce_to=n)` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while
it decodes (Pillow's draft mode), keeping the short side at least `n`: a 12-megapixel photo
decodes several times faster and in a fraction of the memory, with the same framing.
`decode_photo` says the photo's own size too, because callers speak in the photo's pixels (a
crop they ask for, the boxes they are answered with): `map_box` carries a box between the two.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from jewelrec.errors import ImageError

DEFAULT_MAX_PIXELS = 40_000_000
# A query photo's short side is decoded to at least this many pixels (`decode_photo`). The
# models look at 320 pixels at most and the pieces are found on copies of 192-320 pixels, so a
# piece a third of the short side still gets about a full model input; 720 rather than 768 so a
# 12-megapixel phone photo (4032x3024) decodes at 1/4 (1008x756), not only at 1/2.
QUERY_SHORT_SIDE = 720
MAX_ASPECT_RATIO = 20  # long side / short side; see the module docstring
_SLICE_PIXELS = 1 << 20  # grey-level conversion works on about a million pixels at a time
# Photo formats only: PIL's other plugins (EPS runs Ghostscript, for one) are no business of an
# upload form. "JPEG" also opens phone cameras' multi-picture (MPO) JPEGs.
READABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image format named by the first bytes (jpeg/png/webp/gif/bmp/tiff), else None.

    Cheap enough to run on every upload before decoding, so a PDF or a text file is turned
    away with "not a photo" rather than a decoder error.
    """
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


Size = tuple[int, int]  # (width, height)
BoxTuple = tuple[int, int, int, int]  # x0, y0, x1, y1, half-open


@dataclass(frozen=True)
class DecodedPhoto:
    """A photo as decoded (`image`, maybe reduced) and the photo's own upright size: what a
    caller asks and is answered is in the photo's pixels, the models work on `image`'s."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    size: Size  # the photo's own (width, height), upright

    @classmethod
    def of(cls, image: np.ndarray) -> DecodedPhoto:
        """An array that is the photo itself (nothing reduced)."""
        return cls(image, (int(image.shape[1]), int(image.shape[0])))

    @property
    def image_size(self) -> Size:
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def reduced(self) -> bool:
        return self.image_size != self.size

    def to_image(self, box: BoxTuple) -> BoxTuple:
        """A box in the photo's pixels -> `image`'s (rounded outward, clipped)."""
        return map_box(box, self.size, self.image_size)

    def to_photo(self, box: BoxTuple) -> BoxTuple:
        """A box in `image`'s pixels -> the photo's (rounded outward, clipped)."""
        return map_box(box, self.image_size, self.size)


def map_box(box: BoxTuple, from_size: Size, to_size: Size) -> BoxTuple:
    """A box in an image of `from_size` -> the same region in the image scaled to `to_size`,
    rounded outward (the region stays whole) and clipped to it. Integer arithmetic: a box maps
    back onto itself exactly whenever the scale allows it."""
    (fw, fh), (tw, th) = from_size, to_size
    x0, y0, x1, y1 = (int(v) for v in box)
    return (min(tw, max(0, x0 * tw // fw)), min(th, max(0, y0 * th // fh)),
            min(tw, max(0, -(-x1 * tw // fw))), min(th, max(0, -(-y1 * th // fh))))


def load_image(
    source: str | Path | bytes | BinaryIO | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS,
    reduce_to: int | None = None,
) -> np.ndarray:
    """Read a photo (a file path, encoded bytes, an open binary file or a PIL image) as RGB
    uint8 (H, W, 3), upright per its EXIF.

    `reduce_to`: a JPEG much larger than needed is decoded at a reduced scale whose short side
    is still at least this many pixels (other formats and smaller JPEGs are read as they are);
    `decode_photo` says the size it had.

    Raises ImageError for a missing, empty, truncated, corrupt or oversized file, or one that
    is not an image.
    """
    return decode_photo(source, max_pixels=max_pixels, reduce_to=reduce_to).image


def decode_photo(
    source: str | Path | bytes | BinaryIO | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS,
    reduce_to: int | None = None, keep: BoxTuple | None = None,
) -> DecodedPhoto:
    """`load_image`, with the photo's own upright size (a reduced JPEG's image is smaller).

    `keep`: a box in the photo's pixels (a caller's crop) whose short side must keep
    `reduce_to` pixels too (or all it has): a small crop of a large photo is searched in its
    own detail, not in a few pixels scaled up."""
    name = _describe(source)
    if isinstance(source, Image.Image):  # a Python caller's own decoded picture
        _check_size(source.size, max_pixels, name)
        try:  # a lazily opened file is read here: cut short, or closed already
            return DecodedPhoto.of(_to_rgb(_upright(source), name))
        except (OSError, ValueError) as exc:
            raise ImageError(f"{name} cannot be read: {_reason(exc)}") from exc
    if hasattr(source, "read"):  # an open file or a BytesIO
        source = source.read()
        if not isinstance(source, bytes):
            raise ImageError(f"{name} gives text: open the photo in binary mode ('rb')")
    if not isinstance(source, bytes | bytearray | memoryview | str | os.PathLike):
        raise TypeError("a photo is a path, bytes, an open binary file, a PIL image or an RGB "
                        f"array, not {type(source).__name__}")
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageError(f"{name} is empty (0 bytes)")
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
    else:
        stream = _existing_file(Path(source), name)
    try:
        with warnings.catch_warnings():
            # We apply our own (usually stricter) limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream, formats=READABLE_FORMATS) as img:
                full = img.size
                _check_size(full, max_pixels, name)
                if reduce_to is not None and img.format == "JPEG":
                    side = _kept_side(reduce_to, img, keep)
                    img.draft("RGB", (side, side))  # never below `side` on either side
                img.load()
                stored = img.size
                image = _to_rgb(_upright(img), name)
                turned = image.shape[1] != stored[0] or image.shape[0] != stored[1]
                return DecodedPhoto(image, (full[1], full[0]) if turned else full)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # PIL refuses before we can read the size; quote our limit, not PIL's.
        raise ImageError(
            f"{name} is too large: more than the {max_pixels / 1e6:.1f} megapixel limit; "
            "resize it and try again"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(
            f"{name} is not an image we can read (expected JPEG, PNG, WebP, GIF, BMP or TIFF)"
        ) from exc
    except PermissionError as exc:
        raise ImageError(f"{name} cannot be opened: permission denied") from exc
    except OSError as exc:
        raise ImageError(f"{name} is damaged or cut short: {_reason(exc)}") from exc
    except Exception as exc:  # decoders raise many types on hostile input; all mean "corrupt"
        raise ImageError(f"{name} is corrupt or damaged: {_reason(exc)}") from exc


def image_to_png_bytes(arr: np.ndarray) -> bytes:
    """Encode an RGB uint8 array as PNG (lossless: for stored crops and thumbnails we re-read)."""
    return _encode(arr, "PNG")


def image_to_jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 array as JPEG (small: for pages and previews)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    return _encode(arr, "JPEG", quality=quality)


def resize_exact(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size, ignoring the aspect ratio (what fixed-input models expect)."""
    return _resize(arr, size, size)


def resize_short_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the shorter side becomes `size` pixels."""
    h, w = _rgb(arr).shape[:2]
    scale = size / min(h, w)
    return _resize(arr, max(1, round(w * scale)), max(1, round(h * scale)))


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The central size x size square (the whole side where the image is smaller)."""
    h, w = _rgb(arr).shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(arr[top : top + size, left : left + size])


def _kept_side(reduce_to: int, img: Image.Image, keep: BoxTuple | None) -> int:
    """The short side to decode to so that `keep` (clipped to the photo as it will be shown)
    also keeps `reduce_to` pixels on its short side."""
    if keep is None:
        return reduce_to
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap the sides
    except Exception:  # a broken EXIF block: `_upright` leaves the photo as stored
        turned = False
    w, h = img.size[::-1] if turned else img.size
    x0, y0, x1, y1 = keep
    region = max(1, min(min(x1, w) - x0, min(y1, h) - y0))
    return max(reduce_to, -(-reduce_to * min(w, h) // min(region, w, h)))


def _describe(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return f"image file {str(source)!r}"
    return "the photo"


def _existing_file(path: Path, name: str) -> Path:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise ImageError(f"{name} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name} cannot be opened: {_reason(exc)}") from exc
    if path.is_dir():
        raise ImageError(f"{name} is a folder, not an image")
    if not path.is_file():  # reading a pipe could wait forever, a device never end
        raise ImageError(f"{name} is not a regular file (a device or a pipe), not an image")
    if size == 0:
        raise ImageError(f"{name} is empty (0 bytes)")
    return path


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name} has no pixels ({w}x{h})")
    if w * h > max_pixels:  # whole pixel counts: megapixels rounded read "40.0, more than 40.0"
        raise ImageError(
            f"{name} is {w}x{h} = {w * h:,} pixels, more than the {max_pixels:,}-pixel "
            f"({max_pixels / 1e6:.1f} megapixel) limit; resize it and try again"
        )
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ImageError(
            f"{name} is {w}x{h} pixels, an aspect ratio of "
            f"{_above(max(w, h) / min(w, h), MAX_ASPECT_RATIO)}:1, "
            f"beyond the {MAX_ASPECT_RATIO}:1 limit (no jewelry photo is that thin); "
            "crop it to the piece and try again"
        )


def _above(value: float, limit: float) -> str:
    """`value` (> limit) with the fewest decimals that still show it above the limit: 6001/300
    is '20.003', not '20' beside a limit of 20."""
    for digits in range(7):
        text = f"{value:.{digits}f}"
        if float(text) > limit:
            return text
    return repr(value)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken orientation tag must not cost us a readable photo
        return img


def _to_rgb(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey = _grey_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16"))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if (mode == "P" and "transparency" in img.info) or mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        return _on_white(np.asarray(img))
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError as exc:
            raise ImageError(f"{name} uses colour mode {mode}, which we cannot read") from exc
    return np.array(img, dtype=np.uint8)  # a fresh, writable copy


def _grey_to_uint8(values: np.ndarray, *, sixteen_bit: bool) -> np.ndarray:
    """16/32-bit or float grey -> 0..255. PIL's own conversion clips at 255 (a white image),
    and these modes do not say their range, so it is read from the values. Works on slices of
    rows so the temporaries stay small whatever the image size."""
    if sixteen_bit:
        scale = 255 / 65535
    else:
        top = max((_finite_max(part) for part in _row_slices(values)), default=0.0)
        if 255 < top <= 65535:
            scale = 255 / 65535
        elif top > 65535:
            scale = 255 / top
        elif values.dtype.kind == "f" and 0 < top <= 1.0:
            scale = 255.0
        else:
            scale = 1.0
    out = np.empty(values.shape, dtype=np.uint8)
    for part, target in zip(_row_slices(values), _row_slices(out), strict=True):
        scaled = part.astype(np.float32) * np.float32(scale)
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(np.rint(scaled, out=scaled), 0, 255, out=scaled)
        target[...] = scaled
    return out


def _row_slices(values: np.ndarray) -> list[np.ndarray]:
    """Views of about _SLICE_PIXELS pixels each (whole rows), in order."""
    rows = max(1, _SLICE_PIXELS // max(1, values.shape[1]))
    return [values[i : i + rows] for i in range(0, values.shape[0], rows)]


def _finite_max(values: np.ndarray) -> float:
    if values.dtype.kind != "f":
        return float(values.max(initial=0))
    finite = values[np.isfinite(values)]
    return float(finite.max(initial=0.0))


def _on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _rgb(arr: np.ndarray) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 or (
        arr.shape[2] != 3
    ):
        shape = getattr(arr, "shape", None)
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {dtype} {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image is empty: shape {arr.shape}")
    return arr


def _encode(arr: np.ndarray, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_rgb(arr))).save(buffer, fmt, **options)
    return buffer.getvalue()


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL's bilinear filter widens with the scale factor, so shrinking averages like an area
    filter instead of skipping pixels (no aliasing on fine chains)."""
    if width < 1 or height < 1:
        raise ValueError(f"target size must be at least 1x1, got {width}x{height}")
    pil = Image.fromarray(np.ascontiguousarray(_rgb(arr)))
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR)).copy()
