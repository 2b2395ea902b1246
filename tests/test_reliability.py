"""Faults an operator meets (issue 10, findings 5, 8 and 9): a read-only home, a full disk, an
abandoned index build, a catalog pruned while serving, file modes, a Milvus that cannot start.

A read-only home is made for real: as an ordinary user by chmod, as root (whom chmod does not
stop) by a read-only bind mount in a private mount namespace (`unshare -m`), which refuses
writes to root too. A full disk is a real ENOSPC where the kernel can give one (/dev/full), and
an injected one where it cannot.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import milvus_server
import numpy as np
import pytest

from jewelrec.catalog.schema import Product
from jewelrec.catalog.store import CatalogStore
from jewelrec.cli import main
from jewelrec.errors import CatalogError, StorageError
from jewelrec.home import Home, atomic_write_bytes, current_umask
from jewelrec.recommend import Recommender
from jewelrec.search import versions
from jewelrec.search.filters import Filters
from jewelrec.search.index import ExactIndex, IndexRow

REPO = Path(__file__).resolve().parents[1]


def product(pid: str, ptype: str = "ring") -> Product:
    return Product(pid, f"title {pid}", ptype, 10.0, f"https://shop.example/{pid}", (f"{pid}.png",))


def small_store(root: Path, ids=("A", "B")) -> Home:
    home = Home(root).ensure()
    with CatalogStore.open(home) as store, store.transaction() as tx:
        for pid in ids:
            tx.upsert(product(pid))
    return home


# -- finding 5: a read-only home -----------------------------------------------------------
def test_a_store_that_cannot_be_written_is_opened_read_only(tmp_path, monkeypatch):
    """The mode is chosen from what the OS allows; the connection itself refuses writes."""
    home = small_store(tmp_path / "home")
    monkeypatch.setattr("jewelrec.catalog.store.sqlite_can_write", lambda path: False)
    store = CatalogStore.open(home)
    assert store.read_only
    assert [p.id for p in store.all_products()] == ["A", "B"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._conn.execute("DELETE FROM products")  # SQLite itself says no, not just our flag
    with pytest.raises(CatalogError, match="read-only"):
        with store.transaction():
            pass
    store.close()
    monkeypatch.undo()
    with CatalogStore.open(home) as writable:
        assert not writable.read_only and writable.count() == 2


def test_only_a_file_that_is_not_a_store_is_called_one(tmp_path):
    text = tmp_path / "text" / "catalog.sqlite"
    text.parent.mkdir()
    text.write_text("id,title\n1,ring\n" * 100)
    with pytest.raises(CatalogError, match="not a jewelrec catalog store"):
        CatalogStore.open(Home(text.parent))
    other = tmp_path / "other" / "catalog.sqlite"
    other.parent.mkdir()
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    with pytest.raises(CatalogError, match="not a jewelrec catalog store"):
        CatalogStore.open(Home(other.parent), read_only=True)


def _read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written, even by root; or a skip."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)
        return []
    unshare = shutil.which("unshare")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    prefix = [unshare or "unshare", "-m", "sh", "-c", script, str(folder)]
    probe = subprocess.run([*prefix, "touch", str(folder / ".probe")], capture_output=True)
    if unshare is None or probe.returncode == 0:
        (folder / ".probe").unlink(missing_ok=True)
        pytest.skip("running as root without mount namespaces (unshare -m): cannot make a "
                    "home read-only for root")
    return prefix


READ_ONLY_SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from jewelrec.catalog.store import CatalogStore
from jewelrec.errors import CatalogError
from jewelrec.server.app import create_app

home, photo = sys.argv[1], open(sys.argv[2], "rb").read()
out = {}
try:
    open(home + "/probe-write", "w")
    out["writable"] = True
except OSError as exc:
    out["writable"] = False
try:
    CatalogStore.open(home, read_only=False)
    out["rw_error"] = None
except CatalogError as exc:
    out["rw_error"] = str(exc)
with TestClient(create_app(home)) as client:
    out["healthz"] = client.get("/healthz").status_code
    out["head_healthz"] = client.head("/healthz").status_code
    answer = client.post("/api/recommend", files={"photo": ("p.jpg", photo, "image/jpeg")},
                         data={"k": "3"})
    out["recommend"] = answer.status_code
    out["results"] = len(answer.json().get("results", []))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_recommend_and_serve_work_on_a_read_only_home(tiny_home, tiny_catalog, tmp_path):
    """A home nobody may write (a read-only mount): `recommend` and the server answer; asking
    for write access says the home is read-only, never "not a jewelrec catalog store"."""
    base = Path(tempfile.mkdtemp(prefix="jewelrec-ro-"))
    try:
        home = base / "home"
        shutil.copytree(tiny_home, home, symlinks=True)
        CatalogStore.open(home).close()  # the last connection merges and removes the WAL
        assert not list(home.glob("catalog.sqlite-*"))
        photo = sorted((tiny_catalog / "queries").glob("*.jpg"))[0]
        prefix = _read_only_prefix(home)
        env = {**os.environ, "JEWELREC_DEBUG": ""}
        cli = subprocess.run(
            [*prefix, sys.executable, "-m", "jewelrec.cli", "recommend", str(photo), "--home",
             str(home), "--json", "-k", "3"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        assert len(json.loads(cli.stdout.splitlines()[0])["results"]) == 3
        ingest = subprocess.run(
            [*prefix, sys.executable, "-m", "jewelrec.cli", "ingest",
             str(tiny_catalog / "catalog.csv"), "--home", str(home), "--no-progress"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )
        assert ingest.returncode == 2  # writing is refused, in words that say why
        assert "read-only" in ingest.stderr and str(home) in ingest.stderr, ingest.stderr
        assert "unexpected error" not in ingest.stderr
        server = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(home), str(photo)],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )
        assert server.returncode == 0, server.stderr[-3000:]
        out = json.loads(server.stdout.splitlines()[-1])
        assert out["writable"] is False  # the home really is read-only to this process
        assert out["rw_error"] and "read-only" in out["rw_error"]
        assert "not a jewelrec catalog store" not in out["rw_error"]
        assert (out["healthz"], out["head_healthz"], out["recommend"]) == (200, 200, 200)
        assert out["results"] == 3
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        shutil.rmtree(base, ignore_errors=True)


def test_an_unreadable_store_says_permission_denied(tmp_path):
    """chmod 000 on the store: the message names the permission problem (as another user when
    run as root, since root reads everything)."""
    base = Path(tempfile.mkdtemp(prefix="jewelrec-perm-"))
    try:
        base.chmod(0o755)
        home = small_store(base / "home")
        home.root.chmod(0o755)
        home.catalog_db.chmod(0o000)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                os.close(read)
                try:
                    if os.geteuid() == 0:
                        os.setgid(65534)
                        os.setuid(65534)
                    CatalogStore.open(home)
                    message = "opened"
                except PermissionError as exc:  # no CAP_SETUID here
                    message = f"SKIP cannot become another user: {exc}"
                except CatalogError as exc:
                    message = str(exc)
                os.write(write, message.encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as fh:
            message = fh.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        if message.startswith("SKIP "):
            pytest.skip(message.removeprefix("SKIP "))
        assert "permission denied" in message.lower(), message
        assert "not a jewelrec catalog store" not in message
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- finding 8: a full disk, an abandoned build, file modes ----------------------------------
def test_a_full_disk_names_the_file_and_the_cause_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "settings.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError) as caught:
        atomic_write_bytes(target, b"new")
    message = str(caught.value)
    assert str(target) in message and "ENOSPC" in message and "disk is full" in message
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no temporary left


def test_ingest_on_a_full_disk_says_so_instead_of_unexpected_error(
    tiny_catalog, tmp_path, monkeypatch, capsys
):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    home = tmp_path / "home"
    code = main(["ingest", str(tiny_catalog / "catalog.csv"), "--home", str(home),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unexpected error" not in err
    assert "ENOSPC" in err and str(home) in err
    assert not (home / ".ingest-staging").exists()


def _home_with_index(root: Path) -> tuple[Home, str]:
    home = small_store(root, ids=("A", "B", "C"))
    with versions.building(home) as folder:
        index = ExactIndex(4)
        index.upsert([IndexRow(p, f"{p}.png", "ring", 10.0) for p in "ABC"], np.eye(3, 4))
        index.save(folder)
        version = versions.publish(home, folder, {"embedder": "x", "backend": "exact"})
    return home, version


def test_an_index_build_on_a_full_disk_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    """The vectors go to /dev/full (a real ENOSPC from the kernel; numpy reports it as a
    short write without errno), and the disk reports no space left."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    home, before = _home_with_index(tmp_path / "home")
    real_new_dir = versions.new_version_dir

    def new_dir_on_full_disk(h):
        folder = real_new_dir(h)
        (folder / "vectors.npy").symlink_to("/dev/full")
        return folder

    monkeypatch.setattr(versions, "new_version_dir", new_dir_on_full_disk)
    monkeypatch.setattr("jewelrec.home.shutil.disk_usage", lambda p: SimpleNamespace(free=0))
    index = ExactIndex(4)
    index.upsert([IndexRow(p, f"{p}.png", "ring", 10.0) for p in "ABC"], np.eye(3, 4))
    with pytest.raises(StorageError) as caught:
        with versions.building(home) as folder:
            index.save(folder)
            versions.publish(home, folder, {"embedder": "x"})
    message = str(caught.value)
    assert str(home.index_dir) in message and "disk is full" in message
    assert "previous index still serves" in message
    assert not list(home.index_dir.glob(".building-*"))  # the failed build cleaned up
    assert versions.current_version(home) == before
    assert versions.read_meta(home)["embedder"] == "x"


