"""A procedural demo catalog: earrings (always pairs), necklaces, rings and bracelets.

Why: the pipeline needs a catalog whose right answers are known. Every product belongs to a
design family (products in a family share a design and differ in size, metal, stone and link
style) and is photographed several times (views differ in pose, scale, background and light),
so retrieval of held-out views, type accuracy and metal-colour precision can all be measured.

Randomness is seeded per product and per view (numpy SeedSequence from the catalog seed and the
product's index), so the catalog is byte-identical for a seed whether it is drawn in one process
or several. Low-level shading lives in `jewelrec.catalog.drawing`; this module holds the designs,
the photography (background, pose, light) and the catalog files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from jewelrec.catalog.drawing import (
    METALS,
    STONES,
    Painter,
    Pose,
    Tones,
    ellipse_points,
    heart_points,
    resample,
    teardrop_points,
)
from jewelrec.console import check_seed
from jewelrec.errors import JewelrecError
from jewelrec.home import atomic_write_bytes

CSV_COLUMNS = ["id", "title", "type", "price", "currency", "brand", "url", "image", "metal",
               "stone", "family", "tags"]
QUERY_COLUMNS = ["file", "product_id", "type", "metal"]
TYPES = ("earring", "necklace", "ring", "bracelet")
BRANDS = ("Aurelia", "Lumen & Co", "Maison Verel", "Northstone", "Petra Lane", "Solenne",
          "Kestrel Atelier", "Ivory Finch")
METAL_SHARES = {"gold": 0.38, "silver": 0.37, "rose gold": 0.25}
LINK_STYLES = ("cable", "rope", "box")
FAMILIES_PER_STYLE = 4
JPEG_QUALITY = 90
MAX_WORKERS = 8
POOL_MIN_JOBS = 48  # below this, starting worker processes costs more than it saves
GEMS = ("diamond", "ruby", "emerald", "sapphire", "amethyst")

# Which stones each style may carry (None: plain metal). Repeats weight the draw.
STYLES: dict[str, dict[str, tuple[str | None, ...]]] = {
    "earring": {
        "hoop": (None, None, None, "diamond", "ruby", "sapphire"),
        "stud": (None, *GEMS, "diamond", "pearl"),
        "drop": (None, *GEMS, "pearl"),
    },
    "necklace": {
        "chain": (None,),
        "pendant": (None, None, *GEMS, "diamond", "pearl"),
        "beaded": (None, None, "ruby", "emerald", "sapphire", "amethyst"),
        "pearl": ("pearl",),
    },
    "ring": {
        "band": (None,),
        "solitaire": (*GEMS, "diamond", "diamond", "pearl"),
        "halo": GEMS,
        "eternity": ("diamond", "diamond", "ruby", "emerald", "sapphire"),
    },
    "bracelet": {
        "chain": (None,),
        "bangle": (None, None, None, "diamond", "ruby", "emerald", "sapphire"),
        "beaded": (None, "pearl", "pearl", "amethyst", "emerald", "ruby"),
    },
}

# Price: type base x metal multiplier x size, plus the stone, times lognormal noise.
TYPE_PRICE = {"earring": 85.0, "necklace": 140.0, "ring": 160.0, "bracelet": 115.0}
METAL_PRICE = {"gold": 2.2, "rose gold": 1.7, "silver": 1.0}
STONE_PRICE = {None: 0.0, "diamond": 420.0, "ruby": 260.0, "emerald": 280.0, "sapphire": 240.0,
               "amethyst": 70.0, "pearl": 90.0}


PLURAL_STONES = {"Ruby": "Rubies", "Amethyst": "Amethysts"}


@dataclass(frozen=True)
class ProductSpec:
    """Everything about one product that does not change between its photos."""

    seed: int
    index: int
    type: str
    style: str
    family_number: int
    metal: str
    stone: str | None
    brand: str
    size: float  # 1.0 is the family's typical size
    link: str  # chain link style, where the piece has a chain

    @property
    def id(self) -> str:
        return f"P{self.index + 1:05d}"

    @property
    def family(self) -> str:
        return f"{self.style}-{self.type}-{self.family_number}"

    @property
    def title(self) -> str:
        metal = self.metal.title()
        size = "Petite " if self.size < 0.9 else "Statement " if self.size > 1.12 else ""
        style = {"chain": f"{self.link.title()} Chain", "pearl": "Pearl Strand",
                 "band": "Band", "beaded": "Beaded"}.get(self.style, self.style.title())
        noun = "Earrings" if self.type == "earring" else self.type.title()
        if self.type == "ring" and self.style == "band":
            noun = ""
        title = f"{size}{metal} {style} {noun}".replace("  ", " ").strip()
        if self.stone and self.style != "pearl":
            stone = self.stone.title()
            if self.style in ("eternity", "beaded"):
                stone = PLURAL_STONES.get(stone, stone + "s")
            title += f" with {stone}"
        return title

    @property
    def url(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")
        return f"https://shop.example.com/products/{slug}-{self.id.lower()}"

    @property
    def price(self) -> float:
        noise = _rng(self.seed, "price", self.index).lognormal(0.0, 0.22)
        raw = (TYPE_PRICE[self.type] * METAL_PRICE[self.metal] * self.size
               + STONE_PRICE[self.stone] * self.size ** 2)
        return round(raw * noise, 2)

    @property
    def tags(self) -> list[str]:
        return [t for t in (self.type, self.style, self.metal, self.stone, self.family) if t]


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, keys): order of generation never matters."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), *keys])


def product_spec(seed: int, index: int) -> ProductSpec:
    """The product at `index`: types come in shuffled blocks of four, so shares stay equal."""
    block = _rng(seed, "types", index // len(TYPES)).permutation(len(TYPES))
    kind = TYPES[int(block[index % len(TYPES)])]
    rng = _rng(seed, "product", index)
    styles = list(STYLES[kind])
    style = styles[int(rng.integers(len(styles)))]
    stones = STYLES[kind][style]
    stone = stones[int(rng.integers(len(stones)))]
    metal = str(rng.choice(list(METAL_SHARES), p=list(METAL_SHARES.values())))
    return ProductSpec(
        seed=seed, index=index, type=kind, style=style,
        family_number=int(rng.integers(1, FAMILIES_PER_STYLE + 1)), metal=metal, stone=stone,
        brand=BRANDS[int(rng.integers(len(BRANDS)))], size=float(rng.uniform(0.82, 1.2)),
        link=LINK_STYLES[int(rng.integers(len(LINK_STYLES)))],
    )


# -- designs ------------------------------------------------------------------------------------
# Each design draws one product in design units (the piece fits roughly in the unit circle,
# y down). `fam` draws are shared by the whole family, `own` draws by the product's photos,
# `view` draws change from photo to photo (3D viewing angle).


@dataclass
class Design:
    """What a design function needs: the product, its metal's tones, and three generators."""

    spec: ProductSpec
    metal: Tones
    fam: np.random.Generator
    own: np.random.Generator
    view: np.random.Generator


