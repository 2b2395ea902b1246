"""Versioned index folders under home/index, switched atomically.

Each build writes a fresh folder `index/v<timestamp>-<pid>/` (vectors, rows, meta.json) and then
replaces the one-line pointer file `index/CURRENT`. Readers (a running server) keep answering from
the folder they loaded until the pointer changes, and a killed build leaves only an unreferenced
folder behind, never a broken index.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from jewelrec.errors import NotReadyError
from jewelrec.home import Home, atomic_write_bytes

POINTER = "CURRENT"
KEEP_OLD_VERSIONS = 2  # the previous index stays for readers that are still loading it


def current_version(home: Home) -> str | None:
    pointer = home.index_dir / POINTER
    try:
        return pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def new_version_dir(home: Home) -> Path:
    name = f"v{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}-{os.getpid()}"
    folder = home.index_dir / f".building-{name}"
    folder.mkdir(parents=True)
    return folder


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
        raise NotReadyError(f"no index in {home.root}: run `jewelrec index --home {home.root}`")
    folder = home.index_dir / version
    if not (folder / "meta.json").exists():
        raise NotReadyError(f"index {version} is incomplete: rerun `jewelrec index`")
    return folder


def read_meta(home: Home, version: str | None = None) -> dict[str, Any]:
    return json.loads((version_dir(home, version) / "meta.json").read_text())


def _remove_stale(home: Home, keep: str) -> None:
    versions = sorted(
        (p for p in home.index_dir.iterdir() if p.is_dir() and p.name.startswith("v")),
        key=lambda p: p.name,
    )
    for old in versions[:-KEEP_OLD_VERSIONS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for abandoned in home.index_dir.glob(".building-*"):
        # a build killed earlier; anything older than an hour is certainly not in progress
        if time.time() - abandoned.stat().st_mtime > 3600:
            shutil.rmtree(abandoned, ignore_errors=True)
