"""Versioned index folders under home/index, switched atomically.

Each build writes a fresh folder `index/v<timestamp>-<pid>/` (vectors, rows, meta.json) and then
replaces the one-line pointer file `index/CURRENT`. Readers (a running server) keep answering from
the folder they loaded until the pointer changes, and a killed build leaves only an unreferenced
folder behind, never a broken index. A build that fails removes its folder at once (on a full
disk that space matters); one killed outright is removed by the next build, as soon as its
process is gone (or, whatever the process, once it is STALE_BUILD_S old).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jewelrec.errors import NotReadyError, StorageError
from jewelrec.home import Home, atomic_write_bytes, storage_error

log = logging.getLogger(__name__)

POINTER = "CURRENT"
KEEP_OLD_VERSIONS = 2  # the previous index stays for readers that are still loading it
STALE_BUILD_S = 30 * 60  # a build folder this old is abandoned even if its pid looks alive
BUILDING_PREFIX = ".building-"


def current_version(home: Home) -> str | None:
    pointer = home.index_dir / POINTER
    try:
        return pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def new_version_dir(home: Home) -> Path:
    """A fresh, unpublished build folder (abandoned ones of killed builds are removed first)."""
    remove_abandoned_builds(home)
    name = f"v{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}-{os.getpid()}"
    folder = home.index_dir / f"{BUILDING_PREFIX}{name}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise storage_error("create the new index folder", folder, exc) from exc
    return folder


@contextmanager
def building(home: Home) -> Iterator[Path]:
    """A build folder for the block to fill and `publish`; if the block fails, the folder is
    removed and a disk error (full, read-only) names the index folder and its cause."""
    folder = new_version_dir(home)
    try:
        yield folder
    except StorageError:
        raise
    except OSError as exc:
        error = storage_error("write the new index in", home.index_dir, exc)
        raise StorageError(f"{error} (nothing was published; the previous index still serves)"
                           ) from exc
    finally:
        if folder.exists():  # not published: publish renames it
            shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned_builds(home: Home) -> list[str]:
    """Remove build folders whose process is gone (killed mid-build) or that are older than
    STALE_BUILD_S; returns their names."""
    removed = []
    for folder in home.index_dir.glob(f"{BUILDING_PREFIX}*"):
        pid = folder.name.rsplit("-", 1)[-1]
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            continue
        if age > STALE_BUILD_S or (pid.isdigit() and not _process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _process_alive(pid: int) -> bool:
    if os.name != "posix" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def publish(home: Home, building: Path, meta: dict[str, Any]) -> str:
    """Finish a build: write meta.json, move the folder into place, switch the pointer."""
    (building / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    name = building.name.removeprefix(".building-")
    final = home.index_dir / name
    os.replace(building, final)
    atomic_write_bytes(home.index_dir / POINTER, name.encode())
    _remove_stale(home, keep=name)
    return name


def version_dir(home: Home, version: str | None = None) -> Path:
    version = version or current_version(home)
    if version is None:
        raise NotReadyError(f"no index in {home.root}: run `{home.command('index')}`")
    folder = home.index_dir / version
    if not (folder / "meta.json").exists():
        raise NotReadyError(f"index {version} is incomplete: rerun `jewelrec index`")
    return folder


def read_meta(home: Home, version: str | None = None) -> dict[str, Any]:
    folder = version_dir(home, version)
    with damaged_as_not_ready(home, folder.name):
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not an object")
        return meta


@contextmanager
def damaged_as_not_ready(home: Home, version: str) -> Iterator[None]:
    """Reading index `version`'s files: one damaged (cut short, not JSON, missing) is a
    NotReadyError that says to build the index again, not numpy's or json's own words."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        raise NotReadyError(f"index {version} in {home.root} is damaged ({reason}): run "
                            f"`{home.command('index')}` to build it again") from exc


def _remove_stale(home: Home, keep: str) -> None:
    versions = sorted(
        (p for p in home.index_dir.iterdir() if p.is_dir() and p.name.startswith("v")),
        key=lambda p: p.name,
    )
    for old in versions[:-KEEP_OLD_VERSIONS]:
        if old.name != keep:
            _drop_remote_collection(old)
            shutil.rmtree(old, ignore_errors=True)
    remove_abandoned_builds(home)


def _drop_remote_collection(folder: Path) -> None:
    """A retired version built on Milvus takes its collection with it, so the server does not
    keep one collection per re-index forever. Best effort: a server that cannot be reached only
    leaves the collection behind (logged), it never fails the publish that retired it."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return
    if meta.get("backend") != "milvus" or not meta.get("milvus_collection"):
        return
    from jewelrec.search.milvus import drop_collection

    try:
        drop_collection(meta["milvus_uri"], meta["milvus_collection"])
    except Exception as exc:  # noqa: BLE001 - any server trouble: keep going, say so
        log.warning("could not drop Milvus collection %s of retired index %s (%s)",
                    meta["milvus_collection"], folder.name, exc)
