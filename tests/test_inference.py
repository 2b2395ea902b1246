"""The server's inference executor (issue 11, item 2): concurrent photos go through the models as
one batch with the same answers as one by one, a batch never mixes two snapshots, and past
`max_queue` queries a request gets a fast 503 with Retry-After instead of waiting."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from query_stubs import index_of, store_with

from jewelrec.recommend import Recommender
from jewelrec.server.app import create_app
from jewelrec.server.inference import InferenceExecutor
from jewelrec.snapshot import Snapshot

PRODUCTS = {"red": "ring", "green": "ring", "blue": "ring"}
VECTORS = np.eye(3, dtype=np.float32)  # product i looks like colour i
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 150, 10), (10, 120, 200),
           (180, 10, 190)]


def photo(colour: tuple[int, int, int]) -> np.ndarray:
    return np.full((32, 32, 3), colour, dtype=np.uint8)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(colour)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_until(condition, timeout_s: float = 30.0) -> None:
    """Poll `condition` (the test's sequencing, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the requests to queue"
        time.sleep(0.005)


class ColourEmbedder:
    """Embeds a photo as its mean colour; records each call's photos; while `gate` is closed
    the first call waits (so that other requests queue behind it)."""

    name = "colour"
    dim = 3

    def __init__(self, gate: threading.Event | None = None, tilt: float = 0.0) -> None:
        self.calls: list[list[tuple[int, ...]]] = []
        self.gate = gate
        self.entered = threading.Event()
        self.tilt = tilt  # added to the blue channel: another "model"

    def embed(self, images, masks=None):
        self.calls.append([tuple(int(c) for c in im.reshape(-1, 3).mean(0)) for im in images])
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        vectors = np.stack([im.reshape(-1, 3).mean(0) for im in images]).astype(np.float32)
        vectors[:, 2] += self.tilt
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class CountingClassifier:
    name = "counting"
    classes = ["ring"]

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba(self, images):
        self.calls.append(len(images))
        return np.ones((len(images), 1))


def recommender(tmp_path, embedder, classifier) -> Recommender:
    store = store_with(tmp_path, PRODUCTS)
    return Recommender(store, embedder, classifier, index_of(PRODUCTS, VECTORS),
                       index_version="v1", auto_crop=False)


def answer(recommendation) -> tuple:
    return (recommendation.index_version, recommendation.type,
            [(r.id, r.score) for r in recommendation.results])


def test_concurrent_photos_are_batched_and_answered_as_one_by_one(tmp_path):
    gate = threading.Event()
    embedder, classifier = ColourEmbedder(gate), CountingClassifier()
    rec = recommender(tmp_path, embedder, classifier)
    photos = [photo(c) for c in COLOURS]
    gate.set()
    alone = [answer(rec.recommend(p, k=3)) for p in photos]
    assert len(embedder.calls) == len(photos)  # no executor: one model call per query
    assert len({tuple(a[2]) for a in alone}) > 1  # the photos have different answers

    embedder.calls.clear()
    classifier.calls.clear()
    embedder.entered.clear()  # set by the queries above: wait for the next one's
    gate.clear()
    executor = InferenceExecutor(window_s=0.005, max_batch=8, workers=1)
    rec.inference = executor
    try:
        answers: dict = {}
        first = [threading.Thread(target=lambda: answers.__setitem__(0, answer(
            rec.recommend(photos[0], k=3))))]
        rest = [threading.Thread(target=lambda i=i: answers.__setitem__(i, answer(
            rec.recommend(photos[i], k=3)))) for i in range(1, len(photos))]
        first[0].start()
        assert embedder.entered.wait(timeout=30)  # the models hold the first photo
        for t in rest:
            t.start()
        wait_until(lambda: executor.queued() == len(rest))
        gate.set()
        for t in first + rest:
            t.join(timeout=30)
    finally:
        gate.set()
        executor.close()
    assert [answers[i] for i in range(len(photos))] == alone
    # the first photo alone, then the five that waited as one batch (each photo's pieces are
    # found photo by photo, with one classifier call each, in the model thread too)
    assert [len(c) for c in embedder.calls] == [1, len(rest)]
    assert classifier.calls == [1, 1, *[1] * len(rest), len(rest)]
    assert sorted(p for c in embedder.calls for p in c) == sorted(
        tuple(int(v) for v in p.reshape(-1, 3).mean(0)) for p in photos)


def test_requests_holding_different_snapshots_are_never_batched_together(tmp_path):
    gate = threading.Event()
    old_embedder, new_embedder = ColourEmbedder(gate), ColourEmbedder(tilt=5.0)
    rec = recommender(tmp_path, old_embedder, CountingClassifier())
    old = rec.snapshot
    new = Snapshot(old.store, new_embedder, CountingClassifier(), index_of(PRODUCTS, VECTORS),
                   "v2")
    executor = InferenceExecutor(window_s=0.005, max_batch=8, workers=1)
    rec.inference = executor
    answers: dict = {}

    def query(i: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.__setitem__(i, answer(
            rec.recommend(photo(COLOURS[i]), k=1))))
        thread.start()
        return thread

    try:
        threads = [query(0)]
        assert old_embedder.entered.wait(timeout=30)
        threads += [query(1), query(3)]
        wait_until(lambda: executor.queued() == 2)
        rec.swap(new)  # requests from now on capture the new snapshot
        threads += [query(2), query(4)]
        wait_until(lambda: executor.queued() == 4)
        gate.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        gate.set()
        executor.close()
    # one batch of four was formed, split by snapshot: each model saw only its own requests
    assert [len(c) for c in old_embedder.calls] == [1, 2]
    assert [len(c) for c in new_embedder.calls] == [2]
    assert {answers[i][0] for i in (0, 1, 3)} == {"v1"}
    assert {answers[i][0] for i in (2, 4)} == {"v2"}
    assert answers[2][2][0][0] == "blue" and answers[4][2][0][0] == "blue"  # tilted to blue
    assert answers[1][2][0][0] == "green"


def test_a_failing_photo_fails_only_its_own_request():
    def run(snap, photos):
        if any(p == "bad" for p in photos):
            raise ValueError("unreadable")
        return [f"ok {p}" for p in photos]

    executor = InferenceExecutor(run=run)
    snap = object()
    try:
        executor._answer([job := _job(snap, "good"), bad := _job(snap, "bad")])
        assert job.future.result(timeout=5) == "ok good"
        with pytest.raises(ValueError, match="unreadable"):
            bad.future.result(timeout=5)
    finally:
        executor.close()
    assert executor.infer(snap, "late") == "ok late"  # after close: run in the caller's thread


def _job(snap, photo):
    from jewelrec.server.inference import _Job

    return _Job(snap, photo)


def test_past_max_queue_a_request_gets_a_fast_503_with_retry_after(tmp_path):
    gate = threading.Event()
    embedder = ColourEmbedder(gate)
    rec = recommender(tmp_path, embedder, CountingClassifier())
    app = create_app(recommender=rec, max_queue=2, reload_interval_s=3600, model_workers=1)
    statuses: list[int] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        def post() -> None:
            response = client.post("/api/recommend",
                                   files={"photo": ("p.png", png(COLOURS[0]), "image/png")})
            statuses.append(response.status_code)

        held = [threading.Thread(target=post)]
        try:
            held[0].start()
            assert embedder.entered.wait(timeout=30)
            held.append(threading.Thread(target=post))
            held[1].start()
            wait_until(lambda: rec.inference.queued() == 1)
            busy = client.post("/api/recommend",
                               files={"photo": ("p.png", png(COLOURS[1]), "image/png")})
            also_busy = client.get("/api/search", params={"q": "ring"})
            assert client.get("/healthz").status_code == 200  # not a query: never refused
        finally:
            gate.set()
            for t in held:
                t.join(timeout=30)
        assert busy.status_code == 503 and also_busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["detail"]
        assert statuses == [200, 200]  # the ones admitted were answered
        again = client.post("/api/recommend",
                            files={"photo": ("p.png", png(COLOURS[1]), "image/png")})
        assert again.status_code == 200  # room again once they finished
    assert rec.inference is None  # the executor is detached when the app stops


def test_the_openapi_document_says_when_503_and_retry_after_come():
    spec = create_app(recommender=object()).openapi()
    busy = spec["paths"]["/api/recommend"]["post"]["responses"]["503"]
    assert "Retry-After" in busy["headers"] and "busy" in busy["description"]


def test_two_workers_run_two_batches_at_once_and_close_cleanly():
    """With two workers a second batch runs while the first is still in the models (its Python
    work overlaps the other's model run); close() stops both after the queued photos."""
    inside = threading.Semaphore(0)
    release = threading.Event()

    def run(snap, photos):
        inside.release()
        assert release.wait(timeout=30)
        return [f"ok {p}" for p in photos]

    executor = InferenceExecutor(run=run, window_s=0.0, max_batch=1, workers=2)
    snap = object()
    answers: dict = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
        i, executor.infer(snap, i))) for i in range(2)]
    try:
        for t in threads:
            t.start()
        assert inside.acquire(timeout=30) and inside.acquire(timeout=30)  # both runs entered
    finally:
        release.set()
        for t in threads:
            t.join(timeout=30)
        executor.close()
    assert answers == {0: "ok 0", 1: "ok 1"}
    assert executor.infer(snap, "late") == "ok late"  # closed: the caller's own thread
    with pytest.raises(ValueError, match="workers"):
        InferenceExecutor(run=run, workers=0)


