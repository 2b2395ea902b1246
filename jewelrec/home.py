"""The data home: one folder holding the catalog store, managed images, models and index.

Layout (DESIGN.md): catalog.sqlite, images/, models/, index/, settings.json.
Every file is written atomically (temporary name, then rename) so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from jewelrec.errors import JewelrecError, NotReadyError, StorageError

DEFAULT_HOME = "./jewelrec-data"
INT8, FP32 = "int8", "fp32"  # how the home's backbone computes (models/quantization.py)
PRECISIONS = (INT8, FP32)


@dataclass(frozen=True)
class Settings:
    """What a home records in settings.json so that `index`, `recommend`, `evaluate` and
    `serve` agree on the models and backend: read once per command, passed down, never edited
    in place (`Home.update_settings` writes a new file)."""

    embedder: str = "efficientnet"
    classifier: str = "efficientnet-tuned"
    backend: str = "exact"
    milvus_uri: str | None = None
    auto_crop: bool = True  # frame the piece itself in catalog photos and queries
    precision: str = INT8  # the backbone's arithmetic; a home whose settings predate the
    # choice computed in float, and keeps doing so until `train --precision` changes it

    @classmethod
    def from_dict(cls, raw: Any, source: Path | str = "settings.json") -> Settings:
        """Validated settings; keys this version does not know are ignored (a newer home)."""
        if not isinstance(raw, dict):
            raise JewelrecError(f"{source} does not hold a JSON object: fix or remove it")
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("precision", FP32)  # what every model trained before it was saved on
        for key, value in values.items():
            expected = bool if key == "auto_crop" else str
            if not (isinstance(value, expected) or (key == "milvus_uri" and value is None)):
                raise JewelrecError(f"{source}: {key!r} should be a {expected.__name__}, "
                                    f"not {value!r}: fix or remove it")
        from jewelrec.models.base import CLASSIFIERS, EMBEDDERS  # names only: no model loads
        from jewelrec.search.backends import BACKENDS

        named = {"precision": PRECISIONS, "embedder": sorted(EMBEDDERS),
                 "classifier": sorted(CLASSIFIERS), "backend": BACKENDS}
        for key, choices in named.items():  # a name no command knows fails every later query
            if key in values and values[key] not in choices:
                raise JewelrecError(f"{source}: {key!r} should be one of {', '.join(choices)}"
                                    f", not {values[key]!r}: fix or remove it")
        return cls(**values)


DEFAULT_SETTINGS = Settings()


def resolve_home(path: str | os.PathLike | None) -> Path:
    """--home wins, then $JEWELREC_HOME, then ./jewelrec-data."""
    return Path(path or os.environ.get("JEWELREC_HOME") or DEFAULT_HOME).expanduser()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success.

    The file gets the mode a plain `open()` would give it (0666 less the umask; mkstemp's 0600
    would hide reports and settings from the other users of a shared home). A failed write
    (disk full, read-only home) becomes a StorageError naming `target` and the cause.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error("write", target, exc) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error("write", target, exc) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def replaced_folder(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `target`; on success it takes `target`'s place whole,
    so a model's weights, config and graphs are never a mix of two trainings (a `train` killed
    while saving left new weights beside the old graph, and queries used the mix). What a
    killed run left behind goes the next time; a run killed between the two renames leaves
    the previous folder to be put back."""
    parent, name = target.parent, target.name
    old = parent / f".{name}.old.part"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        for stale in parent.glob(f".{name}.*.part"):
            shutil.rmtree(stale, ignore_errors=True)
        fresh = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=parent))
        os.chmod(fresh, 0o777 & ~current_umask())
    except OSError as exc:
        raise storage_error("write", target, exc) from exc
    try:
        yield fresh
        if target.exists():
            os.replace(target, old)
        os.replace(fresh, target)
    except OSError as exc:
        raise storage_error("write", target, exc) from exc
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        if target.exists():  # else the second rename failed: the old folder is all there is
            shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process umask, read without changing it (Linux reports it in /proc); 0o022 where
    it cannot be read, the usual default."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    """`exc` as one sentence that says what failed where, and why: "cannot write X: the disk
    is full (ENOSPC, 0 bytes free)". A short write without an errno (numpy reports "N
    requested and M written") is a full disk when the disk has no room left."""
    code = exc.errno
    if code is not None:
        name = errno.errorcode.get(code, str(code))
        reason = f"{_ERRNO_HINTS.get(code, exc.strerror or os.strerror(code))} ({name})"
    else:
        reason = str(exc) or type(exc).__name__
    free = _free_bytes(path)
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None
                                                 and free < 1_000_000):
        if code is None:
            reason = f"the disk is full ({reason})"
        reason += f"; {free:,} bytes free" if free is not None else ""
        reason += ": free some space and run the command again"
    error = StorageError(f"cannot {action} {path}: {reason}")
    error.errno = code
    return error


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


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
        if self.root.exists() and not self.root.is_dir():
            raise JewelrecError(f"the data home {self.root} is a file, not a folder: name a "
                                "folder with --home (or $JEWELREC_HOME)")

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.sqlite"

    def command(self, *words: str) -> str:
        """`jewelrec <words> --home <this home>`, quoted for a shell: the command a message asks
        the operator to run, ready to paste (a home with a space in its path broke it)."""
        return " ".join(["jewelrec", *words, "--home", shlex.quote(str(self.root))])

    def require_catalog(self, error: type[JewelrecError] = NotReadyError) -> Path:
        """The catalog store's path, or `error` (a stage's NotReadyError; the store's own
        CatalogError) saying, in the one wording every command uses, to ingest first."""
        if not self.catalog_db.exists():
            raise error(f"no catalog in {self.root}: run `jewelrec ingest` first")
        return self.catalog_db

    def empty_catalog(self) -> NotReadyError:
        """What a stage raises when the catalog holds nothing for it to work on."""
        return NotReadyError(f"the catalog in {self.root} is empty: run `jewelrec ingest` first")

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

    @contextmanager
    def exclusive(self, job: str, error: type[JewelrecError] = JewelrecError) -> Iterator[None]:
        """One `job` (ingest, index) on this home at a time: an exclusive lock on
        home/.<job>.lock (released by the OS even on kill -9); a second one raises `error`
        at once instead of racing the first (two index runs published in either order)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{job}.lock", "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise error(f"another {job} is running on {self.root}; wait for it to "
                            "finish") from exc
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def ensure(self) -> Home:
        for folder in (self.root, self.images_dir, self.models_dir, self.index_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def settings(self) -> Settings:
        if not self.settings_path.exists():
            return DEFAULT_SETTINGS
        try:
            raw = json.loads(self.settings_path.read_text())
        except ValueError as exc:
            raise JewelrecError(f"{self.settings_path} is not valid JSON ({exc}): "
                                "fix or remove it") from exc
        return Settings.from_dict(raw, self.settings_path)

    def update_settings(self, **changes: Any) -> Settings:
        """Record the changes (None leaves a value as it is) and return the new settings."""
        updated = replace(self.settings(), **{k: v for k, v in changes.items() if v is not None})
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.settings_path, asdict(updated))
        return updated

    def shown_images(self, images: Sequence[str]) -> list[str]:
        """A product's images whose file is there (deleted since ingest: left out, so nothing
        shows a broken picture), or its main one alone when none is."""
        present = [name for name in images if self.image_path(name).is_file()]
        return present or list(images[:1])

    def shown_image(self, images: Sequence[str]) -> str | None:
        """A product's first image whose file is there (its main one unless that was deleted:
        its page, a text search's result and "more like this" show that one), else the main."""
        return next(iter(self.shown_images(images)), None)

    def image_path(self, relative: str) -> Path:
        """Resolve a managed image name, refusing anything that escapes images/."""
        base = self.images_dir.resolve()
        path = (base / relative).resolve()
        if base != path and base not in path.parents:
            raise ValueError(f"image path escapes the image folder: {relative!r}")
        return path
