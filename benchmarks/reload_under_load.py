"""Live re-indexing under load: N clients post photos to a running `jewelrec serve` while
`jewelrec index` alternates embedders (issue 10, finding 1: before one immutable snapshot per
request, 10 of 7,608 requests got a 500 and one answer carried the new version's label with
the old models' results).

Every answer is checked: its status (2xx only) and its consistency with the index version it
names. Each version was built by a known embedder (from `index --json`), and re-indexing with
the same embedder gives the same vectors (the embedding cache), so all answers for one photo
under versions of one embedder must agree (ids and scores); an answer computed with another
snapshot's models or index than the version it names differs from the others.

    python benchmarks/reload_under_load.py --home DIR --photos DIR [--clients 16] [--swaps 6]

The home must hold a trained `autoencoder` and `efficientnet` embedder (`jewelrec train
--embedder autoencoder --classifier seed-cnn`, then `jewelrec train`), a catalog and an index.
Prints a summary and exits 1 when any request failed or any answer was inconsistent.
Runs on loopback only; bounded by --swaps and --settle-s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

EMBEDDERS = ("autoencoder", "efficientnet")
SCORE_TOLERANCE = 1e-3  # same photo, same vectors: only float noise may differ
CLI = [sys.executable, "-c", "import sys; from jewelrec.cli import main; sys.exit(main())"]


@dataclass
class Answer:
    status: int
    photo: int
    version: str | None = None
    ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    detail: str = ""


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[Answer] = field(default_factory=list)  # non-2xx or no answer at all
    inconsistent: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # version -> embedder
    answers_per_version: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    server_errors: list[str] = field(default_factory=list)  # from the server's own log

    @property
    def ok(self) -> bool:
        return not self.failures and not self.inconsistent

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "non_2xx": len(self.failures),
            "failures": [f"{a.status} {a.detail[:200]}" for a in self.failures[:10]],
            "inconsistent": self.inconsistent[:10],
            "versions": self.versions,
            "answers_per_version": self.answers_per_version,
            "seconds": round(self.seconds, 1),
            "server_errors": self.server_errors,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jewelrec(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `jewelrec` CLI in a child process (what an operator would type)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def serving_version(base: str) -> str | None:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).json()["index_version"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def client_loop(base: str, photos: Sequence[bytes], first: int, stop: threading.Event,
                answers: list[Answer], k: int) -> None:
    """Post photos round-robin until `stop`; every outcome lands in `answers`."""
    i = first
    with httpx.Client(base_url=base, timeout=120) as http:
        while not stop.is_set():
            photo = i % len(photos)
            i += 1
            try:
                response = http.post("/api/recommend", data={"k": str(k)},
                                     files={"photo": (f"p{photo}.jpg", photos[photo])})
            except httpx.HTTPError as exc:
                answers.append(Answer(0, photo, detail=f"{type(exc).__name__}: {exc}"))
                continue
            if not 200 <= response.status_code < 300:
                answers.append(Answer(response.status_code, photo, detail=response.text))
                continue
            body = response.json()
            answers.append(Answer(
                response.status_code, photo, body.get("index_version"),
                tuple(r["id"] for r in body["results"]),
                tuple(r["score"] for r in body["results"]),
            ))


def check(answers: Sequence[Answer], versions: dict[str, str],
          tolerance: float = SCORE_TOLERANCE) -> list[str]:
    """Answers that disagree with the usual answer for the same photo and embedder: other
    products, or scores further than `tolerance` apart."""
    groups: dict[tuple[str, int], list[Answer]] = defaultdict(list)
    problems = []
    for a in answers:
        if 200 <= a.status < 300:
            if a.version not in versions:
                problems.append(f"photo {a.photo}: unknown index version {a.version!r}")
                continue
            groups[(versions[a.version], a.photo)].append(a)
    for (embedder, photo), group in groups.items():
        usual_ids, _ = Counter(a.ids for a in group).most_common(1)[0]
        usual = next(a for a in group if a.ids == usual_ids)
        odd = [a for a in group if a.ids != usual.ids or any(
            abs(x - y) > tolerance for x, y in zip(a.scores, usual.scores, strict=True))]
        if odd:
            problems.append(f"photo {photo} under {embedder} (e.g. {odd[0].version}): "
                            f"{len(odd)} of {len(group)} answers differ: {odd[0].ids[:3]} "
                            f"{odd[0].scores[:3]} vs {usual.ids[:3]} {usual.scores[:3]}")
    return problems


def run_load(
    home: Path,
    photos: Sequence[bytes],
    *,
    clients: int = 16,
    swaps: int = 4,
    embedders: Sequence[str] = EMBEDDERS,
    settle_s: float = 3.0,
    k: int = 5,
    log: Callable[[str], None] = print,
) -> LoadReport:
    """Serve `home` on loopback, load it with `clients` threads and re-index `swaps` times,
    alternating `embedders`; returns what every request got."""
    from jewelrec.home import Home
    from jewelrec.search import versions

    report = LoadReport()
    first = versions.current_version(Home(home))
    if first is None:
        raise SystemExit(f"no index in {home}: run `jewelrec index` first")
    report.versions[first] = versions.read_meta(Home(home), first)["embedder"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block the server
    server = subprocess.Popen(
        [*CLI, "serve", "--home", str(home), "--host", "127.0.0.1", "--port", str(port)],
        stdout=server_log, stderr=subprocess.STDOUT, text=True,
    )

    def server_said(tail: int = 3000) -> str:
        server_log.seek(0)
        return server_log.read()[-tail:]

    answers: list[Answer] = []
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(base, photos, i, stop, answers, k),
                                daemon=True) for i in range(clients)]
    start = time.monotonic()
    try:
        wait_for(lambda: serving_version(base) == first or server.poll() is not None, 120,
                 "the server to start")
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server_said()}")
        for thread in threads:
            thread.start()
        time.sleep(settle_s)
        for i in range(swaps):
            embedder = embedders[i % len(embedders)]
            done = jewelrec("index", "--home", str(home), "--embedder", embedder, "--json",
                            "--no-progress")
            if done.returncode != 0:
                raise RuntimeError(f"jewelrec index --embedder {embedder} failed: "
                                   f"{done.stderr[-2000:]}")
            version = json.loads(done.stdout.strip().splitlines()[-1])["version"]
            report.versions[version] = embedder
            wait_for(lambda v=version: serving_version(base) == v, 120, f"index {version}")
            log(f"swap {i + 1}/{swaps}: serving {version} ({embedder}), "
                f"{len(answers)} answers so far")
            time.sleep(settle_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        report.server_errors = [line for line in server_said(1 << 30).splitlines()
                                if "Traceback" in line or "ERROR" in line][:10]
        server_log.close()
    report.seconds = time.monotonic() - start
    report.requests = len(answers)
    report.failures = [a for a in answers if not 200 <= a.status < 300]
    report.inconsistent = check(answers, report.versions)
    report.answers_per_version = dict(Counter(a.version for a in answers if a.version))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="folder of query photos")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--settle-s", type=float, default=3.0,
                        help="seconds of load on each index before the next swap")
    args = parser.parse_args(argv)
    photos = [p.read_bytes() for p in sorted(args.photos.iterdir())
              if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}]
    if not photos:
        raise SystemExit(f"no photos in {args.photos}")
    report = run_load(args.home, photos, clients=args.clients, swaps=args.swaps,
                      settle_s=args.settle_s)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
