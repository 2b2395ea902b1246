"""Load a catalog file into a data home: read rows -> validate and store images -> write products.

Three stages, each timed (DESIGN.md's reader -> mapper -> writer):

1. read: parse the file and validate every row's fields (`jewelrec.catalog.importers`).
2. images: resolve each row's image references (files beside the catalog, or URLs with
   fetch_images), decode every image to prove it is readable, and stage new ones, named by
   content (`images/<sha256[:2]>/<sha256>.<ext>`, so an image shared by several products is
   stored once), in a staging folder inside the home.
3. write: move the staged images into images/ (each an atomic rename), then add, update and
   remove products in ONE store transaction. The commit is the single point of truth: killed
   at any moment before it, the store still holds exactly the previous catalog (a few
   unreferenced image files may remain; they are harmless and reused by the next run).

Rules:
- A bad row never stops the ingest and is never half-stored: the row is reported (row number,
  id, reason) and skipped. A product already in the store whose row is rejected this time keeps
  its previous version, and `prune` does not remove it (it is still listed, just broken).
- strict=True: if any row is rejected nothing is written at all (summary.committed is False and
  the CLI exits 1).
- A catalog with no valid row (every row rejected, or none at all) changes nothing, not even
  with prune=True: summary.error says why, summary.committed is False and the CLI exits 1.
- prune=True removes products whose ids the file no longer lists, unless a row was rejected
  before its id could be read (a JSON line that does not parse, a blank id): then it removes
  nothing and summary.prune_withheld says why. Managed image files are never
  deleted by ingest: a running server or an older index version may still be using them.
- Re-ingesting an unchanged catalog writes nothing (every product counts as unchanged);
  images already seen (same file path, size and modification time, or same URL) are not read,
  decoded or downloaded again. So a remote image replaced at an unchanged URL is not noticed:
  catalogs (ShopStyle's CDN among them) give a new image a new URL. revalidate_images=True
  (--revalidate-images) asks again with a conditional request (the ETag / Last-Modified its
  server sent, kept per URL in the store): "304 not modified" costs no download, a changed
  image is stored anew.
- Remote images are downloaded `fetch_workers` at a time (default 8), with a progress bar.
- One ingest per home at a time (a lock file); readers are never blocked.
- Hygiene (catalog/hygiene.py): near-identical images on several products (placeholders on
  placeholder_min or more, shared photos below that) are reported in the summary and recorded
  in the same transaction for `jewelrec index` to leave out, unless keep_duplicates.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jewelrec.catalog.feeds import FeedOptions
from jewelrec.catalog.feeds.remote import local_catalog
from jewelrec.catalog.fetch import DEFAULT_MAX_BYTES, FetchError, fetch_conditional
from jewelrec.catalog.hygiene import META_KEY as HYGIENE_KEY
from jewelrec.catalog.hygiene import PLACEHOLDER_MIN, HygieneFindings, Signature, audit, signature
from jewelrec.catalog.importers import CatalogRow, read_catalog, validate_fields
from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore, product_hash
from jewelrec.errors import CatalogError, ImageError
from jewelrec.home import Home, atomic_write_bytes
from jewelrec.imaging.io import image_to_png_bytes, load_image, sniff_image_type
from jewelrec.links import is_http_ref

STAGING_DIR = ".ingest-staging"
LOCK_FILE = ".ingest.lock"  # what home.exclusive("ingest") locks
MAX_IMAGE_BYTES = DEFAULT_MAX_BYTES
FETCH_WORKERS = 8  # concurrent image downloads: enough to hide latency, polite to one CDN
VALIDATORS_KEY = "image_validators"  # store meta: URL -> [ETag, Last-Modified]
# Formats a browser shows as they are; any other readable image is stored re-encoded as PNG.
KEPT_FORMATS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}
DESCRIBED_REJECTIONS = 50
SHOWN_ID_CHARS = 200  # a rejected row's id as reported (a 1 MB id must not be echoed whole)
_OTHER_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^(data|file|javascript):", re.I)


@dataclass(frozen=True)
class Rejection:
    row: int
    id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageSeconds:
    reading: float = 0.0
    images: float = 0.0
    writing: float = 0.0

    def describe(self) -> str:
        return (f"read {self.reading:.1f}s, images {self.images:.1f}s, "
                f"write {self.writing:.1f}s")


@dataclass
class IngestSummary:
    catalog: str
    format: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    images_added: int = 0  # new managed image files (an image shared by products counts once)
    committed: bool = True  # False: strict mode found rejections and changed nothing
    error: str | None = None  # why nothing could be ingested (no valid row, unreadable file)
    seconds: StageSeconds = field(default_factory=StageSeconds)
    skipped: dict[str, int] = field(default_factory=dict)  # drafts etc., by reason (shop feeds)
    hygiene: HygieneFindings | None = None  # placeholders and shared photos (catalog/hygiene.py)
    prune_withheld: str | None = None  # why --prune removed nothing although asked to
    # products per currency, when the catalog (as this ingest leaves it) has more than one:
    # prices are compared as numbers, so a price range would mix them
    currencies: dict[str, int] | None = None
    # types the catalog gained or lost with this ingest: the type head knows the old ones only,
    # so `train` must run before `index` (a new type's photos would be typed as another)
    types_added: list[str] = field(default_factory=list)
    types_removed: list[str] = field(default_factory=list)
    # a plural written beside its singular ("rings" and "ring"): one type, the singular's
    types_merged: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "format": self.format,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "rejected": [r.to_dict() for r in self.rejected],
            "images_added": self.images_added,
            "committed": self.committed,
            "error": self.error,
            "seconds": {k: round(v, 3) for k, v in asdict(self.seconds).items()},
            "skipped": dict(self.skipped),
            "hygiene": self.hygiene.to_dict() if self.hygiene else None,
            "prune_withheld": self.prune_withheld,
            "currencies": self.currencies,
            "types_added": self.types_added,
            "types_removed": self.types_removed,
            "types_merged": self.types_merged,
        }

    def describe(self) -> str:
        """The human summary: counts, stage times, then one line per rejected row."""
        if self.error:
            head = f"{self.catalog}: {self.error}; nothing was changed"
        elif self.committed:
            head = (f"ingested {self.catalog} ({self.format}): {self.added} added, "
                    f"{self.updated} updated, {self.unchanged} unchanged, {self.removed} "
                    f"removed, {len(self.rejected)} rejected, {self.images_added} new images "
                    f"[{self.seconds.describe()}]")
            if self.skipped:
                reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
                head += f"\n  skipped as the shop withholds them: {reasons}"
            if self.hygiene and self.hygiene.describe():
                head += "\n" + self.hygiene.describe()
            if self.prune_withheld:
                head += f"\n  --prune removed nothing: {self.prune_withheld}"
            if self.types_merged:
                merged = ", ".join(f"{a!r} as {b!r}" for a, b in self.types_merged.items())
                head += f"\n  types written two ways were read as one: {merged}"
            if self.types_added or self.types_removed:
                changed = "; ".join(part for part in (
                    f"new: {', '.join(self.types_added)}" if self.types_added else "",
                    f"no longer sold: {', '.join(self.types_removed)}"
                    if self.types_removed else "") if part)
                head += (f"\n  the catalog's types changed ({changed}): the type classifier "
                         "learns them at train")
            if self.currencies:
                counts = ", ".join(f"{c} {n}" for c, n in self.currencies.items())
                head += (f"\n  prices in {len(self.currencies)} currencies ({counts} products): "
                         "price filters compare the numbers as they are, so keep one currency "
                         "per home (or convert the prices before ingesting)")
        else:
            head = (f"strict: {len(self.rejected)} rows of {self.catalog} rejected, "
                    "nothing was changed")
        lines = [head]
        for r in self.rejected[:DESCRIBED_REJECTIONS]:
            who = f" (id {r.id})" if r.id else ""
            lines.append(f"  row {r.row}{who}: {r.reason}")
        if len(self.rejected) > DESCRIBED_REJECTIONS:
            lines.append(f"  ... and {len(self.rejected) - DESCRIBED_REJECTIONS} more "
                         "(--json lists them all)")
        return "\n".join(lines)


def ingest(
    catalog_path: str | os.PathLike,
    home: Home | str | os.PathLike,
    *,
    strict: bool = False,
    prune: bool = False,
    fetch_images: bool = False,
    allow_private_urls: bool = False,
    progress: bool = True,
    format: str = "auto",
    feed_options: FeedOptions | None = None,
    fetch_workers: int = FETCH_WORKERS,
    revalidate_images: bool = False,
    placeholder_min: int = PLACEHOLDER_MIN,
    keep_duplicates: bool = False,
) -> IngestSummary:
    """Load `catalog_path` (a file, or an http(s) feed URL) into `home`'s store; see the module
    docstring for the rules. `format` forces a catalog format (auto: from the content).
    Placeholder images (on `placeholder_min` products or more) and photos shared by products
    are recorded for the index to leave out, unless `keep_duplicates` (catalog/hygiene.py)."""
    if placeholder_min < 2:
        raise CatalogError("the placeholder threshold must be at least 2 products")
    source = str(catalog_path)
    home = home if isinstance(home, Home) else Home(home)
    seconds = StageSeconds()
    start = time.perf_counter()
    with local_catalog(catalog_path, allow_private=allow_private_urls) as catalog_path:
        # first: a catalog that cannot be read touches no home
        parsed = read_rows(catalog_path, format, feed_options)
    summary = IngestSummary(source, parsed.format, seconds=seconds,
                            rejected=list(parsed.rejected), skipped=parsed.skipped)
    seconds.reading = time.perf_counter() - start
    if not parsed.rows:  # nothing valid: never create, prune or even lock a home for it
        return _nothing_valid(summary)

    home.ensure()  # only now: a catalog that cannot be read leaves no empty home behind
    with home.exclusive("ingest", CatalogError), _staging_folder(home) as staging:
        store = CatalogStore.open(home)
        try:
            start = time.perf_counter()
            summary.types_merged = one_spelling_per_type(parsed, store.types())
            images = ImageStager(
                home, catalog_path.resolve().parent, staging, store.image_sources(),
                fetch_images=fetch_images, allow_private_urls=allow_private_urls,
                revalidate=revalidate_images, validators=store.meta(VALIDATORS_KEY),
            )
            images.prefetch(parsed.rows, fetch_workers, progress=progress)
            products = []
            for row in tqdm(parsed.rows, desc="ingest", unit="product", disable=not progress):
                product = images.product(row)
                if isinstance(product, Rejection):
                    summary.rejected.append(product)
                else:
                    products.append(product)
            summary.rejected.sort(key=lambda r: r.row)
            seconds.images = time.perf_counter() - start
            if not products:
                return _nothing_valid(summary)

            start = time.perf_counter()
            if prune and parsed.unidentified_rows:
                summary.prune_withheld = _prune_withheld(parsed.unidentified_rows)
            types_before = set(store.types())
            _write(store, home, products, parsed.listed_ids, images, summary,
                   strict=strict, prune=prune and not summary.prune_withheld,
                   hygiene={"placeholder_min": placeholder_min, "keep": keep_duplicates})
            types_after = set(store.types())
            if types_before:  # a first ingest has no type head to outgrow
                summary.types_added = sorted(types_after - types_before)
                summary.types_removed = sorted(types_before - types_after)
            seconds.writing = time.perf_counter() - start
            return summary
        finally:
            store.close()


# -- stage 1: rows ---------------------------------------------------------------------------

def one_spelling_per_type(parsed: ParsedCatalog, stored_types: list[str]) -> dict[str, str]:
    """Rows whose type is the plural of another type of the catalog ("rings" beside "ring")
    take the singular, so one kind of piece is one type to train, filter and search by (two
    were asked about: "ring (79%) or rings (19%)?"). Returns {plural: singular} applied."""
    from jewelrec.text.query import singular  # the shopper's words read plurals the same way

    types = {row.type for row in parsed.rows} | set(stored_types)
    merged = {t: singular(t) for t in types if singular(t) in types}
    if merged:
        parsed.rows = [replace(row, type=merged.get(row.type, row.type)) for row in parsed.rows]
    return {plural: merged[plural] for plural in sorted(merged)}


@dataclass
class ParsedCatalog:
    format: str
    rows: list[CatalogRow]  # valid fields, one per id (the first), in file order
    rejected: list[Rejection]
    listed_ids: set[str]  # every id the file names, rejected rows included (for prune)
    skipped: dict[str, int] = field(default_factory=dict)  # withheld by the shop, by reason
    # rows rejected before their id could be read (a JSON line that does not parse, a blank
    # id): whichever products they describe are unknown, so prune must not remove any
    unidentified_rows: list[int] = field(default_factory=list)


def read_rows(
    catalog_path: Path, fmt: str = "auto", options: FeedOptions | None = None
) -> ParsedCatalog:
    """Parse and validate every row; the first valid row of an id wins (module docstring of
    `jewelrec.catalog.importers`). Rows the shop withholds (drafts) are only counted: not
    listed, so --prune removes a product that became a draft."""
    fmt, raw_rows = read_catalog(catalog_path, fmt, options)
    accepted: dict[str, CatalogRow] = {}
    rejected: list[Rejection] = []
    listed: set[str] = set()
    skipped: dict[str, int] = {}
    unidentified: list[int] = []
    for raw in raw_rows:
        if raw.skipped:
            skipped[raw.skipped] = skipped.get(raw.skipped, 0) + 1
            continue
        raw_id = raw.fields.get("id")
        shown_id = str(raw_id).strip() if isinstance(raw_id, str | int) else None
        shown_id = shown_id or None  # a list or an object is no id; neither is blank text
        if shown_id:
            listed.add(shown_id)
        result = raw.problem or validate_fields(raw.fields, raw.row)
        if isinstance(result, str):
            rejected.append(Rejection(raw.row, shown_id and shown_id[:SHOWN_ID_CHARS], result))
            if not shown_id:
                unidentified.append(raw.row)
            continue
        first = accepted.setdefault(result.id, result)
        if first is not result and not first.same_fields(result):
            rejected.append(Rejection(
                raw.row, result.id,
                f"duplicate id {result.id!r}: row {first.row} has this id with different fields",
            ))
    return ParsedCatalog(fmt, list(accepted.values()), rejected, listed, skipped, unidentified)


def _prune_withheld(rows: list[int]) -> str:
    """Why prune removes nothing when rows were rejected before their ids could be read."""
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return (f"row{'s' if len(rows) > 1 else ''} {shown} could not be read as far as an id, so "
            "the products the file still lists are not known; fix the rows and ingest again")


def _nothing_valid(summary: IngestSummary) -> IngestSummary:
    """Mark `summary` as failed: the catalog has no row that could be stored."""
    count = len(summary.rejected)
    summary.error = (f"no valid rows: all {count} rows were rejected" if count
                     else "the catalog lists no products")
    summary.committed = False
    return summary


# -- stage 2: images -------------------------------------------------------------------------

class ImageRejected(Exception):
    """Why one image reference cannot be used; the row that names it is rejected."""


class ImageStager:
    """Turns a row's image references into managed image names, staging new image files."""

    def __init__(
        self,
        home: Home,
        catalog_dir: Path,
        staging: Path,
        known_sources: dict[str, str],
        *,
        fetch_images: bool,
        allow_private_urls: bool,
        revalidate: bool = False,
        validators: dict[str, list[str | None]] | None = None,
    ) -> None:
        self.home = home
        self.catalog_dir = catalog_dir
        self.staging = staging
        self.known_sources = known_sources
        self.fetch_images = fetch_images
        self.allow_private_urls = allow_private_urls
        self.revalidate = revalidate
        self.validators = validators or {}  # URL -> [ETag, Last-Modified] of its last download
        self.new_validators: dict[str, list[str | None]] = {}
        self.staged: dict[str, Path] = {}  # managed name -> staged file, new this run
        self.new_sources: dict[str, str] = {}  # source key -> managed name, to remember
        self.signatures: dict[str, Signature] = {}  # of the images decoded this run (hygiene)
        self._memo: dict[str, str | ImageRejected] = {}  # per reference, this run
        self._lock = threading.Lock()  # staging, when images are fetched concurrently

    def prefetch(self, rows: list[CatalogRow], workers: int, *, progress: bool) -> None:
        """Resolve every remote image of `rows` now, `workers` downloads at a time; `product`
        then finds each result (a name or a rejection) remembered."""
        if not self.fetch_images:
            return
        urls = list(dict.fromkeys(
            ref for row in rows for ref in row.image_refs if is_http_ref(ref)))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            done = pool.map(self._resolve_quietly, urls)
            for _ in tqdm(done, total=len(urls), desc="images", unit="image",
                          disable=not progress or not urls):
                pass

    def _resolve_quietly(self, ref: str) -> None:
        with suppress(ImageRejected):
            self.managed_name(ref)

    def validators_to_keep(self) -> dict[str, list[str | None]]:
        """Validators of the URLs this run named: the earlier ones updated by new downloads."""
        merged = {**self.validators, **self.new_validators}
        return {url: merged[url] for url in self._memo if url in merged}

    def product(self, row: CatalogRow) -> Product | Rejection:
        names: list[str] = []
        for ref in row.image_refs:
            try:
                names.append(self.managed_name(ref))
            except ImageRejected as exc:
                return Rejection(row.row, row.id, str(exc))
        return Product(
            id=row.id, title=row.title, type=row.type, price=float(row.price), url=row.url,
            images=tuple(dict.fromkeys(names)), currency=row.currency, brand=row.brand,
            metal=row.metal, stone=row.stone, tags=row.tags,
        )

    def catalog_names(self) -> dict[str, str]:
        """Managed image name -> the first reference of this run's catalog that named it."""
        names: dict[str, str] = {}
        for ref, result in self._memo.items():
            if isinstance(result, str):
                names.setdefault(result, ref)
        return names

    def managed_name(self, ref: str) -> str:
        """The managed name for one reference, or ImageRejected (remembered per reference)."""
        if ref not in self._memo:
            try:
                self._memo[ref] = self._resolve(ref)
            except ImageRejected as exc:
                self._memo[ref] = exc
        result = self._memo[ref]
        if isinstance(result, ImageRejected):
            raise result
        return result

    def _resolve(self, ref: str) -> str:
        if ref.startswith("//"):  # protocol-relative, as shop pages write CDN links
            ref = f"https:{ref}"
        if is_http_ref(ref):
            return self._remote(ref)
        if _OTHER_SCHEME.match(ref):
            raise ImageRejected(
                f"image {ref!r} is neither a path relative to the catalog nor an http(s) URL"
            )
        return self._local(ref)

    def _remote(self, url: str) -> str:
        if not self.fetch_images:
            raise ImageRejected(f"remote image: rerun with --fetch-images ({url})")
        source = f"url:{url}"
        known = self._known(source)
        cached = self.validators.get(url) if known and self.revalidate else None
        if known and not cached:
            return known
        etag, last_modified = (cached + [None, None])[:2] if cached else (None, None)
        try:
            fetched = fetch_conditional(
                url, etag=etag, last_modified=last_modified,
                allow_private=self.allow_private_urls, max_bytes=MAX_IMAGE_BYTES,
            )
        except FetchError as exc:
            raise ImageRejected(f"image not fetched: {exc}") from exc
        if fetched.body is None and known:  # 304: unchanged since the last download
            return known
        if fetched.etag or fetched.last_modified:
            self.new_validators[url] = [fetched.etag, fetched.last_modified]
        return self._store(fetched.body or b"", url, source)

    def _local(self, ref: str) -> str:
        try:
            path = (self.catalog_dir / ref).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ImageRejected(f"bad image path {ref!r}: {exc}") from exc
        if not path.is_relative_to(self.catalog_dir):
            raise ImageRejected(
                f"image path escapes the catalog folder: {ref!r}: write image paths relative to "
                f"the catalog file, inside its folder {str(self.catalog_dir)!r} (or as http(s) "
                "links with --fetch-images)")
        try:
            info = path.stat()
        except FileNotFoundError as exc:
            raise ImageRejected(f"image not found: {ref!r}") from exc
        except (OSError, ValueError) as exc:
            raise ImageRejected(f"cannot read image {ref!r}: {exc}") from exc
        if not path.is_file():
            raise ImageRejected(f"image {ref!r} is not a file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageRejected(f"image {ref!r} is {info.st_size:,} bytes, over the "
                                f"{MAX_IMAGE_BYTES:,}-byte limit")
        source = f"file:{path}:{info.st_size}:{info.st_mtime_ns}"
        known = self._known(source)
        if known:
            return known
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageRejected(f"cannot read image {ref!r}: {exc.strerror or exc}") from exc
        return self._store(data, ref, source)

    def _known(self, source: str) -> str | None:
        """The managed name of a source seen by an earlier ingest, if its file is still there."""
        name = self.known_sources.get(source)
        if name and (name in self.staged or self.home.image_path(name).is_file()):
            return name
        return None

    def _store(self, data: bytes, ref: str, source: str) -> str:
        """Decode (the proof it is an image), name by content, stage if new."""
        try:
            pixels = load_image(data)
        except ImageError as exc:
            # "the photo is damaged ...", "... is 1x39000 pixels ... beyond the 20:1 limit"
            detail = str(exc).removeprefix("the photo ")
            raise ImageRejected(f"image {ref!r} {detail}") from exc
        kind = sniff_image_type(data)
        if kind in KEPT_FORMATS:
            ext = KEPT_FORMATS[kind]
        else:
            data, ext = image_to_png_bytes(pixels), "png"
        digest = hashlib.sha256(data).hexdigest()
        name = f"{digest[:2]}/{digest}.{ext}"
        self.signatures.setdefault(name, signature(pixels))
        with self._lock:
            if name not in self.staged and not self.home.image_path(name).is_file():
                staged = self.staging / name
                atomic_write_bytes(staged, data)
                self.staged[name] = staged
        self.new_sources[source] = name
        return name


