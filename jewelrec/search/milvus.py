"""MilvusIndex: the Index protocol on a Milvus server, for catalogs that outgrow one process.

Same answers as ExactIndex: vectors are L2-normalised and ranked by inner product (= cosine),
filters are applied before ranking, and each product appears once, with its best image.

- Milvus 2.3 has no grouping search, so one-result-per-product is done here: ask for more rows
  than products wanted, keep each product's first (best) row, and if images of the same products
  crowded out the others, ask again for the products not yet seen, with a wider window, until k
  products are found or the filtered rows run out.
- Filters compile to a Milvus boolean expression in which every string is a fully escaped
  literal, so no catalog value (a brand like `O"Brien's`) can break or change the expression.
- Writes end with one strongly consistent read, so every later search (in this process or any
  other) sees them, while searches themselves use a cheaper level: a "Strong" search waits for the
  server's next time tick, about 200 ms. (pymilvus's "Session" level misses deletes.)
- HNSW upserts are flushed and wait for the graph to be built and loaded: unsealed rows are
  searched through a coarse interim index whose recall is far below HNSW's.
- Every pymilvus/gRPC failure becomes a BackendUnavailableError naming the server: no
  traceback for users, and a 503 the server's clients may retry (not the shopper's 400).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from jewelrec.errors import BackendUnavailableError, JewelrecError, NotReadyError
from jewelrec.search.filters import Filters
from jewelrec.search.index import Hit, IndexRow, l2_normalise

IndexType = Literal["FLAT", "HNSW"]
INDEX_TYPES = ("FLAT", "HNSW")

VECTOR_FIELD = "vector"
TEXT_FIELDS = ("product_id", "image", "type", "brand", "metal")
MAX_TEXT_BYTES = 65_535  # Milvus's largest VARCHAR; the limit costs nothing when unused
MAX_TOPK = 16_384  # Milvus rejects a larger limit per search
INSERT_BATCH_BYTES = 16 * 2**20  # well under the server's 64 MiB gRPC message limit
DELETE_BATCH = 1_000  # product ids per delete expression
BULK_ROWS = 10_000  # upserts this large are sealed (flushed) before returning
CONNECT_TIMEOUT_S = 10.0
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")

# pymilvus logs every failed call (and reconnection attempt) with a traceback before raising;
# here the failure reaches the caller as a JewelrecError instead, so those logs are silenced
# once pymilvus is imported (its import configures them at WARNING/INFO).
PYMILVUS_LOGGERS = ("pymilvus", "pymilvus.milvus_client")


# -- filters -> expression -------------------------------------------------------------------
def milvus_string(value: str) -> str:
    """A double-quoted Milvus string literal holding exactly `value`.

    Milvus unquotes literals with Go's rules, so backslash and double quote are escaped and
    everything outside printable ASCII is written as a \\u/\\U code point: nothing inside can end
    the literal early, and newlines or control characters cannot confuse the parser.
    """
    out = ['"']
    for char in value:
        code = ord(char)
        if char in '\\"':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise JewelrecError(f"{value!r} is not valid Unicode (a lone surrogate)")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def milvus_number(value: float) -> str:
    """A float literal without exponent notation (exact: round-trips to the same double)."""
    return np.format_float_positional(float(value), unique=True, trim="0")


def _string_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(milvus_string(v) for v in sorted(values)) + "]"


def filters_to_milvus_expr(filters: Filters | None) -> str:
    """Filters as a Milvus boolean expression; "" means no filter (every row)."""
    if filters is None:
        return ""
    parts: list[str] = []
    if filters.min_price is not None:
        parts.append(f"price >= {milvus_number(filters.min_price)}")
    if filters.max_price is not None:
        parts.append(f"price <= {milvus_number(filters.max_price)}")
    for field, values in (("type", filters.types), ("brand", filters.brands),
                          ("metal", filters.metals)):
        if values:
            parts.append(f"{field} in {_string_list(values)}")
    if filters.exclude_ids:
        parts.append(f"product_id not in {_string_list(filters.exclude_ids)}")
    return " and ".join(f"({p})" for p in parts)


def _excluding(expr: str, product_ids: Iterable[str]) -> str:
    ids = list(product_ids)
    if not ids:
        return expr
    exclusion = f"(product_id not in {_string_list(ids)})"
    return f"{expr} and {exclusion}" if expr else exclusion


# -- connection ----------------------------------------------------------------------------------
def normalise_uri(uri: str) -> str:
    """http(s)://host:port; a bare host:port gets http://."""
    uri = (uri or "").strip()
    if not uri:
        raise JewelrecError("no Milvus URI given (expected e.g. http://localhost:19530)")
    if "://" not in uri:
        uri = "http://" + uri
    if not uri.startswith(("http://", "https://")):
        raise JewelrecError(f"unsupported Milvus URI {uri!r}: use http://host:port or https://")
    return uri


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None)
    if isinstance(message, str) and message:
        return message
    details = getattr(error, "details", None)
    if callable(details):
        return str(details())
    return str(error) or type(error).__name__


