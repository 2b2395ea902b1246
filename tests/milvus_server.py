"""The embedded standalone Milvus (the `milvus` 2.3.5 test extra) for tests and benchmarks.

One server per test session, in a temporary folder removed afterwards. Where the package is
missing or its server cannot start here, the tests that need it skip and say why; in CI
(CI=true) they FAIL instead, so a green run always means the Milvus backend was tested.

tests/conftest.py imports the `milvus_uri` fixture from here.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 120
# Milvus reads settings from the environment too: look for newly indexed segments every second
# (default 10 s), so a flushed collection is searched on its index about a second later.
SETTINGS_FROM_ENV = {"QUERYCOORD_UPDATENEXTTARGETINTERVAL": "1"}
# Milvus registers each component under this address; loopback works without any network
# interface. (Milvus 2.3 still binds its gRPC ports on all interfaces; etcd binds loopback.)
COMPONENTS = (
    "rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode",
)


@dataclass(frozen=True)
class RunningMilvus:
    uri: str
    pid: int


@contextmanager
def embedded_milvus(base_dir: Path) -> Iterator[RunningMilvus]:
    """Start an embedded server with its data, logs and binaries under `base_dir`; stops it on
    exit. Raises ImportError, OSError, RuntimeError or TimeoutError.

    Each call gets its own MilvusServer rather than the package's shared `default_server`, so
    two users in one process (a test session, a benchmark's restarts) never take over each
    other's process."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    for component in COMPONENTS:
        server.config.set(f"{component}.ip", "127.0.0.1")
    server.wait_for_started = False
    try:
        with _environment(SETTINGS_FROM_ENV):
            server.start()
        server.wait_started(timeout=START_TIMEOUT_S * 1000)
        yield RunningMilvus(f"http://127.0.0.1:{server.listen_port}", server.server_proc.pid)
    finally:
        server.stop()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab CI and most others set it): nothing may be skipped."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip the tests that need Milvus, saying why; fail them in CI."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def milvus_uri_fixture() -> Iterator[str]:
    """Generator behind the `milvus_uri` fixture: the URI of a fresh embedded server."""
    if importlib.util.find_spec("milvus") is None:
        unavailable("the embedded Milvus server is not installed (pip install milvus==2.3.5)")
    with (
        tempfile.TemporaryDirectory(prefix="jewelrec-milvus-", ignore_cleanup_errors=True) as base,
        ExitStack() as stack,
    ):
        try:
            running = stack.enter_context(embedded_milvus(Path(base)))
        except (OSError, RuntimeError, TimeoutError) as error:
            logs = Path(base) / "logs" / "milvus-stderr.log"
            tail = logs.read_text(errors="replace")[-500:] if logs.exists() else ""
            unavailable(f"the embedded Milvus server did not start here: {error!r} {tail}")
        yield running.uri


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    """URI (http://127.0.0.1:PORT) of an embedded Milvus shared by the whole test session."""
    yield from milvus_uri_fixture()
