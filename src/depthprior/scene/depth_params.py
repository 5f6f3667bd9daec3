"""depth_params.json and the align report beside it: their names, entries, reader and writer.

depth_params.json is the file the official 3DGS trainer reads with `-d`::

    {"<image name without extension>": {"scale": s, "offset": o}, ...}

meaning ``1/z = scale * png / TRAINER_SCALE + offset``; scale <= 0 marks a failed fit. 3DGS
keeps an image's depth when ``SCALE_BAND[0] * median <= scale <= SCALE_BAND[1] * median``
(median of the positive scales).

`depthprior align` writes it together with ``<params stem>.report.json`` (`report_path`): a
JSON object with ``"format": REPORT_FORMAT`` whose ``REPORT_IMAGES`` table maps each key to
``{"key", "status": "ok"|"unreliable"|"failed", "reason", ...}``.

Reading (`DepthParams.load`) is stricter than 3DGS: a key that points outside the depth folder
is refused, an entry whose numbers cannot be applied is unreliable and never applied, and
images the report marks unreliable or failed are unreliable.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from .. import __version__
from ..errors import DepthpriorError, UnsafePathError, UsageError
from ..files.jsonfile import read_json
from ..images import posix_name, safe_join
from ..priors.store import PNG_MAX, TRAINER_SCALE, atomic_write_bytes

PARAMS_NAME = "depth_params.json"
#: 3DGS keeps an image when 0.2 * median <= scale <= 5 * median
SCALE_BAND = (0.2, 5.0)
REPORT_FORMAT = "depthprior-align-report"
REPORT_VERSION = 1
#: the report's per-image table: key -> {"key", "status", "reason", ...}
REPORT_IMAGES = "per_image"
#: the largest prior value a trainer reads, png / TRAINER_SCALE
PRIOR_MAX = PNG_MAX / TRAINER_SCALE


class AlignWriteError(DepthpriorError):
    """depth_params.json or the report could not be written."""


class Entry(NamedTuple):
    """One image's entry in depth_params.json."""

    scale: float
    offset: float


# ---------------------------------------------------------------- paths

def default_path(sparse: Path | str) -> Path:
    """Where 3DGS looks: SPARSE/depth_params.json."""
    return Path(sparse) / PARAMS_NAME


def params_file(path: Path | str) -> Path:
    """A params path as given, or FOLDER/depth_params.json for a folder."""
    path = Path(path)
    return path / PARAMS_NAME if path.is_dir() else path


def report_path(params: Path | str) -> Path:
    """depth_params.json -> depth_params.report.json beside it (any params stem)."""
    params = Path(params)
    return params.with_name(params.stem + ".report.json")


def depth_file(depth_dir: Path, stem: str, what: str) -> Path:
    """depth_dir/stem.png, or UnsafePathError naming `what` when that would leave depth_dir."""
    try:
        return safe_join(depth_dir, stem, ".png")
    except UnsafePathError:
        raise UnsafePathError(
            f"{what} points outside the depth folder {depth_dir}; refused (image names are "
            "relative paths without '..')"
        ) from None


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class DepthParams:
    """depth_params.json: per-image scale/offset, the median scale, and reliability."""

    entries: dict[str, Entry]
    median_scale: float
    unreliable: dict[str, str]  # stem -> reason
    path: Path | None = None
    unusable: frozenset[str] = frozenset()  # stems whose scale/offset are never applied

    @classmethod
    def load(
        cls,
        source: "str | os.PathLike[str] | Mapping[str, Any] | DepthParams",
        band: tuple[float, float] = SCALE_BAND,
        depth_dir: "str | os.PathLike[str] | None" = None,
    ) -> "DepthParams":
        """From a depth_params.json path, the folder holding it, or an already-parsed dict.

        A key that would point outside ``depth_dir`` (default: the current folder) is refused
        with UnsafePathError. An entry whose numbers cannot be applied (see `entry_problem`)
        is unreliable and listed in ``unusable``.
        """
        if isinstance(source, DepthParams):
            return source
        path: Path | None = None
        report: Mapping[str, Any] | None = None
        if isinstance(source, Mapping):
            data: Any = source
        else:
            path = params_file(source)
            if not path.is_file():
                raise UsageError(
                    f"depth params not found: {path}; run `depthprior align` to write it"
                )
            data = _read_json(path, "depth params")
            report = read_report(path)
        if not isinstance(data, Mapping):
            raise UsageError(f"{path or 'depth params'}: expected an object of image names")
        entries = _entries(data, path, Path(depth_dir) if depth_dir is not None else Path("."))
        positive = [s for s, _ in entries.values() if math.isfinite(s) and s > 0]
        median = float(np.median(positive)) if positive else 0.0
        unreliable, unusable = _judge(entries, median, band)
        for stem, reason in report_unreliable(report).items():
            unreliable.setdefault(stem, reason)
        return cls(entries, median, unreliable, path, frozenset(unusable))


