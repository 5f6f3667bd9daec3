"""OUT/depthprior.json: the settings identity, the backend, and one typed record per image.

It is the one place that reads and writes the manifest; a record is an ImageRecord everywhere.
A manifest that cannot be trusted (not JSON, wrong shape, a name outside the folder) is a
ManifestError naming the file; the files a record names are checked cheaply on resume.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import __version__
from ..errors import (FileFormatError, StorageUnavailable, UnsafePathError,
                      UsageError, WriteError, first_line)
from ..files.jsonfile import encode_json, read_json
from ..images import relative_join, safe_join
from ..files import place
from ..files.place import Location, location
from .store import atomic_write_bytes, now_utc

MANIFEST_NAME = "depthprior.json"
MANIFEST_FORMAT = "depthprior-manifest"
MANIFEST_VERSION = 1
FORMATS = ("png", "npy", "both")

CONVENTION = {
    "values": "inverse depth (disparity); near = bright",
    "encoding": "single-channel uint16 PNG, per-image min-max normalised to 0..65535",
    "decode": "raw = raw_min + png / 65535 * (raw_max - raw_min)",
    "3dgs": "trainers read png / 2**16 and fit scale and offset per image",
}

def output_files(stem: str, fmt: str) -> list[str]:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    suffixes = {"png": [".png"], "npy": [".npy"], "both": [".png", ".npy"]}[fmt]
    return [stem + suffix for suffix in suffixes]


@dataclass
class ImageRecord:
    """What the manifest says about one image: its outputs and how to read them, or why it failed.

    raw = raw_min + png / 65535 * (raw_max - raw_min) undoes the PNG's normalisation; raw_kind
    is "disparity" (relative) or "inverse_depth" (1/m from a metric model).
    """

    status: str  # "ok" or "failed"
    stem: str = ""  # output path without extension, relative to the output folder
    outputs: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
    raw_min: float | None = None
    raw_max: float | None = None
    raw_kind: str = "disparity"
    npy_kind: str | None = None  # what the .npy holds ("disparity" or "depth"), if written
    source: str = "model"  # where the values came from, e.g. "space:gray8"
    source_levels: int | None = None  # distinct values the source could hold, if quantised
    levels: int = 0  # distinct values in the PNG
    precision_bits: float = 0.0
    flags: list[str] = field(default_factory=list)  # e.g. "constant"
    notes: list[str] = field(default_factory=list)
    extras: dict[str, float] = field(default_factory=dict)  # per-image model outputs (Depth Pro's focal)
    frame_version: str | None = None  # the frame's version the prior was made from (ImageItem.version)
    error: str | None = None  # why a failed image failed
    #: temporal models: the frame's sequence (its folder) and position in it (natural name order);
    #: raw_min/raw_max are then the sequence's, one value mapping for all its frames
    sequence: str | None = None
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def decodable(self) -> bool:
        """Whether raw_min and raw_max are there to undo the PNG's normalisation."""
        bounds = (self.raw_min, self.raw_max)
        return all(isinstance(v, (int, float)) and math.isfinite(v) for v in bounds)

    @property
    def constant(self) -> bool:
        return "constant" in self.flags

    @classmethod
    def failed(cls, reason: str) -> "ImageRecord":
        return cls(status="failed", error=reason)

    @classmethod
    def from_json(cls, data: Any) -> "ImageRecord":
        """Read a record; TypeError/ValueError when it is not one (unknown keys are ignored)."""
        if not isinstance(data, dict):
            raise TypeError(f"a {type(data).__name__}, not an object")
        known = {key: data[key] for key in _RECORD_FIELDS if key in data}
        if not isinstance(known.get("status"), str):
            raise ValueError("no status")
        record = cls(**known)
        if record.ok:
            _check_types(record)
        return record

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"status": self.status, "error": self.error}
        data = dataclasses.asdict(self)
        del data["error"]
        for key in ("sequence", "position"):  # recorded for frames of temporal models only
            if data[key] is None:
                del data[key]
        return data


