"""End-to-end query latency: photo bytes -> results over HTTP from `jewelrec serve`.

Starts `jewelrec serve` on 127.0.0.1 (a free port) and POSTs /api/recommend (multipart `photo`,
k=10) from 1, 4, 16 and 64 concurrent clients for --seconds each: p50/p95/p99, requests/s, errors
(non-200 answers other than a busy 503, and exceptions), busy 503s (`serve --max-queue`: a fast
refusal with Retry-After, counted apart from errors) and the server's CPU milliseconds per request.
In the same run, the in-process baseline `Recommender.open(home).recommend(bytes)` with one
client gives the cost of the HTTP layer as a ratio. Every level takes its turn in short slices,
round after round (`--rounds`), the baseline beside one client, so the machine's other work hits
every level alike and their ratios hold. Target: p95 <= 100 ms with 16 clients on 2 cores, 0 errors.

Every request sends a photo the server has not seen: the backbone remembers the features of the
last 2048 images (by pixel content), so rotating through 40 photos would time cache hits. The
query photos are varied with invisible noise into a pool longer than that memory.

    python benchmarks/query.py                    # builds a demo home first (see below)
    python benchmarks/query.py --home jewelrec-data --photos DIR --seconds 10

Without --home it builds one in a temporary folder: `jewelrec synth --products 400 --views 2
--query-photos 40`, ingest, train, index: 2 to 3.5 minutes on a busy 2-core machine (measured:
synth 14 s, ingest 7 s, train 44-120 s, index 55 s; each step's time is printed and saved). The
whole default run then takes about 4.5 minutes, 2 with --home.
Results: benchmarks/results/query.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from common import jewelrec, load_note, percentiles_ms, print_table, write_results
from PIL import Image

from jewelrec.demo import DEMO_CLASSIFIER  # demo catalogs train as `jewelrec demo` does
from jewelrec.home import Home
from jewelrec.imaging.io import load_image
from jewelrec.models.backbone import FEATURE_CACHE_SIZE
from jewelrec.recommend import Recommender
from jewelrec.server.processes import default_processes

HOST = "127.0.0.1"
K = 10
TARGET_P95_MS = 100.0
TARGET_CLIENTS = 16
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
BUSY = "busy"  # a 503 with Retry-After: the server refused at once, as `--max-queue` asks
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on every loop, far above what 30 s allows
SERVER_START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 60.0
ROUNDS = 3  # slices in which every level (and the in-process baseline) takes its turn
DEMO = {"products": 400, "views": 2, "query_photos": 40}


# -- the data ----------------------------------------------------------------------------------
def build_demo_home(folder: Path) -> tuple[Home, Path, dict[str, float]]:
    """synth -> ingest -> train -> index into `folder`, timing each step."""
    catalog, home = folder / "catalog", folder / "home"
    steps = {
        "synth": ["synth", "--out", catalog, "--products", DEMO["products"], "--views",
                  DEMO["views"], "--query-photos", DEMO["query_photos"], "--no-progress"],
        "ingest": ["ingest", catalog / "catalog.csv", "--home", home, "--no-progress"],
        "train": ["train", "--home", home, "--classifier", DEMO_CLASSIFIER, "--no-progress"],
        "index": ["index", "--home", home, "--no-progress"],
    }
    seconds = {}
    for name, args in steps.items():
        print(f"building the demo home: jewelrec {name} ...", flush=True)
        seconds[name], _ = jewelrec(*map(str, args))
        print(f"  {seconds[name]:.1f} s", flush=True)
    return Home(home), catalog / "queries", seconds


def photo_files(photos: Path | None, home: Home, limit: int) -> list[Path]:
    """The query photos: --photos (or the demo's queries), else a sample of the home's images."""
    folder = photos or home.images_dir
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos (.jpg/.png/.webp) under {folder}")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def unseen_photos(files: list[Path], count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEGs, each a query photo plus invisible noise (+-2 levels), all with different
    pixels, so no request is answered from the backbone's feature memory."""
    rng = np.random.default_rng(seed)
    originals = [load_image(f) for f in files]
    pool, seen = [], set()
    for i in range(count * 2):  # bounded: duplicates are dropped, never retried forever
        if len(pool) == count:
            break
        image = originals[i % len(originals)]
        noisy = np.clip(image.astype(np.int16) + rng.integers(-2, 3, image.shape), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        pixels = hashlib.blake2b(load_image(data).tobytes(), digest_size=16).digest()
        if pixels not in seen:
            seen.add(pixels)
            pool.append(data)
    return pool


class PhotoQueue:
    """The pool in order, thread-safely, cycling (the pool outlasts the feature memory)."""

    def __init__(self, pool: list[bytes]) -> None:
        self.pool = pool
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> bytes:
        with self.lock:
            data = self.pool[self.next % len(self.pool)]
            self.next += 1
        return data


# -- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`jewelrec serve` as a child process on 127.0.0.1; `stop()` is safe to call twice."""

    def __init__(self, home: Home, log_path: Path, processes: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        workers = [] if processes is None else ["--workers", str(processes)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jewelrec.cli", "serve", "--home", str(home.root),
             "--host", HOST, "--port", str(self.port), *workers],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> float:
        start = time.perf_counter()
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.perf_counter() - start < timeout_s:
                if self.process.poll() is not None:
                    raise RuntimeError(f"jewelrec serve exited ({self.process.returncode}):\n"
                                       f"{self.log_path.read_text(errors='replace')[-2000:]}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"jewelrec serve did not answer /healthz within {timeout_s:.0f} s")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far of the server process and its live children (the
        processes of `serve --workers N`), from Linux /proc, else None."""
        try:
            return sum(_process_cpu_seconds(pid) for pid in _process_tree(self.process.pid))
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc: each thread's children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            todo += [int(c) for c in children]
    return found


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load ----------------------------------------------------------------------------------
@dataclass
class Run:
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    busy: int = 0  # fast 503s with Retry-After
    cpu_seconds: float | None = 0.0  # of what answered: the server, or this process
    client_cpu_seconds: float = 0.0  # of this process's HTTP clients (they share the cores)
    load_average: float | None = None  # 1-minute load when the run ended
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency: float | None, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(latency)
            elif error == BUSY:
                self.busy += 1
            else:
                self.errors.append(error)

    def summary(self) -> dict:
        done = len(self.latencies)
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": done + len(self.errors) + self.busy,
            **percentiles_ms(self.latencies),
            "requests_per_s": round(done / self.seconds, 2) if self.seconds else None,
            "errors": len(self.errors),
            "busy_503": self.busy,
            "error_examples": sorted(set(self.errors))[:5],
            "cpu_ms_per_request": (
                round(self.cpu_seconds * 1000 / done, 1)
                if self.cpu_seconds and done else None),
            "client_cpu_ms_per_request": (
                round(self.client_cpu_seconds * 1000 / done, 1)
                if self.client_cpu_seconds and done else None),
            "load_average_1min": (
                round(self.load_average, 2) if self.load_average is not None else None),
        }


async def post_photo(client: httpx.AsyncClient, url: str, data: bytes) -> str | None:
    """One query; None when it answered 200 with results, BUSY for a 503 with Retry-After,
    else what went wrong."""
    try:
        response = await client.post(f"{url}/api/recommend", files={"photo": (
            "photo.jpg", data, "image/jpeg")}, data={"k": str(K)})
        if response.status_code == 503 and "retry-after" in response.headers:
            return BUSY
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if not isinstance(response.json().get("results"), list):
            return "200 without results"
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none ends the client
        return f"{type(exc).__name__}: {exc}"
    return None


def http_load(server: Server, photos: PhotoQueue, run: Run, seconds: float,
              stop: threading.Event) -> None:
    """`run.clients` clients, each on its own keep-alive connection, querying until the
    deadline; adds to `run` (and to its count of the server's CPU time and of this process's).

    The clients are tasks on one event loop, not threads: 64 client threads cost this process
    13 CPU ms a request against 2.5 for one (the GIL passed among them), CPU taken from the
    server on the same cores, which made 64 clients look slower than 16."""

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set() or time.perf_counter() >= deadline:
                return
            data = photos.take()
            start = time.perf_counter()
            error = await post_photo(client, server.url, data)
            run.record(time.perf_counter() - start, error)

    async def clients() -> None:
        limits = httpx.Limits(max_connections=run.clients, max_keepalive_connections=run.clients)
        async with httpx.AsyncClient(trust_env=False, timeout=REQUEST_TIMEOUT_S,
                                     limits=limits) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(run.clients)))

    cpu_before, client_before = server.cpu_seconds(), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    asyncio.run(clients())
    run.seconds += time.perf_counter() - start
    cpu_after = server.cpu_seconds()
    run.client_cpu_seconds += time.process_time() - client_before
    if run.cpu_seconds is not None and cpu_before is not None and cpu_after is not None:
        run.cpu_seconds += cpu_after - cpu_before
    else:
        run.cpu_seconds = None


def in_process_load(recommender: Recommender, photos: PhotoQueue, run: Run,
                    seconds: float) -> None:
    """The same queries without HTTP: one client calling Recommender.recommend(bytes)."""
    start, cpu_before = time.perf_counter(), time.process_time()
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() - start >= seconds:
            break
        data = photos.take()
        t0 = time.perf_counter()
        try:
            recommender.recommend(data, k=K)
            run.record(time.perf_counter() - t0, None)
        except Exception as exc:  # noqa: BLE001 - counted as an error, the run goes on
            run.record(None, f"{type(exc).__name__}: {exc}")
    run.seconds += time.perf_counter() - start
    run.cpu_seconds += time.process_time() - cpu_before


def measure(server: Server, home: Home, photos: PhotoQueue, levels: list[int],
            seconds: float, baseline_seconds: float, stop: threading.Event,
            rounds: int = ROUNDS) -> tuple[Run, list[Run]]:
    """Every level in `rounds` slices taken in turn (1, 4, 16, 64, 1, 4, ...), the in-process
    baseline beside HTTP with one client: a burst of other work on the machine, or a slower
    spell of a shared one (two runs of the same build on this machine differed by up to 1.5x
    in requests/s at one level), hits every level alike, so their ratios hold."""
    recommender = Recommender.open(home)
    for _ in range(5):  # warm-up: the first calls pay for lazy set-up
        recommender.recommend(photos.take(), k=K)
    http_load(server, photos, Run(2), 3.0, stop)  # the server's warm-up, not counted
    baseline, runs = Run(1), {c: Run(c) for c in levels}
    print(f"{len(levels)} levels of {seconds:.0f} s each (and the in-process baseline, "
          f"{baseline_seconds:.0f} s) in {rounds} rounds ...", flush=True)
    for round_ in range(rounds):
        if 1 not in levels:
            in_process_load(recommender, photos, baseline, baseline_seconds / rounds)
        rates = []
        for clients in levels:
            if clients == 1:
                in_process_load(recommender, photos, baseline, baseline_seconds / rounds)
            run = runs[clients]
            done, spent = len(run.latencies), run.seconds
            http_load(server, photos, run, seconds / rounds, stop)
            rate = (len(run.latencies) - done) / (run.seconds - spent)
            rates.append(f"{clients} clients {rate:.1f}")
        print(f"  round {round_ + 1}/{rounds}, req/s: {', '.join(rates)}", flush=True)
    for run in runs.values():
        run.load_average = os.getloadavg()[0]
    return baseline, list(runs.values())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- the report --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a ready data home (default: build a demo one)")
    parser.add_argument("--photos", type=Path,
                        help="folder of query photos (default: the demo's shopper photos, or a "
                             "sample of the home's catalog images)")
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--baseline-seconds", type=float, default=15.0,
                        help="in-process baseline duration")
    parser.add_argument("--clients", default="1,4,16,64",
                        help="concurrency levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"slices per level, the levels taking turns (default {ROUNDS})")
    parser.add_argument("--server-workers", type=int, metavar="N",
                        help="server processes (`jewelrec serve --workers N`; default: serve's)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, like Ctrl-C

    with tempfile.TemporaryDirectory(prefix="jewelrec-query-bench-") as tmp:
        tmp_dir = Path(tmp)
        build_seconds: dict[str, float] = {}
        if args.home:
            home, photos_dir = Home(args.home), args.photos
        else:
            home, photos_dir, build_seconds = build_demo_home(tmp_dir)
            photos_dir = args.photos or photos_dir
        files = photo_files(photos_dir, home, limit=DEMO["query_photos"])
        start = time.perf_counter()
        photos = PhotoQueue(unseen_photos(files, FEATURE_CACHE_SIZE + 64))
        if len(photos.pool) <= FEATURE_CACHE_SIZE:
            print(f"warning: only {len(photos.pool)} distinct photos; some requests may be "
                  "answered from the backbone's feature memory", file=sys.stderr)
        print(f"{len(photos.pool)} distinct photos made from {len(files)} "
              f"in {time.perf_counter() - start:.1f} s", flush=True)

        server = Server(home, tmp_dir / "server.log", args.server_workers)
        stop = threading.Event()
        try:
            startup = server.wait_ready()
            print(f"jewelrec serve answered /healthz after {startup:.1f} s at {server.url}",
                  flush=True)
            baseline, runs = measure(server, home, photos, levels, args.seconds,
                                     args.baseline_seconds, stop, max(1, args.rounds))
        except KeyboardInterrupt:
            stop.set()
            print("interrupted: stopping the server", file=sys.stderr)
            raise
        finally:
            stop.set()
            server.stop()

    report(args, files, build_seconds, startup, baseline.summary(),
           [r.summary() for r in runs])


def scaling_ratios(runs: list[dict]) -> dict[str, float]:
    """req/s at each level over one client's, and the highest level's over the best lower one."""
    rate = {r["clients"]: r["requests_per_s"] for r in runs if r["requests_per_s"]}
    ratios = {f"{c} over 1": round(rate[c] / rate[1], 2) for c in sorted(rate) if c != 1
              and 1 in rate}
    levels = sorted(rate)
    if len(levels) > 1:
        top, best = levels[-1], max(rate[c] for c in levels[:-1])
        ratios[f"{top} over best lower"] = round(rate[top] / best, 2)
    return ratios


def report(args: argparse.Namespace, files: list[Path], build_seconds: dict[str, float],
           startup: float, baseline: dict, runs: list[dict]) -> None:
    print()
    print(f"POST /api/recommend (k={K}) on {HOST}, {len(files)} query photos varied so none "
          f"repeats, {args.seconds:.0f} s per level, server processes: "
          f"{args.server_workers or f'serve default ({default_processes()})'}")
    columns = ["clients", "requests", "p50_ms", "p95_ms", "p99_ms", "requests_per_s", "errors",
               "busy_503", "cpu_ms_per_request", "client_cpu_ms_per_request",
               "load_average_1min"]
    rows = [["in-process (no HTTP)", *(baseline[c] for c in columns)]]
    rows += [["HTTP", *(r[c] for c in columns)] for r in runs]
    print_table(["path", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors",
                 "503", "cpu ms/req", "client cpu", "load"], rows)
    print("(cpu ms/req: CPU time of whatever answered, the server's processes or this one, per "
          "request, all its threads; it depends less on the machine's load than latency does. "
          "client cpu: this process's HTTP clients per request, CPU the server could not use)")

    one = next((r for r in runs if r["clients"] == 1), None)
    scaling = scaling_ratios(runs)
    if scaling:
        print("\nthroughput over concurrency (issue 11: 16 clients >= 1.3x one client; 64 >= "
              "0.95x the best lower level): "
              + ", ".join(f"{name} x{ratio:.2f}" for name, ratio in scaling.items()))
    overhead = None
    if one and one["p50_ms"] and baseline["p50_ms"]:
        overhead = {"p50": round(one["p50_ms"] / baseline["p50_ms"], 2),
                    "p95": round(one["p95_ms"] / baseline["p95_ms"], 2)}
        print(f"\nHTTP overhead (1 client over in-process): p50 x{overhead['p50']:.2f}, "
              f"p95 x{overhead['p95']:.2f}")
    target = next((r for r in runs if r["clients"] == TARGET_CLIENTS), None)
    verdict = None
    if target:
        met = (target["p95_ms"] is not None and target["p95_ms"] <= TARGET_P95_MS
               and target["errors"] == 0)
        verdict = {"p95_ms": target["p95_ms"], "errors": target["errors"], "met": met}
        print(f"target: p95 <= {TARGET_P95_MS:.0f} ms with {TARGET_CLIENTS} clients, 0 errors "
              f"-> p95 {target['p95_ms']} ms, {target['errors']} errors: "
              f"{'MET' if met else 'NOT MET'} (on {os.cpu_count()} cores)")
        # Little's law for closed-loop clients: latency ~ clients / throughput.
        needed = TARGET_CLIENTS / (TARGET_P95_MS / 1000)
        cpu_ms = target["cpu_ms_per_request"]
        if cpu_ms:
            verdict["capacity_req_per_s"] = round((os.cpu_count() or 1) * 1000 / cpu_ms, 1)
            print(f"  {TARGET_CLIENTS} clients that each wait for their answer get p95 <= "
                  f"{TARGET_P95_MS:.0f} ms only if the server does >= {needed:.0f} req/s, i.e. "
                  f"<= {(os.cpu_count() or 1) * 1000 / needed:.1f} CPU ms per request on "
                  f"{os.cpu_count()} cores; measured {cpu_ms} ms "
                  f"(capacity ~{verdict['capacity_req_per_s']} req/s with the cores to itself)")
    errors = [e for r in runs for e in r["error_examples"]] + baseline["error_examples"]
    if errors:
        print("errors seen:", *errors, sep="\n  ")
    if build_seconds:
        print("demo home built in " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                build_seconds.items())
              + f" (total {sum(build_seconds.values()):.0f} s)")
    print(f"server start-up {startup:.1f} s; {load_note()}")
    path = write_results("query", {
        "home": str(args.home) if args.home else "demo (built in a temporary folder)",
        "demo_catalog": None if args.home else DEMO,
        "query_photos": len(files), "k": K, "seconds_per_level": args.seconds,
        "server_processes": args.server_workers or default_processes(),
        "build_seconds": build_seconds, "server_startup_seconds": round(startup, 2),
        "in_process": baseline, "http": runs, "http_overhead_ratio": overhead,
        "throughput_ratios": scaling,
        "target": {"p95_ms": TARGET_P95_MS, "clients": TARGET_CLIENTS, "result": verdict},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
