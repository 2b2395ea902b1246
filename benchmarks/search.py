"""Vector search at catalog scale: the prototype's search vs ExactIndex vs Milvus FLAT and HNSW.

Methods, on the same vectors and queries, measured in the same process (Milvus is a local server):
- sklearn: the 2019 prototype's search: NearestNeighbors(metric="cosine", algorithm="brute",
  n_neighbors=10) over image rows, then the price filter applied to those 10 (so it can return
  fewer than 10 results, several of them images of one product). Its neighbours do not depend on
  the filter, so they are computed once per query and each filter applied to them; the time of
  that one kneighbors call plus the filter is reported for every selectivity.
- exact: ExactIndex (pre-filter, numpy matrix product, one result per product).
  Everything in this process runs with --blas-threads BLAS threads (default 1): on a shared,
  loaded machine OpenBLAS's threads wait for each other (an SVD took 27 s with 2 threads and
  4 s with 1 here). exact-mt repeats ExactIndex with the library's default thread count.
- milvus-flat / milvus-hnsw: MilvusIndex on the embedded Milvus 2.3.5, a fresh server for each
  (or the server at --milvus-uri), with MilvusIndex's HNSW defaults unless told otherwise.

Data: synthetic vectors shaped like jewelrec's catalog embeddings, whose statistics were measured
on EfficientNet-Lite0 pooled features of the real jewelry photos: 1280-d, non-negative, about half
exactly zero (ReLU), mean 0.19, mean pairwise cosine 0.32 (= 1/pi, what ReLU of zero-mean
features gives). So each raw vector is ReLU(scale * (centre + product offset + view noise)),
with a per-dimension scale drawn lognormal (some channels are far more active than others),
300 cluster centres (styles), 4 photos per product, shopper queries a noisier photo of a
catalog product. Raw vectors then go through jewelrec's own projection (L2, centre, PCA to 256
fitted on 2048 photos, L2: jewelrec.models.backbone), so the index sees what it would in use.
Prices are lognormal per product; the price filter keeps 100%, 10% or 1% of the rows.

Columns: p50/p95 latency of one query, queries/s (one client, sequential), recall@10 of distinct
products against ExactIndex with the same filter, results returned per query, the memory the
index holds (allocated building it in this process, by tracemalloc; for Milvus the server's
resident-set growth from a fresh start), the extra peak one query needs (in-process methods),
speed = sklearn p50 / method p50.

Also: Recall@K of float16 storage and of PCA-256 against float32 1280-d (centred) cosine.

The full run took 25 minutes on a shared 2-core machine (load 4-10), 16 of them Milvus building
the 1M-vector HNSW graph (its one index node builds segment after segment); peak memory was about
2.5 GB in this process plus 2.3 GB in the Milvus server. --hnsw-ef-construction 100 builds about
40% faster, at a recall cost on filtered queries (see MilvusIndex).

    python benchmarks/search.py                        # 16k, 100k, 1M vectors
    python benchmarks/search.py --sizes 16k,100k       # about 4 minutes
    python benchmarks/search.py --milvus-uri http://host:19530   # an existing server
    python benchmarks/search.py --no-milvus
"""

from __future__ import annotations

import argparse
import gc
import inspect
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import load_note, percentiles_ms, print_table, write_results
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_info, threadpool_limits

from jewelrec.errors import JewelrecError
from jewelrec.models.backbone import RetrievalSettings, fit_retrieval, project
from jewelrec.search.filters import Filters
from jewelrec.search.index import ExactIndex, IndexRow
from jewelrec.search.milvus import MilvusIndex

