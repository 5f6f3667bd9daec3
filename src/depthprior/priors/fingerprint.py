"""What a local checkpoint holds, as one digest: part of the output identity.

Two checkpoints saved one after the other into the same folder (`./mymodel`) have the same
name but different weights; the digest tells them apart. Hashes are cached per file by its
stat (size, mtime, ctime, inode, as git's index), so a rerun does not read gigabytes again: an
edit can restore size and mtime, not ctime, and a file replaced by a copy has another inode.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from ..errors import FileFormatError
from ..files.jsonfile import expect_fields, expect_object, read_json, write_json

#: files of a transformers checkpoint that change its output (weights and configs)
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json")
_CHUNK = 1 << 22
#: a file changed this recently is hashed but not cached: an edit within the file system's
#: timestamp tick would keep its ctime (git's "racy" entries)
SETTLED_SECONDS = 2.0
_lock = threading.Lock()


def identity_differences(recorded: dict, current: dict, added_later: frozenset[str] = frozenset({"weights"}),
                         locations: frozenset[str] = frozenset({"model"})) -> list[str]:
    """What differs between an output folder's recorded identity and this run's (the reasons not
    to resume), as "key: recorded there, current now". A key in `added_later` that the record
    lacks (written before it was recorded) is no difference; a local checkpoint is known by its
    content: the same weights digest under another path (./tiny/, its absolute path, an
    identical copy) is the same model, whatever the `locations` keys say."""
    same_weights = "weights" in recorded and recorded["weights"] == current.get("weights")
    return [f"{key}: {recorded.get(key)!r} there, {current.get(key)!r} now"
            for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)
            and not (key in added_later and key not in recorded)
            and not (key in locations and same_weights)]


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "depthprior" / "file-hashes.json"


def folder_digest(folder: Path | str) -> str:
    """sha256 over the names and contents of the checkpoint files directly in folder."""
    folder = Path(folder).resolve()
    files = sorted(
        path for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
        and path.suffix.lower() in MODEL_FILE_SUFFIXES
    )
    return files_digest(files)


def files_digest(files: list[Path]) -> str:
    """sha256 over the names and contents of `files`, in the order given."""
    with _lock:
        cache = _load_cache()
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode("utf-8") + b"\0" + file_digest(path, cache).encode())
        _save_cache(cache)
    return "sha256:" + digest.hexdigest()


def file_digest(path: Path, cache: dict[str, dict]) -> str:
    stat = path.stat()
    key = str(path)
    entry = cache.get(key)
    if entry and entry.get("sha256") and all(entry.get(field) == value for field, value in _stamp(stat).items()):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if time.time_ns() - stat.st_ctime_ns >= SETTLED_SECONDS * 1e9:
        cache[key] = {**_stamp(stat), "sha256": digest.hexdigest()}
    return digest.hexdigest()


def _stamp(stat: os.stat_result) -> dict[str, int]:
    """What the cache keys a file's digest on: all of it changes when the file's bytes do."""
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino}


def _load_cache() -> dict[str, dict]:
    """The cached digests; a damaged cache (any FileFormatError) is as good as none."""
    try:
        data = read_json(cache_path(), missing_ok=True, check=_check_cache)
    except FileFormatError:
        return {}
    return data or {}


def _check_cache(data: object) -> None:
    for entry in expect_object(data, "the cache").values():
        expect_fields(expect_object(entry, "an entry"),
                      {"size": int, "mtime_ns": int, "ctime_ns": int, "inode": int, "sha256": str})


def _save_cache(cache: dict[str, dict]) -> None:
    """Best effort: an unwritable cache only costs hashing again next time."""
    try:
        write_json(cache_path(), cache, indent=None)
    except OSError:
        pass
