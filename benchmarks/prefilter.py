"""The prototype's search vs ExactIndex: how many results each returns under a price limit.

The prototype asked scikit-learn's NearestNeighbors(metric="cosine") for 10 neighbours and then
dropped those over the price limit, so a tight budget could return nothing. ExactIndex filters
first and ranks only what fits. Same vectors, same queries, same process.

    python benchmarks/prefilter.py                     # 16k synthetic vectors
    python benchmarks/prefilter.py --home jewelrec-data  # the vectors of a built index
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from jewelrec.search.filters import Filters
from jewelrec.search.index import ExactIndex, IndexRow, l2_normalise

K = 10


def synthetic(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered non-negative vectors (like pooled CNN features) and lognormal prices."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(200, dim)))
    vectors = np.abs(centres[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, dim)))
    prices = np.round(rng.lognormal(mean=4.0, sigma=0.8, size=n), 2)
    return l2_normalise(vectors), prices


def from_home(home: Path) -> tuple[np.ndarray, np.ndarray]:
    from jewelrec.home import Home
    from jewelrec.search import versions

    index = ExactIndex.load(versions.version_dir(Home(home)))
    return index.vectors, np.array([r.price for r in index.rows])


def timed(fn, queries) -> tuple[list, float]:
    out, times = [], []
    for q in queries:
        start = time.perf_counter()
        out.append(fn(q))
        times.append((time.perf_counter() - start) * 1000)
    return out, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="use the vectors of this home's index")
    parser.add_argument("--size", type=int, default=16_000, help="synthetic catalog size")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prefilter.json"))
    args = parser.parse_args()

    vectors, prices = from_home(args.home) if args.home else synthetic(args.size, 1280, 0)
    rng = np.random.default_rng(1)
    queries = l2_normalise(vectors[rng.integers(0, len(vectors), args.queries)]
                           + 0.05 * rng.normal(size=(args.queries, vectors.shape[1])))
    index = ExactIndex(vectors.shape[1])
    index.upsert([IndexRow(str(i), str(i), "ring", float(p)) for i, p in enumerate(prices)],
                 vectors)
    knn = NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(vectors)

    rows = []
    for quantile in (1.0, 0.5, 0.1, 0.01):
        limit = float(np.quantile(prices, quantile))

        def prototype(q, limit=limit):
            _, idx = knn.kneighbors(q[None, :])
            return [i for i in idx[0] if prices[i] <= limit]

        def exact(q, limit=limit):
            return index.search(q, K, Filters(max_price=limit))

        proto_out, proto_ms = timed(prototype, queries)
        exact_out, exact_ms = timed(exact, queries)
        rows.append({
            "price_limit": round(limit, 2),
            "share_of_catalog": quantile,
            "prototype_results": statistics.mean(len(r) for r in proto_out),
            "prototype_empty": sum(not r for r in proto_out),
            "exact_results": statistics.mean(len(r) for r in exact_out),
            "exact_empty": sum(not r for r in exact_out),
            "prototype_p50_ms": round(proto_ms, 3),
            "exact_p50_ms": round(exact_ms, 3),
            "speedup": round(proto_ms / exact_ms, 2),
        })

    print(f"{len(vectors)} vectors x {vectors.shape[1]} dims, {args.queries} queries, k={K}")
    header = (f"{'price <=':>10} {'share':>6} | {'proto results':>13} {'empty':>6} "
              f"{'p50 ms':>8} | {'exact results':>13} {'empty':>6} {'p50 ms':>8} | speed-up")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['price_limit']:>10.2f} {r['share_of_catalog']:>6.0%} | "
              f"{r['prototype_results']:>13.1f} {r['prototype_empty']:>6} "
              f"{r['prototype_p50_ms']:>8.2f} | {r['exact_results']:>13.1f} "
              f"{r['exact_empty']:>6} {r['exact_p50_ms']:>8.2f} | {r['speedup']:>6.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"vectors": len(vectors), "dim": int(vectors.shape[1]),
                                    "queries": args.queries, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
