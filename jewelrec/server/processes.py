"""`jewelrec serve --workers N`: N server processes on one port, each with its own models.

Why: one server process keeps only about 1.6 of 2 cores busy under load (benchmarks/query.py:
32 requests/s x 50 CPU ms at 16 clients), because its Python work (decoding, segmentation,
pooling, the HTTP stack) holds the interpreter's lock while the models run on the other core.
Processes do not share that lock. The home is opened once first, in a short-lived process
(`opened_home_products`), so a home that is not ready is one clear line. uvicorn starts the
server processes (its own supervisor: a process that dies is replaced) from an import string,
so what `serve` was asked for reaches them as JSON in an environment variable, and each process
builds its app from it (`app_from_environment`). Their model runs share the cores: each gets
cores / N threads (`$JEWELREC_MODEL_THREADS`, unless the operator set it), so N processes never
put N x cores threads on the machine. Each process watches the index on its own and reloads it
as a single process does; `--max-queue` counts per process.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from jewelrec.errors import JewelrecError
from jewelrec.models.onnx_session import THREADS_VARIABLE, available_cores

CONFIG_VARIABLE = "JEWELREC_SERVE_CONFIG"  # create_app's arguments, JSON, for the processes
APP_FACTORY = f"{__name__}:app_from_environment"
MAX_PROCESSES = 64
MAX_DEFAULT_PROCESSES = 4  # each holds its own models and index: more only when asked for


def default_processes() -> int:
    """One process per core, at most MAX_DEFAULT_PROCESSES. On 2 cores two processes answered
    1.3x (16 clients) to 1.4-1.55x (64 clients) the requests per second of one, at the same
    wait for a lone shopper (benchmarks/query.py, README "Speed")."""
    return min(available_cores(), MAX_DEFAULT_PROCESSES)


def check_processes(processes: int) -> int:
    if not 1 <= processes <= MAX_PROCESSES:
        raise JewelrecError(f"--workers {processes}: expected 1 to {MAX_PROCESSES} processes")
    return processes


def threads_per_process(processes: int) -> int:
    """Each process's share of the cores for its model runs (at least one thread)."""
    return max(1, available_cores() // processes)


def opened_home_products(options: dict[str, Any]) -> int:
    """Open the home as each server process will (`Recommender.open`'s keyword arguments, the
    home as a path string) in a short-lived process of its own, and return its product count.

    A home that is not ready still fails once, as one clear line, before any server process
    starts; and the parent, which only supervises, never holds models and index it does not use
    (on the demo home it kept 122 MB after opening them there and letting them go, 102 MB with
    the freed heap handed back to the system, against 65 MB for its imports alone)."""
    context = multiprocessing.get_context("spawn")  # as uvicorn starts the server processes
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            failure, products = pool.submit(_open_home, options).result()
    except BrokenProcessPool as exc:
        raise JewelrecError("the process opening the home died before it could tell why "
                            "(out of memory?): try `jewelrec serve --workers 1`") from exc
    if failure is not None:
        raise JewelrecError(failure)
    return products


def _open_home(options: dict[str, Any]) -> tuple[str | None, int]:
    """(why the home cannot be served, or None; its product count), in the checking process:
    plain values, since an exception of ours need not survive the trip back."""
    from jewelrec.recommend import Recommender

    try:
        return None, Recommender.open(**options).store.count()
    except JewelrecError as exc:
        return str(exc), 0
    except Exception as exc:  # noqa: BLE001 - reported to the operator as one line
        return f"could not open the home: {type(exc).__name__}: {exc}", 0


def serve_in_processes(config: dict[str, Any], sock: socket.socket, processes: int) -> None:
    """Run `processes` server processes on the listening `sock` until interrupted (uvicorn's
    supervisor, as `uvicorn.run(..., workers=N)` runs it). `config`: create_app's keyword
    arguments (JSON-serialisable: the home as a path string)."""
    os.environ[CONFIG_VARIABLE] = json.dumps(config)
    os.environ.setdefault(THREADS_VARIABLE, str(threads_per_process(check_processes(processes))))
    host, port = sock.getsockname()[:2]
    settings = uvicorn.Config(APP_FACTORY, factory=True, workers=processes, host=host,
                              port=port, log_level="info", server_header=False)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the supervisor stopped them all
        Multiprocess(settings, sockets=[sock]).run()


def app_from_environment():
    """The app of one server process, from what `serve_in_processes` put in the environment
    (uvicorn calls this in each process)."""
    from jewelrec.server.app import create_app
    from jewelrec.server.inference import pin_blas_threads

    text = os.environ.get(CONFIG_VARIABLE)
    if not text:
        raise JewelrecError(f"${CONFIG_VARIABLE} is not set: start the processes with "
                            "`jewelrec serve --workers N`")
    pin_blas_threads()
    return create_app(**json.loads(text))