def _hoop_earrings(p: Painter, d: Design) -> None:
    radius = d.fam.uniform(0.2, 0.28) * d.spec.size
    tall = d.fam.choice([1.0, 1.0, 1.25])
    wire = d.fam.uniform(0.045, 0.075) * d.own.uniform(0.85, 1.15)
    twisted = d.fam.random() < 0.3
    gem = radius * d.own.uniform(0.28, 0.36)
    sep = radius + 0.13
    top = -radius * tall - (gem * 2 if d.spec.stone else 0) * 0.5
    for x in (-sep, sep):
        hoop = ellipse_points((x, top + radius * tall), radius, radius * tall, 72)
        if twisted:
            p.chain(hoop, wire * 1.3, d.metal, "rope")
        else:
            p.tube(hoop, wire, d.metal)
        p.ball((x, top), wire * 0.9, d.metal)
        if d.spec.stone:
            p.gem((x, top + 2 * radius * tall + gem * 0.9), gem, d.spec.stone)


def _stud_earrings(p: Painter, d: Design) -> None:
    r = d.fam.uniform(0.22, 0.28) * d.spec.size
    sep = r * 1.5 + 0.08
    flower = d.fam.random() < 0.5
    for x in (-sep, sep):
        if flower:
            petals = int(d.fam.integers(5, 7))
            for i in range(petals):
                a = 2 * math.pi * i / petals
                p.ball((x + r * 0.62 * math.cos(a), r * 0.62 * math.sin(a)), r * 0.48, d.metal)
        if d.spec.stone:
            inner = r * (0.55 if flower else 0.85)
            if d.spec.stone == "pearl":
                p.ball((x, 0.0), inner * 1.1, STONES["pearl"])
            else:
                p.set_stone((x, 0.0), inner, d.spec.stone, d.metal)
        else:
            p.ball((x, 0.0), r * (0.5 if flower else 0.9), d.metal)


def _drop_earrings(p: Painter, d: Design) -> None:
    r = d.fam.uniform(0.16, 0.21) * d.spec.size
    drop_len = d.fam.uniform(0.22, 0.5) * d.own.uniform(0.85, 1.15)
    shape = d.fam.choice(["tear", "round", "tear"])
    wire = 0.05
    top, sep = -0.8, 0.45
    for x in (-sep, sep):
        arc = ellipse_points((x + 0.1, top), 0.1, 0.1, 16, math.pi, 2 * math.pi)
        hook = np.concatenate([arc, [[x + 0.2, top + 0.24]]])
        p.tube(hook, wire * 0.8, d.metal)
        hang = top + drop_len
        p.tube(np.array([[x, top], [x, hang]]), wire, d.metal)
        stone = d.spec.stone
        if stone == "pearl" or (stone is None and shape == "round"):
            p.ball((x, hang + r), r, STONES["pearl"] if stone else d.metal)
        elif shape == "round":
            p.set_stone((x, hang + r * 1.15), r, stone, d.metal)
        else:
            outline = teardrop_points((x, hang + r * 2.1), r * 1.15, r * 2.3)
            p.plate(outline, d.metal)
            if stone:
                p.plate(teardrop_points((x, hang + r * 2.1), r * 0.9, r * 1.85), STONES[stone])


