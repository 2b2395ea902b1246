"""How fast the demo catalog is drawn: products x views in seconds and images per second.

Target: 2,000 products x 3 views in under 60 s on a 2-core machine (`jewelrec demo` draws this
before anything else). Usage: python benchmarks/synth_speed.py [--products N] [--views V]
Prints a table and writes benchmarks/results/synth_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from jewelrec.catalog.synthetic import generate_catalog

RESULTS = Path(__file__).parent / "results" / "synth_speed.json"


def cpu_used() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu_before = time.perf_counter(), cpu_used()
        generate_catalog(Path(tmp), products=args.products, views=args.views, seed=args.seed,
                         image_size=args.image_size, progress=False)
        seconds = time.perf_counter() - start
        cpu_seconds = cpu_used() - cpu_before
        megabytes = sum(p.stat().st_size for p in Path(tmp).rglob("*")) / 1e6
    images = args.products * args.views
    result = {
        "products": args.products, "views": args.views, "image_size": args.image_size,
        "images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1), "megabytes": round(megabytes, 1),
        "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"{'products':>9} {'views':>6} {'images':>7} {'seconds':>8} {'images/s':>9} "
          f"{'cpu s':>6} {'MB':>6}")
    print(f"{args.products:>9} {args.views:>6} {images:>7} {seconds:>8.1f} "
          f"{images / seconds:>9.1f} {cpu_seconds:>6.1f} {megabytes:>6.1f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: "
          "other work on the machine slows the wall clock, not the CPU seconds)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
