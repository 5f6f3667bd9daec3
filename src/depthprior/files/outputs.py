"""Writing: atomic files (temporary name + rename, one PUT on object storage) whose failures
name the file, and the output folder a command owns for one run (its lock, what it wrote, and
the removal of what an earlier run wrote and this one no longer produces)."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import place
from .localfile import TMP_MARK, write_together  # noqa: F401 - write_together: re-export
from .place import Location
from ..errors import UsageError, WriteError, first_line

LOCK_NAME = ".depthprior.lock"

def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def folder_beside(folder: str | os.PathLike[str], suffix: str, what: str = "folder") -> Path:
    """FOLDER<suffix> beside FOLDER (a mask folder beside its depths), also for "." and ".."
    (named after the real folder); UsageError for the file system's root."""
    resolved = Path(folder).resolve()
    if not resolved.name:
        raise UsageError(f"the {what} {folder} is the file system's root: pass -o for the mask folder")
    return resolved.parent / (resolved.name + suffix)


def atomic_write_bytes(path: Location, data: bytes | memoryview) -> None:
    """path holds data completely or not at all: temporary + rename here, one PUT for a URL.

    Any failure (disk full, read-only, permission, name too long) is a WriteError naming path.
    """
    try:
        place.Place.of(path).write(data)
    except WriteError:
        raise
    except (OSError, ValueError) as error:
        raise WriteError(path, error if isinstance(error, OSError) else OSError(str(error))) from None


def remove_stale_temporaries(root: Location) -> int:
    """Delete temporaries left by a killed run. Returns how many were removed (object stores
    have none: each object is one PUT)."""
    removed = 0
    if not place.is_local(root) or not Path(root).is_dir():
        return 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            if TMP_MARK in filename:
                try:
                    Path(dirpath, filename).unlink(missing_ok=True)
                    removed += 1
                except OSError:
                    pass
    return removed


def check_writable(root: Location) -> None:
    """Create root if needed and prove a file can be written there (UsageError otherwise); a
    URL: an object can be put under it, and it is not itself an object (files.place)."""
    place.check_writable(root)


class FolderInUse(UsageError):
    """Another depthprior run holds the folder's lock."""


class OutputLock:
    """An advisory lock on an output folder for one run: a second writer is refused.

    The lock file stays (removing it would race with a waiting run); the kernel drops the lock
    when the process ends, however it ends.
    """

    def __init__(self, root: Location):
        self.path = Path(root) / LOCK_NAME if place.is_local(root) else None
        self._handle: Any = None

    def acquire(self) -> "OutputLock":
        """Object storage offers no lock: runs writing to one URL are not guarded (README)."""
        if self.path is None:
            return self
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, runs are not guarded
            return self
        try:  # never through a link: a planted .depthprior.lock would be overwritten out there
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            handle = os.fdopen(fd, "a+", encoding="utf-8")
        except OSError as error:
            if os.path.islink(self.path):
                raise UsageError(f"{self.path} is a link; depthprior writes its lock only as a "
                                 "plain file: remove the link and rerun") from None
            raise UsageError(f"output folder {self.path.parent} cannot be locked "
                             f"({error.strerror or first_line(error)}); choose another folder "
                             "or fix its permissions") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUse(
                f"{self.path.parent} is in use by another depthprior run ({holder}); wait for "
                "it to finish or choose another output folder"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, since {now_utc()}")
            handle.flush()
        except OSError:
            pass  # the lock holds; only the note of who holds it is missing
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class OutputFolder:
    """A folder one command run owns: checked writable and locked for the run, every write
    atomic (WriteError names the file), and the names written remembered, so what an earlier
    run wrote and this one no longer produces can be removed (`remove_unproduced`).

        with OutputFolder(masks) as folder:
            folder.write("cam0/a.png", data)
            folder.keep("cam0/b.png")          # resumed: still a product of this run
            folder.remove_unproduced(old_names)
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.produced: set[str] = set()
        self._lock = OutputLock(self.root)
        self._guard = threading.Lock()

    def __enter__(self) -> "OutputFolder":
        check_writable(self.root)
        self._lock.acquire()
        remove_stale_temporaries(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def path(self, relative: str, suffix: str = "") -> Path:
        from ..images import safe_join

        return safe_join(self.root, relative, suffix)

    def write(self, relative: str, data: bytes | memoryview) -> Path:
        target = self.path(relative)
        atomic_write_bytes(target, data)
        self.keep(relative)
        return target

    def write_together(self, files: Sequence[tuple[str, bytes | memoryview]]) -> None:
        write_together([(self.path(name), data) for name, data in files])
        for name, _data in files:
            self.keep(name)

    def keep(self, relative: str) -> None:
        with self._guard:
            self.produced.add(Path(relative).as_posix())

    def remove_unproduced(self, names: Iterable[str]) -> list[str]:
        """Delete each of `names` (relative to the folder) this run did not produce."""
        removed = []
        for name in sorted(set(names) - self.produced):
            try:
                target = self.path(name)
            except UsageError:
                continue
            try:
                if target.is_file() or target.is_symlink():
                    target.unlink()
                    removed.append(name)
            except OSError as error:
                raise WriteError(target, error) from None
        return removed
