"""Find the piece of jewelry in a photo: a foreground mask, object boxes, crops, earring pairs.

The prototype thresholded grey levels with Otsu (inverted, so it only worked on light
backgrounds), took contours, and padded boxes only to the right and bottom. Here the background
is whatever the photo's border shows (white, black, a coloured card or a gradient): a smooth
colour surface is fitted to the border, each pixel's colour distance from it is thresholded
with Otsu (with hysteresis, so a faint silver band touching a bright stone still counts), and
a photo whose border is not a clean background (a lifestyle photo, noise) yields no mask
rather than a wrong one. Work happens on a small copy of the photo, so a
call costs a few milliseconds; boxes are mapped back to the photo's own pixels.

numpy and PIL only (components.py labels and closes masks): no OpenCV, no scipy, no
scikit-image at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from PIL import Image

from jewelrec.imaging import components

WORK_SIDE = 192  # longest side of the copy the mask is computed on
BORDER_FRACTION = 0.04  # width of the border strip that shows the background
BORDER_SEGMENTS = 8  # background samples (median colours) per side
MIN_CONTRAST = 24.0  # foreground must differ from the background by this much (RGB distance)
MAX_BORDER_FOREGROUND = 0.2  # more of the border than this in the foreground: no clean background
MAX_BORDER_NOISE = 0.2  # border's median distance from the fitted background, over the threshold
WEAK_FRACTION = 0.5  # fainter pixels above this fraction of the threshold join touching objects
MAX_FOREGROUND = 0.85  # "foreground" covering more of the photo than this is no object
PAIR_MIN_SIZE_RATIO = 0.4  # the smaller earring has at least this fraction of the larger's area
PAIR_SAME_LENGTH = 0.8  # ...or of a narrower box, at least this fraction of the longer's height
DEFAULT_MARGIN = 0.08  # crops keep this fraction of the object's longer side on every side
DEFAULT_MIN_AREA_FRACTION = 0.002  # objects smaller than this fraction of the photo are dust
MIN_CROP_SIDE = 2  # a caller's crop keeps at least this many pixels a side inside the photo


@dataclass(frozen=True)
class Box:
    """A pixel rectangle, half-open: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"box {field.name} must be a whole number, got {value!r}")
            object.__setattr__(self, field.name, int(value))
        if not 0 <= self.x0 <= self.x1 or not 0 <= self.y0 <= self.y1:
            raise ValueError(
                f"box {self.as_tuple()} needs 0 <= x0 <= x1 and 0 <= y0 <= y1 "
                "(corners as x0,y0,x1,y1 in pixels)"
            )

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def clip(self, w: int, h: int) -> Box:
        """The part of the box inside a w x h image (possibly empty)."""
        x0, x1 = min(self.x0, w), min(self.x1, w)
        y0, y1 = min(self.y0, h), min(self.y1, h)
        return Box(x0, y0, x1, y1)

    def crop_in(self, w: int, h: int) -> Box:
        """The box clipped to a w x h photo as a caller's crop must be: at least
        MIN_CROP_SIDE pixels a side inside it (ValueError, in words, otherwise)."""
        inside = self.clip(w, h)
        if inside.width >= MIN_CROP_SIDE and inside.height >= MIN_CROP_SIDE:
            return inside
        if inside.area == 0:
            raise ValueError(f"the box {self.as_tuple()} lies outside the {w}x{h} photo")
        raise ValueError(
            f"the box {self.as_tuple()} keeps only {inside.width}x{inside.height} pixels of the "
            f"{w}x{h} photo: a crop needs at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE}"
        )

    def expand(self, margin_fraction: float, w: int, h: int) -> Box:
        """Grow by `margin_fraction` of the longer side on every side, then clip to w x h."""
        pad = round(margin_fraction * max(self.width, self.height))
        return Box(
            max(0, self.x0 - pad),
            max(0, self.y0 - pad),
            min(w, self.x1 + pad),
            min(h, self.y1 + pad),
        )

    @classmethod
    def parse(cls, text: str) -> Box:
        """'x0,y0,x1,y1' in whole pixels, far corner second -> Box (ValueError if malformed)."""
        parts = [p.strip() for p in str(text).split(",")]
        # decimal digits only ("²" is a digit int() refuses), and no more than a photo could use
        if len(parts) != 4 or not all(p.isdecimal() and len(p) <= 12 for p in parts):
            raise ValueError(
                f"a box is four whole non-negative numbers x0,y0,x1,y1, got {str(text)[:60]!r}"
            )
        x0, y0, x1, y1 = (int(p) for p in parts)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"box {text!r} is empty: it needs x1 > x0 and y1 > y0 (far corner second)"
            )
        return cls(x0, y0, x1, y1)


