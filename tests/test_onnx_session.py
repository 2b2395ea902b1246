"""CoreSharingSession: a lone run on every core; overlapping runs on one core each when it shares
the cores (bulk embedding), on every core when it does not (the server); the same numbers either
way."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from jewelrec.models import onnx_session
from jewelrec.models.onnx_session import CoreSharingSession


class FakeSession:
    """Records on how many threads it was opened and runs; with `hold`, the next run waits for
    `release`."""

    def __init__(self, threads: int) -> None:
        self.threads, self.runs = threads, 0
        self.started, self.release = threading.Event(), threading.Event()
        self.hold = False

    def run(self, outputs, feeds):
        self.runs += 1
        self.started.set()
        if self.hold:  # the first run to come holds; any later one goes through
            self.hold = False
            assert self.release.wait(10)
        return [feeds["x"] * 2]


@pytest.fixture
def fakes(monkeypatch) -> list[FakeSession]:
    opened: list[FakeSession] = []

    def fake_open(path, outputs, threads=None):
        opened.append(FakeSession(threads))
        return opened[-1]

    monkeypatch.setattr(onnx_session, "open_session", fake_open)
    monkeypatch.setattr(onnx_session, "available_cores", lambda: 4)
    monkeypatch.delenv(onnx_session.THREADS_VARIABLE, raising=False)
    return opened


def test_a_lone_run_takes_every_core_and_no_one_core_session_opens(fakes, tmp_path):
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    for _ in range(3):
        session.run(["y"], {"x": np.ones(2)})
    assert [f.threads for f in fakes] == [4]  # never overlapped: one session, all cores
    assert fakes[0].runs == 3 and session.in_flight == 0


def overlapping_run(session: CoreSharingSession, wide: FakeSession) -> np.ndarray:
    """A run made while another holds `wide` (the session's first, every-core one)."""
    wide.hold = True
    first = threading.Thread(target=session.run, args=(["y"], {"x": np.ones(2)}))
    first.start()
    try:
        assert wide.started.wait(10)
        return session.run(["y"], {"x": np.full(2, 3.0)})[0]
    finally:
        wide.release.set()
        first.join(10)


def test_a_run_that_overlaps_another_takes_one_core_when_sharing(fakes, tmp_path):
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    wide = fakes[0]
    np.testing.assert_array_equal(overlapping_run(session, wide), [6.0, 6.0])
    narrow = fakes[1]
    assert narrow.threads == 1 and narrow.runs == 1
    session.run(["y"], {"x": np.ones(2)})  # alone again: every core
    assert (wide.runs, narrow.runs, len(fakes)) == (2, 1, 2)
    assert session.in_flight == 0


def test_without_sharing_overlapping_runs_keep_every_core(fakes, tmp_path):
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",))  # the server's
    np.testing.assert_array_equal(overlapping_run(session, fakes[0]), [6.0, 6.0])
    assert [f.threads for f in fakes] == [4] and fakes[0].runs == 2


def test_the_model_threads_variable_sizes_every_core(fakes, tmp_path, monkeypatch):
    """`serve --workers N` gives each process its share of the cores through the variable."""
    monkeypatch.setenv(onnx_session.THREADS_VARIABLE, "2")
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    np.testing.assert_array_equal(overlapping_run(session, fakes[0]), [6.0, 6.0])
    assert [f.threads for f in fakes] == [2, 1]
    monkeypatch.setenv(onnx_session.THREADS_VARIABLE, "1")
    one = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    assert one._narrow is fakes[-1] and fakes[-1].threads == 1  # one thread: nothing to share


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_model_threads_value_is_a_clear_error(value, monkeypatch):
    from jewelrec.errors import JewelrecError

    monkeypatch.setenv(onnx_session.THREADS_VARIABLE, value)
    with pytest.raises(JewelrecError, match=onnx_session.THREADS_VARIABLE):
        onnx_session.model_threads()


def test_without_the_variable_the_models_use_the_cores_the_process_may_run_on(monkeypatch):
    monkeypatch.delenv(onnx_session.THREADS_VARIABLE, raising=False)
    assert onnx_session.model_threads() == onnx_session.available_cores() >= 1


def test_a_failing_run_leaves_the_count_right(fakes, tmp_path):
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    with pytest.raises(KeyError):
        session.run(["y"], {})
    assert session.in_flight == 0


def test_one_core_and_every_core_give_the_same_numbers(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel())])
    path = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = {"x": rng.standard_normal((32, 64)).astype(np.float32)}
    wide = onnx_session.open_session(path, ("y",))
    narrow = onnx_session.open_session(path, ("y",), threads=1)
    np.testing.assert_allclose(wide.run(["y"], x)[0], narrow.run(["y"], x)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="outputs"):
        onnx_session.open_session(path, ("z",))


def test_a_homes_bulk_backbone_shares_the_cores_and_its_serving_one_does_not(tmp_path):
    from jewelrec.home import Home
    from jewelrec.models.backbone import Backbone

    home = Home(tmp_path / "home")
    assert Backbone.for_home(home, share_cores=True).share_cores
    assert not Backbone.for_home(home).share_cores


def test_a_one_core_session_that_cannot_open_leaves_overlapping_runs_on_every_core(
        fakes, monkeypatch, tmp_path, caplog):
    session = CoreSharingSession(tmp_path / "g.onnx", ("y",), share_cores=True)
    wide = fakes[0]

    def no_memory(path, outputs, threads=None):
        raise MemoryError("no room for a second copy")

    monkeypatch.setattr(onnx_session, "open_session", no_memory)
    np.testing.assert_array_equal(overlapping_run(session, wide), [6.0, 6.0])
    assert wide.runs == 2 and "keep every core" in caplog.text
