"""`jewelrec index`: embed every catalog image and publish a new index version.

Bulk work is a reader -> mapper -> writer loop (DESIGN, after clip-retrieval): worker threads
(one per core) each take a batch of images from files to vectors, batches finish in order, and
the progress bar shows how long reading and embedding took. Embeddings are cached per (model,
image content), so re-indexing after a catalog change only embeds new images; they are
committed every COMMIT_EVERY images, so a killed run keeps what it finished. The backbone's
features come from the feature store `train` filled (jewelrec/feature_store.py), so an image is
run through the backbone once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jewelrec.catalog import hygiene
from jewelrec.catalog.store import CatalogStore
from jewelrec.catalog.views import View, all_views
from jewelrec.errors import ImageError, NotReadyError
from jewelrec.feature_store import attached_to_home, remove_stale_temporaries
from jewelrec.fill_attributes import fill_missing_attributes
from jewelrec.home import Home, atomic_path
from jewelrec.imaging.focus import frame_piece
from jewelrec.imaging.io import load_image
from jewelrec.models.backbone import Backbone
from jewelrec.models.base import Embedder, load_classifier, load_embedder, model_folder
from jewelrec.search import versions
from jewelrec.search.index import ExactIndex, IndexRow
from jewelrec.search.recognition import measure_catalog, save_reference
from jewelrec.text.vectors import write_title_vectors

BATCH_SIZE = 8  # a backbone batch (models/backbone.py): one model run per batch, no threads
COMMIT_EVERY = 512  # fresh embeddings written to the cache this often (a kill loses fewer)
FINGERPRINT_IGNORES = {"training.json"}  # run records (timestamps, losses), not the model
# What the code makes of a model's files: bumped when the same files give other vectors, so
# cached embeddings and published indexes are not mixed with the new ones (`model_fingerprint`).
# 2: the colour signature reads the framing's mask, less its rim (imaging/colour.py).
VECTORS_VERSION = 2
# An embedding cache's folder: "<embedder>-<fingerprint><features tag>" (`EmbeddingCache`); the
# recognition features' embedder is "recognition-<embedder>-<fingerprint>", whose own fingerprint
# is then the model's.
CACHE_FOLDER = re.compile(r"(?P<name>.+)-(?P<fingerprint>[0-9a-f]{16})(?P<tag>-.+)?")
log = logging.getLogger(__name__)


@dataclass
class StageTimes:
    read: float = 0.0
    embed: float = 0.0
    write: float = 0.0

    def describe(self) -> str:
        return f"read {self.read:.1f}s, embed {self.embed:.1f}s, write {self.write:.1f}s"


@dataclass
class IndexReport:
    version: str
    backend: str
    embedder: str
    images: int
    products: int
    embedded: int  # images that were not in the cache
    seconds: float
    stages: StageTimes = field(default_factory=StageTimes)
    excluded: int = 0  # views left out as placeholders or shared photos (catalog/hygiene.py)
    # products whose metal / stone the attribute heads predicted (jewelrec/fill_attributes.py)
    predicted: dict[str, int] = field(default_factory=dict)
    # catalog types the type head was not trained on: their photos are typed as something
    # else, so those products are never found by photo until `jewelrec train` runs again
    types_not_learnt: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "backend": self.backend,
            "embedder": self.embedder,
            "images": self.images,
            "products": self.products,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "stages": {k: round(v, 3) for k, v in vars(self.stages).items()},
            "excluded": self.excluded,
            "predicted_attributes": self.predicted,
            "types_not_learnt": self.types_not_learnt,
        }


def types_not_learnt(classifier: Any, rows: Sequence[IndexRow]) -> list[str]:
    """The indexed types the type head cannot answer (a type added since `train`), named so
    the operator retrains: a query types its photo first, and those products never come."""
    learnt = set(getattr(classifier, "classes", []) or [])
    return sorted({row.type for row in rows} - learnt)


def framing_tag(auto_crop: bool) -> str:
    """What an embedding cache's name adds for photos embedded whole (`auto_crop` off): the
    vectors of the framed piece and of the whole photo must never be read for each other."""
    return "" if auto_crop else "-whole"


def model_fingerprint(folder: Path) -> str:
    """Identifies a trained model by its weights and config (and VECTORS_VERSION), so caches and
    running servers notice a changed model; retraining that gives the same model keeps its
    fingerprint."""
    digest = hashlib.sha256(f"vectors {VECTORS_VERSION}\n".encode())
    for path in sorted(folder.glob("*")):
        if (path.is_file() and path.suffix in {".json", ".safetensors"}
                and path.name not in FINGERPRINT_IGNORES):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class EmbeddingCache:
    """image name (content hash) -> vector, for one model; stored as .npy + .json in the home,
    plus part files (`commit`) that `save` folds in."""

    def __init__(self, home: Home, embedder_name: str, fingerprint: str,
                 features_tag: str = "") -> None:
        """`features_tag`: the backbone's (`Backbone.features_tag`), so vectors computed in
        int8 and in float are kept apart."""
        self.folder = (home.cache_dir / "embeddings"
                       / f"{embedder_name}-{fingerprint}{features_tag}")
        self.vectors: dict[str, np.ndarray] = {}
        names_path, vectors_path = self.folder / "names.json", self.folder / "vectors.npy"
        if names_path.exists() and vectors_path.exists():
            try:
                names = json.loads(names_path.read_text())
                matrix = np.load(vectors_path, allow_pickle=False)
                if len(names) == len(matrix):
                    self.vectors = dict(zip(names, matrix, strict=True))
            except (ValueError, OSError):
                self.vectors = {}  # a damaged cache is only a slower run
        if self.folder.is_dir():
            remove_stale_temporaries(self.folder)  # left by a killed run
            for part in self._parts():
                try:
                    with np.load(part, allow_pickle=False) as arrays:
                        names, matrix = arrays["names"].tolist(), arrays["vectors"]
                    if len(names) == len(matrix):
                        self.vectors.update(zip(names, matrix, strict=True))
                except (ValueError, OSError, KeyError):
                    continue  # a damaged part is only a slower run

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz"))

    def commit(self, fresh: dict[str, np.ndarray]) -> None:
        """Add vectors and write them at once as a part file (a later kill cannot lose them)."""
        if not fresh:
            return
        self.vectors.update(fresh)
        names = sorted(fresh)
        part = self.folder / f"part-{time.time_ns():020d}.npz"
        with atomic_path(part) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, names=np.array(names), vectors=np.stack([fresh[n] for n in names]))

    def save(self) -> None:
        """Write every vector as one .npy + .json, then remove the part files it holds."""
        if not self.vectors:
            return
        parts = self._parts()
        names = sorted(self.vectors)
        with atomic_path(self.folder / "vectors.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.stack([self.vectors[n] for n in names]), allow_pickle=False)
        with atomic_path(self.folder / "names.json") as tmp:
            tmp.write_text(json.dumps(names))
        for part in parts:
            part.unlink(missing_ok=True)


def prune_stale_embeddings(home: Home, embedder_name: str, fingerprint: str) -> list[str]:
    """Remove the embedding caches of `embedder_name`'s earlier models (and their recognition
    features): a retrained model has a new fingerprint, so its predecessor's vectors can never
    be read again, and a shop that retrains every week would otherwise keep every week's
    (about 20 MB per 6,000 images). Caches of other embedders, of the current model in the
    other int8 kind (a home moved back reads them again) and of title vectors stay.
    Returns the names of the folders removed."""
    folder = home.cache_dir / "embeddings"
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = CACHE_FOLDER.fullmatch(entry.name)
        if (entry.is_dir() and match is not None
                and match["name"] in {embedder_name, f"recognition-{embedder_name}"}
                and match["fingerprint"] != fingerprint):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d embedding caches of earlier models: %s", len(removed),
                 ", ".join(removed))
    return removed


def _embedded_batches(
    home: Home, embedder: Embedder, names: Sequence[str], auto_crop: bool, workers: int
) -> Iterator[tuple[list[str], np.ndarray, float, float]]:
    """Yield (names, vectors, seconds reading, seconds embedding) batch by batch, in order.

    Each worker takes a whole batch from file to vectors (decode, frame, preprocess, model, pool,
    colour), `workers` batches at once: on 2 cores two batches side by side keep both cores
    busy, where one model run on every core beside separate reading threads left each waiting on
    the other (files -> vectors 0.52 -> 0.59-0.67 of the model alone with cheaper framing and
    preprocessing, benchmarks/ingest.py). Model runs that overlap take one core each
    (models/onnx_session.py): 68-76 -> 79-95 images/s on 2 cores with the int8 graph.
    An image that cannot be read (or breaks a load-time limit) is left out with a warning: one
    bad file must not cost the whole catalog its index."""

    def run(batch: list[str]) -> tuple[list[str], np.ndarray, float, float]:
        start = time.perf_counter()
        readable, framed = [], []
        for name in batch:
            try:
                framed.append(frame_piece(load_image(home.image_path(name)), auto=auto_crop))
            except ImageError as exc:
                log.warning("skipping image %s: %s", name, exc)
                continue
            readable.append(name)
        read = time.perf_counter()
        if not framed:
            return readable, np.zeros((0, 0), np.float32), read - start, 0.0
        # the framing's masks too: the query path hands the same (recommend.py `infer`)
        vectors = embedder.embed([f.image for f in framed], masks=[f.mask for f in framed])
        return readable, vectors, read - start, time.perf_counter() - read

    batches = [list(names[i : i + BATCH_SIZE]) for i in range(0, len(names), BATCH_SIZE)]
    ahead = workers + 1  # one batch queued behind those running, so no worker waits for work
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jewelrec-embed")
    try:
        queued = iter(batches)
        pending = deque(pool.submit(run, batch) for batch in islice(queued, ahead))
        while pending:
            done = pending.popleft().result()
            following = next(queued, None)
            if following is not None:
                pending.append(pool.submit(run, following))
            yield done
    finally:  # an error or Ctrl-C: the batches not started yet are dropped, not run first
        pool.shutdown(wait=True, cancel_futures=True)


def embed_images(
    home: Home,
    embedder: Embedder,
    names: Sequence[str],
    *,
    cache: EmbeddingCache | None = None,
    auto_crop: bool = True,
    progress: bool = True,
    stages: StageTimes | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Vectors for managed images, embedding only those the cache lacks (`workers` batches at
    once, default one per core)."""
    stages = stages if stages is not None else StageTimes()
    known = cache.vectors if cache else {}
    todo = [n for n in dict.fromkeys(names) if n not in known]
    bar = tqdm(total=len(todo), desc="embedding", unit="img", disable=not progress or not todo)
    fresh: dict[str, np.ndarray] = {}
    uncommitted: dict[str, np.ndarray] = {}
    workers = workers or os.cpu_count() or 1
    for batch, vectors, read_seconds, embed_seconds in _embedded_batches(
            home, embedder, todo, auto_crop, workers):
        stages.read += read_seconds
        stages.embed += embed_seconds
        fresh.update(zip(batch, vectors, strict=True))
        uncommitted.update(zip(batch, vectors, strict=True))
        if cache is not None and len(uncommitted) >= COMMIT_EVERY:
            cache.commit(uncommitted)
            uncommitted = {}
        bar.update(len(batch))
        bar.set_postfix_str(stages.describe(), refresh=False)
    bar.close()
    if cache is not None and fresh:
        cache.commit(uncommitted)
        cache.save()
    # Unreadable images (skipped while reading) have no vector, nor do files deleted since
    # their vector was cached (the index would list them, `evaluate` would fail on them).
    cached = [n for n in dict.fromkeys(names) if n not in fresh and n in known]
    gone = {n for n in cached if not home.image_path(n).is_file()}
    if gone:
        log.warning("left out %d images whose files are gone (first: %s)", len(gone),
                    ", ".join(sorted(gone)[:3]))
    return {n: (fresh[n] if n in fresh else known[n]) for n in names
            if n in fresh or (n in known and n not in gone)}


