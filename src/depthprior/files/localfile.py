"""Local files: reading only regular files (never blocking on a FIFO or device), and writing
under a temporary name renamed into place, so "the file exists" means "the file is complete"."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ImageError, WriteError


def file_kind(mode: int) -> str:
    """A file type in words, e.g. for a FIFO named like an image."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def _open_regular(path: Path) -> tuple[Any, os.stat_result]:
    """(binary handle, stat) of a regular file, opened without blocking on a FIFO or device;
    ImageError saying what it is otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise ImageError("is a folder, not a file") from None
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a folder with a traceback
        os.close(fd)
        raise ImageError(f"{file_kind(info.st_mode)}, not a regular file; refused")
    return os.fdopen(fd, "rb"), info


def read_regular_file(path: Path, limit: int | None = None, head: int | None = None) -> bytes:
    """The bytes of path (the first `head` of them when given), refused unless it is a regular
    file; never blocks on a FIFO or device."""
    handle, info = _open_regular(path)
    with handle:
        if limit is not None and info.st_size > limit and head is None:
            raise ImageError(f"is {info.st_size / 2**20:.0f} MiB, above the "
                             f"{limit / 2**20:.0f} MiB cap for this kind of file")
        try:
            data = handle.read() if head is None else handle.read(head)
        except OSError as error:
            raise ImageError(f"cannot read file: {error.strerror or error}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def version(path: Path, span: int = 1 << 16) -> str:
    """Which version of a file this is, cheaply: its size and a digest of its first and last
    `span` bytes (a different photo differs there; a copy or a touch does not). "" when it is
    not a regular file that can be read (never blocks on a FIFO)."""
    try:
        handle, info = _open_regular(path)
    except ImageError:
        return ""
    with handle:
        try:
            digest = hashlib.blake2b(handle.read(span), digest_size=8)
            if info.st_size > span:
                handle.seek(max(span, info.st_size - span))
                digest.update(handle.read(span))
        except OSError:
            return ""
    return f"{info.st_size}:{digest.hexdigest()}"


TMP_MARK = ".depthprior-tmp-"

_tmp_counter = iter(range(1 << 62))
_tmp_lock = threading.Lock()


def _temporary(path: Path) -> Path:
    with _tmp_lock:
        serial = next(_tmp_counter)
    # short and name-independent: an output name near NAME_MAX still gets a temporary
    return path.with_name(f"{TMP_MARK}{os.getpid()}-{serial}")


def write_together(files: Sequence[tuple[Path, bytes | memoryview]]) -> None:
    """Local files written as a set or not at all: every temporary first, then the renames.

    A failure before the renames leaves every target as it was (WriteError naming the file).
    """
    staged: list[tuple[Path, Path]] = []
    current = files[0][0] if files else None
    try:
        for path, data in files:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temporary(path)
            staged.append((tmp, path))
            with open(tmp, "wb") as handle:
                handle.write(data)
        for tmp, path in staged:
            current = path
            os.replace(tmp, path)
    except WriteError:
        _discard(staged)
        raise
    except OSError as error:
        _discard(staged)
        raise WriteError(current, error) from None
    except BaseException:
        _discard(staged)
        raise


def _discard(staged: Iterable[tuple[Path, Path]]) -> None:
    for tmp, _path in staged:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
