"""`jewelrec serve --workers N`: N processes answer on one port, each with its share of the cores
for its models, and stop together on Ctrl-C; bad values are one clear error."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jewelrec.cli import main
from jewelrec.errors import JewelrecError
from jewelrec.models.onnx_session import THREADS_VARIABLE, available_cores
from jewelrec.server import processes
from jewelrec.server.listener import listening_socket

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def server_processes(pid: int) -> list[int]:
    """The uvicorn worker processes under `pid` (not multiprocessing's resource tracker)."""
    return [c for c in children(pid)
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux /proc")
def test_two_processes_answer_on_one_port_and_stop_together(
        tiny_home, tiny_query_photo, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jewelrec.cli", "serve", "--home", str(tiny_home),
             "--port", str(port), "--workers", "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(trust_env=False, timeout=60) as client:
            deadline = time.monotonic() + START_TIMEOUT_S
            # ready: both workers up with their models loaded (one answering /healthz while
            # the other still loads was a race), within START_TIMEOUT_S
            while (len(server_processes(server.pid)) < 2 or not _healthy(client, url)
                   or not all(_holds_models(w) for w in server_processes(server.pid))):
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"not ready in time:\n{log.read_text()}"
                time.sleep(0.3)
            for _ in range(4):
                answer = client.post(f"{url}/api/recommend", data={"k": "3"},
                                     files={"photo": ("q.jpg", tiny_query_photo, "image/jpeg")})
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["results"]) == 3
        workers = server_processes(server.pid)
        assert len(workers) == 2
        expected = str(max(1, available_cores() // 2))
        assert all(environment_of(w).get(THREADS_VARIABLE) == expected for w in workers)
        config = json.loads(environment_of(workers[0])[processes.CONFIG_VARIABLE])
        assert Path(config["home"]) == Path(tiny_home).resolve()
        # the home was checked in a process of its own: only the workers hold the models
        assert all(_holds_models(w) for w in workers)
        assert not _holds_models(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    text = log.read_text()
    assert "from 2 processes" in text and "Traceback" not in text
    assert all(not Path(f"/proc/{w}").exists() for w in workers)


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("value", ["0", "-1", "65"])
def test_a_bad_number_of_processes_is_one_clear_error(value: str, capsys) -> None:
    code = main(["serve", "--home", "/nonexistent-home", "--workers", value])
    err = capsys.readouterr().err
    assert code == 2 and "--workers" in err and "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_home_not_ready_is_the_same_clear_line_with_one_process_or_several(
        workers, tmp_path, capsys) -> None:
    code = main(["serve", "--home", str(tmp_path), "--port", "0", "--workers", workers])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"jewelrec serve: no catalog in {tmp_path}: run `jewelrec ingest` first"


def test_the_home_check_reports_an_unexpected_failure_as_words(monkeypatch) -> None:
    from jewelrec.recommend import Recommender

    def broken(**options):
        raise RuntimeError("index file garbled")

    monkeypatch.setattr(Recommender, "open", broken)
    assert processes._open_home({"home": "/somewhere"}) == (
        "could not open the home: RuntimeError: index file garbled", 0)


def test_each_process_gets_its_share_of_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(processes, "available_cores", lambda: 8)
    assert [processes.threads_per_process(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (4, 4), (32, 4)])
def test_by_default_one_process_per_core_at_most_four(cores, expected, monkeypatch) -> None:
    monkeypatch.setattr(processes, "available_cores", lambda: cores)
    assert processes.default_processes() == expected


def test_serve_runs_one_process_in_place_and_several_through_the_supervisor(
        tiny_home, monkeypatch) -> None:
    """One process serves the Recommender it opened; several get the home by path; both on
    the socket bound before the home was opened."""
    import uvicorn

    from jewelrec.server import app

    ran: list[tuple[str, object]] = []

    def run_in_place(server, sockets):
        ran.append(("one", sockets[0].getsockname()))
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run_in_place)
    monkeypatch.setattr(processes, "serve_in_processes",
                        lambda config, sock, count: ran.append((f"{count}", config)))
    app.serve(tiny_home, port=0, processes=1)
    app.serve(tiny_home, port=0, processes=3, group_variants=True)
    monkeypatch.setattr(processes, "available_cores", lambda: 1)
    app.serve(tiny_home, port=0)
    assert [kind for kind, _ in ran] == ["one", "3", "one"]
    config = ran[1][1]
    assert Path(config["home"]) == Path(tiny_home).resolve() and config["group_variants"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_clear_line_before_the_home_is_opened(workers, capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        code = main(["serve", "--home", "/nonexistent-home", "--port", port,
                     "--workers", workers])
    err = capsys.readouterr().err
    assert code == 2 and "the port is in use" in err and "--port" in err
    assert "Traceback" not in err and "nonexistent" not in err


@pytest.mark.skipif(sys.platform != "linux", reason="Linux passes the option to accepted sockets")
def test_the_listening_socket_hands_its_connections_tcp_nodelay() -> None:
    """Without it every answer on a kept-alive connection waited for the client's delayed ACK
    (about 40 ms; uvicorn binds the shared socket with protocol 0, so asyncio does not set it)."""
    with listening_socket("127.0.0.1", 0) as listener:
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize(("host", "port", "message"), [
    ("127.0.0.1", 70000, "expected 0 to 65535"),
    ("no-such-host.invalid", 8000, "cannot listen on no-such-host.invalid:8000"),
])
def test_a_bad_address_is_a_clear_error(host, port, message) -> None:
    with pytest.raises(JewelrecError, match=message):
        listening_socket(host, port)


def _holds_models(pid: int) -> bool:
    """Whether process `pid` has onnxruntime loaded (a gone process holds nothing)."""
    try:
        return "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
