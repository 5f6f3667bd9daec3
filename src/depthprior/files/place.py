"""Where files live: one interface for a folder or file, on this machine or in object storage.

`Place.of(value)` is a `LocalPlace` (a path) or an `ObjectPlace` (a URL: s3://bucket/key, gs://,
memory://, ... through fsspec). Every command goes through here and none asks "is this a URL":

    place = Place.of(out)
    place.child("cam0/a.png").write(data)   # atomic locally, one retried PUT remotely
    place.list_files()                      # relative name -> size
    place.local_path("verify reads OUT")    # a Path, or a UsageError for a URL saying so

Locally only regular files are read (never blocking on a FIFO or device) and a write is a
temporary name + rename (files.outputs). An object store has no rename and no partial objects:
an output is one PUT, complete or absent, retried; there are no temporaries and no lock.

Local reads and the atomic writer are files.localfile; the fsspec plumbing (deadlines,
credentials, a silent endpoint as one line) is files.objectstore.
Object keys that cannot be mapped to a file name (a '..' or '.' segment, a backslash, an empty
segment) are listed as refused, never silently dropped.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Union

from ..errors import ImageError, UnsafePathError, UsageError, first_line
from .localfile import TMP_MARK, read_regular_file, write_together
from .objectstore import (BYTES_PER_SECOND, PROTOCOL_PACKAGES, PUT_ATTEMPTS, Listing, before_run, object_version,
                          call, filesystem, key_problem, timeout)

#: a place as the rest of the code carries it: a local path, or a URL string
Location = Union[Path, str]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: "s3:/bucket": a URL with one slash, which Path() would take as the local folder "s3:"
_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(?!/)")


def is_url(value: Any) -> bool:
    """Whether value names a place by URL (scheme://...) rather than a local path."""
    return isinstance(value, str) and bool(_URL.match(value)) and not value.startswith("file://")


def location(value: str | os.PathLike[str]) -> Location:
    """A URL stays a string (Path() would fold its '//'); file:// and paths become Paths.

    "s3:/bucket" (one slash) is refused: it is not a local folder named "s3:"."""
    if is_url(value):
        scheme, _, rest = str(value).partition("://")
        if scheme.lower() in PROTOCOL_PACKAGES and (not rest.strip("/") or rest.startswith("/")):
            raise UsageError(f"{value!r} names no bucket: give {scheme}://BUCKET/PREFIX")
        return str(value).rstrip("/")
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    _refuse_one_slash(text)
    return Path(text)


def _refuse_one_slash(text: str) -> None:
    match = _ONE_SLASH.match(text)
    if match and match.group(1).lower() in _known_protocols():
        fixed = f"{match.group(1)}://{text[match.end():]}"
        raise UsageError(f"{text!r} is neither a URL nor a local folder: did you mean {fixed}?")


@lru_cache(maxsize=1)
def _known_protocols() -> frozenset[str]:
    try:
        from fsspec.registry import known_implementations
    except ImportError:
        return frozenset(PROTOCOL_PACKAGES) | {"http", "https", "memory", "file"}
    return frozenset(known_implementations) | frozenset(PROTOCOL_PACKAGES)


class Place(ABC):
    """A file or folder, here or in object storage (see the module's text)."""

    is_local: bool

    @staticmethod
    def of(value: "Place | str | os.PathLike[str]") -> "Place":
        if isinstance(value, Place):
            return value
        found = location(value)
        return ObjectPlace(found) if isinstance(found, str) else LocalPlace(found)

    @property
    @abstractmethod
    def location(self) -> Location:
        """What the rest of the code carries: a Path, or the URL."""

    def __str__(self) -> str:
        return str(self.location)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Place) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @abstractmethod
    def child(self, relative: str, suffix: str = "") -> "Place":
        """self / (relative + suffix), refused (UnsafePathError) unless it stays inside self."""

    @abstractmethod
    def local_path(self, why: str = "") -> Path:
        """The Path of a local place; for object storage a UsageError that says `why` this
        needs a local folder (e.g. "verify reads OUT on this machine")."""

    @abstractmethod
    def read_bytes(self, limit: int | None = None) -> bytes:
        """The whole file; ImageError (no path in it) when missing, not a file, empty or over
        `limit` bytes."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """The file holds data completely or not at all."""

    @abstractmethod
    def exists(self) -> bool:
        """A file (not a folder) is there."""

    @abstractmethod
    def is_folder(self) -> bool:
        """A folder (or a prefix holding objects) is there."""

    @abstractmethod
    def list_files(self) -> dict[str, int]:
        """Every file under this folder: relative posix name -> size."""

    @abstractmethod
    def remove(self) -> None:
        """The file is gone (absent already is fine)."""

    @abstractmethod
    def move(self, target: "Place") -> None:
        """The file now lives at target."""

    @abstractmethod
    def check_writable(self) -> None:
        """A UsageError, before any work, unless files can be written under this folder."""

    @abstractmethod
    def record(self) -> str:
        """How a manifest records this place."""

    @abstractmethod
    def absolute(self) -> str:
        """A name every process can use: a URL as it is, a path made absolute."""

    @abstractmethod
    def is_inside(self, folder: "Place") -> bool:
        """Whether this lies in folder (links resolved locally)."""

    @abstractmethod
    def same(self, other: "Place") -> bool:
        """Whether both name one place."""


def _parts(root: object, relative: str) -> tuple[str, ...]:
    """The parts of a relative name, refused when it could leave root."""
    text = relative.replace(os.sep, "/") if os.sep != "/" else relative
    while text.startswith("./"):
        text = text[2:]
    parts = PurePosixPath(text).parts
    if not text or "\x00" in text or text.startswith("/") or not parts or ".." in parts:
        raise UnsafePathError(f"name {relative!r} would be written outside {root}; refused")
    return parts


@dataclass(frozen=True, eq=False)
class LocalPlace(Place):
    path: Path
    is_local = True

    @property
    def location(self) -> Path:
        return self.path

    def child(self, relative: str, suffix: str = "") -> "LocalPlace":
        target = self.path.joinpath(*_parts(self.path, str(relative) + suffix))
        if not _inside(target, self.path):
            raise UnsafePathError(f"name {relative!r} resolves outside {self.path} (through a "
                                  "link); refused")
        return LocalPlace(target)

    def local_path(self, why: str = "") -> Path:
        return self.path

    def read_bytes(self, limit: int | None = None) -> bytes:
        return read_regular_file(self.path, limit)

    def write(self, data: bytes | memoryview) -> None:
        write_together([(self.path, data)])

    def exists(self) -> bool:
        """A file (not a folder) is there."""
        return os.path.lexists(self.path) and not self.path.is_dir()

    def is_folder(self) -> bool:
        return self.path.is_dir()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def move(self, target: "Place") -> None:
        os.replace(self.path, target.local_path("a move between places"))

    def list_files(self) -> dict[str, int]:
        """Every regular file under this folder (relative posix name -> size); {} when none."""
        found: dict[str, int] = {}
        for dirpath, _dirnames, filenames in os.walk(self.path):
            for filename in filenames:
                path = Path(dirpath, filename)
                if path.is_file():
                    found[path.relative_to(self.path).as_posix()] = path.stat().st_size
        return dict(sorted(found.items()))

    def check_writable(self) -> None:
        """Create the folder if needed and prove a file can be written there (UsageError)."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"output folder {self.path} is a file, not a folder; choose another folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f"{TMP_MARK}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UsageError(
                f"output folder {self.path} is not writable ({error.strerror or first_line(error)}); "
                "choose another folder or fix its permissions"
            ) from None

    def record(self) -> str:
        """How a manifest records this place (absolute, links resolved)."""
        return str(self.path.resolve())

    def absolute(self) -> str:
        return os.path.abspath(self.path)

    def is_inside(self, folder: Place) -> bool:
        return folder.is_local and _inside(self.path, folder.local_path())

    def same(self, other: Place) -> bool:
        return other.is_local and self.path.exists() and \
            self.path.resolve() == other.local_path().resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