K = 10
RAW_DIM = 1280
CLUSTERS = 300
IMAGES_PER_PRODUCT = 4
PRODUCT_SPREAD = 0.5  # a product's offset from its style centre, in units of the channel scale
VIEW_NOISE = 0.35  # between two catalog photos of one product
QUERY_NOISE = 0.5  # a shopper's photo is further from the catalog photos
CHUNK_PRODUCTS = 10_000  # generated (and seeded) in chunks: a smaller size is a prefix
PCA_FIT_IMAGES = 2048  # as jewelrec.models.backbone.PCA_FIT_IMAGES
SELECTIVITIES = (1.0, 0.1, 0.01)
TYPES = ("earring", "necklace", "ring", "bracelet")
LARGE = 500_000  # from this size on: fewer queries
PRECISION_ROWS = 100_000  # rows for the float16 / PCA recall experiment
MILVUS_METHODS = ("milvus-flat", "milvus-hnsw")
HNSW_DEFAULTS = {name: inspect.signature(MilvusIndex).parameters[name].default
                 for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef")}
BLAS_DEFAULT_THREADS = max((p["num_threads"] for p in threadpool_info()), default=1)


# -- synthetic catalog -------------------------------------------------------------------
@dataclass(frozen=True)
class Styles:
    scale: np.ndarray  # (RAW_DIM,) how active each channel is
    centres: np.ndarray  # (CLUSTERS, RAW_DIM)


def make_styles(seed: int) -> Styles:
    rng = np.random.default_rng([seed, 0])
    scale = rng.lognormal(mean=-1.1, sigma=0.7, size=RAW_DIM).astype(np.float32)
    centres = rng.standard_normal((CLUSTERS, RAW_DIM), dtype=np.float32)
    return Styles(scale, centres)


def product_chunk(styles: Styles, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """(latent (P, RAW_DIM) before scaling and ReLU, style (P,), price (P,)) of one chunk."""
    rng = np.random.default_rng([seed, 1, chunk])
    style = rng.integers(0, CLUSTERS, CHUNK_PRODUCTS)
    offsets = rng.standard_normal((CHUNK_PRODUCTS, RAW_DIM), dtype=np.float32)
    latent = styles.centres[style] + PRODUCT_SPREAD * offsets
    price = np.round(rng.lognormal(mean=4.0, sigma=0.8, size=CHUNK_PRODUCTS), 2)
    return latent, style, price


def photos(styles: Styles, latent: np.ndarray, noise: float, rng: np.random.Generator,
           copies: int = 1) -> np.ndarray:
    """Raw 1280-d features of `copies` photos of each latent product."""
    base = np.repeat(latent, copies, axis=0)
    base += noise * rng.standard_normal(base.shape, dtype=np.float32)
    return np.maximum(base * styles.scale, 0.0, out=base)


@dataclass
class Catalog:
    vectors: np.ndarray  # (rows, 256) unit float32
    rows: list[IndexRow]
    prices: np.ndarray  # per row
    queries: dict[int, np.ndarray] = field(default_factory=dict)  # size -> (Q, 256)


def raw_catalog(styles: Styles, seed: int, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray]]:
    """Chunks of (raw photo features, style per photo, price per photo), `rows` photos in all."""
    products = -(-rows // IMAGES_PER_PRODUCT)
    for chunk in range(-(-products // CHUNK_PRODUCTS)):
        latent, style, price = product_chunk(styles, seed, chunk)
        take = min(CHUNK_PRODUCTS, products - chunk * CHUNK_PRODUCTS)
        rng = np.random.default_rng([seed, 2, chunk])
        raw = photos(styles, latent[:take], VIEW_NOISE, rng, IMAGES_PER_PRODUCT)
        yield (raw, np.repeat(style[:take], IMAGES_PER_PRODUCT),
               np.repeat(price[:take], IMAGES_PER_PRODUCT))


def raw_queries(styles: Styles, seed: int, products: int, count: int) -> np.ndarray:
    """Shopper photos of `count` random products among the first `products`."""
    rng = np.random.default_rng([seed, 3, products])
    chosen = np.sort(rng.choice(products, size=count, replace=False))
    out = []
    for chunk in np.unique(chosen // CHUNK_PRODUCTS):
        latent, _, _ = product_chunk(styles, seed, int(chunk))
        local = chosen[chosen // CHUNK_PRODUCTS == chunk] % CHUNK_PRODUCTS
        out.append(photos(styles, latent[local], QUERY_NOISE, rng))
    return np.concatenate(out)[rng.permutation(count)]


def build_catalog(seed: int, rows: int, keep_raw: int
                  ) -> tuple[Catalog, dict[str, np.ndarray], Styles, np.ndarray]:
    """The projected catalog, its projection, its styles, and the first `keep_raw` raw rows."""
    styles = make_styles(seed)
    first, _, _ = next(raw_catalog(styles, seed, PCA_FIT_IMAGES))
    projection = fit_retrieval(first[:PCA_FIT_IMAGES], RetrievalSettings())
    vectors = np.empty((rows, projection["projection"].shape[1]), dtype=np.float32)
    kept_raw = np.empty((min(keep_raw, rows), RAW_DIM), dtype=np.float32)
    prices = np.empty(rows)
    index_rows: list[IndexRow] = []
    at = 0
    for raw, style, price in raw_catalog(styles, seed, rows):
        take = min(len(raw), rows - at)
        vectors[at:at + take] = project(raw[:take], projection)
        if at < len(kept_raw):
            kept_raw[at:at + take] = raw[:len(kept_raw) - at]
        prices[at:at + take] = price[:take]
        for i in range(take):
            product = (at + i) // IMAGES_PER_PRODUCT
            index_rows.append(IndexRow(
                f"P{product:07d}", f"P{product:07d}_{(at + i) % IMAGES_PER_PRODUCT}.jpg",
                TYPES[style[i] % 4], float(price[i]),
            ))
        at += take
    return Catalog(vectors, index_rows, prices), projection, styles, kept_raw


# -- measuring -------------------------------------------------------------------------------
def rss(pid: int | str = "self") -> int | None:
    """Resident set size in bytes (Linux /proc), None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


@dataclass
class Row:
    size: int
    selectivity: float
    method: str
    queries: int
    p50_ms: float | None
    p95_ms: float | None
    qps: float | None
    recall_at_10: float | None
    results_per_query: float
    products_per_query: float
    index_mib: float | None
    query_peak_mib: float | None
    speed_vs_sklearn: float | None = None


Result = list[tuple[str, str]]  # (product_id, image) per result


def timed(search: Callable[[np.ndarray], Result], queries: np.ndarray,
          warmup: int = 3) -> tuple[list[float], list[Result]]:
    for query in queries[:warmup]:
        search(query)
    seconds, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - start)
    return seconds, results


def summarise(size: int, selectivity: float, method: str, seconds: Sequence[float],
              results: list[Result], truth: list[set[str]], index_bytes: int | None,
              peak_bytes: int | None) -> Row:
    wanted = sum(len(t) for t in truth)
    found = sum(len(t & {pid for pid, _ in r}) for t, r in zip(truth, results, strict=True))
    p = percentiles_ms(seconds)
    return Row(
        size, selectivity, method, len(seconds), p["p50_ms"], p["p95_ms"],
        round(len(seconds) / sum(seconds), 1) if seconds else None,
        round(found / wanted, 4) if wanted else None,
        round(float(np.mean([len(r) for r in results])), 2),
        round(float(np.mean([len({pid for pid, _ in r}) for r in results])), 2),
        mib(index_bytes), mib(peak_bytes),
    )


def hits_as_result(hits) -> Result:
    return [(h.product_id, h.image) for h in hits]


# -- one catalog size ---------------------------------------------------------------------------
@contextmanager
def allocated() -> Iterator[dict[str, int]]:
    """Bytes allocated (and still held) inside the block, and its peak, by tracemalloc (numpy
    reports its buffers to it). RSS deltas miss memory the allocator had already mapped."""
    out: dict[str, int] = {}
    tracemalloc.start()
    try:
        yield out
        current, peak = tracemalloc.get_traced_memory()
        out.update(held=current, peak=peak)
    finally:
        tracemalloc.stop()


def query_peak(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> int:
    """Extra memory one query needs at its peak (a separate pass: tracing slows queries)."""
    peaks = []
    for query in queries[:3]:
        with allocated() as memory:
            search(query)
        peaks.append(memory["peak"])
    return max(peaks)


def bench_size(catalog: Catalog, size: int, queries: np.ndarray,
               milvus: Milvus | None) -> list[Row]:
    vectors, rows = catalog.vectors[:size], catalog.rows[:size]
    prices = catalog.prices[:size]
    filters = {s: Filters.build(max_price=float(np.quantile(prices, s))) for s in SELECTIVITIES}
    with allocated() as memory:
        exact = ExactIndex(vectors.shape[1])
        exact.upsert(rows, vectors)
    truth = {s: [{h.product_id for h in exact.search(q, K, f)} for q in queries]
             for s, f in filters.items()}
    out = bench_sklearn(rows, vectors, prices, queries, filters, truth)
    out += bench_exact(exact, memory["held"], queries, filters, truth)
    del exact
    gc.collect()
    if milvus is not None:
        for method in MILVUS_METHODS:
            out += milvus.bench(method, size, rows, vectors, queries, filters, truth)
    sklearn_p50 = {r.selectivity: r.p50_ms for r in out if r.method == "sklearn"}
    for r in out:
        if r.p50_ms and sklearn_p50.get(r.selectivity):
            r.speed_vs_sklearn = round(sklearn_p50[r.selectivity] / r.p50_ms, 2)
    return out


def bench_sklearn(rows: list[IndexRow], vectors: np.ndarray, prices: np.ndarray,
                  queries: np.ndarray, filters: dict[float, Filters],
                  truth: dict[float, list[set[str]]]) -> list[Row]:
    """The prototype: the 10 nearest image rows, then the price filter on those."""
    with allocated() as memory:
        nn = NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute")
        nn.fit(vectors.copy())  # its own copy, as ExactIndex holds one
    peak = query_peak(lambda q: nn.kneighbors(q[None]), queries)
    seconds, neighbours = timed(lambda q: nn.kneighbors(q[None], return_distance=False)[0],
                                queries)
    out = []
    for s, f in filters.items():
        filtered_seconds, results = [], []
        for took, found in zip(seconds, neighbours, strict=True):
            start = time.perf_counter()
            kept = [(rows[i].product_id, rows[i].image) for i in found if prices[i] <= f.max_price]
            filtered_seconds.append(took + time.perf_counter() - start)
            results.append(kept)
        out.append(summarise(len(rows), s, "sklearn", filtered_seconds, results, truth[s],
                             memory["held"], peak))
    return out


def bench_exact(exact: ExactIndex, held: int, queries: np.ndarray, filters: dict[float, Filters],
                truth: dict[float, list[set[str]]]) -> list[Row]:
    out = []
    for method, threads in (("exact", None), ("exact-mt", BLAS_DEFAULT_THREADS)):
        for s, f in filters.items():
            def search(q: np.ndarray, f: Filters = f) -> Result:
                return hits_as_result(exact.search(q, K, f))

            with threadpool_limits(limits=threads):
                peak = query_peak(search, queries)
                seconds, results = timed(search, queries)
            out.append(summarise(len(exact), s, method, seconds, results, truth[s], held, peak))
    return out


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else max(0, after - before)


# -- Milvus ------------------------------------------------------------------------------------
class Milvus:
    """Runs each MilvusIndex method on a fresh embedded server (clean memory baseline, nothing
    left over from the previous collection), or on the server at `uri`."""

    def __init__(self, uri: str | None, hnsw: dict[str, int]) -> None:
        self.uri = uri
        self.hnsw = hnsw
        self.build_seconds: dict[str, float] = {}
        self.failure: str | None = None

    @contextmanager
    def server(self) -> Iterator[tuple[str, int | None]]:
        """(uri, server pid or None)."""
        if self.uri:
            yield self.uri, None
            return
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from milvus_server import embedded_milvus

        with tempfile.TemporaryDirectory(prefix="jewelrec-bench-milvus-",
                                         ignore_cleanup_errors=True) as base:
            with embedded_milvus(Path(base)) as running:
                yield running.uri, running.pid

    def bench(self, method: str, size: int, rows: list[IndexRow], vectors: np.ndarray,
              queries: np.ndarray, filters: dict[float, Filters],
              truth: dict[float, list[set[str]]]) -> list[Row]:
        if self.failure:
            return []
        try:
            with self.server() as (uri, pid):
                return self._bench(uri, pid, method, size, rows, vectors, queries, filters,
                                   truth)
        except (ImportError, OSError, RuntimeError, TimeoutError, JewelrecError) as error:
            self.failure = f"Milvus skipped from {method} at {size:,} vectors on: {error!r}"
            print(self.failure, flush=True)
            return []

    def _bench(self, uri: str, pid: int | None, method: str, size: int, rows: list[IndexRow],
               vectors: np.ndarray, queries: np.ndarray, filters: dict[float, Filters],
               truth: dict[float, list[set[str]]]) -> list[Row]:
        index_type = "HNSW" if method == "milvus-hnsw" else "FLAT"
        before = rss(pid) if pid else None
        start = time.perf_counter()
        index = MilvusIndex(uri, f"bench_{index_type.lower()}_{size}_{time.time_ns()}",
                            dim=vectors.shape[1], index_type=index_type, timeout_s=600,
                            **self.hnsw)
        try:
            index.upsert(rows, vectors)
            index.flush()
            self.build_seconds[f"{method}@{size}"] = round(time.perf_counter() - start, 1)
            out = []
            for s, f in filters.items():
                seconds, results = timed(lambda q, f=f: hits_as_result(index.search(q, K, f)),
                                         queries)
                held = _delta(rss(pid), before) if pid else None
                out.append(summarise(size, s, method, seconds, results, truth[s], held, None))
            return out
        finally:
            index.drop()


# -- float16 / PCA-256 against float32 1280-d ----------------------------------------------------
def precision_experiment(styles: Styles, seed: int, raw: np.ndarray,
                         queries: int) -> dict[str, Any]:
    """Recall@K of the top-K rows under cheaper storage, against float32 1280-d cosine (centred
    on the catalog mean, as the shipped projection does, so only the reduction is measured)."""
    rows = len(raw)
    raw_q = raw_queries(styles, seed, rows // IMAGES_PER_PRODUCT, queries)
    centred = fit_retrieval(raw[:PCA_FIT_IMAGES], RetrievalSettings(pca_dim=None))
    reduced = fit_retrieval(raw[:PCA_FIT_IMAGES], RetrievalSettings())
    full, full_q = project(raw, centred), project(raw_q, centred)
    small, small_q = project(raw, reduced), project(raw_q, reduced)
    variants = {
        "float32 1280-d": (full, full_q),
        "float16 1280-d": (full.astype(np.float16).astype(np.float32), full_q),
        "float32 PCA-256": (small, small_q),
        "float16 PCA-256": (small.astype(np.float16).astype(np.float32), small_q),
    }
    ks = (1, 10, 100)
    reference = _top_rows(full @ full_q.T, max(ks))
    table = []
    for name, (x, q) in variants.items():
        top = _top_rows(x @ q.T, max(ks))
        recall = {f"recall@{k}": round(float(np.mean([
            len(set(top[:k, j]) & set(reference[:k, j])) / k for j in range(q.shape[0])
        ])), 4) for k in ks}
        bytes_per_vector = x.shape[1] * (2 if "float16" in name else 4)
        table.append({"variant": name, "bytes_per_vector": bytes_per_vector, **recall})
    # how much of the centred unit vectors' variance the catalog's 256 directions keep
    sample = full[:20_000] - full[:20_000].mean(axis=0)
    kept = float((sample @ reduced["projection"]).var(axis=0).sum() / sample.var(axis=0).sum())
    return {"rows": rows, "queries": queries, "table": table,
            "pca_256_variance_kept": round(kept, 3)}


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """(k, Q) row indices of the k highest scores per column, best first."""
    top = np.argpartition(-scores, k - 1, axis=0)[:k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=0), axis=0)
    return np.take_along_axis(top, order, axis=0)


# -- main -------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    return int(float(number) * factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16k,100k,1M",
                        help="catalog sizes in vectors, comma-separated (default 16k,100k,1M)")
    parser.add_argument("--queries", type=int, default=200,
                        help=f"queries per size (a fifth of that from {LARGE:,} vectors on)")
    parser.add_argument("--hnsw-m", type=int, default=HNSW_DEFAULTS["hnsw_m"])
    parser.add_argument("--hnsw-ef-construction", type=int,
                        default=HNSW_DEFAULTS["hnsw_ef_construction"])
    parser.add_argument("--hnsw-ef", type=int, default=HNSW_DEFAULTS["hnsw_ef"],
                        help="search-time candidates (raised to the rows fetched per query)")
    parser.add_argument("--milvus-uri", help="use this Milvus server instead of the embedded one")
    parser.add_argument("--no-milvus", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for this process (0: the library's default)")
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads or None):
        run(args)


def run(args: argparse.Namespace) -> None:
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    began = time.perf_counter()

    start = time.perf_counter()
    catalog, projection, styles, raw = build_catalog(args.seed, max(sizes), PRECISION_ROWS)
    generate_seconds = round(time.perf_counter() - start, 1)
    print(f"generated {max(sizes):,} vectors in {generate_seconds} s", flush=True)

    precision_rows = len(raw)
    precision = precision_experiment(styles, args.seed, raw, 200)
    del raw

    hnsw = {"hnsw_m": args.hnsw_m, "hnsw_ef_construction": args.hnsw_ef_construction,
            "hnsw_ef": args.hnsw_ef}
    milvus = None if args.no_milvus else Milvus(args.milvus_uri, hnsw)
    rows: list[Row] = []
    for size in sizes:
        count = args.queries if size < LARGE else max(10, args.queries // 5)
        queries = project(raw_queries(styles, args.seed, size // IMAGES_PER_PRODUCT, count),
                          projection)
        start = time.perf_counter()
        measured = bench_size(catalog, size, queries, milvus)
        rows += measured
        print(f"{size:,} vectors: {time.perf_counter() - start:.0f} s", flush=True)
        _print_rows(measured)

    print()
    print(f"All sizes ({load_note()}):")
    _print_rows(rows)
    print()
    print(f"Stored precision vs float32 1280-d, {precision_rows:,} rows, top-K rows:")
    print_table(["variant", "bytes", "recall@1", "recall@10", "recall@100"],
                [[r["variant"], r["bytes_per_vector"], r["recall@1"], r["recall@10"],
                  r["recall@100"]] for r in precision["table"]])
    if milvus:
        print("Milvus build (create, insert, flush, index, load) seconds:", milvus.build_seconds)
    targets = _targets(rows)
    for line in targets:
        print(line)
    path = write_results("search", {
        "k": K, "sizes": sizes, "blas_threads": args.blas_threads or BLAS_DEFAULT_THREADS,
        "hnsw": hnsw,
        "data": {"raw_dim": RAW_DIM, "dim": int(catalog.vectors.shape[1]), "clusters": CLUSTERS,
                 "images_per_product": IMAGES_PER_PRODUCT, "seed": args.seed,
                 "generate_seconds": generate_seconds, "stats": _stats(styles, args.seed)},
        "rows": [asdict(r) for r in rows],
        "milvus_build_seconds": milvus.build_seconds if milvus else None,
        "milvus_failure": milvus.failure if milvus else "--no-milvus",
        "precision": precision, "targets": targets,
        "total_seconds": round(time.perf_counter() - began, 1),
    })
    print(f"wrote {path} in {time.perf_counter() - began:.0f} s")


def _print_rows(rows: list[Row]) -> None:
    print_table(
        ["size", "kept", "method", "p50 ms", "p95 ms", "q/s", "recall@10", "results/q",
         "index MiB", "peak MiB", "x sklearn"],
        [[f"{r.size:,}", f"{r.selectivity:.0%}", r.method, r.p50_ms, r.p95_ms, r.qps,
          r.recall_at_10, r.results_per_query, r.index_mib, r.query_peak_mib,
          r.speed_vs_sklearn] for r in rows],
    )


def _targets(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        if r.method == "exact" and r.size == 100_000 and r.selectivity < 1:
            verdict = "meets" if r.p50_ms is not None and r.p50_ms <= 10 else "misses"
            lines.append(f"target ExactIndex filtered top-10, 100k x 256, p50 <= 10 ms: "
                         f"{verdict} at {r.selectivity:.0%} kept ({r.p50_ms} ms)")
        if r.method == "milvus-hnsw" and r.size == 1_000_000:
            verdict = "meets" if (r.recall_at_10 or 0) >= 0.95 else "misses"
            lines.append(f"target Milvus HNSW recall@10 >= 0.95 at 1M: {verdict} at "
                         f"{r.selectivity:.0%} kept ({r.recall_at_10})")
    return lines


def _stats(styles: Styles, seed: int) -> dict[str, float]:
    """The raw synthetic features' statistics, to compare with the real ones in the docstring."""
    raw, _, _ = next(raw_catalog(styles, seed, 2000))
    raw = raw[:2000]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cos = unit @ unit.T
    upper = cos[np.triu_indices(len(raw), 1)]
    return {"zero_fraction": round(float((raw == 0).mean()), 3),
            "mean": round(float(raw.mean()), 3), "max": round(float(raw.max()), 2),
            "pairwise_cosine_mean": round(float(upper.mean()), 3),
            "pairwise_cosine_p5": round(float(np.percentile(upper, 5)), 3),
            "pairwise_cosine_p95": round(float(np.percentile(upper, 95)), 3)}


if __name__ == "__main__":
    main()
