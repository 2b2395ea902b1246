"""The server's listening socket, bound by us before anything slow, with TCP_NODELAY.

Why bind it ourselves: a port in use (another server, an earlier one still running) is then one
clear line before the home's models are loaded, instead of an uvicorn log line after them, and
the one socket serves a single process and the processes of `serve --workers N` alike.

Why TCP_NODELAY on it: uvicorn's own shared socket has protocol 0, and asyncio sets the option
only on accepted sockets whose protocol is TCP, so every answer on a kept-alive connection
waited ~40 ms for the client's delayed ACK (Nagle): a lone shopper's query went from 43 to
88-96 ms, a health check from 2 to 44 ms with two processes (uvicorn issue 3149). Linux hands
the listening socket's option to the sockets it accepts.
"""

from __future__ import annotations

import errno
import socket

from jewelrec.errors import JewelrecError

BACKLOG = 2048  # uvicorn's default: connections the kernel queues while every process is busy


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (IPv6 when the host has a colon), TCP_NODELAY set;
    JewelrecError with the reason when it cannot be had."""
    if not 0 <= port <= 65535:
        raise JewelrecError(f"--port {port}: expected 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except socket.gaierror as exc:
        raise JewelrecError(f"cannot listen on {host}:{port}: unknown address ({exc.strerror})"
                            ) from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise JewelrecError(f"cannot listen on {host}:{port}: the port is in use (another "
                                "server?); choose another with --port") from exc
        raise JewelrecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)  # the processes of `serve --workers N` share it
    return sock