def _judge(entries: Mapping[str, Entry], median: float,
           band: tuple[float, float]) -> tuple[dict[str, str], set[str]]:
    """(stem -> why unreliable, stems never to apply) by the entries' own numbers."""
    unreliable: dict[str, str] = {}
    unusable: set[str] = set()
    low, high = band
    for stem, (scale, offset) in entries.items():
        problem = entry_problem(scale, offset)
        if problem:
            unreliable[stem] = problem
            unusable.add(stem)
        elif scale < low * median or scale > high * median:
            unreliable[stem] = (
                f"scale {scale:.4g} is outside [{low:g}, {high:g}] x the median {median:.4g}"
            )
    return unreliable, unusable


def entry_problem(scale: float, offset: float) -> str:
    """Why a depth_params.json entry cannot be applied, or '' when it can.

    Applied to every prior value x in [0, PRIOR_MAX] as float32 ``scale * x + offset``, it must
    give finite numbers that vary with x and are positive somewhere; a failed fit has scale <= 0.
    """
    if not (math.isfinite(scale) and math.isfinite(offset)):
        return f"scale {scale:g} / offset {offset:g} in {PARAMS_NAME} is not a finite number"
    if scale <= 0:
        return f"failed fit in {PARAMS_NAME} (scale {scale:g})"
    with np.errstate(all="ignore"):
        low = np.float32(offset)
        high = np.float32(scale) * np.float32(PRIOR_MAX) + low
    if not (np.isfinite(low) and np.isfinite(high)):
        return (f"scale {scale:g} / offset {offset:g} in {PARAMS_NAME} overflow 32-bit "
                "floats: unusable")
    if not high > 0:
        return (f"scale {scale:g} / offset {offset:g} in {PARAMS_NAME} make every inverse "
                "depth negative or zero: unusable")
    if high == low:
        return (f"scale {scale:g} is too small next to offset {offset:g} in {PARAMS_NAME}: "
                "the aligned prior would be constant")
    return ""


def _entries(data: Mapping[str, Any], path: Path | None, depth_dir: Path) -> dict[str, Entry]:
    """stem -> Entry as written; keys that would leave depth_dir are refused."""
    source = path or "depth params"
    entries: dict[str, Entry] = {}
    for key, value in data.items():
        try:
            entry = Entry(float(value["scale"]), float(value["offset"]))
        except (TypeError, KeyError, ValueError, OverflowError):
            raise UsageError(
                f"{source}: entry {key!r} needs numeric 'scale' and 'offset'"
            ) from None
        stem = posix_name(str(key))
        depth_file(depth_dir, stem, f"{source} key {key!r}")
        entries[stem] = entry
    return entries


def _read_json(path: Path, what: str) -> Any:
    return read_json(path, hint=f"it is not the {what} depthprior align writes: run align again")


def read_report(params: Path) -> Mapping[str, Any] | None:
    """The align report of this params file (`report_path`), None when there is none."""
    path = report_path(params)
    if not path.is_file():
        return None
    data = _read_json(path, "align report")
    if isinstance(data, Mapping) and data.get("format") == REPORT_FORMAT:
        return data
    return None


def report_unreliable(report: Mapping[str, Any] | None) -> dict[str, str]:
    """stem -> reason for images the align report marks unreliable or failed."""
    images = report.get(REPORT_IMAGES) if report else None
    if not isinstance(images, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, record in images.items():
        if not isinstance(record, Mapping):
            continue
        status = record.get("status")
        if status in ("unreliable", "failed"):
            reason = record.get("reason") or status
            out[posix_name(str(record.get("key") or key))] = f"align report: {status}: {reason}"
    return out


# ---------------------------------------------------------------- writing

def write(output: Path, entries: Mapping[str, Entry], report: Mapping[str, Any],
          per_image: Mapping[str, Mapping[str, Any]]) -> None:
    """depth_params.json at `output` and its report beside it (report first, both atomic).

    report: the command's fields (inputs, summary, thresholds); the format header and the
    per-image table are added here. Raises AlignWriteError; nothing half-written.
    """
    document = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "tool": {"name": "depthprior", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **report,
        REPORT_IMAGES: dict(per_image),
    }
    params = {key: {"scale": entry.scale, "offset": entry.offset} for key, entry in entries.items()}
    try:
        report_text = json.dumps(document, indent=1, allow_nan=False) + "\n"
        params_text = json.dumps(params, indent=2, allow_nan=False) + "\n"
    except ValueError as error:  # a NaN slipped through: a bug, but never write a broken file
        raise AlignWriteError(f"cannot encode {output.name} or its report: {error}") from None
    try:
        atomic_write_bytes(report_path(output), report_text.encode("utf-8"))
        atomic_write_bytes(output, params_text.encode("utf-8"))
    except OSError as error:
        raise AlignWriteError(
            f"cannot write {output}: {error.strerror or error}; choose another -o"
        ) from None


__all__ = [
    "AlignWriteError",
    "DepthParams",
    "Entry",
    "PARAMS_NAME",
    "REPORT_FORMAT",
    "SCALE_BAND",
    "default_path",
    "entry_problem",
    "params_file",
    "read_report",
    "report_path",
    "report_unreliable",
    "write",
]