# -- stage 3: write --------------------------------------------------------------------------

def _write(
    store: CatalogStore,
    home: Home,
    products: list[Product],
    listed_ids: set[str],
    images: ImageStager,
    summary: IngestSummary,
    *,
    strict: bool,
    prune: bool,
    hygiene: dict[str, Any] | None = None,
) -> None:
    if strict and summary.rejected:
        summary.committed = False
        return
    existing = store.content_hashes()
    changed: list[tuple[Product, str]] = []
    for product in products:
        content = product_hash(product)
        if product.id not in existing:
            summary.added += 1
            changed.append((product, content))
        elif existing[product.id] != content:
            summary.updated += 1
            changed.append((product, content))
        else:
            summary.unchanged += 1
    removed = sorted(set(existing) - listed_ids) if prune else []
    summary.removed = len(removed)
    referenced = {name for product in products for name in product.images}
    to_publish = [name for name in images.staged if name in referenced]
    new_sources = {s: n for s, n in images.new_sources.items() if n in referenced}
    validators = images.validators_to_keep()
    catalog = {p.id: p for p in store.all_products()}  # as it will be after this ingest
    catalog.update((p.id, p) for p in products)
    for product_id in removed:
        catalog.pop(product_id, None)
    summary.hygiene = audit(home, catalog.values(), fresh=images.signatures,
                            names=images.catalog_names(), **(hygiene or {}))
    currencies = Counter(p.currency for p in catalog.values())
    if len(currencies) > 1:
        summary.currencies = dict(currencies.most_common())
    findings = summary.hygiene.to_dict()
    if (not changed and not removed and not to_publish and not new_sources
            and validators == images.validators and findings == store.meta(HYGIENE_KEY)):
        return
    for name in to_publish:  # files first: the commit below must never name a missing image
        target = home.image_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(images.staged[name], target)
    summary.images_added = len(to_publish)
    with store.transaction() as tx:
        for product, content in changed:
            tx.upsert(product, content)
        tx.delete(removed)
        for source, name in new_sources.items():
            tx.remember_image_source(source, name)
        if validators != images.validators:
            tx.set_meta(VALIDATORS_KEY, validators)
        tx.set_meta(HYGIENE_KEY, findings)
        tx.set_meta("last_ingest", {
            "catalog": summary.catalog, "format": summary.format, "added": summary.added,
            "updated": summary.updated, "removed": summary.removed,
            "rejected": len(summary.rejected), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })


# -- staging ---------------------------------------------------------------------------------

@contextmanager
def _staging_folder(home: Home) -> Iterator[Path]:
    """home/.ingest-staging, emptied first (a killed run may have left files) and afterwards.
    Inside the home, so moving a staged image into images/ is an atomic rename."""
    staging = home.root / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
