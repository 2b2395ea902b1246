"""Shared by the benchmark scripts: running `jewelrec`, the machine's state, tables, JSON.

Benchmarks run on shared machines, so every result records the load average next to the numbers:
a reader can then tell a slow machine from a slow program.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).parent / "results"


def jewelrec(*args: str | Path, quiet: bool = True) -> tuple[float, str]:
    """Run one `jewelrec` subcommand in a fresh interpreter, as an operator would; returns
    (wall seconds including start-up, stdout). A failure raises with the command's stderr."""
    command = [sys.executable, "-m", "jewelrec.cli", *map(str, args)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=quiet, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"`jewelrec {' '.join(map(str, args))}` failed "
                           f"(exit {done.returncode}): {(done.stderr or '').strip()[-2000:]}")
    return seconds, done.stdout or ""


def machine() -> dict[str, Any]:
    """What a reader needs to judge the numbers: cores, 1/5/15-minute load, Python."""
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return (f"load average {one:.1f} (5 min: {five:.1f}) on {os.cpu_count()} cores; "
            "a load above the core count means other work shared the CPU during the run")


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 of latencies given in seconds, in milliseconds (None when there are none)."""
    if not len(seconds):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2)}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json (git-ignored), with the machine's state at the end."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**data, "machine": machine(),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
