"""An ASGI app under uvicorn in a background thread, on 127.0.0.1, for the tests that need a
real server (browser, widget on a second origin); stopped when the block ends."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

START_TIMEOUT_S = 120  # the first start imports the models on a small shared CPU


@contextlib.contextmanager
def serving_on(app, sock: socket.socket) -> Iterator[None]:
    """`app` served on an already bound `sock` until the block ends; the socket is closed."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """`app` on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with serving_on(app, sock):
        yield f"http://127.0.0.1:{port}"
