"""Catalog hygiene: the same photo standing for several products, and placeholder images.

Real catalogs repeat themselves (in one production catalog of 69,761 images a quarter were
repeats and one generic "image coming soon" stood on 565 products). Left in the index, a
placeholder makes hundreds of unrelated products look alike, and a photo shared by two
products crowds every answer with both. So ingest groups near-identical images and records,
in the store's meta key `hygiene`, what it found and which (product, image) views the index
leaves out; `jewelrec index` reads that (`excluded_views`).

Near-identical means: the same picture, whatever its encoding, size or JPEG quality. Two
stages, so that it stays cheap and never mistakes two products shot alike for one photo:
1. candidates: a 64-bit perceptual hash (pHash: the signs of the 8x8 lowest DCT frequencies of
   a 32x32 grey thumbnail) within CANDIDATE_BITS bits;
2. proof: the 24x24 colour thumbnails differ by at most MAX_RMSE (root mean square, 0-255).
   Measured on ../shared/data (2,750 real photos, white-background packshots among them, hand
   cleaned of duplicates): no two different photos came closer than 5.7, while re-encodings
   (JPEG quality 30-90, 35-100 % size) stay under 5 in 99 % of cases. A gold and a silver
   version of one design shot the same way (pHash distance 0) differ by more than 5: colour
   is part of the proof, they stay two products.

A group of near-identical images shown on `placeholder_min` products or more is a placeholder:
all its views leave the index. A group on 2 to placeholder_min - 1 products is a duplicate:
the product with the smallest id keeps the picture (its first image of the group), the others'
views leave the index. Near-identical images within ONE product (the same photo listed twice
at two sizes) keep the first; byte-identical ones are already stored once (content addressing:
one managed name, listed once per product). `keep=True` (`ingest --keep-duplicates`) still
reports everything and excludes nothing.

Signatures are cached per managed image name (a content hash, so an entry never goes stale)
under home/cache/, so a re-ingest decodes only new images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from jewelrec.catalog.schema import Product
from jewelrec.errors import ImageError
from jewelrec.home import Home, atomic_path
from jewelrec.imaging.io import load_image

log = logging.getLogger(__name__)

META_KEY = "hygiene"  # store meta: the findings of the last ingest (HygieneFindings.to_dict)
SIGNATURE_VERSION = 1
HASH_SIZE = 8  # pHash: 8x8 DCT coefficients -> 64 bits
DCT_INPUT = 32
THUMB = 24
CANDIDATE_BITS = 10  # pHash distance worth a closer look (re-encodings: 99 % within 4)
MAX_RMSE = 5.0  # thumbnail distance of the same picture (see the module docstring)
PLACEHOLDER_MIN = 5
_BLOCK = 1 << 23  # hash pairs compared at once: 64 MB of uint64 whatever the catalog size
DESCRIBED_GROUPS = 5


@dataclass(frozen=True)
class Signature:
    """What near-identity is decided on: a 64-bit pHash and a 24x24 RGB thumbnail."""

    phash: int
    thumb: np.ndarray  # (THUMB, THUMB, 3) uint8


def _dct_matrix(n: int, size: int) -> np.ndarray:
    """The first `n` rows of the orthonormal DCT-II matrix of length `size`."""
    k = np.arange(n)[:, None]
    x = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(HASH_SIZE, DCT_INPUT)


def signature(image: np.ndarray) -> Signature:
    """Signature of an RGB uint8 image (H, W, 3), any size."""
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    if max(picture.size) > 8 * DCT_INPUT:  # a cheap first step; the result is the same picture
        picture = picture.reduce(max(1, min(picture.size) // (4 * DCT_INPUT)))
    grey = np.asarray(picture.convert("L").resize((DCT_INPUT, DCT_INPUT),
                                                   Image.Resampling.LANCZOS), np.float64)
    low = (_DCT @ grey @ _DCT.T).ravel()[1:]  # drop the DC term: overall brightness
    bits = low > np.median(low)
    phash = int(sum(1 << i for i, bit in enumerate(bits) if bit))
    thumb = np.asarray(picture.resize((THUMB, THUMB), Image.Resampling.BOX), np.uint8)
    return Signature(phash, thumb)


class SignatureCache:
    """managed image name -> Signature, kept in home/cache/image-signatures-v1/."""

    def __init__(self, home: Home) -> None:
        self.folder = home.cache_dir / f"image-signatures-v{SIGNATURE_VERSION}"
        self.signatures: dict[str, Signature] = {}
        self._dirty = False
        names_path = self.folder / "names.json"
        try:
            if names_path.exists():
                names = json.loads(names_path.read_text())
                hashes = np.load(self.folder / "phash.npy", allow_pickle=False)
                thumbs = np.load(self.folder / "thumbs.npy", allow_pickle=False)
                if len(names) == len(hashes) == len(thumbs):
                    self.signatures = {
                        n: Signature(int(h), t)
                        for n, h, t in zip(names, hashes.tolist(), thumbs, strict=True)
                    }
        except (ValueError, OSError):
            self.signatures = {}  # a damaged cache only costs decoding the images again

    def add(self, name: str, sig: Signature) -> None:
        if name not in self.signatures:
            self.signatures[name] = sig
            self._dirty = True

    def save(self) -> None:
        if not self._dirty or not self.signatures:
            return
        names = sorted(self.signatures)
        hashes = np.array([self.signatures[n].phash for n in names], np.uint64)
        thumbs = np.stack([self.signatures[n].thumb for n in names])
        for filename, array in (("phash.npy", hashes), ("thumbs.npy", thumbs)):
            with atomic_path(self.folder / filename) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        with atomic_path(self.folder / "names.json") as tmp:  # last: it validates the others
            tmp.write_text(json.dumps(names))
        self._dirty = False


def near_identical_groups(signatures: Mapping[str, Signature]) -> list[list[str]]:
    """Groups (of 2 or more) of image names that show the same picture, each sorted, and the
    groups sorted; an image near-identical to one of a group joins it (transitively)."""
    names = sorted(signatures)
    if len(names) < 2:
        return []
    hashes = np.array([signatures[n].phash for n in names], np.uint64)
    thumbs = np.stack([signatures[n].thumb for n in names]).astype(np.float32)
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows_per_block = max(16, _BLOCK // len(names))
    for start in range(0, len(names), rows_per_block):
        block = hashes[start : start + rows_per_block]
        # only pairs (i, j) with j > i: each block against itself and everything after it
        distance = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(distance <= CANDIDATE_BITS)
        keep = cols > rows
        for i, j in zip((rows[keep] + start).tolist(), (cols[keep] + start).tolist(),
                        strict=True):
            if root(i) == root(j):
                continue
            rmse = float(np.sqrt(np.mean((thumbs[i] - thumbs[j]) ** 2)))
            if rmse <= MAX_RMSE:
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        groups.setdefault(root(i), []).append(name)
    return sorted(g for g in groups.values() if len(g) > 1)


@dataclass
class ImageGroup:
    """One picture (one or more near-identical image files) and the products showing it."""

    kind: str  # "placeholder" | "duplicate" | "repeat" (one product, several copies)
    images: list[str]
    products: list[str]
    kept: str | None = None  # the product whose view stays in the index (duplicate, repeat)
    # the picture as the catalog names it ("img/coming_soon.jpg"), when the ingest read it:
    # the stored name is a content hash the shop never saw
    shown: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "images": self.images, "products": self.products,
                "kept": self.kept, "shown": self.shown}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageGroup:
        return cls(str(data["kind"]), list(data["images"]), list(data["products"]),
                   data.get("kept"), data.get("shown"))

    @property
    def name(self) -> str:
        """How the picture is named to the operator: the catalog's own name when known."""
        return self.shown or self.images[0]