@dataclass(frozen=True, eq=False)
class ObjectPlace(Place):
    url: str
    is_local = False

    @property
    def location(self) -> str:
        return self.url

    def child(self, relative: str, suffix: str = "") -> "ObjectPlace":
        return ObjectPlace(f"{self.url.rstrip('/')}/{'/'.join(_parts(self.url, str(relative) + suffix))}")

    def local_path(self, why: str = "") -> Path:
        reason = why or "this needs a local folder"
        raise UsageError(f"{reason}, and {self.url} is object storage: download it first "
                         f"(e.g. aws s3 sync {self.url} ./{self.url.rstrip('/').rsplit('/', 1)[-1]}) "
                         "and give the local folder")

    def read_bytes(self, limit: int | None = None) -> bytes:
        """The bytes of one object; ImageError when missing, unreadable, empty or over `limit`;
        StorageUnavailable when the store cannot be reached or refuses the credentials."""
        fs, path = filesystem(self.url)
        try:
            if limit is not None:
                size = call(self.url, "read", fs.size, path)
                if size is not None and size > limit:
                    raise ImageError(f"object is {size / 2**20:.0f} MiB, above the "
                                     f"{limit / 2**20:.0f} MiB cap")
            data = call(self.url, "read", fs.cat_file, path,
                         extra_seconds=(limit or 0) / BYTES_PER_SECOND)
        except FileNotFoundError:
            raise ImageError("cannot read object: not found") from None
        except IsADirectoryError:
            raise ImageError("is a folder of objects, not an object") from None
        except (OSError, ValueError) as error:
            raise ImageError(f"cannot read object: {first_line(error)}") from None
        if not data:
            raise ImageError("empty file (0 bytes)")
        return data

    def write(self, data: bytes | memoryview) -> None:
        """One PUT of the whole object (complete or absent), retried with backoff on failure."""
        fs, path = filesystem(self.url)
        payload = bytes(data)
        for attempt in range(PUT_ATTEMPTS):
            try:
                call(self.url, "write", fs.pipe_file, path, payload,
                      extra_seconds=len(payload) / BYTES_PER_SECOND)
                return
            except (OSError, ValueError):
                if attempt == PUT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)

    def exists(self) -> bool:
        """An object (not a folder of them) is there; StorageUnavailable when the store cannot
        say (fsspec's isfile would answer False)."""
        fs, path = filesystem(self.url)
        try:
            return call(self.url, "read", fs.info, path).get("type", "file") == "file"
        except (OSError, ValueError):
            return False

    def is_folder(self) -> bool:
        """Objects are stored under this prefix (one short listing)."""
        fs, path = filesystem(self.url)
        try:
            return bool(call(self.url, "list", fs.isdir, path))
        except (OSError, ValueError):
            return False

    def remove(self) -> None:
        fs, path = filesystem(self.url)
        try:
            call(self.url, "write", fs.rm_file, path)
        except FileNotFoundError:
            pass

    def move(self, target: Place) -> None:
        fs, path = filesystem(self.url)
        call(self.url, "write", fs.mv, path, filesystem(str(target))[1])

    def record(self) -> str:
        return self.url

    def absolute(self) -> str:
        return self.url

    def is_inside(self, folder: Place) -> bool:
        base = str(folder).rstrip("/")
        return not folder.is_local and (self.url.rstrip("/") == base or self.url.startswith(base + "/"))

    def same(self, other: Place) -> bool:
        return not other.is_local and self.url.rstrip("/") == str(other).rstrip("/")

    def listing(self) -> Listing:
        """Every object under this folder; keys no file name can hold are refused, with why.

        Listing is a step before any work: a store that cannot be reached is a UsageError."""
        fs, path = filesystem(self.url)
        base = path.rstrip("/")
        try:
            # each page is one bounded request; a listing of many pages gets more wall clock
            found = before_run(lambda: call(self.url, "list", fs.find, base, detail=True,
                                              extra_seconds=30 * timeout()))
        except FileNotFoundError:
            return Listing()
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot list {self.url}: {first_line(error)}") from None
        files: dict[str, int] = {}
        refused: dict[str, str] = {}
        versions: dict[str, str] = {}
        for key, info in found.items():
            if info.get("type", "file") != "file" or not key.startswith(base + "/"):
                continue
            relative = key[len(base) + 1:]
            problem = key_problem(relative)
            if problem:
                refused[relative] = problem
            else:
                files[relative] = int(info.get("size") or 0)
                versions[relative] = object_version(info)
        return Listing(files, refused, versions)

    def list_files(self) -> dict[str, int]:
        return self.listing().files

    def check_writable(self) -> None:
        """Refused unless an object can be put under this folder (and removed again), and the
        folder is not itself an object: a UsageError before any work."""
        fs, path = filesystem(self.url)
        if before_run(self.exists):
            raise UsageError(f"output {self.url} is an object, not a folder of objects; choose "
                             "another output URL")
        probe = filesystem(self.child(f".depthprior-probe-{os.getpid()}").url)[1]
        try:
            before_run(lambda: call(self.url, "write", fs.pipe_file, probe, b""))
            before_run(lambda: call(self.url, "write", fs.rm_file, probe))
        except (OSError, ValueError) as error:
            raise UsageError(f"output {self.url} is not writable ({first_line(error)}); check "
                             "the bucket exists and the credentials allow writing") from None


