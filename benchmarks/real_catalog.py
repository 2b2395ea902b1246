"""The real jewelry photos (../shared/data/real-jewelry) as catalog data for benchmarks.

The photos carry a type and the repository they came from, nothing else: each photo becomes one
product whose id is its file name and whose price is drawn from the name (deterministic, so runs
compare; no metric here depends on it). Images are read and framed exactly as the pipeline frames
catalog images (`load_image`, then `focus_on_piece`), and never copied anywhere.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jewelrec.errors import CatalogError
from jewelrec.imaging.focus import focus_on_piece
from jewelrec.imaging.io import load_image
from jewelrec.search.index import IndexRow

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-jewelry"
TYPES = ("bracelet", "earring", "necklace", "ring")  # other/ (watches, anklets...) is left out
PRICE_RANGE = (20.0, 2000.0)


@dataclass(frozen=True)
class RealPhoto:
    file: str  # relative to the data folder
    type: str
    source_repo: str
    price: float


def scripted_price(file: str) -> float:
    """A price in PRICE_RANGE taken from the file name's hash: the same photo, the same price."""
    fraction = int(hashlib.sha256(file.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    low, high = PRICE_RANGE
    return round(low + fraction * (high - low), 2)


def read_manifest(data: Path = DATA) -> list[RealPhoto]:
    """The photos of the four catalog types listed in data/manifest.csv, in manifest order."""
    with open(data / "manifest.csv", newline="") as fh:
        return [
            RealPhoto(row["file"], row["type"], row["source_repo"], scripted_price(row["file"]))
            for row in csv.DictReader(fh)
            if row["type"] in TYPES
        ]


def photo_path(data: Path, photo: RealPhoto) -> Path:
    """The photo's file, refusing a manifest entry that points outside the data folder."""
    root = data.resolve()
    path = (root / photo.file).resolve()
    if not path.is_relative_to(root):
        raise CatalogError(f"manifest entry {photo.file!r} points outside {root}")
    return path


def load_framed(
    data: Path, photos: Sequence[RealPhoto], *, progress: bool = False
) -> list[np.ndarray]:
    """Every photo as RGB uint8, cropped to the piece as the index and the query path do."""
    return [
        focus_on_piece(load_image(photo_path(data, photo)))[0]
        for photo in tqdm(photos, desc="loading real photos", unit="img", disable=not progress)
    ]


def index_rows(photos: Sequence[RealPhoto]) -> list[IndexRow]:
    """One index row per photo (one product each), for an ExactIndex gallery."""
    return [IndexRow(p.file, p.file, p.type, p.price) for p in photos]