def index_rows(views: Sequence[View]) -> list[IndexRow]:
    return [
        IndexRow(p.id, image, p.type, p.price, p.brand, p.metal) for p, image in views
    ]


@contextmanager
def _dropped_unless_published(remote: Any, home: Home, building: Path) -> Iterator[None]:
    """A build's Milvus collection, dropped when the build fails or is interrupted before its
    version is published: no version names it, so nothing would ever drop it later."""
    try:
        yield
    except BaseException:
        if versions.current_version(home) == building.name.removeprefix(".building-"):
            raise  # published (retiring older versions failed after): the pointer names it
        try:
            remote.drop()
        except Exception as exc:  # noqa: BLE001 - the build's own error is the one to report
            log.warning("could not drop the unpublished Milvus collection %s: %s",
                        remote.collection, exc)
        raise


def build_index(
    home: Home,
    *,
    embedder: str | None = None,
    backend: str | None = None,
    milvus_uri: str | None = None,
    progress: bool = True,
) -> IndexReport:
    """Embed the catalog and publish a new index version; the old one serves until then. One
    index run per home at a time: a second is refused, so an older catalog's index can never
    be published over a newer one."""
    home.require_catalog()
    with home.exclusive("index"):
        return _build_index(home, embedder=embedder, backend=backend, milvus_uri=milvus_uri,
                            progress=progress)