@contextmanager
def _milvus_errors(uri: str, action: str) -> Iterator[None]:
    import grpc
    from pymilvus import MilvusException  # imported late: only the milvus backend needs it

    try:
        yield
    except (MilvusException, grpc.RpcError) as error:
        raise BackendUnavailableError(
            f"Milvus at {uri} could not {action}: {_reason(error)}") from error


def drop_collection(uri: str, collection: str, *, timeout_s: float = 60.0) -> bool:
    """Delete `collection` on the server at `uri` if it is there (a retired index version's);
    True when something was dropped. Unlike opening a MilvusIndex, never creates anything."""
    if not NAME_PATTERN.fullmatch(collection):
        raise JewelrecError(f"invalid Milvus collection name {collection!r}")
    client = _open_client(normalise_uri(uri))
    if not client.has_collection(collection, timeout=timeout_s):
        return False
    client.drop_collection(collection, timeout=timeout_s)
    return True


def _open_client(uri: str) -> Any:
    from pymilvus import MilvusClient

    for name in PYMILVUS_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with _milvus_errors(uri, "be reached (is the server running?)"):
        return MilvusClient(uri=uri, timeout=CONNECT_TIMEOUT_S)


class MilvusIndex:
    """Image rows in one Milvus collection: the vector plus the attributes filters need."""

    backend = "milvus"

    def __init__(
        self,
        uri: str,
        collection: str = "jewelrec",
        *,
        dim: int,
        index_type: IndexType = "FLAT",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef: int = 128,
        consistency_level: str = "Bounded",
        timeout_s: float = 60.0,
    ) -> None:
        """Attach to `collection`, creating it (with its vector index) when it does not exist.

        An existing collection must match `dim` and `index_type`. `hnsw_ef` is the search-time
        candidate list (raised to the number of rows fetched when that is larger).
        efConstruction 200, not a cheaper 100: with a price filter keeping 10% of 100k
        benchmark vectors, recall@10 was 0.96 against 0.91 (a larger ef did not make up for
        it), for a build 1.65x longer (benchmarks/search.py).
        """
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if not NAME_PATTERN.fullmatch(collection):
            raise JewelrecError(
                f"invalid Milvus collection name {collection!r}: use letters, digits and _"
            )
        self.uri = normalise_uri(uri)
        self.collection = collection
        self.dim = int(dim)
        self.index_type: IndexType = index_type
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef = hnsw_ef
        self.consistency_level = consistency_level
        self.timeout_s = timeout_s
        self._client = _open_client(self.uri)
        with self._errors("open the collection"):
            if self._client.has_collection(collection, timeout=timeout_s):
                self._check_existing()
            else:
                self._create()
            self._client.load_collection(collection, timeout=timeout_s)
        self._sync()

    @classmethod
    def connect(
        cls, uri: str, collection: str = "jewelrec", **options: Any
    ) -> MilvusIndex:
        """Attach to a collection built earlier; dimension and index type come from the server."""
        uri = normalise_uri(uri)
        client = _open_client(uri)
        with _milvus_errors(uri, f"open collection {collection!r}"):
            if not client.has_collection(collection, timeout=CONNECT_TIMEOUT_S):
                raise NotReadyError(
                    f"Milvus at {uri} has no collection {collection!r}: "
                    "rebuild the index with `jewelrec index --backend milvus`"
                )
            dim = _vector_dim(client.describe_collection(collection, timeout=CONNECT_TIMEOUT_S))
            index = client.describe_index(collection, VECTOR_FIELD, timeout=CONNECT_TIMEOUT_S)
        index_type = (index or {}).get("index_type", "FLAT")
        if index_type not in INDEX_TYPES:
            raise JewelrecError(
                f"collection {collection!r} on {uri} has a {index_type} index; "
                f"jewelrec reads {' or '.join(INDEX_TYPES)}"
            )
        if index_type == "HNSW":
            options.setdefault("hnsw_m", int(index.get("M", 16)))
            options.setdefault("hnsw_ef_construction", int(index.get("efConstruction", 200)))
        return cls(uri, collection, dim=dim, index_type=index_type, **options)

    # -- schema ------------------------------------------------------------------------------
    def _create(self) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        for name in TEXT_FIELDS:
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        params = (
            {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
            if self.index_type == "HNSW" else {}
        )
        index_params.add_index(
            field_name=VECTOR_FIELD, index_type=self.index_type, metric_type="IP", params=params
        )
        self._client.create_collection(
            self.collection, schema=schema, index_params=index_params,
            consistency_level="Strong", timeout=self.timeout_s,
        )

    def _check_existing(self) -> None:
        info = self._client.describe_collection(self.collection, timeout=self.timeout_s)
        found_dim = _vector_dim(info)
        if found_dim != self.dim:
            raise JewelrecError(
                f"collection {self.collection!r} on {self.uri} holds {found_dim}-d vectors, "
                f"not {self.dim}-d: choose another collection name or drop it"
            )
        index = self._client.describe_index(self.collection, VECTOR_FIELD, timeout=self.timeout_s)
        found_type = (index or {}).get("index_type")
        if found_type != self.index_type:
            raise JewelrecError(
                f"collection {self.collection!r} on {self.uri} has a {found_type} index, "
                f"not {self.index_type}: use MilvusIndex.connect() to open it as it is"
            )

    def _errors(self, action: str):
        return _milvus_errors(self.uri, action)

    def _sync(self) -> int:
        """A strongly consistent count: returns once the server has applied every earlier
        write, so later (cheaper) searches see them."""
        with self._errors("count rows"):
            result = self._client.query(
                self.collection, filter="", output_fields=["count(*)"],
                consistency_level="Strong", timeout=self.timeout_s,
            )
        return int(result[0]["count(*)"])

    def __len__(self) -> int:
        return self._sync()

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None:
        """Replace every row of the given products by these rows (a delete, then an insert:
        a concurrent search can miss those products in between)."""
        vectors = l2_normalise(vectors).reshape(len(rows), self.dim)
        if not rows:
            return
        for row in rows:
            _check_text_lengths(row)
        if self._sync() > 0:
            self._delete_products({r.product_id for r in rows})
        batch = max(1, INSERT_BATCH_BYTES // (4 * self.dim + 256))
        with self._errors("insert rows"):
            for start in range(0, len(rows), batch):
                stop = start + batch
                entities = [
                    _entity(row, vector)
                    for row, vector in zip(rows[start:stop], vectors[start:stop], strict=True)
                ]
                self._client.insert(self.collection, entities, timeout=self.timeout_s)
        if self.index_type == "HNSW" or len(rows) >= BULK_ROWS:
            self.flush()
        self._sync()

    def delete(self, product_ids: Iterable[str]) -> None:
        self._delete_products(set(product_ids))
        self._sync()

    def _delete_products(self, product_ids: set[str]) -> None:
        ids = sorted(product_ids)
        with self._errors("delete rows"):
            for start in range(0, len(ids), DELETE_BATCH):
                expr = f"product_id in {_string_list(ids[start:start + DELETE_BATCH])}"
                self._client.delete(self.collection, filter=expr, timeout=self.timeout_s)

    def flush(self, timeout_s: float = 3600.0) -> None:
        """Seal the rows written so far. With HNSW, also wait until the server has built the
        graph over them and loaded it: until then Milvus answers for unsealed rows from a coarse
        interim IVF index (recall@10 near 0.5 on our test vectors), while FLAT is exact either
        way. The wait is about Milvus's queryCoord.updateNextTargetInterval (default 10 s)."""
        deadline = time.monotonic() + timeout_s
        with self._errors("flush and index rows"):
            self._client.flush(self.collection, timeout=timeout_s)
            while self.index_type == "HNSW" and not self._indexed_and_loaded():
                if time.monotonic() > deadline:
                    raise JewelrecError(
                        f"Milvus at {self.uri} did not finish indexing {self.collection!r} "
                        f"within {timeout_s:.0f} s"
                    )
                time.sleep(0.5)

    def _indexed_and_loaded(self) -> bool:
        """True once a query node serves every sealed segment from its vector index (Milvus
        hands a segment over only after its index is built)."""
        from pymilvus import SegmentState

        index = self._client.describe_index(self.collection, VECTOR_FIELD, timeout=self.timeout_s)
        if index.get("pending_index_rows", 0):
            return False
        sealed = {
            s.segment_id for s in self._client.list_segments(
                self.collection, states=[SegmentState.Flushed], timeout=self.timeout_s
            )
        }
        served = {
            s.segment_id
            for s in self._client.list_loaded_segments(self.collection, timeout=self.timeout_s)
            if s.index_id
        }
        return sealed <= served

    def drop(self) -> None:
        """Delete the collection on the server (an index version being retired), if it is
        still there."""
        with self._errors(f"drop collection {self.collection!r}"):
            if self._client.has_collection(self.collection, timeout=self.timeout_s):
                self._client.drop_collection(self.collection, timeout=self.timeout_s)

    # -- search ------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        if k <= 0:
            return []
        query = l2_normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        if query.shape[0] != self.dim:
            raise ValueError(f"query has {query.shape[0]} dimensions, the index {self.dim}")
        expr = filters_to_milvus_expr(filters)
        found: dict[str, Hit] = {}
        fetch = min(MAX_TOPK, max(4 * k, k + 16))
        while len(found) < k:
            # every product already found has its best row in an earlier, higher-scored window,
            # so leaving them out keeps the next window's rows in global score order
            hits = self._search_rows(query, _excluding(expr, found), fetch)
            for hit in hits:
                found.setdefault(hit.product_id, hit)
            if len(hits) < fetch:
                break  # the filtered rows are exhausted
            fetch = min(MAX_TOPK, fetch * 4)
        return list(found.values())[:k]

    def _search_rows(self, query: np.ndarray, expr: str, limit: int) -> list[Hit]:
        params: dict[str, Any] = (
            {"ef": max(self.hnsw_ef, limit)} if self.index_type == "HNSW" else {}
        )
        with self._errors("search"):
            result = self._client.search(
                self.collection, data=[query], filter=expr, limit=limit,
                output_fields=["product_id", "image"], anns_field=VECTOR_FIELD,
                search_params={"metric_type": "IP", "params": params},
                consistency_level=self.consistency_level, timeout=self.timeout_s,
            )
        return [
            Hit(hit["entity"]["product_id"], hit["entity"]["image"], float(hit["distance"]))
            for hit in result[0]
        ]


def _vector_dim(description: dict[str, Any]) -> int:
    for field in description.get("fields", []):
        if field.get("name") == VECTOR_FIELD:
            return int(field["params"]["dim"])
    raise JewelrecError(f"collection {description.get('collection_name')!r} has no vector field")


def _entity(row: IndexRow, vector: np.ndarray) -> dict[str, Any]:
    return {
        "product_id": row.product_id,
        "image": row.image,
        "type": row.type,
        "brand": row.brand or "",
        "metal": row.metal or "",
        "price": float(row.price),
        VECTOR_FIELD: vector,
    }


def _check_text_lengths(row: IndexRow) -> None:
    for name in TEXT_FIELDS:
        value = getattr(row, name) or ""
        if len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise JewelrecError(
                f"product {row.product_id[:80]!r}: {name} is longer than Milvus allows "
                f"({MAX_TEXT_BYTES} bytes)"
            )