@dataclass
class HygieneFindings:
    """What ingest found, and the views the index leaves out (none when `kept`)."""

    placeholder_min: int = PLACEHOLDER_MIN
    kept: bool = False  # --keep-duplicates: reported, nothing excluded
    images: int = 0  # distinct images looked at
    groups: list[ImageGroup] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (product id, image name)
    unreadable: list[str] = field(default_factory=list)  # images that could not be decoded

    def of_kind(self, kind: str) -> list[ImageGroup]:
        return [g for g in self.groups if g.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        counts = {kind: len(self.of_kind(kind)) for kind in ("placeholder", "duplicate", "repeat")}
        return {
            "placeholder_min": self.placeholder_min,
            "kept": self.kept,
            "images": self.images,
            "placeholders": counts["placeholder"],
            "duplicates": counts["duplicate"],
            "repeats": counts["repeat"],
            "excluded_views": len(self.excluded),
            "groups": [g.to_dict() for g in self.groups],
            "excluded": [list(view) for view in self.excluded],
            "unreadable": self.unreadable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HygieneFindings | None:
        if not isinstance(data, Mapping):
            return None
        return cls(
            placeholder_min=int(data.get("placeholder_min", PLACEHOLDER_MIN)),
            kept=bool(data.get("kept", False)),
            images=int(data.get("images", 0)),
            groups=[ImageGroup.from_dict(g) for g in data.get("groups", [])],
            excluded=[(str(p), str(i)) for p, i in data.get("excluded", [])],
            unreadable=list(data.get("unreadable", [])),
        )

    def describe(self) -> str:
        """Summary lines for the ingest report ('' when the catalog is clean)."""
        if not self.groups and not self.unreadable:
            return ""
        fate = ("kept in the index (--keep-duplicates)" if self.kept
                else f"{len(self.excluded)} views left out of the index")
        lines = [
            f"  hygiene: {_count(len(self.of_kind('placeholder')), 'placeholder image')} (on >= "
            f"{self.placeholder_min} products), "
            f"{_count(len(self.of_kind('duplicate')), 'photo')} shared by different products, "
            f"{_count(len(self.of_kind('repeat')), 'photo')} repeated within a product; {fate}"
        ]
        shown = sorted(self.groups, key=lambda g: -len(g.products))[:DESCRIBED_GROUPS]
        for group in shown:
            ids = ", ".join(group.products[:4]) + (" ..." if len(group.products) > 4 else "")
            kept = f"; kept for {group.kept}" if group.kept and not self.kept else ""
            where = (f"{len(group.images)} copies in product {ids}" if group.kind == "repeat"
                     else f"on {len(group.products)} products ({ids})")
            lines.append(f"    {group.kind}: {group.name} {where}{kept}")
        if len(self.groups) > DESCRIBED_GROUPS:
            lines.append(f"    ... and {len(self.groups) - DESCRIBED_GROUPS} more groups "
                         "(--json lists them all)")
        if self.unreadable:
            lines.append(f"    {len(self.unreadable)} images could not be read for the check")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def audit(
    home: Home,
    products: Iterable[Product],
    *,
    placeholder_min: int = PLACEHOLDER_MIN,
    keep: bool = False,
    fresh: Mapping[str, Signature] | None = None,
    names: Mapping[str, str] | None = None,
) -> HygieneFindings:
    """Group the catalog's near-identical images and decide which views leave the index.
    `fresh`: signatures already computed (images staged by this ingest, not yet in images/);
    the others come from the cache or are read from the home. `names`: stored image -> the
    catalog's own reference to it, to name each group as the shop knows it."""
    names = names or {}
    if placeholder_min < 2:
        raise ValueError("placeholder_min must be at least 2")
    products = sorted(products, key=lambda p: p.id)
    users: dict[str, list[str]] = {}  # image -> product ids, in id order
    for product in products:
        for image in dict.fromkeys(product.images):
            users.setdefault(image, []).append(product.id)
    cache = SignatureCache(home)
    signatures: dict[str, Signature] = {}
    unreadable: list[str] = []
    for name in users:
        sig = (fresh or {}).get(name) or cache.signatures.get(name)
        if sig is None:
            try:
                sig = signature(load_image(home.image_path(name)))
            except (ImageError, OSError, ValueError) as exc:
                log.warning("hygiene: cannot read image %s: %s", name, exc)
                unreadable.append(name)
                continue
        cache.add(name, sig)
        signatures[name] = sig
    try:
        cache.save()
    except OSError as exc:  # only a slower next run
        log.warning("hygiene: cannot save the signature cache: %s", exc)

    findings = HygieneFindings(placeholder_min=placeholder_min, kept=keep,
                               images=len(signatures), unreadable=sorted(unreadable))
    pictures = near_identical_groups(signatures)
    grouped = {name for group in pictures for name in group}
    # images on several products with no near-identical sibling are groups of one file
    pictures += [
        [name] for name in signatures if name not in grouped and len(users[name]) > 1
    ]
    order = {p.id: i for i, p in enumerate(products)}
    excluded: set[tuple[str, str]] = set()
    for images in sorted(pictures):
        ids = sorted({pid for image in images for pid in users[image]}, key=order.__getitem__)
        views = [(pid, image) for image in images for pid in users[image]]
        shown = next((names[image] for image in images if image in names), None)
        if len(ids) >= placeholder_min:
            findings.groups.append(ImageGroup("placeholder", images, ids, shown=shown))
            excluded.update(views)
            continue
        kept_id = ids[0]
        first_image = next(i for i in _images_of(products[order[kept_id]]) if i in images)
        kind = "duplicate" if len(ids) > 1 else "repeat"
        findings.groups.append(ImageGroup(kind, images, ids, kept_id, shown))
        excluded.update(v for v in views if v != (kept_id, first_image))
    if not keep:
        findings.excluded = sorted(excluded, key=lambda v: (order[v[0]], v[1]))
    return findings


def _images_of(product: Product) -> list[str]:
    return list(dict.fromkeys(product.images))


def stored_findings(meta: Any) -> HygieneFindings | None:
    """The last ingest's findings as the store holds them (`meta(META_KEY)`), or None: none
    stored, or a hand-edited store that cannot be read (then nothing is flagged)."""
    try:
        return HygieneFindings.from_dict(meta)
    except (KeyError, TypeError, ValueError) as exc:  # a hand-edited store: index everything
        log.warning("hygiene: the stored findings cannot be read (%s); nothing excluded", exc)
        return None


def excluded_views(meta: Any) -> set[tuple[str, str]]:
    """The (product id, image) views the last ingest's findings leave out of the index."""
    findings = stored_findings(meta)
    return set(findings.excluded) if findings else set()