def _drape(d: Design) -> np.ndarray:
    """An open U (or soft V) hanging from the top corners: how a necklace lies in a photo."""
    width = d.fam.uniform(0.62, 0.74)
    depth = d.fam.uniform(1.0, 1.25)
    power = d.fam.choice([2.0, 2.0, 1.4])
    s = np.sin(np.linspace(-math.pi / 2, math.pi / 2, 90))
    y = -0.8 + depth * (1 - np.abs(s) ** power) ** 0.5
    return np.stack([width * s, y], axis=1)


def _chain_necklace(p: Painter, d: Design) -> None:
    curve = _drape(d)
    link = d.fam.uniform(0.06, 0.085) * d.own.uniform(0.85, 1.15)
    p.chain(curve, link, d.metal, d.spec.link)
    for end in (curve[0], curve[-1]):
        p.ball(tuple(end), link * 0.7, d.metal)


def _pendant_necklace(p: Painter, d: Design) -> None:
    curve = _drape(d)
    p.chain(curve, d.fam.uniform(0.045, 0.06), d.metal, d.spec.link)
    bottom = curve[len(curve) // 2]
    x, y = float(bottom[0]), float(bottom[1])
    r = d.fam.uniform(0.11, 0.15) * d.spec.size
    p.tube(ellipse_points((x, y + 0.035), 0.03, 0.035, 20), 0.02, d.metal)  # bail
    stone = d.spec.stone
    y += 0.07
    shape = d.fam.choice(["tear", "round", "heart", "bar"])
    if stone == "pearl":
        p.ball((x, y + r), r, STONES["pearl"])
    elif stone and shape in ("round", "bar"):
        p.set_stone((x, y + r * 1.15), r, stone, d.metal)
    elif stone:
        p.plate(teardrop_points((x, y + r * 2.3), r * 1.2, r * 2.5), d.metal)
        p.plate(teardrop_points((x, y + r * 2.3), r * 0.95, r * 2.05), STONES[stone])
    elif shape == "heart":
        p.plate(heart_points((x, y + r * 1.1), r * 2.4), d.metal)
    elif shape == "bar":
        p.tube(np.array([[x, y], [x, y + r * 3]]), r * 0.55, d.metal)
    else:
        p.plate(ellipse_points((x, y + r * 1.2), r * 1.2, r * 1.2, 40), d.metal)


def _bead_string(p: Painter, curve: np.ndarray, r: float, look: Callable[[int], Tones],
                 spacer: Tones | None) -> None:
    """Beads along a curve, drawn back (top of the picture) to front; optional metal spacers."""
    step = r * (2.7 if spacer else 2.05)
    at, _ = resample(curve, step)
    for i in np.argsort(at[:, 1], kind="stable"):
        p.ball(tuple(at[i]), r, look(int(i)))
        if spacer is not None and i + 1 < len(at):
            p.ball(tuple((at[i] + at[i + 1]) / 2), r * 0.32, spacer)


def _beaded_necklace(p: Painter, d: Design) -> None:
    r = d.fam.uniform(0.045, 0.06) * d.own.uniform(0.9, 1.1)
    gem = STONES[d.spec.stone] if d.spec.stone else None
    _bead_string(p, _drape(d), r, lambda i: gem if gem and i % 2 else d.metal, None)


def _pearl_necklace(p: Painter, d: Design) -> None:
    curve = _drape(d)
    r = d.fam.uniform(0.045, 0.06) * d.own.uniform(0.9, 1.1)
    _bead_string(p, curve, r, lambda i: STONES["pearl"], d.metal)
    for end in (curve[0], curve[-1]):
        p.ball(tuple(end), r * 0.8, d.metal)


def _ring_geometry(d: Design, depth_range: tuple[float, float]) -> tuple[float, float, tuple]:
    """A ring stands upright, turned and seen from a little above: a tall ellipse with depth."""
    radius = 0.46
    turn = d.view.uniform(0.25, 0.8) * d.view.choice([-1.0, 1.0])
    tilt = d.view.uniform(0.12, 0.35)
    depth = d.fam.uniform(*depth_range) * d.spec.size
    return radius * math.cos(turn), radius, (depth * math.sin(turn), -depth * math.sin(tilt))


def _band_ring(p: Painter, d: Design) -> None:
    rx, ry, depth = _ring_geometry(d, (0.16, 0.3))
    p.band((0.0, 0.0), rx, ry, depth, d.fam.uniform(0.09, 0.13), d.metal)


def _stone_ring(p: Painter, d: Design) -> None:
    """Solitaire and halo: a slim band with a set stone on top."""
    rx, ry, depth = _ring_geometry(d, (0.06, 0.1))
    cy = 0.22
    p.band((0.0, cy), rx, ry, depth, d.fam.uniform(0.055, 0.075), d.metal)
    r = d.fam.uniform(0.13, 0.17) * d.spec.size
    top = np.array([depth[0] / 2, cy - ry + depth[1] / 2])
    centre = top + [0.0, -r * 0.9]
    for dx in (-0.6, 0.6):  # prongs
        p.tube(np.array([top, centre + [dx * r, -0.2 * r]]), 0.035, d.metal)
    if d.spec.style == "halo":
        for i in range(12):
            a = 2 * math.pi * i / 12
            p.gem(tuple(centre + r * 1.25 * np.array([math.cos(a), math.sin(a)])), r * 0.28,
                  "diamond")
    p.gem(tuple(centre), r, d.spec.stone or "diamond")


def _eternity_ring(p: Painter, d: Design) -> None:
    rx, ry, depth = _ring_geometry(d, (0.1, 0.14))
    thickness = d.fam.uniform(0.09, 0.11)
    p.band((0.0, 0.0), rx, ry, depth, thickness, d.metal)
    for pt in ellipse_points((0.0, 0.0), rx, ry, int(d.fam.integers(10, 14)))[:-1]:
        p.gem(tuple(pt), thickness * 0.42, d.spec.stone or "diamond")


def _wrist(d: Design) -> tuple[float, float]:
    """A bracelet lies flat, seen from above at an angle: a wide closed ellipse."""
    rx = d.fam.uniform(0.78, 0.88)
    return rx, rx * d.view.uniform(0.42, 0.62)


def _chain_bracelet(p: Painter, d: Design) -> None:
    rx, ry = _wrist(d)
    link = d.fam.uniform(0.13, 0.17) * d.own.uniform(0.85, 1.15)
    p.chain(ellipse_points((0.0, 0.0), rx, ry, 160), link, d.metal, d.spec.link)


def _bangle_bracelet(p: Painter, d: Design) -> None:
    rx, ry = _wrist(d)
    height = d.fam.uniform(0.07, 0.16) * d.spec.size
    thickness = d.fam.uniform(0.06, 0.09)
    p.band((0.0, -height / 2), rx, ry, (0.0, height), thickness, d.metal)
    if d.spec.stone:
        count = int(d.fam.integers(3, 8))
        for pt in ellipse_points((0.0, -height / 2), rx, ry, count, 0.6, math.pi - 0.6):
            p.gem(tuple(pt), thickness * 0.6, d.spec.stone)


def _beaded_bracelet(p: Painter, d: Design) -> None:
    rx, ry = _wrist(d)
    r = d.fam.uniform(0.055, 0.075) * d.spec.size
    loop = ellipse_points((0.0, 0.0), rx, ry, 160)
    gem = STONES[d.spec.stone] if d.spec.stone else None
    spacer = d.metal if gem else None
    _bead_string(p, loop, r, lambda i: gem if gem else d.metal, spacer)


DESIGNS: dict[tuple[str, str], Callable[[Painter, Design], None]] = {
    ("earring", "hoop"): _hoop_earrings,
    ("earring", "stud"): _stud_earrings,
    ("earring", "drop"): _drop_earrings,
    ("necklace", "chain"): _chain_necklace,
    ("necklace", "pendant"): _pendant_necklace,
    ("necklace", "beaded"): _beaded_necklace,
    ("necklace", "pearl"): _pearl_necklace,
    ("ring", "band"): _band_ring,
    ("ring", "solitaire"): _stone_ring,
    ("ring", "halo"): _stone_ring,
    ("ring", "eternity"): _eternity_ring,
    ("bracelet", "chain"): _chain_bracelet,
    ("bracelet", "bangle"): _bangle_bracelet,
    ("bracelet", "beaded"): _beaded_bracelet,
}

# -- photography --------------------------------------------------------------------------------

LIGHT_BACKDROPS = [(252, 252, 252), (246, 239, 224), (228, 228, 231), (238, 234, 230)]
DARK_BACKDROPS = [(44, 44, 48), (34, 36, 40), (58, 54, 52)]
MAX_TILT = {"earring": 0.12, "necklace": 0.18, "ring": 0.35, "bracelet": 0.4}


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    """White, cream, light grey, charcoal, or a soft gradient between two near tones."""
    dark = rng.random() < 0.22
    palette = DARK_BACKDROPS if dark else LIGHT_BACKDROPS
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=float)
    base += rng.normal(0.0, 2.5)
    if rng.random() < 0.45:  # soft gradient: four corner tones stretched smoothly
        spread = 16.0 if dark else 20.0
        corners = base + rng.uniform(-spread, spread, size=(2, 2, 1))
        small = Image.fromarray(np.clip(corners, 0, 255).astype(np.uint8))
        return small.resize((side, side), Image.BILINEAR)
    return Image.new("RGB", (side, side), tuple(int(v) for v in np.clip(base, 0, 255)))