def test_uploads_still_arriving_do_not_hold_the_queue(monkeypatch):
    """Four clients that sent an upload's headers and then nothing held `--max-queue 4`: every
    query, searches without a body too, got 503 for as long as they stayed connected."""
    import anyio
    from starlette.responses import JSONResponse

    from jewelrec.server import inference

    bodies: list[bytes] = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append(body)
        await JSONResponse({"ok": True})(scope, receive, send)

    monkeypatch.setattr(inference, "BODY_SECONDS", 0.5)
    limit = inference.QueueLimit(app, max_queue=1, paths=lambda path: True)
    upload = {"type": "http", "path": "/api/recommend", "method": "POST", "headers": []}
    statuses: dict[str, int] = {}

    def answered(name):
        async def send(message):
            if message["type"] == "http.response.start":
                statuses[name] = message["status"]
        return send

    def arriving(*chunks: bytes):
        messages = iter([{"type": "http.request", "body": chunk,
                          "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)])

        async def receive():
            return next(messages)
        return receive

    async def never():  # the headers came, the body never does
        await anyio.sleep_forever()

    async def day():
        async with anyio.create_task_group() as group:
            group.start_soon(limit, upload, never, answered("idle"))
            await anyio.sleep(0.05)
            await limit({**upload, "method": "GET", "path": "/api/search"}, arriving(b""),
                        answered("search"))
            await limit(upload, arriving(b"x"), answered("second upload"))  # its pool is full
        await limit(upload, arriving(b"ab", b"cd"), answered("upload"))

    anyio.run(day)
    assert statuses == {"search": 200, "second upload": 503, "idle": 408, "upload": 200}
    assert bodies == [b"", b"abcd"]  # the app got each body whole, as sent