def _check_types(record: ImageRecord) -> None:
    if not isinstance(record.stem, str) or not record.stem:
        raise ValueError("no valid stem")
    if not isinstance(record.outputs, list) or not all(isinstance(o, str) for o in record.outputs):
        raise ValueError("outputs are not a list of names")
    for key in ("width", "height"):
        if not _is_count(getattr(record, key)):
            raise ValueError(f"{key} is not a size")
    for key in ("raw_min", "raw_max", "precision_bits"):
        if not isinstance(getattr(record, key), (int, float, type(None))):
            raise ValueError(f"{key} is not a number")
    if not isinstance(record.flags, list) or not isinstance(record.notes, list):
        raise ValueError("flags or notes are not lists")
    if not isinstance(record.extras, dict):
        raise ValueError("extras is not an object")
    if not isinstance(record.frame_version, (str, type(None))):
        raise ValueError("frame_version is not a string")
    if not isinstance(record.sequence, (str, type(None))) or not (
            record.position is None or _is_count(record.position)):
        raise ValueError("sequence or position is not a folder name and a position")
    if (record.sequence is None) != (record.position is None):
        raise ValueError("a temporal model's frame has both a sequence and a position, this one only one")


def _is_count(value: Any) -> bool:
    """A whole number from 0 (a JSON true or false is not one, though a bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(ImageRecord))


@dataclass
class Manifest:
    """OUT/depthprior.json: settings identity, backend description, one record per image."""

    root: Location  # the output folder, or a URL
    identity: dict[str, Any] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    images: dict[str, ImageRecord] = field(default_factory=dict)
    created: str = ""
    inputs: str = ""  # absolute path of the image folder, so verify can find the images

    @property
    def path(self) -> Location:
        return _child(self.root, MANIFEST_NAME)

    @classmethod
    def load(cls, root: Location, *, resuming: bool = False) -> "Manifest | None":
        """The manifest in root, None if there is none; ManifestError if it cannot be trusted
        (files.jsonfile reads it: size cap, nesting limit, then its shape and every record).
        resuming: generate reads it, whose --overwrite sets a bad one aside (the error says so)."""
        root = location(root)
        path = _child(root, MANIFEST_NAME)
        if place.is_local(path) and place.is_folder(path):
            raise ManifestError(path, "is a folder, not a file", resuming)
        fields: dict[str, Any] = {}
        try:
            data = read_json(path, missing_ok=True, allow_nan=False,  # it is saved back as strict JSON
                             check=lambda data: fields.update(_parse(data, root)))
        except FileFormatError as error:
            raise ManifestError(path, error.problem, resuming) from None
        if data is None:
            return None
        shared = _shared_output(fields["images"])
        if shared and not resuming:  # generate keeps one record per output (plan.one_owner_per_output)
            raise ManifestError(path, shared, hint=ManifestError.HINT_SHARED)
        return cls(root=root, **fields)

    @staticmethod
    def set_aside(root: Location) -> Location:
        """Rename a manifest that cannot be used out of the way (kept, never deleted)."""
        root = location(root)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = _child(root, f"{MANIFEST_NAME}.unreadable-{stamp}")
        serial = 1
        while _exists(target):
            target = _child(root, f"{MANIFEST_NAME}.unreadable-{stamp}-{serial}")
            serial += 1
        try:
            place.move(_child(root, MANIFEST_NAME), target)
        except WriteError:
            raise
        except OSError as error:
            raise WriteError(target, error) from None
        return target

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "tool": {"name": "depthprior", "version": __version__},
            "created": self.created or now_utc(),
            "updated": now_utc(),
            "inputs": self.inputs,
            "identity": self.identity,
            "backend": self.backend,
            "convention": CONVENTION,
            "images": {name: record.to_json() for name, record in sorted(self.images.items())},
        }

    def save(self) -> None:
        atomic_write_bytes(self.path, encode_json(self.to_json()))

    def differences(self, identity: dict[str, Any]) -> list[str]:
        """What differs between the recorded identity and this run's (the reasons not to
        resume; fingerprint.identity_differences)."""
        from .fingerprint import identity_differences

        return identity_differences(self.identity, identity, IDENTITY_ADDED_LATER, IDENTITY_LOCATIONS)

    def is_complete(self, name: str, fmt: str) -> bool:
        """A finished image: a record, and every file the format needs, present."""
        record = self.images.get(name)
        if record is None or not record.ok:
            return False
        try:
            return all(_exists(safe_join(self.root, rel)) for rel in output_files(record.stem, fmt))
        except OSError:  # a recorded name this file system cannot hold: redo the image
            return False

    def damage(self, name: str, fmt: str) -> str | None:
        """Why a finished image's files cannot be trusted (cheap header checks), or None.

        An object in object storage was put whole or not at all: its presence is the check."""
        if not place.is_local(self.root):
            return None
        record = self.images[name]
        size = (record.height, record.width)
        for rel in output_files(record.stem, fmt):
            check = _png_damage if rel.endswith(".png") else _npy_damage
            problem = check(self.root / rel, size)
            if problem:
                return f"{rel}: {problem}"
        return None

    def iter_ok(self) -> Iterator[tuple[str, ImageRecord]]:
        for name, record in self.images.items():
            if record.ok:
                yield name, record


#: identity keys that manifests of earlier versions lack; their absence is not a difference
IDENTITY_ADDED_LATER = frozenset({"weights"})
#: identity keys that say where a local checkpoint lies; its weights digest says what it is
IDENTITY_LOCATIONS = frozenset({"model"})

_MANIFEST_FIELDS: dict[str, Any] = {
    "identity": {}, "backend": {}, "images": {}, "created": "", "inputs": "",
}


def image_folder(out: Location) -> Path | None:
    """The local folder of frames OUT's priors were made from (its manifest's inputs), or None
    when OUT has no readable manifest or its frames are elsewhere than on this machine. For
    commands that write beside OUT: their files must never land among the frames."""
    try:
        manifest = Manifest.load(out)
    except FileFormatError:
        return None
    inputs = location(manifest.inputs) if manifest is not None and manifest.inputs else None
    return inputs if isinstance(inputs, Path) and inputs.is_dir() else None


class ManifestError(FileFormatError):
    """OUT/depthprior.json exists but cannot be used; generate's `--overwrite` sets it aside.
    The hint says what the command that read it can do: only generate has --overwrite."""

    HINT_RESUMING = ("pass --overwrite to set it aside and start afresh (it is kept, renamed), or "
                     "choose another output folder")
    HINT_READING = ("rerun depthprior generate into this folder with --overwrite (it sets the file "
                    "aside, kept, and starts afresh), or fix or remove the file")

    HINT_SHARED = ("rerun depthprior generate into this folder with the same settings: it keeps the "
                   "record of the frame there now and redoes that frame")

    def __init__(self, path: Location, problem: str, resuming: bool = False, hint: str | None = None):
        hint = hint or (self.HINT_RESUMING if resuming else self.HINT_READING)
        UsageError.__init__(self, f"the manifest {path} {problem}; {hint}")
        self.path, self.problem, self.hint = path, problem, hint


def _parse(data: Any, root: Location) -> dict[str, Any]:
    """The manifest's fields and records; ValueError/TypeError saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError("it is not a depthprior manifest")
    version = data.get("format_version", MANIFEST_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"has format_version {version!r}, not a version number")
    if version > MANIFEST_VERSION:
        raise ValueError(f"was written by a newer depthprior (format_version {version}; this one "
                         f"reads up to {MANIFEST_VERSION}): upgrade depthprior to resume it")
    fields = {key: data.get(key, default) for key, default in _MANIFEST_FIELDS.items()}
    for key, default in _MANIFEST_FIELDS.items():
        if not isinstance(fields[key], type(default)):
            raise TypeError(f"{key!r} is a {type(fields[key]).__name__}")
    temporal = is_temporal(fields["identity"])
    fields["images"] = {name: _read_record(root, name, record, temporal)
                        for name, record in fields["images"].items()}
    _check_positions(fields["images"])
    return fields


