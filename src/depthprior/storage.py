"""Files named by URL (s3://bucket/key, gs://, memory://, ...) through fsspec.

Local paths never come here: they keep the hardened local code (regular files only, temporary
name + rename). An object store has no rename and no partial objects: an output is one PUT,
complete or absent, retried on failure; there are no temporaries to clean and no lock.
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Union

from .errors import ImageError, MissingDependencyError, UnsafePathError, UsageError, first_line

#: a place: a local path, or a URL string (see is_url)
Location = Union[Path, str]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PUT_ATTEMPTS = 4
_PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
                      "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def is_url(value: Any) -> bool:
    """Whether value names a place by URL (scheme://...) rather than a local path."""
    return isinstance(value, str) and bool(_URL.match(value)) and not value.startswith("file://")


def location(value: str | os.PathLike[str]) -> Location:
    """A URL stays a string (Path() would fold its '//'); file:// and paths become Paths."""
    if is_url(value):
        return str(value).rstrip("/") or str(value)
    text = os.fspath(value)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


@lru_cache(maxsize=None)
def _filesystem_for(protocol: str) -> Any:
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("fsspec", "s3", "reading and writing URLs") from None
    try:
        return fsspec.filesystem(protocol)
    except ImportError:
        package = _PROTOCOL_PACKAGES.get(protocol)
        if package == "s3fs":
            raise MissingDependencyError("s3fs", "s3", f"{protocol}:// URLs") from None
        raise UsageError(f"{protocol}:// URLs need fsspec's package for that protocol "
                         f"({package or 'see fsspec known_implementations'}): pip install "
                         f"{package or 'it'}") from None
    except ValueError:
        raise UsageError(f"unknown URL protocol {protocol}://: give a local folder or a URL "
                         "fsspec knows (s3://, gs://, az://, http://, ...)") from None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL; one filesystem object per protocol."""
    protocol = url.split("://", 1)[0].lower()
    fs = _filesystem_for(protocol)
    return fs, fs._strip_protocol(url)


def url_join(root: str, relative: str) -> str:
    """root + "/" + relative, refused unless relative stays under root (like images.safe_join)."""
    text = relative.replace("\\", "/") if os.sep != "/" else relative
    parts = PurePosixPath(text).parts
    if not text or "\x00" in text or text.startswith("/") or not parts or ".." in parts:
        raise UnsafePathError(f"name {relative!r} would be written outside {root}; refused")
    return f"{root.rstrip('/')}/{'/'.join(parts)}"


def read_url(url: str, limit: int | None = None) -> bytes:
    """The bytes of one object; ImageError when missing, unreadable, empty or over `limit`."""
    try:
        fs, path = filesystem(url)
        if limit is not None:
            size = fs.size(path)
            if size is not None and size > limit:
                raise ImageError(f"object is {size / 2**20:.0f} MiB, above the {limit / 2**20:.0f} MiB cap")
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise ImageError("cannot read object: not found") from None
    except (OSError, ValueError) as error:
        raise ImageError(f"cannot read object: {first_line(error)}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def put_url(url: str, data: bytes | memoryview) -> None:
    """One PUT of the whole object (complete or absent), retried with backoff on failure."""
    fs, path = filesystem(url)
    payload = bytes(data)
    for attempt in range(PUT_ATTEMPTS):
        try:
            fs.pipe_file(path, payload)
            return
        except (OSError, ValueError):
            if attempt == PUT_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    try:
        return bool(fs.isfile(path))
    except (OSError, ValueError):
        return False


def remove(url: str) -> None:
    fs, path = filesystem(url)
    fs.rm_file(path)


def move(source: str, target: str) -> None:
    fs, path = filesystem(source)
    fs.mv(path, filesystem(target)[1])


def list_files(root: str) -> dict[str, int]:
    """Every object under root (relative posix name -> size in bytes); {} when there is none."""
    fs, path = filesystem(root)
    base = path.rstrip("/")
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot list {root}: {first_line(error)}") from None
    files = {}
    for key, info in found.items():
        key = key.rstrip("/")
        if info.get("type", "file") != "file" or not key.startswith(base + "/"):
            continue
        files[key[len(base) + 1:]] = int(info.get("size") or 0)
    return files


def check_writable(root: str) -> None:
    """Prove an object can be put under root (and removed again): a UsageError otherwise."""
    probe = url_join(root, f".depthprior-probe-{os.getpid()}")
    try:
        put_url(probe, b"")
        remove(probe)
    except MissingDependencyError:
        raise
    except (OSError, ValueError) as error:
        raise UsageError(f"output {root} is not writable ({first_line(error)}); check the bucket "
                         "exists and the credentials allow writing") from None
