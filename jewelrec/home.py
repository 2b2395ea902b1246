"""The data home: one folder holding the catalog store, managed images, models and index.

Layout (DESIGN.md): catalog.sqlite, images/, models/, index/, settings.json.
Every file is written atomically (temporary name, then rename) so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_HOME = "./jewelrec-data"

# Defaults recorded in settings.json the first time a home is used; later commands read them
# so that `index`, `recommend`, `evaluate` and `serve` agree on the models and backend.
DEFAULT_SETTINGS: dict[str, Any] = {
    "embedder": "efficientnet",
    "classifier": "efficientnet-head",
    "backend": "exact",
    "milvus_uri": None,
}


def resolve_home(path: str | os.PathLike | None) -> Path:
    """--home wins, then $JEWELREC_HOME, then ./jewelrec-data."""
    return Path(path or os.environ.get("JEWELREC_HOME") or DEFAULT_HOME).expanduser()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(target: Path, obj: Any) -> None:
    atomic_write_bytes(target, json.dumps(obj, indent=2, sort_keys=True).encode())


class Home:
    """Paths inside a data home, and its small settings file."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = resolve_home(root)

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def ensure(self) -> Home:
        for folder in (self.root, self.images_dir, self.models_dir, self.index_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def settings(self) -> dict[str, Any]:
        merged = dict(DEFAULT_SETTINGS)
        if self.settings_path.exists():
            merged.update(json.loads(self.settings_path.read_text()))
        return merged

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        merged = self.settings()
        merged.update({k: v for k, v in changes.items() if v is not None})
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.settings_path, merged)
        return merged

    def image_path(self, relative: str) -> Path:
        """Resolve a managed image name, refusing anything that escapes images/."""
        base = self.images_dir.resolve()
        path = (base / relative).resolve()
        if base != path and base not in path.parents:
            raise ValueError(f"image path escapes the image folder: {relative!r}")
        return path
