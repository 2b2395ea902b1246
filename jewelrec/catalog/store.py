"""The catalog store: products in SQLite (home/catalog.sqlite), read by every later stage.

Why SQLite in WAL mode: an ingest writes its whole change in ONE transaction, so the commit is
the single point of truth. Killed at any moment (even kill -9) before the commit, the store
still holds exactly the previous catalog; readers (a running web server) keep reading the last
committed state while an ingest writes, and see the new one as soon as it commits.

Readers share one connection guarded by a lock (safe from any thread); each write transaction
gets its own connection. A store that only serves queries (`recommend`, `serve`), or one on a
home we cannot write (a read-only mount, a shop's files owned by another user), is opened
read-only: no schema changes, no journal files created where SQLite cannot create them.
Managed image files are not this module's business: ingest writes them (content-addressed,
atomically) before the transaction that references them commits.

Text search: `products_fts` (SQLite FTS5, BM25 over title, brand, type, metal, stone, tags;
Porter-stemmed, so "earrings" finds "earring") holds one row per product under the product's
rowid. StoreWriter writes it together with the product row, so it changes in the same
transaction and is never out of step with the catalog; a store made before it existed gets it
built from its products the next time it is opened writable.

Predicted attributes: `jewelrec index` stores the metal / stone its attribute heads read from
the photos of products whose catalog gives none (jewelrec/fill_attributes.py) in the products'
own `metal` / `stone` columns, so filters, facets and text search work on them unchanged, and
names them in `predicted` (a JSON list). Ingest writes the catalog's own values, which replaces
predictions: a product ingested again with changes has none until the next index. A store made
before that column gets it (ALTER TABLE, in one transaction) the next time it is opened
writable; one opened read-only without it reads no predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from jewelrec.catalog.schema import Product
from jewelrec.errors import CatalogError
from jewelrec.home import Home

T = TypeVar("T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000  # readers and a second writer wait this long for a writer to finish
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    type TEXT NOT NULL,
    price REAL NOT NULL,
    currency TEXT NOT NULL,
    brand TEXT,
    url TEXT NOT NULL,
    metal TEXT,
    stone TEXT,
    tags TEXT NOT NULL,          -- JSON list of strings
    images TEXT NOT NULL,        -- JSON list of managed image names, main image first
    content_hash TEXT NOT NULL,  -- sha256 of the product's fields: what changed, and fingerprint
    predicted TEXT
);
CREATE INDEX IF NOT EXISTS products_type ON products (type);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Where a managed image came from (a file's path+size+mtime, or a URL), so re-ingesting an
-- unchanged catalog neither re-decodes nor re-downloads its images.
CREATE TABLE IF NOT EXISTS image_sources (source TEXT PRIMARY KEY, image TEXT NOT NULL);
"""
# FTS5 over the product's words (rowid = products.rowid); see the module docstring.
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS products_fts USING fts5(
    title, brand, type, metal, stone, tags, tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO products_fts (rowid, title, brand, type, metal, stone, tags)
    SELECT rowid, title, coalesce(brand, ''), type, coalesce(metal, ''), coalesce(stone, ''),
           (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(products.tags))
    FROM products;
"""
# BM25 column weights (title, brand, type, metal, stone, tags): the title says most.
_FTS_WEIGHTS = (4.0, 2.0, 2.0, 2.0, 2.0, 1.0)
_COLUMNS = "id, title, type, price, currency, brand, url, metal, stone, tags, images"
PREDICTABLE = ("metal", "stone")  # the attributes `predicted` may name


def product_hash(product: Product) -> str:
    """sha256 of every field the catalog gives (predictions left out): equal hashes, equal
    products."""
    data = product.to_dict()
    for attribute in data.pop("predicted"):
        data[attribute] = None
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CatalogStore:
    """Read access to the catalog, plus `transaction()` for the ingest that writes it."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._columns: tuple[int, str] | None = None  # (schema version, column list)
        self._cache: dict[str, tuple[int, Any]] = {}  # name -> (data version, value): cached()
        if read_only:
            self._conn = _connect_read_only(self.path)
        else:
            self._conn = _connect(self.path)
            try:
                _prepare(self._conn, self.path)
            except BaseException:
                self._conn.close()
                raise

    @classmethod
    def open(cls, home: Home | str | Path, *, read_only: bool | None = None) -> CatalogStore:
        """The home's store. Writable (and created empty if missing) by default; read-only
        when asked, or, with `read_only=None`, when the existing store cannot be written."""
        home = home if isinstance(home, Home) else Home(home)
        path = home.catalog_db
        if read_only is None:
            read_only = path.exists() and not sqlite_can_write(path)
        if read_only:
            return cls(home.require_catalog(CatalogError), read_only=True)
        try:
            home.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create the data home {home.root}: "
                               f"{exc.strerror or exc}") from exc
        return cls(path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------
    def all_products(self) -> list[Product]:
        """Every product, ordered by id."""
        rows = self._query(f"SELECT {self._product_columns()} FROM products ORDER BY id")
        return [_to_product(row) for row in rows]

    def get(self, product_id: str) -> Product | None:
        """The product with this id, as stored or in the other Unicode form of its accents: a
        catalog exported on macOS keeps "é" as e + a combining accent (NFD) while a shop's page
        writes it as one character (NFC), and both look alike in every error message."""
        forms = dict.fromkeys([product_id, unicodedata.normalize("NFC", product_id),
                               unicodedata.normalize("NFD", product_id)])
        for form in forms:
            rows = self._query(f"SELECT {self._product_columns()} FROM products WHERE id = ?",
                               (form,))
            if rows:
                return _to_product(rows[0])
        return None

    def get_many(self, ids: Iterable[str]) -> dict[str, Product]:
        """The products among `ids` that exist, keyed by id, in the order asked."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Product] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._query(
                    f"SELECT {self._product_columns()} FROM products WHERE id IN ({marks})",
                    chunk):
                found[row[0]] = _to_product(row)
        return {i: found[i] for i in wanted if i in found}

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM products")[0][0])

    def ids(self) -> list[str]:
        return [row[0] for row in self._query("SELECT id FROM products ORDER BY id")]

    def types(self) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT type FROM products ORDER BY type")]

    def content_hashes(self) -> dict[str, str]:
        """id -> content hash, for telling added, updated and unchanged products apart."""
        return dict(self._query("SELECT id, content_hash FROM products"))

    def facets(self) -> dict[str, Any]:
        """What the catalog offers to filter on: types, brands, metals, price range, currency.
        Read once per catalog version (`cached`): every filtered query asks, and the five
        queries take 76 ms under the store's lock at 50,000 products. Not to be changed."""
        return self.cached("facets", self._read_facets)

    def cached(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()`, once per version of the catalog (PRAGMA data_version changes with any
        commit, this store's own transactions included: they write on a connection of their
        own). For what queries ask of the whole catalog on every request; the answer is shared,
        so callers must not change it."""
        version = self.data_version()
        hit = self._cache.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        self._cache[name] = (version, value)
        return value

    def _read_facets(self) -> dict[str, Any]:
        def distinct(column: str) -> list[str]:
            sql = (f"SELECT DISTINCT {column} FROM products WHERE {column} IS NOT NULL "
                   f"AND {column} != '' ORDER BY {column}")
            return [row[0] for row in self._query(sql)]

        low, high = self._query("SELECT MIN(price), MAX(price) FROM products")[0]
        currencies = Counter(dict(self._query(
            "SELECT currency, COUNT(*) FROM products GROUP BY currency"
        )))
        currency = min(currencies, key=lambda c: (-currencies[c], c)) if currencies else "USD"
        return {
            "types": distinct("type"),
            "brands": distinct("brand"),
            "metals": distinct("metal"),
            "price_min": low,
            "price_max": high,
            "currency": currency,
        }

    def fingerprint(self) -> str:
        """sha256 over every (id, content hash): identifies the catalog models were trained on."""
        digest = hashlib.sha256()
        for product_id, content in self._query(
            "SELECT id, content_hash FROM products ORDER BY id"
        ):
            digest.update(f"{product_id}\0{content}\n".encode())
        return digest.hexdigest()

    def image_sources(self) -> dict[str, str]:
        """source key -> managed image name (see the image_sources table)."""
        return dict(self._query("SELECT source, image FROM image_sources"))

    def meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def distinct_words(self) -> dict[str, list[str]]:
        """The values a query's words may name: types, metals, stones, brands, tags (as
        stored), for the text query parser."""
        def distinct(column: str) -> list[str]:
            return [row[0] for row in self._query(
                f"SELECT DISTINCT {column} FROM products WHERE {column} IS NOT NULL "
                f"AND {column} != '' ORDER BY {column}"
            )]

        tags = [row[0] for row in self._query(
            "SELECT DISTINCT value FROM products, json_each(products.tags) "
            "WHERE value != '' ORDER BY value"
        )]
        return {"types": distinct("type"), "metals": distinct("metal"),
                "stones": distinct("stone"), "brands": distinct("brand"), "tags": tags}

    def has_text_index(self) -> bool:
        """Whether this store has the FTS5 table (one made before it, opened read-only, has
        not: it is built the next time the store is opened writable)."""
        return bool(self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'products_fts'"
        ))

    def search_text(
        self, terms: Iterable[str], *, where: str = "1", params: Iterable[Any] = (),
        limit: int = 100,
    ) -> list[tuple[str, float]]:
        """(id, BM25 score; higher is better) of the products matching any of `terms`, best
        first, among those passing `where` (an SQL condition on `p`, the products table;
        callers compile it from their filters with parameters, never from raw user text)."""
        words = [t for t in dict.fromkeys(terms) if t]
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        weights = ", ".join(str(w) for w in _FTS_WEIGHTS)
        rows = self._query(
            f"SELECT p.id, bm25(products_fts, {weights}) AS rank FROM products_fts "
            f"JOIN products AS p ON p.rowid = products_fts.rowid "
            f"WHERE products_fts MATCH ? AND ({where}) ORDER BY rank, p.id LIMIT ?",
            (match, *params, int(limit)),
        )
        return [(product_id, -float(rank)) for product_id, rank in rows]

    def ids_where(
        self, where: str = "1", params: Iterable[Any] = (), *, order: str = "id"
    ) -> list[str]:
        """Ids of the products passing `where` (an SQL condition on `p`, as in search_text),
        by id or (order="price") cheapest first."""
        by = {"id": "p.id", "price": "p.price, p.id"}[order]
        return [row[0] for row in self._query(
            f"SELECT p.id FROM products AS p WHERE ({where}) ORDER BY {by}", params
        )]

    def data_version(self) -> int:
        """Changes whenever another connection commits a change: tells cached catalog
        summaries (facet words) when to refresh."""
        return int(self._query("PRAGMA data_version")[0][0])

    # -- writes ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[StoreWriter]:
        """All-or-nothing writes: committed when the block ends, rolled back if it raises."""
        if self.read_only:
            raise CatalogError(f"the catalog store {self.path} was opened read-only")
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield StoreWriter(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise CatalogError(f"cannot write the catalog store {self.path}: {exc}") from exc
        finally:
            conn.close()

    def _product_columns(self) -> str:
        """The columns a product is read from: `predicted` is NULL in a store made before it
        (opened read-only, so not migrated); checked again whenever the schema changes."""
        version = int(self._query("PRAGMA schema_version")[0][0])
        cached = self._columns
        if cached is None or cached[0] != version:
            names = {row[1] for row in self._query("PRAGMA table_info(products)")}
            cached = self._columns = (
                version, f"{_COLUMNS}, {'predicted' if 'predicted' in names else 'NULL'}")
        return cached[1]

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise CatalogError(f"cannot read the catalog store {self.path}: {exc}") from exc


class StoreWriter:
    """The writes of one transaction (get one from `CatalogStore.transaction()`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def upsert(self, product: Product, content_hash: str | None = None) -> None:
        self._delete_text((product.id,))
        cursor = self._conn.execute(
            f"INSERT OR REPLACE INTO products ({_COLUMNS}, content_hash, predicted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                product.id, product.title, product.type, float(product.price), product.currency,
                product.brand, product.url, product.metal, product.stone,
                json.dumps(list(product.tags)), json.dumps(list(product.images)),
                content_hash or product_hash(product),
                _predicted_json(product.predicted),
            ),
        )
        self._write_text(cursor.lastrowid, product)

    def _stored(self, product_id: str) -> tuple[int, Product] | None:
        """The product's row id and its stored values (predictions included), read inside the
        current transaction."""
        row = self._conn.execute(
            f"SELECT rowid, {_COLUMNS}, predicted FROM products WHERE id = ?", (product_id,)
        ).fetchone()
        return None if row is None else (row[0], _to_product(row[1:]))

    def set_predicted(self, product_id: str, values: dict[str, str | None]) -> bool:
        """Store attributes read from the photo (attribute -> value; a stone of None: none
        seen) where the catalog gives none. The catalog's own values always win: the row is
        read again here, inside the transaction, so an ingest committed meanwhile is never
        overwritten. Returns whether the product changed."""
        found = self._stored(product_id)
        if found is None:
            return False
        rowid, product = found
        changes = {name: value for name, value in values.items() if name in PREDICTABLE
                   and (getattr(product, name) is None or name in product.predicted)}
        predicted = sorted(set(product.predicted) | set(changes))
        if all(getattr(product, n) == v for n, v in changes.items()) and (
                predicted == sorted(product.predicted)):
            return False  # nothing new (also when every value was the catalog's)
        return self._rewrite(rowid, product, changes, predicted)

    def clear_predicted(self, product_id: str, attributes: Iterable[str]) -> bool:
        """Forget predicted values of these attributes (the catalog's own are kept)."""
        found = self._stored(product_id)
        if found is None:
            return False
        rowid, product = found
        gone = [name for name in attributes if name in product.predicted]
        if not gone:
            return False
        return self._rewrite(rowid, product, dict.fromkeys(gone),
                             sorted(set(product.predicted) - set(gone)))

    def _rewrite(self, rowid: int, product: Product, changes: dict[str, str | None],
                 predicted: list[str]) -> bool:
        """Set predicted attribute values on one row and its text-index row."""
        updated = replace(product, predicted=tuple(predicted), **changes)
        self._conn.execute(
            "UPDATE products SET metal = ?, stone = ?, predicted = ? WHERE rowid = ?",
            (updated.metal, updated.stone, _predicted_json(updated.predicted), rowid),
        )
        self._conn.execute("DELETE FROM products_fts WHERE rowid = ?", (rowid,))
        self._write_text(rowid, updated)
        return True

    def _write_text(self, rowid: int | None, product: Product) -> None:
        """The product's text-index row, under the product's rowid."""
        self._conn.execute(
            "INSERT INTO products_fts (rowid, title, brand, type, metal, stone, tags) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rowid, product.title, product.brand or "", product.type,
             product.metal or "", product.stone or "", " ".join(product.tags)),
        )

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self._delete_text(ids)
        self._conn.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in ids])

    def _delete_text(self, ids: Iterable[str]) -> None:
        """Drop the FTS rows of these products (before their product rows change)."""
        self._conn.executemany(
            "DELETE FROM products_fts WHERE rowid = (SELECT rowid FROM products WHERE id = ?)",
            [(i,) for i in ids],
        )

    def remember_image_source(self, source: str, image: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO image_sources (source, image) VALUES (?, ?)", (source, image)
        )

    def set_meta(self, key: str, value: Any) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )


def sqlite_can_write(path: Path) -> bool:
    """Whether SQLite can write this store: the file itself, and its folder, where the WAL
    journal files live. os.access also says no on a read-only mount, even to root."""
    folder = path.parent
    return os.access(folder, os.W_OK | os.X_OK) and (
        not path.exists() or os.access(path, os.W_OK)
    )


def _connect(path: Path, uri: str | None = None) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri or path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, uri=uri is not None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. SQLite reads a WAL store through its -shm file, which it
    must create when missing; where the folder is not writable either, the store is opened as
    immutable (nobody can be writing it, since nobody can create the journal)."""
    base = "file:" + _uri_path(path) + "?mode=ro"
    conn = _connect(path, base)
    try:
        _check_ours(conn, path)
        return conn
    except CatalogError as exc:
        conn.close()
        cause = exc.__cause__
        if not (isinstance(cause, sqlite3.Error) and _is_cantopen(cause)):
            raise
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise CatalogError(
            f"the catalog store {path} has changes in {wal.name} that were never merged into it, "
            f"and {path.parent} cannot be written: run any jewelrec command once with write "
            "access to the home (that merges them), then serve it read-only"
        )
    conn = _connect(path, base + "&immutable=1")
    try:
        _check_ours(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(Path(path).absolute()), safe="/")


def _is_cantopen(exc: sqlite3.Error) -> bool:
    return str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_CANTOPEN")


def _check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """The schema version of a store opened read-only (which cannot create missing tables)."""
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )}
        row = (conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
               if "meta" in tables else None)
    except sqlite3.DatabaseError as exc:
        raise _open_error(path, exc) from exc
    if "products" not in tables:
        raise CatalogError(
            f"{path} is not a jewelrec catalog store (it has no products table); move it away "
            "or choose another --home"
        )
    _check_version(path, row)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """WAL mode and the tables, created once; refuses a file that is not our store."""
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )}
        if not ({"products", "meta", "image_sources", "products_fts"} <= tables
                and _has_column(conn, "products", "predicted")):
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                _create_missing(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _open_error(path, exc) from exc
    _check_version(path, row)


def _create_missing(conn: sqlite3.Connection) -> None:
    """Inside the caller's write transaction, the tables that are missing (looked up again:
    another process may have created them while this one waited for the write lock)."""
    tables = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )}
    # the FTS table is filled from the products already there (none in a new store): stores
    # made before text search get it here, in one transaction
    script = _SCHEMA + ("" if "products_fts" in tables else _FTS_SCHEMA)
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
    if not _has_column(conn, "products", "predicted"):  # a store made before predictions
        conn.execute("ALTER TABLE products ADD COLUMN predicted TEXT")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                  (str(SCHEMA_VERSION),))


def _check_version(path: Path, row: tuple | None) -> None:
    version = json.loads(row[0]) if row else None
    if version != SCHEMA_VERSION:
        raise CatalogError(
            f"{path} holds catalog store version {version}, this jewelrec reads version "
            f"{SCHEMA_VERSION}; re-ingest into a new --home"
        )


_SQLITE_HEADER = b"SQLite format 3\x00"


def _open_error(path: Path, exc: sqlite3.Error) -> CatalogError:
    """Why a store could not be opened, told apart by cause: only a file that really is not
    an SQLite database is "not a jewelrec catalog store" (advice: move it away); a permission
    or read-only problem says so, and the advice is about access, never about the file."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        header = b""
    except OSError as read_error:
        return CatalogError(
            f"cannot read the catalog store {path}: {read_error.strerror or read_error} "
            "(check the owner and permissions of the file and its folder)"
        )
    if header and not header.startswith(_SQLITE_HEADER) or name.startswith("SQLITE_NOTADB"):
        return CatalogError(
            f"{path} is not a jewelrec catalog store ({exc}); move it away or choose another "
            "--home"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return CatalogError(
            f"cannot open the catalog store {path} ({exc}): the file or its folder "
            f"{path.parent} is read-only or not writable by this user; give write access, or "
            "use a command that only reads (recommend, serve)"
        )
    if name.startswith("SQLITE_FULL"):
        return CatalogError(f"cannot write the catalog store {path}: the disk is full ({exc})")
    if name.startswith("SQLITE_CORRUPT"):
        return CatalogError(
            f"the catalog store {path} is damaged ({exc}); restore it from a backup or "
            "re-ingest into a new --home"
        )
    return CatalogError(f"cannot open the catalog store {path}: {exc}")


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _predicted_json(predicted: Iterable[str]) -> str | None:
    names = sorted(set(predicted))
    return json.dumps(names) if names else None


def _to_product(row: tuple) -> Product:
    (product_id, title, type_, price, currency, brand, url, metal, stone, tags, images,
     predicted) = row
    return Product(
        id=product_id, title=title, type=type_, price=float(price), url=url,
        images=tuple(json.loads(images)), currency=currency, brand=brand, metal=metal,
        stone=stone, tags=tuple(json.loads(tags)),
        predicted=tuple(json.loads(predicted)) if predicted else (),
    )