def test_abandoned_builds_are_removed_by_the_next_build(tmp_path):
    home, _ = _home_with_index(tmp_path / "home")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = home.index_dir / f".building-v20260101-000000-000000001-{gone.pid}"
    old = home.index_dir / f".building-v20260101-000000-000000002-{os.getppid()}"
    alive = home.index_dir / f".building-v20260101-000000-000000003-{os.getppid()}"
    for folder in (dead, old, alive):
        folder.mkdir()
        (folder / "vectors.npy").write_bytes(b"partial")
    hours_ago = os.stat(old).st_mtime - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    fresh = versions.new_version_dir(home)
    assert not dead.exists() and not old.exists()  # killed build; stale build
    assert alive.exists() and fresh.exists()  # a build that may still be running; ours


def test_report_files_are_readable_like_any_file_not_0600(tmp_path):
    target = tmp_path / "report.html"
    atomic_write_bytes(target, b"<p>hi</p>")
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert target.stat().st_mode & 0o044  # group and others may read (umask 022: 0644)


def test_a_pruned_catalog_is_logged_once_per_index_version_not_per_request(tmp_path, caplog):
    home = small_store(tmp_path / "home", ids=("A",))  # B and C pruned from the catalog
    index = ExactIndex(3)
    index.upsert([IndexRow(p, f"{p}.png", "ring", 10.0) for p in "ABC"], np.eye(3))
    recommender = Recommender(
        CatalogStore.open(home), SimpleNamespace(), SimpleNamespace(classes=["ring"]), index,
        home=home, index_version="v1",
    )
    with caplog.at_level(logging.WARNING, logger="jewelrec.recommend"):
        for _ in range(20):
            answer = recommender.rank(np.array([0.0, 1.0, 0.0]), np.array([1.0]), k=3)
            assert [r.id for r in answer.results] == ["A"]
        recommender.swap(replace(recommender.snapshot, index_version="v2"))
        recommender.rank(np.array([0.0, 1.0, 0.0]), np.array([1.0]), k=3)
    warnings = [r for r in caplog.records if "disagree" in r.getMessage()]
    assert len(warnings) == 2
    assert "v1" in warnings[0].getMessage() and "v2" in warnings[1].getMessage()


