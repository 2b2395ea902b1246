"""An onnxruntime session that can give a lone run every core and overlapping runs one core each.

Why: on 2 cores the int8 Lite0 graph at 320 px (batches of 8) ran 101 images/s as one run on
two threads, 76 on one thread, and 141 as two one-thread runs side by side: one run spreads its
operators over the cores at about 70% efficiency, and two two-thread runs at once put four
threads on two cores. Bulk embedding overlaps runs by design (one worker per core, each taking
its batch from file to vectors, jewelrec/indexing.py), so there a run that overlaps another
takes one core (files -> vectors 68-76 -> 79-95 images/s), while a run that has the machine to
itself still takes every core. The server keeps every run on every core (`share_cores=False`):
its executor's two batches overlap one's model run with the other's Python work as often as
with its model run, and sharing measured no better there (benchmarks/query.py in rounds,
three runs each way: 64 clients 0.91-0.97x the best lower level against 0.95-1.00x). The
one-thread session opens at the first overlap, so a process that never overlaps runs never pays
for it.

"Every core" means the cores this process may run on, or `$JEWELREC_MODEL_THREADS` when set:
`jewelrec serve --workers N` sets it so that N server processes do not put N x cores threads on
the cores.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from jewelrec.errors import JewelrecError

log = logging.getLogger(__name__)

THREADS_VARIABLE = "JEWELREC_MODEL_THREADS"  # threads a model run may use (default: the cores)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as `taskset` or a container sets
    it), else every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def model_threads() -> int:
    """Threads one model run may use: `$JEWELREC_MODEL_THREADS` when set (a whole number >= 1,
    else a clear error), else `available_cores()`."""
    chosen = os.environ.get(THREADS_VARIABLE, "").strip()
    if not chosen:
        return available_cores()
    if not chosen.isdigit() or int(chosen) < 1:
        raise JewelrecError(f"${THREADS_VARIABLE} should be a whole number of at least 1, "
                            f"not {chosen!r}")
    return int(chosen)


def open_session(path: Path, outputs: tuple[str, ...], threads: int | None = None):
    """An onnxruntime.InferenceSession on `path` computing on `threads` cores (default:
    `model_threads()`), its outputs checked against `outputs` (ValueError)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or model_threads()
    options.inter_op_num_threads = 1
    # Idle worker threads must sleep, not spin: spinning burns a core between runs that the
    # server's other work (decoding, segmentation, the next request) needs (benchmarks/query.py)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if tuple(o.name for o in session.get_outputs()) != outputs:
        raise ValueError(f"outputs {[o.name for o in session.get_outputs()]}, not {outputs}")
    return session


class CoreSharingSession:
    """`run` like an InferenceSession's, on every core when no other run is in flight (or
    `share_cores` is False), else on one core (a second, one-thread session on the graph)."""

    def __init__(self, path: Path, outputs: tuple[str, ...], share_cores: bool = False) -> None:
        self.path, self.outputs, self.share_cores = Path(path), outputs, share_cores
        self.cores = model_threads()
        self._wide = open_session(self.path, outputs, self.cores)
        self._narrow: Any = self._wide if self.cores == 1 else None
        self._in_flight = 0
        self._lock = threading.Lock()  # the in-flight count
        self._opening = threading.Lock()  # the one-thread session, opened once

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self._in_flight += 1
            alone = self._in_flight == 1 or not self.share_cores
        try:
            return (self._wide if alone else self._one_core()).run(outputs, feeds)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _one_core(self):
        """The one-thread session, opened at the first overlap; if it cannot be opened (memory,
        say), overlapping runs share the every-core one as before: slower, never failing."""
        if self._narrow is None:
            with self._opening:
                if self._narrow is None:
                    try:
                        self._narrow = open_session(self.path, self.outputs, threads=1)
                    except Exception as exc:  # noqa: BLE001 - a speed-up, never a failure
                        log.warning("overlapping runs keep every core: cannot open a "
                                    "one-thread session on %s (%s)", self.path, exc)
                        self._narrow = self._wide
        return self._narrow
