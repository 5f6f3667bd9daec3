"""Reading a file's bytes wherever it lives: a local path (regular files only, never blocking on
a FIFO or device) or a URL (object storage through `depthprior.storage`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ImageError
from ..storage import Location, is_url, read_url


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


def read_bytes(path: Location, limit: int | None = None) -> bytes:
    """The bytes of one file or object; ImageError (no path in it) when it is missing, not a
    regular file, empty, or larger than `limit` bytes."""
    if is_url(path):
        return read_url(str(path), limit)
    return read_regular_file(Path(path), limit)


def read_head(path: Location, size: int) -> bytes:
    """At most the first `size` bytes of a file (a header); an object is read whole."""
    if is_url(path):
        return read_url(str(path))[:size]
    return read_regular_file(Path(path), head=size)


def read_regular_file(path: Path, limit: int | None = None, head: int | None = None) -> bytes:
    """The bytes of path (the first `head` of them when given), refused unless it is a regular
    file; never blocks on a FIFO or device."""
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
    with os.fdopen(fd, "rb") as handle:
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


def is_present(path: Location) -> bool:
    """Whether a file (not a folder) is there to read."""
    if is_url(path):
        from .. import storage

        return storage.exists(str(path))
    return os.path.lexists(path) and not Path(path).is_dir()