def test_a_price_or_type_changed_since_the_index_still_obeys_the_filters(tmp_path):
    """Re-ingested without `index`: the index filtered on its old copy (B at 10.0, a ring) and
    the answer showed B as the catalog has it now, a 5,000.00 bracelet under 'rings up to 100'."""
    home = small_store(tmp_path / "home", ids=("A", "C"))
    with CatalogStore.open(home) as store, store.transaction() as tx:
        tx.upsert(replace(product("B", "bracelet"), price=5000.0))
    index = ExactIndex(3)
    index.upsert([IndexRow(p, f"{p}.png", "ring", 10.0) for p in "ABC"], np.eye(3))
    recommender = Recommender(
        CatalogStore.open(home), SimpleNamespace(), SimpleNamespace(classes=["ring"]), index,
        home=home, index_version="v1",
    )
    ask = Filters.build(max_price=100.0, types=["ring"])
    answer = recommender.rank(np.array([0.0, 1.0, 0.0]), np.array([1.0]), k=2, filters=ask)
    assert sorted(r.id for r in answer.results) == ["A", "C"]  # k still, from further down
    # the index still has B as a ring: asked for bracelets it cannot find it until re-indexed,
    # asked for rings it must not show it
    rings = recommender.rank(np.array([0.0, 1.0, 0.0]), np.array([1.0]), k=3, type="ring")
    assert sorted(r.id for r in rings.results) == ["A", "C"]