def _check_positions(records: dict[str, ImageRecord]) -> None:
    """No two frames of one sequence at one position (each is one frame of its folder's order)."""
    holders: dict[tuple[str, int], str] = {}
    for name, record in records.items():
        if not record.ok or record.position is None:
            continue
        holder = holders.setdefault((record.sequence, record.position), name)
        if holder != name:
            raise ValueError(f"the record for {name!r} holds position {record.position} of sequence "
                             f"{record.sequence!r}, as the record for {holder!r} does")


def _shared_output(records: dict[str, ImageRecord]) -> str | None:
    """What is wrong when two records name the same outputs (one output has one owner), or None.
    Runs before this check left the record of a frame replaced by another of its stem
    (a.jpg by a.png) beside the new one; generate drops it when it resumes the folder."""
    owners: dict[str, str] = {}
    for name, record in sorted(records.items()):
        if not record.ok:
            continue
        owner = owners.setdefault(record.stem, name)
        if owner != name:
            return (f"holds two records for the output {record.stem!r}: {owner!r} and {name!r} (a "
                    "frame replaced by another of the same name but another extension; the file may "
                    "have been made from either)")
    return None


def is_temporal(identity: dict[str, Any]) -> bool:
    """Whether an identity is a temporal model's (Video Depth Anything): the torch backend
    records its rule's version as `temporal` (a whole number from 1), since the first manifests
    whose records carry a sequence and a position."""
    version = identity.get("temporal")
    return _is_count(version) and version >= 1


