"""`jewelrec demo` ends by handing its process to `jewelrec serve`, so the server does not keep
what training and indexing held in memory (2.1 GB on the 2,000-product demo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from jewelrec import demo
from jewelrec.home import Home


class Replaced(Exception):
    """Stands for exec: the process would be the server from here on."""


@pytest.mark.skipif(os.name != "posix", reason="exec replaces the process on POSIX only")
def test_the_demo_hands_its_process_to_jewelrec_serve(tmp_path, monkeypatch) -> None:
    calls = []

    def exec_instead(path, argv):
        calls.append((path, list(argv)))
        raise Replaced

    monkeypatch.setattr(os, "execv", exec_instead)
    home = Home(tmp_path / "home")
    with pytest.raises(Replaced):
        demo.serve_afresh(home, "127.0.0.1", 8123)
    assert calls == [(sys.executable, [sys.executable, "-m", "jewelrec.cli", "serve", "--home",
                                       str((tmp_path / "home").resolve()), "--host",
                                       "127.0.0.1", "--port", "8123"])]


def test_the_command_it_hands_over_to_is_one_jewelrec_runs(tmp_path) -> None:
    """Run as a program, the command reaches `serve` (here: a port in use, one clear line)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        command = demo.serve_command(Home(tmp_path), "127.0.0.1", taken.getsockname()[1])
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the port is in use" in done.stderr and "Traceback" not in done.stderr