def test_a_crop_at_the_left_edge_is_read_as_a_value_not_an_option(tmp_path, capsys):
    code = main(["recommend", "x.jpg", "--home", str(tmp_path / "none"), "--crop", "-1,0,5,5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "expected one argument" not in err
    assert "--crop" in err and "non-negative" in err


# -- finding 9: a Milvus that cannot start fails CI ------------------------------------------
@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                             ("", pytest.skip.Exception)])
def test_a_milvus_that_cannot_start_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    def cannot_start(base_dir):
        raise RuntimeError("milvus exited with code 1")

    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(milvus_server, "embedded_milvus", cannot_start)
    monkeypatch.setattr(milvus_server.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(outcome, match="did not start"):
        next(milvus_server.milvus_uri_fixture())


def test_a_model_folder_is_replaced_whole_or_not_at_all(tmp_path):
    """`train` killed while saving left new weights beside the old ONNX graph, and queries
    used the mix: now a model is written into a folder of its own that takes the old one's
    place in one rename."""
    from jewelrec.home import replaced_folder

    target = tmp_path / "models" / "classifier-x"
    target.mkdir(parents=True)
    (target / "weights.safetensors").write_text("old weights")
    (target / "graph.onnx").write_text("old graph")

    with pytest.raises(RuntimeError), replaced_folder(target) as fresh:
        (fresh / "weights.safetensors").write_text("new weights")
        raise RuntimeError("killed while saving")  # the graph never came
    assert (target / "weights.safetensors").read_text() == "old weights"
    assert (target / "graph.onnx").read_text() == "old graph"

    with replaced_folder(target) as fresh:
        (fresh / "weights.safetensors").write_text("new weights")
        (fresh / "graph.onnx").write_text("new graph")
        assert (target / "weights.safetensors").read_text() == "old weights"  # until the end
    assert sorted(p.name for p in target.iterdir()) == ["graph.onnx", "weights.safetensors"]
    assert (target / "graph.onnx").read_text() == "new graph"
    assert [p.name for p in target.parent.iterdir()] == ["classifier-x"]  # nothing left over
    assert (target.stat().st_mode & 0o777) == 0o777 & ~current_umask()

    # a run killed between its two renames (only the old folder, set aside) and one killed
    # before the end (a half-written new folder): the next run puts back and cleans up
    os.replace(target, target.parent / ".classifier-x.old.part")
    (target.parent / ".classifier-x.abc123.part").mkdir()
    with replaced_folder(target) as fresh:
        assert (target / "graph.onnx").read_text() == "new graph"  # put back first
        (fresh / "weights.safetensors").write_text("third")
    assert [p.name for p in target.parent.iterdir()] == ["classifier-x"]
    assert [p.name for p in target.iterdir()] == ["weights.safetensors"]


@pytest.mark.parametrize("damaged", ["vectors.npy", "rows.json", "meta.json", "recognition.npy"])
def test_a_damaged_index_file_says_to_build_the_index_again(tiny_home, tiny_catalog, tmp_path,
                                                            capsys, damaged):
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    version = (home / "index" / "CURRENT").read_text()
    path = home / "index" / version / damaged
    assert path.exists(), sorted(p.name for p in path.parent.iterdir())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short
    photo = str(sorted((tiny_catalog / "queries").glob("*.jpg"))[0])
    assert main(["recommend", photo, "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert f"index {version} in {home} is damaged" in err and err.count("\n") == 1, err
    assert "run `jewelrec index --home" in err and "unexpected" not in err
    assert main(["index", "--home", str(home), "--no-progress"]) == 0  # which mends it
    capsys.readouterr()
    assert main(["recommend", photo, "--home", str(home)]) == 0


def test_a_missing_image_file_is_left_out_by_train_evaluate_and_report(tiny_home, tmp_path,
                                                                       capsys, caplog):
    """index skipped it with a warning; evaluate and report failed with a KeyError and train
    stopped on it."""
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    shutil.rmtree(home / "cache", ignore_errors=True)  # every image read again
    store = CatalogStore.open(Home(home))
    lost = store.all_products()[0].images  # one product's every view
    store.close()
    for name in lost:
        (home / "images" / name).unlink()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--home", str(home), "--json"]) == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert main(["report", "--home", str(home), "--out", str(tmp_path / "r.html"),
                     "--examples", "2", "--no-progress"]) == 0
        assert main(["train", "--home", str(home), "--epochs", "1", "--no-progress"]) == 0
    assert evaluated["queries"] > 0
    assert any(f"skipping image {lost[0]}" in r.getMessage() for r in caplog.records)
    assert "unexpected" not in capsys.readouterr().err


def test_a_catalog_of_placeholders_only_says_so_instead_of_empty(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "shop"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "same.png")
    rows = ["id,title,type,price,url,image"] + [
        f"p{i},Piece {i},{('ring', 'earring')[i % 2]},{10 + i},https://shop.example/p{i},same.png"
        for i in range(6)]
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    home = str(tmp_path / "home")
    assert main(["ingest", str(folder / "catalog.csv"), "--home", home, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--home", home, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "every photo of the catalog" in err and "--keep-duplicates" in err, err
    assert "is empty" not in err


def test_the_report_map_of_a_one_product_catalog_is_not_available_not_a_crash(tiny_home,
                                                                               tmp_path):
    """One product with several photos passed the "3 indexed images" check, and the 2-D
    projection of its single point failed with an IndexError."""
    from jewelrec.report import map_section

    home = tmp_path / "home"
    shutil.copytree(tiny_home, home, symlinks=True)
    rows_file = home / "index" / (home / "index" / "CURRENT").read_text() / "rows.json"
    rows = json.loads(rows_file.read_text())
    for row in rows:
        row["product_id"] = rows[0]["product_id"]
    rows_file.write_text(json.dumps(rows))
    section = map_section(Home(home), points=50)
    assert "fewer than 3 indexed products" in section.body
    for n, row in enumerate(rows):  # three products: a map
        row["product_id"] = f"p{n % 3}"
    rows_file.write_text(json.dumps(rows))
    assert "<img" in map_section(Home(home), points=50).body