def sequence_of(name: str) -> str:
    """The sequence of a temporal model's frame: its folder relative to IMAGES ("." for IMAGES)."""
    return name.rsplit("/", 1)[0] if "/" in name else "."


def _read_record(root: Location, name: str, data: Any, temporal: bool) -> ImageRecord:
    """One image's record, refused when malformed, when it names a file outside root (or an
    image outside the image folder), or when it has a sequence or position and the manifest's
    identity is not a temporal model's (align would fit its folder as one sequence)."""
    try:
        relative_join(Path("IMAGES"), name)  # the one rule for names relative to a folder
    except UnsafePathError:
        raise ValueError(f"the record {name!r} names no image inside the image folder") from None
    try:
        record = ImageRecord.from_json(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the record for {name!r} is malformed ({error})") from None
    if not temporal and (record.sequence is not None or record.position is not None):
        raise ValueError(f"the record for {name!r} has a sequence and a position, which only frames "
                         "of a temporal model have, and the manifest's identity is not a temporal "
                         "model's (its 'temporal' is not a version, a whole number from 1)")
    if record.ok and record.sequence is not None and record.sequence != sequence_of(name):
        raise ValueError(f"the record for {name!r} names sequence {record.sequence!r}, not its "
                         f"folder {sequence_of(name)!r}")
    for relative in [record.stem, *record.outputs] if record.ok else []:
        try:
            safe_join(root, relative)
        except UnsafePathError:
            raise ValueError(f"the record for {name!r} names {relative!r}, outside the "
                             "output folder") from None
    stray = [rel for rel in record.outputs if rel not in (record.stem + ".png", record.stem + ".npy")]
    if record.ok and stray:  # generate writes STEM.png and/or STEM.npy, nothing else
        raise ValueError(f"the record for {name!r} names {stray[0]!r}, not an output of its stem "
                         f"{record.stem!r}")
    return record


def _child(root: Location, name: str) -> Location:
    return place.join(root, name)


def _exists(path: Location) -> bool:
    return place.is_present(path)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _png_damage(path: Path, size: tuple[int, int]) -> str | None:
    """Signature, IHDR (size, 16-bit gray) and the IEND trailer: no decoding."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
            handle.seek(0, os.SEEK_END)
            if handle.tell() < len(head) + len(_PNG_END):
                return "missing or truncated"
            handle.seek(-len(_PNG_END), os.SEEK_END)
            tail = handle.read()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    if (height, width) != size:
        return f"{width}x{height}, the record says {size[1]}x{size[0]}"
    if head[24:26] != b"\x10\x00":
        return "not a 16-bit single-channel PNG"
    if tail != _PNG_END:
        return "truncated (no IEND)"
    return None


def _npy_damage(path: Path, size: tuple[int, int]) -> str | None:
    """The header's dtype and shape, and a file size that holds all of the data."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return f"unexpected .npy version {version}"
            data_start = handle.tell()
            handle.seek(0, os.SEEK_END)
            length = handle.tell()
    except (OSError, ValueError, SyntaxError) as error:
        return f"not a readable .npy ({first_line(error)})"
    if dtype != np.float32 or tuple(shape) != size:
        return f"holds {dtype} {tuple(shape)}, expected float32 {size}"
    if length - data_start != int(np.prod(shape)) * dtype.itemsize:
        return "truncated"
    return None


class ThrottledSaver:
    """Saves the manifest at most every `interval` seconds, longer when saves get slow.

    A failed save (disk full, out of inodes) never ends the run: the error is kept in `error`,
    the next save tries again, and the caller reports it.
    """

    def __init__(self, manifest: Manifest, interval: float = 1.0):
        self.manifest = manifest
        self.interval = interval
        self._last = 0.0
        self._cost = 0.0
        self.dirty = False
        self.error: str | None = None

    def touch(self) -> None:
        self.dirty = True
        if time.monotonic() - self._last >= max(self.interval, 20 * self._cost):
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        start = time.monotonic()
        try:
            self.manifest.save()
        except (OSError, ValueError, StorageUnavailable) as error:
            self.error = f"cannot write {self.manifest.path}: {first_line(error)}"
            self._last = time.monotonic()
            return
        self._last = time.monotonic()
        self._cost = self._last - start
        self.dirty = False
        self.error = None