def foreground_mask(img: np.ndarray) -> np.ndarray:
    """True where the photo shows something other than its background, shape (H, W).

    All False when nothing clearly stands out: a weak contrast, a border that is not a clean
    background, or a "foreground" covering nearly the whole photo (a worn or staged photo).
    """
    small, factor = _small_mask(img)
    h, w = img.shape[:2]
    return small[(np.arange(h) // factor)[:, None], (np.arange(w) // factor)[None, :]]


def object_boxes(
    img: np.ndarray, *, min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION
) -> list[Box]:
    """Boxes of the separate objects in a photo, largest first (empty when none stands out).

    Objects smaller than `min_area_fraction` of the photo (in foreground pixels) are dust.
    """
    return [box for box, _ in objects(img, min_area_fraction)]


def largest_object_box(img: np.ndarray, margin: float = DEFAULT_MARGIN) -> Box | None:
    """The largest object's box grown by `margin` on every side, or None when none stands out."""
    return _largest(objects(img), img, margin)


def crop(img: np.ndarray, box: Box) -> np.ndarray:
    """The pixels inside `box` (clipped to the image) as a new contiguous array."""
    h, w = img.shape[:2]
    inside = box.clip(w, h)
    if inside.width == 0 or inside.height == 0:
        raise ValueError(f"box {box.as_tuple()} lies outside the {w}x{h} image")
    return np.ascontiguousarray(img[inside.y0 : inside.y1, inside.x0 : inside.x1])


def largest_object_crop(img: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The largest object with a margin, or the whole photo when no object clearly stands out."""
    return _crop_or_whole(img, largest_object_box(img, margin))


def earring_pair_boxes(img: np.ndarray, margin: float = DEFAULT_MARGIN) -> list[Box]:
    """[left, right] boxes when the photo shows two similar objects side by side, else []."""
    return _pair_boxes(objects(img), img, margin)


def split_earring_pair(img: np.ndarray, margin: float = DEFAULT_MARGIN) -> list[np.ndarray]:
    """Two crops (left, right) when the photo shows an earring pair side by side, else one crop
    of the largest object (the whole photo when nothing stands out).

    The prototype's way to turn each pair photo into two single-earring training samples.
    """
    found = objects(img)
    pair = _pair_boxes(found, img, margin)
    if pair:
        return [crop(img, box) for box in pair]
    return [_crop_or_whole(img, _largest(found, img, margin))]


def _largest(found: list[tuple[Box, int]], img: np.ndarray, margin: float) -> Box | None:
    if not found:
        return None
    h, w = img.shape[:2]
    return found[0][0].expand(margin, w, h)


def _crop_or_whole(img: np.ndarray, box: Box | None) -> np.ndarray:
    return img if box is None else crop(img, box)


def _pair_boxes(found: list[tuple[Box, int]], img: np.ndarray, margin: float) -> list[Box]:
    if len(found) < 2 or not alike_side_by_side(found[0], found[1]):
        return []
    left, right = sorted((found[0][0], found[1][0]), key=lambda b: b.x0)
    for other in found[2:]:
        part = other[0]
        centre = (part.x0 + part.x1) / 2
        if left.x0 <= centre < left.x1 and part.x1 <= right.x0:
            left = union(left, part)  # a detached stud above its drop, say
        elif right.x0 <= centre < right.x1 and part.x0 >= left.x1:
            right = union(right, part)
        elif _alike(found[1], other) and _rows_overlap(part, found[1][0]):
            return []  # a third piece in the same row: a set or a collection, not a pair
    h, w = img.shape[:2]
    gap_middle = (left.x1 + right.x0) // 2
    left, right = left.expand(margin, w, h), right.expand(margin, w, h)
    # Margins stop halfway between the two, so neither crop shows a slice of the other earring.
    left = Box(left.x0, left.y0, max(min(left.x1, gap_middle), left.x0 + 1), left.y1)
    right = Box(min(max(right.x0, gap_middle), right.x1 - 1), right.y0, right.x1, right.y1)
    return [left, right]


def alike_side_by_side(first: tuple[Box, int], second: tuple[Box, int]) -> bool:
    """Whether two objects (box, pixels) may be an earring pair: alike in size, little
    horizontal overlap, some vertical overlap (models/piece_candidates.py asks it of every two
    pieces)."""
    a, b = first[0], second[0]
    x_overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    return (
        _alike(first, second) and x_overlap <= 0.2 * min(a.width, b.width) and _rows_overlap(a, b)
    )


def _alike(first: tuple[Box, int], second: tuple[Box, int]) -> bool:
    """Similar foreground pixels, and similar boxes or lengths (a hoop seen edge-on is narrow,
    yet as long as its twin)."""
    (a, a_pixels), (b, b_pixels) = first, second
    if min(a_pixels, b_pixels) < PAIR_MIN_SIZE_RATIO * max(a_pixels, b_pixels):
        return False
    return (
        min(a.area, b.area) >= PAIR_MIN_SIZE_RATIO * max(a.area, b.area)
        or min(a.height, b.height) >= PAIR_SAME_LENGTH * max(a.height, b.height)
    )


def _rows_overlap(a: Box, b: Box) -> bool:
    return min(a.y1, b.y1) - max(a.y0, b.y0) >= 0.3 * min(a.height, b.height)


def union(a: Box, b: Box) -> Box:
    """The smallest box holding both (a piece and its fragment, the two of a pair)."""
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


def objects(
    img: np.ndarray, min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION
) -> list[tuple[Box, int]]:
    """The separate objects: (box in the photo's pixels, foreground pixels on the small copy),
    largest box first; empty when no clean backdrop stands out. The pixel counts let callers
    tell a piece from its fragment (models/piece_candidates.py), which boxes alone cannot."""
    return objects_and_mask(img, min_area_fraction)[0]


# `objects_and_mask`'s answer: the objects, the mask on the small copy, its shrink factor
Segmentation = tuple[list[tuple[Box, int]], np.ndarray, int]


def objects_and_mask(
    img: np.ndarray, min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION
) -> Segmentation:
    """(`objects`, the foreground mask on the small copy they were found on, its shrink factor):
    one segmentation for a caller that wants the boxes and the mask (imaging/focus.py frames the
    piece and hands its mask on to the colour signature)."""
    mask, factor = _small_mask(img)
    if not mask.any():
        return [], mask, factor
    # Join pieces a pixel or two apart (chain links, a stud and its drop) into one object,
    # but measure each object on the undilated mask so boxes stay tight.
    labels, count = components.label(components.dilate(mask, iterations=2))
    labels[~mask] = 0
    h, w = img.shape[:2]
    found = []
    for (rows, cols), pixels in components.sized_boxes(labels, count, min_area_fraction):
        box = Box(
            cols.start * factor,
            rows.start * factor,
            min(w, cols.stop * factor),
            min(h, rows.stop * factor),
        )
        found.append((box, pixels))
    found.sort(key=lambda item: (item[0].area, item[1]), reverse=True)
    return found, mask, factor


def _small_mask(img: np.ndarray) -> tuple[np.ndarray, int]:
    """The foreground mask on a copy shrunk by a whole factor to at most WORK_SIDE, and the
    factor (mask pixel (r, c) covers photo rows r*factor..(r+1)*factor-1, same for columns)."""
    factor = shrink_factor(img)
    small = shrink(img, factor).astype(np.float32)
    h, w = small.shape[:2]
    distance = _background_distance(small)
    threshold = otsu(distance)
    strong = distance > threshold
    if not _stands_out(distance, strong, _border(h, w), threshold):
        return np.zeros((h, w), dtype=bool), factor
    # Hysteresis: fainter parts (a silver band, a thin chain) count where they touch a clear part.
    labels, count = components.label(distance > WEAK_FRACTION * threshold)
    touches_strong = np.zeros(count + 1, dtype=bool)
    touches_strong[labels[strong]] = True
    touches_strong[0] = False
    mask = touches_strong[labels]
    return mask | components.close_square(mask), factor


def _stands_out(
    distance: np.ndarray, strong: np.ndarray, border: np.ndarray, threshold: float
) -> bool:
    """Whether the thresholded foreground is a clear object on a clean background."""
    covered = strong.mean()
    if not 0 < covered <= MAX_FOREGROUND:
        return False
    if strong[border].mean() > MAX_BORDER_FOREGROUND:
        return False  # the border is not a background: a worn or staged photo
    if np.median(distance[border]) > MAX_BORDER_NOISE * threshold:
        return False  # the border varies nearly as much as the object differs: no clean backdrop
    return distance[strong].mean() - distance[~strong].mean() >= MIN_CONTRAST


def shrink_factor(img: np.ndarray) -> int:
    """The whole factor that brings the photo's longer side to at most WORK_SIDE: the small
    copy masks (and models/piece_candidates.py's edge maps) are computed on (ValueError if not
    RGB)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    return max(1, -(-max(img.shape[:2]) // WORK_SIDE))


def shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """The photo box-averaged down by a whole `factor` (see `shrink_factor`)."""
    if factor == 1:
        return img
    # Box averaging by a whole factor: fast, and thin chains fade rather than vanish.
    return np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).reduce(factor))


def _strip_width(h: int, w: int) -> int:
    return max(1, round(BORDER_FRACTION * min(h, w)))


def _border(h: int, w: int) -> np.ndarray:
    strip = _strip_width(h, w)
    border = np.zeros((h, w), dtype=bool)
    border[:strip], border[-strip:], border[:, :strip], border[:, -strip:] = True, True, True, True
    return border


def _background_distance(img: np.ndarray) -> np.ndarray:
    """Each pixel's colour distance (h, w) from the background: a smooth (quadratic) colour
    surface fitted to median colours along the border, refitted without the worst-fitting
    samples (an object touching the edge), so gradients and vignettes count as background too.

    The surface is built one colour plane at a time: numpy's loops over a last axis of 3 cost
    far more than over whole rows (distance from the background 1.0 -> 0.5 ms on a 128-px
    copy, the same masks)."""
    h, w = img.shape[:2]
    xs, ys, colours = _border_samples(img)
    x, y = xs / w - 0.5, ys / h - 0.5
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    keep = np.ones(len(xs), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], colours[keep], rcond=None)
        residual = ((design @ coef - colours) ** 2).sum(axis=1)
        keep = residual <= upper_quartile(residual)
    c = coef.astype(np.float32)
    x = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    y = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    squared = np.zeros((h, w), np.float32)
    for channel in range(3):
        by_row = c[0, channel] + c[2, channel] * y + c[4, channel] * y * y  # (h, 1)
        by_column = c[1, channel] * x + c[3, channel] * x * x  # (1, w)
        difference = img[:, :, channel] - (by_row + by_column + y * (c[5, channel] * x))
        squared += difference * difference
    return np.sqrt(squared)


def upper_quartile(values: np.ndarray) -> float:
    """np.quantile(values, 0.75) of a 1-d float64 array, bit for bit (linear interpolation, as
    numpy blends), without its generic machinery: ten times faster on the few dozen border
    samples it sees here."""
    ordered = np.sort(values)
    position = 0.75 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    low, high, t = float(ordered[below]), float(ordered[above]), position - below
    step = high - low
    return high - step * (1 - t) if t >= 0.5 else low + step * t


def _border_samples(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y and median colour of BORDER_SEGMENTS stretches of the border strip on each side:
    a few dozen robust samples of the background instead of thousands of pixels."""
    h, w = img.shape[:2]
    strip = _strip_width(h, w)
    xs, ys, colours = [], [], []
    for pixels, fixed, horizontal in (
        (img[:strip], strip / 2, True),
        (img[h - strip :], h - strip / 2, True),
        (img[:, :strip].transpose(1, 0, 2), strip / 2, False),
        (img[:, w - strip :].transpose(1, 0, 2), w - strip / 2, False),
    ):
        n = min(BORDER_SEGMENTS, pixels.shape[1])
        length = pixels.shape[1] // n
        stretches = pixels[:, : n * length].reshape(strip, n, length, 3).transpose(1, 0, 2, 3)
        colours.append(np.median(stretches.reshape(n, strip * length, 3), axis=1))
        centres = (np.arange(n) + 0.5) * length
        xs.append(centres if horizontal else np.full(n, fixed))
        ys.append(np.full(n, fixed) if horizontal else centres)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(colours).astype(np.float64)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best separates `values` into two classes (Otsu, 1979): used on
    colour distances here and on edge energy in models/piece_candidates.py."""
    top = float(values.max())
    if top <= 0:
        return 0.0
    counts, edges = np.histogram(values, bins=bins, range=(0.0, top))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    upper = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * upper)
    between[~np.isfinite(between)] = 0.0
    return float(edges[int(np.argmax(between)) + 1])
