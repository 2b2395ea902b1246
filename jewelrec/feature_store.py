"""The backbone's pooled features on disk, shared by `train` and `index` (issue 11).

Each image goes through the backbone once per framing: what `train` computed, `index` reads
back, and retraining on an unchanged catalog computes nothing. A record is the (len(POOLINGS),
1280) float32 array `Backbone.pooled` returns for one image, keyed by `backbone.image_key`
(the pixels, the input size and the crop fraction); the folder is named by a fingerprint of
the backbone's weights file, so other weights never read these features.

Writes are append-only chunk files (safetensors: "keys" (N, 16) uint8 + "features") of
WRITE_CHUNK records, each written atomically, so a killed run keeps every chunk it finished and
loses at most one (`flush` writes the rest when a command ends); too many chunks are merged
into one. Temporary files a killed writer left behind are removed when the store is opened.
The command that opened the home attaches the store to that home's backbone while it runs
(`attached_to_home`); a query's backbone never has one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jewelrec.errors import StorageError
from jewelrec.home import Home, atomic_path

if TYPE_CHECKING:
    from jewelrec.models.backbone import Backbone

log = logging.getLogger(__name__)

FOLDER = "features"
CHUNK_PREFIX, CHUNK_SUFFIX = "chunk-", ".safetensors"
WRITE_CHUNK = 512  # records kept in memory before they are written as one chunk file
MAX_CHUNKS = 64  # beyond this many chunk files, they are merged into one
STALE_TEMP_SECONDS = 3600  # a temporary file this old belongs to no running writer
KEY_BYTES = 16
# A catalog photo needs about two records (the frozen head's whole photo at 224 px, the
# embedder's framed piece at 320): a store holding many more per photo mostly keeps photos the
# catalog no longer has, and is started afresh rather than left to grow with every season's
# products (each record is 15 KB: 2,000 photos' worth is 60 MB).
MAX_RECORDS_PER_IMAGE = 4
MIN_RECORDS_KEPT = 4096


@functools.cache
def backbone_fingerprint() -> str:
    """The backbone weights file's SHA-256 (first 16 hex digits): content, not a timestamp."""
    from jewelrec.models.backbone import BACKBONE, weights_path

    digest = hashlib.sha256(BACKBONE.encode())
    with open(weights_path(), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def remove_stale_temporaries(folder: Path, max_age_s: float = STALE_TEMP_SECONDS) -> int:
    """Delete the `.name.XXXX.tmp` files `atomic_path` leaves when its process is killed and
    that no live writer can still own (older than `max_age_s`); returns how many went."""
    removed = 0
    now = time.time()
    for path in folder.glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete: harmless either way
            continue
    return removed


class FeatureStore:
    """key (bytes) -> float32 array of one fixed shape, in append-only chunk files.

    `get_many` and `put_many` are what `Backbone.pooled` calls; thread-safe. A damaged chunk
    is skipped (its images are simply computed again). Call `flush` when the work is done.
    """

    def __init__(self, folder: Path, shape: tuple[int, ...] | None = None) -> None:
        self.folder = Path(folder)
        self.shape = shape  # each record's shape; chunks holding another are ignored
        self._lock = threading.Lock()
        self._where: dict[bytes, tuple[Path, int]] | None = None  # read on first use
        self._loaded: tuple[Path, np.ndarray] | None = None  # the last chunk read
        self._buffer: dict[bytes, np.ndarray] = {}  # put, not yet written
        self._unwritable = False  # set after a failed write (read-only home, full disk)

    def _index(self) -> dict[bytes, tuple[Path, int]]:
        if self._where is None:
            self._where = {}
            if self.folder.is_dir():
                remove_stale_temporaries(self.folder)
                for path in self._chunks():
                    for row, key in enumerate(self._read(path, "keys")):
                        self._where[key.tobytes()] = (path, row)
        return self._where

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob(f"{CHUNK_PREFIX}*{CHUNK_SUFFIX}"))

    def _read(self, path: Path, name: str) -> np.ndarray:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as fh:
                array = fh.get_tensor(name)
            want = (KEY_BYTES,) if name == "keys" else self.shape
            if want is not None and array.shape[1:] != tuple(want):
                raise ValueError(f"{name} of shape {array.shape}, not (N, *{want})")
            return array
        except Exception as exc:  # damaged or foreign file: its records are recomputed
            log.warning("feature cache chunk %s unreadable (%s); ignoring it", path, exc)
            return np.zeros((0, KEY_BYTES) if name == "keys" else (0,), np.uint8)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index()) + len(self._buffer)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        """The stored arrays of those keys it has (float32 copies)."""
        keys = list(keys)
        with self._lock:
            where = self._index()
            by_chunk: dict[Path, list[tuple[bytes, int]]] = {}
            for key in keys:
                if key in where:
                    path, row = where[key]
                    by_chunk.setdefault(path, []).append((key, row))
            found = {k: self._buffer[k] for k in keys if k in self._buffer}
            for path, wanted in by_chunk.items():
                if self._loaded is None or self._loaded[0] != path:
                    self._loaded = (path, self._read(path, "features"))
                features = self._loaded[1]
                for key, row in wanted:
                    if row < len(features):
                        found[key] = np.array(features[row], dtype=np.float32)
            return found

    def put_many(self, items: Mapping[bytes, np.ndarray]) -> None:
        """Keep the new records (keys already stored are left as they are), writing a chunk
        file each time WRITE_CHUNK of them have gathered."""
        with self._lock:
            where = self._index()
            self._buffer.update({k: v for k, v in items.items() if k not in where})
            if len(self._buffer) >= WRITE_CHUNK:
                self._write_buffer()

    def flush(self) -> None:
        """Write the records still in memory (the command's work is done, or it failed)."""
        with self._lock:
            if self._buffer:
                self._write_buffer()

    def clear(self) -> None:
        """Forget every record: the chunk files go (a reader of this store in another process
        then computes its features again, as for a damaged chunk)."""
        with self._lock:
            for path in self._chunks():
                path.unlink(missing_ok=True)
            self._where, self._loaded, self._buffer = {}, None, {}

    def _write_buffer(self) -> None:
        fresh, self._buffer = self._buffer, {}
        if self._unwritable:
            return
        name = f"{CHUNK_PREFIX}{time.time_ns():020d}-{os.getpid()}{CHUNK_SUFFIX}"
        try:
            path = self._write(self.folder / name, list(fresh), list(fresh.values()))
            self._index().update({key: (path, row) for row, key in enumerate(fresh)})
            if len(self._chunks()) > MAX_CHUNKS:
                self._merge()
        except StorageError as exc:  # a cache that cannot be written only costs time
            log.warning("not caching backbone features: %s", exc)
            self._unwritable = True

    def _write(self, path: Path, keys: Sequence[bytes], arrays: Sequence[np.ndarray]) -> Path:
        from safetensors.numpy import save_file

        tensors = {
            "keys": np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), KEY_BYTES),
            "features": np.ascontiguousarray(np.stack(arrays), dtype=np.float32),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        return path

    def _merge(self) -> None:
        """All chunks into one, written before the old ones are removed (a kill in between
        leaves duplicates, never a loss)."""
        old = self._chunks()
        where = self._where or {}
        keys = list(where)
        arrays: list[np.ndarray] = []
        by_path: dict[Path, np.ndarray] = {}
        kept = []
        for key in keys:
            path, row = where[key]
            if path not in by_path:
                by_path[path] = self._read(path, "features")
            if row < len(by_path[path]):
                kept.append(key)
                arrays.append(by_path[path][row])
        name = f"{CHUNK_PREFIX}{time.time_ns():020d}-{os.getpid()}-merged{CHUNK_SUFFIX}"
        merged = self._write(self.folder / name, kept, arrays)
        for path in old:
            path.unlink(missing_ok=True)
        self._where = {key: (merged, row) for row, key in enumerate(kept)}
        self._loaded = None