def _build_index(
    home: Home, *, embedder: str | None, backend: str | None, milvus_uri: str | None,
    progress: bool,
) -> IndexReport:
    start = time.perf_counter()
    settings = home.settings()
    embedder_name = embedder or settings.embedder
    backend = backend or settings.backend
    milvus_uri = milvus_uri or settings.milvus_uri
    home.require_catalog()
    store = CatalogStore.open(home)
    products = store.all_products()
    if not products:
        raise home.empty_catalog()
    backbone = Backbone.for_home(home, share_cores=True)  # its workers overlap their runs
    # queries type the photo first: an index published without a loadable type head would
    # be refused by every server (minutes of embedding for nothing), so say so before any work
    classifier = load_classifier(home.models_dir, settings.classifier, backbone=backbone)
    # attributes the catalog lacks, read from the photos first: index rows carry the metal
    filled = fill_missing_attributes(home, store, products, backbone=backbone,
                                     auto_crop=settings.auto_crop, progress=progress)
    if filled.changed:
        products = store.all_products()
    model = load_embedder(home.models_dir, embedder_name, backbone=backbone)
    fingerprint = model_fingerprint(model_folder(home.models_dir, "embedder", embedder_name))
    cache = EmbeddingCache(home, embedder_name, fingerprint,
                           backbone.features_tag + framing_tag(settings.auto_crop))
    views = all_views(products)
    flagged = hygiene.excluded_views(store.meta(hygiene.META_KEY))
    excluded = sum((p.id, image) in flagged for p, image in views)
    views = [(p, image) for p, image in views if (p.id, image) not in flagged]
    stages = StageTimes()
    before = len(cache.vectors)
    with attached_to_home(home, backbone):  # backbone features `train` computed are read back
        vectors_by_name = embed_images(
            home, model, [image for _, image in views], cache=cache,
            auto_crop=settings.auto_crop, progress=progress, stages=stages,
        )
    embedded = max(0, len(cache.vectors) - before)
    skipped = [(p.id, image) for p, image in views if image not in vectors_by_name]
    if skipped:
        ids = ", ".join(dict.fromkeys(pid for pid, _ in skipped))
        log.warning("left %d unreadable images out of the index (products: %s)", len(skipped), ids)
        views = [(p, image) for p, image in views if image in vectors_by_name]
    if not views:
        flagged_note = (f" ({excluded} views flagged at ingest as placeholders or shared "
                        "photos were left out; ingest --keep-duplicates keeps them)"
                        if excluded else "")
        raise NotReadyError(f"no image of the catalog in {home.root} could be read"
                            + flagged_note)
    rows = index_rows(views)
    matrix = np.stack([vectors_by_name[image] for _, image in views]).astype(np.float32)

    with attached_to_home(home, backbone):
        recognition, reference = measure_catalog(
            home, model, [image for _, image in views], [p.id for p, _ in views], matrix,
            embedder_id=f"{embedder_name}-{fingerprint}",
            auto_crop=settings.auto_crop, progress=progress,
        )
    write_start = time.perf_counter()
    meta: dict[str, Any] = {
        "embedder": embedder_name,
        "embedder_fingerprint": fingerprint,
        "auto_crop": settings.auto_crop,  # queries frame as the photos were framed
        "precision": backbone.precision,  # what queries must compute in (snapshot.py)
        "dim": int(matrix.shape[1]),
        "backend": backend,
        "rows": len(rows),
        "types": sorted({row.type for row in rows}),  # what a decided type may be searched in
        "products": len(products),
        "hygiene_excluded": excluded,
        "predicted_attributes": filled.predicted,
        "catalog_fingerprint": store.fingerprint(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # below this best similarity a query photo is "not jewelry from this shop"
        **recognition,
    }
    # a failed build removes its folder; a full disk is named, not 'unexpected error'
    with versions.building(home) as building:
        exact = ExactIndex(matrix.shape[1])
        exact.upsert(rows, matrix)
        exact.save(building)  # kept for every backend: ground truth, and a fast local fallback
        if reference is not None:
            save_reference(building, reference)
        meta.update(write_title_vectors(home, products, building))  # for text search
        if backend == "milvus":
            if not milvus_uri:
                raise NotReadyError("the milvus backend needs --milvus-uri")
            from jewelrec.search.milvus import MilvusIndex

            collection = f"jewelrec_{building.name.removeprefix('.building-').replace('-', '_')}"
            remote = MilvusIndex(milvus_uri, collection=collection, dim=matrix.shape[1])
            with _dropped_unless_published(remote, home, building):
                remote.upsert(rows, matrix)
                remote.flush()  # durable and indexed before the pointer moves to it
                meta.update(milvus_uri=milvus_uri, milvus_collection=collection)
                version = versions.publish(home, building, meta)
        else:
            version = versions.publish(home, building, meta)
    stages.write += time.perf_counter() - write_start
    home.update_settings(embedder=embedder_name, backend=backend, milvus_uri=milvus_uri)
    prune_stale_embeddings(home, embedder_name, fingerprint)
    return IndexReport(
        version=version,
        backend=backend,
        embedder=embedder_name,
        images=len(rows),
        products=len(products),
        embedded=embedded,
        seconds=time.perf_counter() - start,
        stages=stages,
        excluded=excluded,
        predicted=filled.predicted,
        types_not_learnt=types_not_learnt(classifier, rows),
    )