def _light(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast and a faint colour-temperature shift, as one lookup table."""
    brightness = 1 + rng.uniform(-0.1, 0.1) * strength
    contrast = 1 + rng.uniform(-0.12, 0.12) * strength
    warmth = rng.uniform(-0.025, 0.025) * strength
    v = np.arange(256) / 255.0
    lut = []
    for gain in (1 + warmth, 1.0, 1 - warmth):
        out = ((v - 0.5) * contrast + 0.5) * brightness * gain
        lut.extend(np.clip(np.round(out * 255), 0, 255).astype(int).tolist())
    return img.point(lut)


def _shadow(piece: Image.Image, base: Image.Image, offset: int, strength: float) -> Image.Image:
    """A soft contact shadow below-right of the piece (away from the upper-left light)."""
    side = piece.size[0]
    alpha = piece.getchannel("A").resize((side // 4, side // 4), Image.BOX)
    soft = alpha.filter(ImageFilter.GaussianBlur(1.0)).resize(piece.size, Image.BILINEAR)
    mask = Image.new("L", piece.size, 0)
    mask.paste(soft.point(lambda a: int(a * strength)), (offset, offset))
    return Image.composite(Image.new("RGB", piece.size, (0, 0, 0)), base, mask)


def _frame(width: int, height: int, size: int, view: np.random.Generator,
           shopper: bool) -> tuple[int, int, int, int]:
    """Where the piece goes in the photo: (x, y, w, h), longest side a share of the frame."""
    share = view.uniform(0.5, 0.88) if shopper else view.uniform(0.62, 0.84)
    scale = share * size / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    x = (size - w) / 2 * (1 + view.uniform(-0.6, 0.6))
    y = (size - h) / 2 * (1 + view.uniform(-0.6, 0.6))
    return round(x), round(y), w, h


def _draw_piece(spec: ProductSpec, view: np.random.Generator, side: int,
                tilt_factor: float) -> Image.Image:
    """The product drawn on a transparent `side` x `side` layer (2x the photo: downsampling
    with LANCZOS is the antialiasing), cropped to what was drawn."""
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    tilt = MAX_TILT[spec.type] * tilt_factor
    pose = Pose(cx=side / 2, cy=side / 2, scale=side * 0.38, angle=view.uniform(-tilt, tilt))
    design = Design(
        spec=spec, metal=METALS[spec.metal],
        fam=_rng(spec.seed, "family", TYPES.index(spec.type), spec.family_number,
                 list(STYLES[spec.type]).index(spec.style)),
        own=_rng(spec.seed, "design", spec.index), view=view,
    )
    DESIGNS[(spec.type, spec.style)](Painter(layer, pose), design)
    return layer.crop(layer.getbbox())


def render_view(spec: ProductSpec, view_key: int, size: int = 256,
                shopper: bool = False) -> np.ndarray:
    """One photo of a product, RGB uint8 (size, size, 3).

    `view_key` picks the pose, backdrop and light. Shopper photos (the demo's queries) draw
    from their own stream, so they never repeat a catalog view, and are framed more loosely and
    a little softer, like a phone picture.
    """
    view = _rng(spec.seed, "shopper view" if shopper else "view", spec.index, view_key)
    drawn = _draw_piece(spec, view, size * 2, 1.6 if shopper else 1.0)
    x, y, w, h = _frame(*drawn.size, size, view, shopper)
    placed = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    placed.paste(drawn.resize((w, h), Image.LANCZOS), (x, y))
    photo = _shadow(placed, _background(view, size), max(1, size // 80), view.uniform(0.1, 0.2))
    photo.paste(placed, (0, 0), placed)
    photo = _light(photo, view, 1.6 if shopper else 1.0)
    if shopper:
        photo = photo.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(photo)


# -- photos of sets -----------------------------------------------------------------------------
# Several catalog products in one photo (issue 14), with each piece's true box, to measure how
# well pieces are found. Earrings are one piece: the pair, as the catalog sells them.

SET_KINDS: dict[str, tuple[str, ...]] = {
    "necklace+earrings": ("necklace", "earring"),
    "rings": ("ring", "ring"),
    "three rings": ("ring", "ring", "ring"),
    "bracelet+ring": ("bracelet", "ring"),
    "necklace+earrings+ring": ("necklace", "earring", "ring"),
}
SET_BACKGROUNDS = ("plain", "gradient", "textured")
SET_SIZE = 384
MAX_SETS = 10_000  # set photos per run (about 30 KB each); more is a typo, not a test set
# products per catalog (each `views` photos of about 10 KB, hours to draw at the cap); more is
# a typo, not a demo catalog
MAX_PRODUCTS = 100_000
MAX_VIEWS = 20  # photos per product: a demo needs a few (held-out views among them); more is a typo
MAX_QUERY_PHOTOS = 100_000  # shopper photos per run (about 10 KB each), as many as products
PIECE_WEIGHT = {"necklace": 1.5, "bracelet": 1.35, "earring": 1.0, "ring": 0.8}  # slot widths
SET_GAP = 0.05  # empty share of the frame between two pieces' slots
TEXTURE_TONES = [(196, 164, 128), (150, 112, 80), (214, 186, 164), (188, 186, 182),
                 (118, 124, 134), (226, 220, 210), (92, 74, 66)]  # wood, skin, linen, marble...


@dataclass(frozen=True)
class SetPiece:
    """One piece of a set photo: its product and its true box (x0, y0, x1, y1, half-open)."""

    spec: ProductSpec
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, object]:
        return {"type": self.spec.type, "product_id": self.spec.id, "box": list(self.box)}


def set_background(rng: np.random.Generator, size: int, kind: str) -> Image.Image:
    """A plain backdrop, a gradient, or a textured, lifestyle-like surface (wood, skin, linen,
    marble tones with grain at several scales): no clean border to segment against."""
    if kind not in SET_BACKGROUNDS:
        raise JewelrecError(f"unknown set background {kind!r}; one of {SET_BACKGROUNDS}")
    if kind != "textured":
        palette = LIGHT_BACKDROPS + DARK_BACKDROPS[:1]
        base = np.array(palette[int(rng.integers(len(palette)))], dtype=float)
        if kind == "plain":
            return Image.new("RGB", (size, size), tuple(int(v) for v in base))
        corners = np.clip(base + rng.uniform(-24, 24, size=(2, 2, 1)), 0, 255).astype(np.uint8)
        return Image.fromarray(corners).resize((size, size), Image.BILINEAR)
    tone = np.array(TEXTURE_TONES[int(rng.integers(len(TEXTURE_TONES)))], dtype=np.float32)
    field = np.zeros((size, size, 3), np.float32) + tone
    for cells, amplitude in ((4, 34.0), (16, 14.0)):
        noise = rng.normal(0.0, amplitude, size=(cells, cells, 1)).repeat(3, axis=2)
        noise += rng.normal(0.0, amplitude * 0.25, size=(cells, cells, 3))
        small = Image.fromarray(np.clip(noise + 128, 0, 255).astype(np.uint8))
        field += np.asarray(small.resize((size, size), Image.BICUBIC), np.float32) - 128
    if rng.random() < 0.5:  # grain: wood or woven stripes at an angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        field += (rng.uniform(6, 16) * stripes)[:, :, None]
    field += rng.normal(0.0, 5.0, size=field.shape).astype(np.float32)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def _set_slots(rng: np.random.Generator, types: tuple[str, ...],
               size: int) -> list[tuple[int, int, int, int]]:
    """A slot (x0, y0, x1, y1) per piece: a row (widths by PIECE_WEIGHT) or, for three pieces,
    sometimes the first piece in a column beside the other two stacked."""
    gap = SET_GAP * size
    margin = gap / 2
    if len(types) == 3 and rng.random() < 0.5:
        left = size * rng.uniform(0.5, 0.6)
        half = size / 2
        return [(round(margin), round(margin), round(left - gap / 2), round(size - margin)),
                (round(left + gap / 2), round(margin), round(size - margin), round(half - gap / 2)),
                (round(left + gap / 2), round(half + gap / 2), round(size - margin),
                 round(size - margin))]
    weights = np.array([PIECE_WEIGHT[t] for t in types]) * rng.uniform(0.85, 1.15, len(types))
    usable = size - 2 * margin - gap * (len(types) - 1)
    widths = usable * weights / weights.sum()
    height = size * rng.uniform(0.55, 1.0)
    top = rng.uniform(margin, size - margin - height + 1e-9) if height < size - 2 * margin \
        else margin
    bottom = min(size - margin, top + height)
    slots, x = [], margin
    for width in widths:
        slots.append((round(x), round(top), round(x + width), round(bottom)))
        x += width + gap
    return slots


def render_set(specs: list[ProductSpec], key: int, size: int = SET_SIZE,
               background: str = "plain") -> tuple[np.ndarray, list[SetPiece]]:
    """One photo holding every product of `specs`, each in its own slot, RGB uint8, and each
    piece's true box (the tight box of what was drawn)."""
    if not specs:
        raise JewelrecError("a set photo needs at least one product")
    rng = _rng(specs[0].seed, "set", key, *(s.index for s in specs))
    if len(specs) > 1 and rng.random() < 0.5:  # the order pieces sit in, left to right
        specs = [specs[int(i)] for i in rng.permutation(len(specs))]
    slots = _set_slots(rng, tuple(s.type for s in specs), size)
    placed = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pieces = []
    for spec, (x0, y0, x1, y1) in zip(specs, slots, strict=True):
        drawn = _draw_piece(spec, rng, size * 2, 1.3)
        fit = min((x1 - x0) / drawn.width, (y1 - y0) / drawn.height) * rng.uniform(0.7, 0.97)
        w, h = max(1, round(drawn.width * fit)), max(1, round(drawn.height * fit))
        x = x0 + int(rng.integers(0, max(1, x1 - x0 - w + 1)))
        y = y0 + int(rng.integers(0, max(1, y1 - y0 - h + 1)))
        piece = drawn.resize((w, h), Image.LANCZOS)
        placed.paste(piece, (x, y), piece)
        bx0, by0, bx1, by1 = piece.getchannel("A").point(lambda a: 255 if a > 24 else 0).getbbox()
        pieces.append(SetPiece(spec, (x + bx0, y + by0, x + bx1, y + by1)))
    photo = _shadow(placed, set_background(rng, size, background), max(1, size // 80),
                    rng.uniform(0.1, 0.2))
    photo.paste(placed, (0, 0), placed)
    return np.asarray(_light(photo, rng, 1.3)), pieces


def _products_by_type(seed: int, products: int) -> dict[str, list[ProductSpec]]:
    by_type: dict[str, list[ProductSpec]] = {}
    for i in range(products):
        spec = product_spec(seed, i)
        by_type.setdefault(spec.type, []).append(spec)
    return by_type


def _set_specs(seed: int, number: int,
               by_type: dict[str, list[ProductSpec]]) -> tuple[str, str, list[ProductSpec]]:
    """Set photo `number`: its kind, background and catalog products (a set shares one metal
    where the catalog allows)."""
    rng = _rng(seed, "set choice", number)
    kind = list(SET_KINDS)[number % len(SET_KINDS)]
    background = SET_BACKGROUNDS[(number // len(SET_KINDS)) % len(SET_BACKGROUNDS)]
    chosen: list[ProductSpec] = []
    for kind_type in SET_KINDS[kind]:
        pool = [s for s in by_type.get(kind_type, []) if s not in chosen]
        if not pool:
            raise JewelrecError(f"set photos of {kind} need more {kind_type}s than the "
                                "catalog has: draw more products")
        metal = chosen[0].metal if chosen else None
        same = [s for s in pool if s.metal == metal] or pool
        chosen.append(same[int(rng.integers(len(same)))])
    return kind, background, chosen


def check_sets(sets: int, products: int, seed: int = 0) -> dict[str, list[ProductSpec]]:
    """Refuse set photos that cannot be drawn (too many, or from too few products of a kind)
    before anything is drawn, the catalog included; returns the catalog's products by type."""
    if sets < 1:
        raise JewelrecError("--sets must be at least 1")
    if sets > MAX_SETS:
        raise JewelrecError(f"--sets {sets:,}: at most {MAX_SETS:,} set photos are drawn at a time")
    by_type = _products_by_type(seed, products)
    for n in range(min(sets, len(SET_KINDS))):  # kinds take turns: each one is tried here
        _set_specs(seed, n, by_type)
    return by_type


def check_products(products: int, views: int = 1, query_photos: int = 0) -> None:
    """Refuse a catalog empty or too large to be meant (products, views of each, shopper
    photos) before anything is listed or drawn."""
    if products < 1 or views < 1:
        raise JewelrecError("--products and --views must be at least 1")
    if query_photos < 0:
        raise JewelrecError("--query-photos cannot be negative")
    if products > MAX_PRODUCTS:
        raise JewelrecError(f"--products {products:,}: at most {MAX_PRODUCTS:,} products are "
                            "drawn at a time")
    if views > MAX_VIEWS:
        raise JewelrecError(f"--views {views:,}: at most {MAX_VIEWS:,} photos of each product "
                            "are drawn")
    if query_photos > MAX_QUERY_PHOTOS:
        raise JewelrecError(f"--query-photos {query_photos:,}: at most {MAX_QUERY_PHOTOS:,} "
                            "shopper photos are drawn at a time")


def set_name(number: int) -> str:
    return f"set{number + 1:04d}.jpg"


def generate_sets(out_dir: Path, *, sets: int, products: int, seed: int = 0,
                  size: int = SET_SIZE, progress: bool = True) -> Path:
    """Draw `sets` photos of 2-3 products of the catalog (`products`, `seed`) into
    out_dir/sets/ and their true boxes into out_dir/sets/sets.json (written last, atomically,
    so it never names a missing photo); returns the JSON's path.

    Kinds (necklace + earrings, rings side by side, a bracelet with a ring, ...) and backgrounds
    (plain, gradient, textured) take turns, so any N covers them evenly."""
    if not 64 <= size <= 2048:
        raise JewelrecError("a set photo must be between 64 and 2048 pixels")
    by_type = check_sets(sets, products, seed)
    choices = [_set_specs(seed, n, by_type) for n in range(sets)]
    out_dir = Path(out_dir)
    (out_dir / "sets").mkdir(parents=True, exist_ok=True)
    photos = []
    for n, (kind, background, specs) in enumerate(
        tqdm(choices, desc="drawing set photos", unit="photo", disable=not progress)
    ):
        img, pieces = render_set(specs, n, size, background)
        (out_dir / "sets" / set_name(n)).write_bytes(_jpeg(img))
        photos.append({"file": set_name(n), "kind": kind, "background": background,
                       "pieces": [p.to_dict() for p in pieces]})
    path = out_dir / "sets" / "sets.json"
    document = {"seed": seed, "size": size, "photos": photos,
                "about": "boxes are x0, y0, x1, y1 in pixels, half-open; an earring pair is "
                         "one piece"}
    atomic_write_bytes(path, (json.dumps(document, indent=1) + "\n").encode("utf-8"))
    return path


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


# -- catalog files ------------------------------------------------------------------------------


def _image_names(spec: ProductSpec, views: int) -> list[str]:
    return [f"images/{spec.id.lower()}_v{v}.jpg" for v in range(views)]


def _draw_product(job: tuple[str, int, int, int, int]) -> int:
    """Worker: draw and write every view of one product (runs in a pool, hence plain args)."""
    out_dir, seed, index, views, size = job
    spec = product_spec(seed, index)
    for v, name in enumerate(_image_names(spec, views)):
        (Path(out_dir) / name).write_bytes(_jpeg(render_view(spec, v, size)))
    return index


def _draw_query(job: tuple[str, int, int, int, int]) -> int:
    out_dir, seed, number, products, size = job
    spec = product_spec(seed, _query_product(seed, number, products))
    img = render_view(spec, number, size, shopper=True)
    (Path(out_dir) / "queries" / _query_name(number)).write_bytes(_jpeg(img))
    return number


def _query_product(seed: int, number: int, products: int) -> int:
    return int(_rng(seed, "query", number).integers(products))


def _query_name(number: int) -> str:
    return f"q{number + 1:04d}.jpg"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_jobs(worker: Callable[[tuple], int], jobs: list[tuple], desc: str, unit: str,
              progress: bool) -> None:
    """Run jobs in a process pool, one worker per core (at most MAX_WORKERS).

    Each job seeds its own generators, so the files do not depend on which worker drew them
    or in what order. Small batches stay in-process: starting workers would cost more.
    """
    workers = min(MAX_WORKERS, _cores())
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if workers > 1 and len(jobs) >= POOL_MIN_JOBS:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(worker, jobs, chunksize=4):
                    bar.update()
        else:
            for job in jobs:
                worker(job)
                bar.update()


def _csv_bytes(columns: list[str], rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def catalog_row(spec: ProductSpec, views: int) -> dict[str, str]:
    return {
        "id": spec.id, "title": spec.title, "type": spec.type, "price": f"{spec.price:.2f}",
        "currency": "USD", "brand": spec.brand, "url": spec.url,
        "image": "|".join(_image_names(spec, views)), "metal": spec.metal,
        "stone": spec.stone or "", "family": spec.family, "tags": "|".join(spec.tags),
    }


def generate_catalog(
    out_dir: Path,
    *,
    products: int = 2000,
    views: int = 3,
    seed: int = 0,
    query_photos: int = 0,
    image_size: int = 256,
    progress: bool = True,
) -> Path:
    """Draw a demo catalog into `out_dir`; returns the path of `out_dir/catalog.csv`.

    Writes images/pNNNNN_vK.jpg (K < views) and catalog.csv (written last and atomically, so
    an interrupted run never leaves a CSV that names missing images). With `query_photos`,
    also queries/qNNNN.jpg: fresh photos of random catalog products (a pose, backdrop and light
    no catalog view has) and queries/queries.csv (file, product_id, type, metal).
    """
    check_products(products, views, query_photos)
    check_seed(seed)
    if not 32 <= image_size <= 2048:
        raise JewelrecError("image_size must be between 32 and 2048 pixels")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out_dir), seed, i, views, image_size) for i in range(products)]
    _run_jobs(_draw_product, jobs, "drawing catalog", "product", progress)
    if query_photos:
        (out_dir / "queries").mkdir(exist_ok=True)
        qjobs = [(str(out_dir), seed, q, products, image_size) for q in range(query_photos)]
        _run_jobs(_draw_query, qjobs, "drawing shopper photos", "photo", progress)
        rows = []
        for q in range(query_photos):
            spec = product_spec(seed, _query_product(seed, q, products))
            rows.append({"file": _query_name(q), "product_id": spec.id, "type": spec.type,
                         "metal": spec.metal})
        atomic_write_bytes(out_dir / "queries" / "queries.csv", _csv_bytes(QUERY_COLUMNS, rows))
    specs = [product_spec(seed, i) for i in range(products)]
    csv_path = out_dir / "catalog.csv"
    atomic_write_bytes(csv_path, _csv_bytes(CSV_COLUMNS, [catalog_row(s, views) for s in specs]))
    return csv_path
