"""More shoppers per core (issue 11): one inference executor per server with micro-batching,
and a fast 503 once too many photo queries wait.

Each query prepares its photo (decoding, framing) in a worker thread of its own; the models then
run in the executor's threads (two by default: the pieces' segmentation, pooling and colour work
of one batch is Python and numpy that overlaps the other batch's onnxruntime run, which measured
+25-30% requests/s at 4-64 clients on 2 cores, benchmarks/query.py). Photos that wait together go
through the models as one batch (one classifier call, one embedder call), which costs far less
per photo than one call each. Under load (the last batch held more
than one photo) the executor also waits up to `window_s` for more photos before it runs; a lone
shopper never waits. A batch only mixes photos whose requests hold the SAME snapshot (compared
by identity, see jewelrec/snapshot.py): a request captured before an index swap is answered by
the models of its own snapshot, never by the new ones.

numpy's BLAS threads are pinned to one in `jewelrec serve` (`pin_blas_threads`): ranking and the
small heads do little linear algebra per query, and a BLAS pool as wide as the machine would
fight onnxruntime's own pool for the same cores.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import anyio
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jewelrec.recommend import PhotoInference, PreparedPhoto, infer
from jewelrec.snapshot import Snapshot

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 0.005
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64
DEFAULT_WORKERS = 2  # batches in flight at once: one's Python work overlaps the other's model run
RETRY_AFTER_S = 1
BUSY_MESSAGE = "the server is busy: please try again in a second"
BODY_SECONDS = 30.0  # a photo's upload must arrive within this (a phone on a slow line: ~1 MB)
SLOW_BODY_MESSAGE = f"the request's body did not arrive within {BODY_SECONDS:g} s: try again"

InferFn = Callable[[Snapshot, Sequence[PreparedPhoto]], list[PhotoInference]]


@dataclass
class _Job:
    snap: Snapshot
    photo: PreparedPhoto
    future: Future = field(default_factory=Future)


class InferenceExecutor:
    """The server's one model runner: `infer(snap, photo)` from any thread, answered from a
    batch of up to `max_batch` photos (see the module's docstring). `close()` stops it; calls
    after that run the models in the caller's thread."""

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S,
                 max_batch: int = DEFAULT_MAX_BATCH, run: InferFn = infer,
                 workers: int = DEFAULT_WORKERS) -> None:
        if max_batch < 1 or window_s < 0 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1 and window_s >= 0")
        self.window_s = window_s
        self.max_batch = max_batch
        self._run = run
        self.workers = workers
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._closing = threading.Lock()  # no job can be queued behind close()'s stop mark
        self._threads = [threading.Thread(target=self._loop, name=f"jewelrec-inference-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def infer(self, snap: Snapshot, photo: PreparedPhoto) -> PhotoInference:
        """The models of `snap` on `photo`, possibly batched with other callers' photos."""
        job = _Job(snap, photo)
        with self._closing:
            queued = not self._closed
            if queued:
                self._jobs.put(job)
        return job.future.result() if queued else self._run(snap, [photo])[0]

    def queued(self) -> int:
        """Photos waiting for the models (not counting the batch being run)."""
        return self._jobs.qsize()

    def close(self) -> None:
        """Finish the photos already queued, then stop the thread."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)  # one stop mark per thread, behind every queued photo
        for thread in self._threads:
            thread.join()

    # -- the executor thread -----------------------------------------------------------------
    def _loop(self) -> None:
        busy = False  # the last batch held more than one photo: others are likely on their way
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch, stopping = self._collect(first, self.window_s if busy else 0.0)
            self._answer(batch)
            busy = len(batch) > 1
            if stopping:
                return

    def _collect(self, first: _Job, window_s: float) -> tuple[list[_Job], bool]:
        """`first` and the photos queued behind it (waiting up to `window_s` for more), at most
        `max_batch`; and whether close() was asked meanwhile."""
        batch = [first]
        deadline = time.monotonic() + window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._jobs.get(timeout=left) if left > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _answer(self, batch: list[_Job]) -> None:
        """One model run per snapshot in `batch`; a run that fails is retried photo by photo,
        so one unreadable photo fails its own request only."""
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            groups.setdefault(id(job.snap), []).append(job)
        for jobs in groups.values():
            try:
                results = self._run(jobs[0].snap, [j.photo for j in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"{len(results)} answers for {len(jobs)} photos")
            except Exception as exc:  # noqa: BLE001 - handed to the callers, never lost
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                    continue
                for job in jobs:
                    self._answer([job])
                continue
            for job, result in zip(jobs, results, strict=True):
                job.future.set_result(result)


def pin_blas_threads(threads: int = 1) -> None:
    """Limit numpy's BLAS pool to `threads` for the whole process (see the module's
    docstring); the models' own onnxruntime pool is sized to the cores elsewhere."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


# -- admission ---------------------------------------------------------------------------------
class QueueLimit:
    """ASGI middleware: at most `max_queue` requests on `paths` (the CPU-bound queries) in the
    server at once, running or waiting; one more is answered at once with 503 and
    `Retry-After: 1` instead of waiting until its client times out.

    A request counts once its whole body has arrived: uploads still arriving (a slow phone,
    or a client that sends headers and then nothing) held the queue's places before, so that
    every query, searches without any body too, was refused for as long as they stayed open.
    Bodies arrive in a pool of their own (`max_queue` at once, each within BODY_SECONDS, else
    408), read inside the body size limit (BodySizeLimit), then handed to the app unchanged."""

    def __init__(self, app: ASGIApp, max_queue: int, paths: Callable[[str], bool]) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.app = app
        self.max_queue = max_queue
        self.paths = paths
        self.in_flight = 0  # only the event loop's thread changes these two
        self.arriving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.paths(scope["path"]):
            return await self.app(scope, receive, send)
        if scope.get("method") not in {"GET", "HEAD"}:  # a body to wait for: an upload
            if self.arriving >= self.max_queue:
                return await _busy(scope, receive, send)
            receive = await self._arrived(scope, receive, send)
            if receive is None:
                return  # answered: too large, or too slow to arrive
        if self.in_flight >= self.max_queue:
            return await _busy(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _arrived(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The request's whole body, as a receive that hands it on; None when the body could
        not be taken (over the size limit: 413; not there within BODY_SECONDS: 408), then
        answered here."""
        self.arriving += 1
        try:
            return await _whole_body(receive)
        except HTTPException as exc:  # the size limit, raised by the receive it wraps
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        except TimeoutError:
            response = JSONResponse({"detail": SLOW_BODY_MESSAGE}, status_code=408)
        finally:
            self.arriving -= 1
        await response(scope, receive, send)
        return None


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": BUSY_MESSAGE}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    await response(scope, receive, send)


async def _whole_body(receive: Receive) -> Receive:
    """Read the request's body now (within BODY_SECONDS); a receive that hands it on as it
    came, then whatever the connection says next (a disconnect)."""
    messages: list[Message] = []
    with anyio.fail_after(BODY_SECONDS):
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
    waiting = iter(messages)

    async def replayed() -> Message:
        return next(waiting, None) or await receive()

    return replayed