def store_for_home(home: Home, features_tag: str = "") -> FeatureStore:
    """The home's feature store for the installed backbone weights, computed as
    `Backbone.features_tag` says (float: ""; int8: its recipe)."""
    from jewelrec.models.backbone import BACKBONE, FEATURE_DIM, POOLINGS

    name = f"{BACKBONE}-{backbone_fingerprint()}{features_tag}"
    return FeatureStore(home.cache_dir / FOLDER / name, shape=(len(POOLINGS), FEATURE_DIM))


def keep_bounded(home: Home, store: FeatureStore) -> None:
    """Keep the home's feature stores from growing without end: the stores of other backbone
    weights (an upgrade changed them: never read again) are removed, and this one is started
    afresh when it holds more than MAX_RECORDS_PER_IMAGE records per catalog photo (the
    catalog's photos are then computed again once, as on the first `train`)."""
    from jewelrec.catalog.store import CatalogStore
    from jewelrec.models.backbone import BACKBONE

    stale = re.compile(rf"{re.escape(BACKBONE)}-(?!{backbone_fingerprint()})[0-9a-f]{{16}}.*")
    folder = home.cache_dir / FOLDER
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and stale.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed the feature cache of other backbone weights: %s", entry.name)
    try:
        with CatalogStore.open(home, read_only=True) as catalog:
            images = sum(len(set(p.images)) for p in catalog.all_products())
    except Exception as exc:  # noqa: BLE001 - no catalog to size it by: leave it as it is
        log.debug("feature cache not sized: %s", exc)
        return
    records = len(store)
    if records > max(MIN_RECORDS_KEPT, MAX_RECORDS_PER_IMAGE * images):
        log.info("feature cache: %d records for %d catalog photos, most of them for photos "
                 "the catalog no longer has; starting it afresh", records, images)
        store.clear()


@contextmanager
def attached_to_home(home: Home, backbone: Backbone) -> Iterator[FeatureStore]:
    """While the block runs, `backbone` (the one this home was opened with) reads and adds to
    the home's feature store; what is still in memory is written when the block ends, even by
    an error or Ctrl-C. Train and index use it; queries do not (a shopper's photo is never in
    it)."""
    previous, store = backbone.store, store_for_home(home, backbone.features_tag)
    keep_bounded(home, store)
    backbone.store = store
    try:
        yield store
    finally:
        backbone.store = previous
        store.flush()