# ---------------------------------------------------------------- functions of a Location

def join(root: Location, relative: str, suffix: str = "") -> Location:
    """root / (relative + suffix), refused (UnsafePathError) unless it stays inside root."""
    return Place.of(root).child(relative, suffix).location


def read_bytes(path: Location, limit: int | None = None) -> bytes:
    """The bytes of one file or object; ImageError (no path in it) when it is missing, not a
    regular file, empty, or larger than `limit` bytes."""
    return Place.of(path).read_bytes(limit)


def is_present(path: Location) -> bool:
    """Whether a file or object (not a folder) is there to read."""
    return Place.of(path).exists()


def is_folder(path: Location) -> bool:
    """Whether a folder (or a prefix holding objects) is there."""
    return Place.of(path).is_folder()


def is_local(path: Location) -> bool:
    return Place.of(path).is_local


def local_folder(value: str | os.PathLike[str], why: str) -> Path:
    """The local Path of a command's folder or file; a URL is refused saying `why` (e.g.
    "verify reads OUT on this machine") and how to get a local copy."""
    return Place.of(value).local_path(why)


def same_place(first: Location, second: Location) -> bool:
    return Place.of(first).same(Place.of(second))


def is_inside(path: Location, folder: Location) -> bool:
    """Whether path lies in folder (links resolved), e.g. an output folder inside the inputs."""
    return Place.of(path).is_inside(Place.of(folder))


def record(path: Location) -> str:
    """How a manifest records a place: an absolute path, or the URL."""
    return Place.of(path).record()


def absolute(path: Location) -> str:
    """A place every process can use: a URL as it is, a path made absolute."""
    return Place.of(path).absolute()


def move(source: Location, target: Location) -> None:
    Place.of(source).move(Place.of(target))


def check_writable(root: Location) -> None:
    Place.of(root).check_writable()


def read_head(path: Location, size: int) -> bytes:
    """At most the first `size` bytes of a file (a header); an object is read whole."""
    place = Place.of(path)
    if place.is_local:
        return read_regular_file(place.local_path(), head=size)
    return place.read_bytes()[:size]
