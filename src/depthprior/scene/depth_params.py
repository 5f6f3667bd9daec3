"""depth_params.json and the align report beside it: their names, entries, reader and writer.

depth_params.json is the file the official 3DGS trainer reads with `-d`::

    {"<image name without extension>": {"scale": s, "offset": o}, ...}

meaning ``1/z = scale * png / TRAINER_SCALE + offset``; scale <= 0 marks a fit not to use
(depthprior writes SKIP_SCALE = -1 for those). 3DGS
keeps an image's depth when ``SCALE_BAND[0] * median <= scale <= SCALE_BAND[1] * median``
(median of the positive scales).

`depthprior align` writes it together with ``<params stem>.report.json`` (`report_path`),
both or neither: a JSON object with ``"format": REPORT_FORMAT`` whose ``REPORT_IMAGES`` table
maps each key to ``{"key", "status": "ok"|"unreliable"|"failed", "reason", "depth_bytes", ...}``,
the depth folder the fits were made for (``REPORT_DEPTHS``) and a digest of the params
(``REPORT_PARAMS_DIGEST``: a report beside params another tool rewrote is not theirs).

Reading (`DepthParams.load`, through files.jsonfile: a file of the wrong shape is one line
naming it) is stricter than 3DGS: a key that points outside the depth folder is refused, an
entry whose numbers cannot be applied is unreliable and never applied, images the report marks
unreliable or failed are unreliable, and fits made for another depth folder are refused.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from .. import __version__
from ..errors import ImageError, UnsafePathError, UsageError, WriteError, listing
from ..files.jsonfile import encode_json, expect_fields, expect_object, read_json
from ..files.outputs import now_utc, write_together
from ..images import posix_name, relative_join
from ..priors.store import PNG_MAX, TRAINER_SCALE

PARAMS_NAME = "depth_params.json"
#: 3DGS keeps an image when 0.2 * median <= scale <= 5 * median
SCALE_BAND = (0.2, 5.0)
REPORT_FORMAT = "depthprior-align-report"
REPORT_VERSION = 1
#: the report's per-image table: key -> {"key", "status", "reason", ...}
REPORT_IMAGES = "per_image"
#: the report's record of the depth folder the fits were made for: {"path": absolute path}
#: (with each per-image row's "depth_bytes", the size of the depth map that was fitted)
REPORT_DEPTHS = "depth_folder"
#: the report's digest of the params it was written with (`params_digest`)
REPORT_PARAMS_DIGEST = "params_digest"
#: the largest prior value a trainer reads, png / TRAINER_SCALE
PRIOR_MAX = PNG_MAX / TRAINER_SCALE
#: ~70 bytes an image: room for millions of images
MAX_PARAMS_BYTES = 256 << 20
STATUSES = ("ok", "unreliable", "failed")


#: depth_params.json or the report could not be written (neither was changed)
#: the entry of a fit the trainer must not use (failed, or one align knows is wrong): a negative
#: scale is below 0.2 x any median and never applied, so 3DGS and hierarchical-3DGS skip the
#: image under their own rule even when every fit failed (a scale of 0 beside a median of 0
#: would be kept "reliable" and trained on unaligned)
SKIP_SCALE = -1.0


AlignWriteError = WriteError


class DepthFolderMismatch(UsageError):
    """The fits were made for other depth maps than those of the folder being read."""


class Entry(NamedTuple):
    """One image's entry in depth_params.json."""

    scale: float
    offset: float


SKIP_ENTRY = Entry(SKIP_SCALE, 0.0)


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
    """depth_dir/stem.png, or UnsafePathError naming `what` when its name would leave
    depth_dir (absolute, ".."); a map that is a link is read where it leads, as any reader
    would (its reader refuses what is not a regular PNG: a device, a FIFO)."""
    try:
        return relative_join(depth_dir, stem, ".png")
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
    report: Mapping[str, Any] | None = None  # the align report of these params, when there

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
        is unreliable and listed in ``unusable``. With ``depth_dir``, fits the align report
        says were made for other depth maps raise DepthFolderMismatch (`check_depth_folder`).
        """
        if isinstance(source, DepthParams):
            return source
        root = Path(depth_dir) if depth_dir is not None else Path(".")
        if isinstance(source, Mapping):
            try:
                check_params(source)
            except (TypeError, ValueError) as error:
                raise UsageError(f"depth params: {error}") from None
            return cls._build(source, None, None, root, band)
        path = params_file(source)
        if not os.path.lexists(path):
            raise UsageError(f"depth params not found: {path}; run `depthprior align` to write it")
        data = read_params(path)
        report = read_report(path)
        if report is not None and not report_matches(report, data):
            report = None  # written with other params (another tool rewrote them): not theirs
        if report is not None and depth_dir is not None:
            check_depth_folder(report, path, root)
        return cls._build(data, path, report, root, band,
                          stale_dir=root if depth_dir is not None else None)

    @classmethod
    def _build(cls, data: Mapping[str, Any], path: Path | None, report: Mapping[str, Any] | None,
               depth_dir: Path, band: tuple[float, float],
               stale_dir: Path | None = None) -> "DepthParams":
        entries = _entries(data, path, depth_dir)
        positive = [s for s, _ in entries.values() if math.isfinite(s) and s > 0]
        median = float(np.median(positive)) if positive else 0.0
        unreliable, unusable = _judge(entries, median, band)
        for stem, reason in report_unreliable(report).items():
            unreliable.setdefault(stem, reason)
        for stem, reason in stale_fits(report, stale_dir).items():
            unreliable[stem] = reason
            unusable.add(stem)
        return cls(entries, median, unreliable, path, frozenset(unusable), report)


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
    """stem -> Entry as written (checked by `check_params`); keys that would leave depth_dir
    are refused."""
    source = path or "depth params"
    entries: dict[str, Entry] = {}
    for key, value in data.items():
        stem = posix_name(str(key))
        depth_file(depth_dir, stem, f"{source} key {key!r}")
        entries[stem] = Entry(float(value["scale"]), float(value["offset"]))
    return entries


PARAMS_HINT = "rerun `depthprior align` to rewrite it"
#: what JSON numbers parse to, and numpy's (a dict handed to DepthParams.load)
NUMBER = (int, float, numbers.Real)


def check_params(data: Any) -> None:
    """depth_params.json's shape: an object of {"scale": number, "offset": number} objects
    (NaN and infinities are numbers here: `entry_problem` judges them)."""
    for key, value in expect_object(data, "depth params").items():
        needs = f"entry {key!r} needs numeric 'scale' and 'offset'"
        try:
            expect_object(value, "it")
            expect_fields(value, {"scale": NUMBER, "offset": NUMBER})
            float(value["scale"]), float(value["offset"])
        except KeyError as error:
            raise ValueError(f"{needs} (it has no {error})") from None
        except TypeError as error:
            raise ValueError(f"{needs} ({error})") from None
        except OverflowError:
            raise ValueError(f"{needs} (a number too large for a float)") from None


def read_params(path: Path) -> Mapping[str, Any]:
    """depth_params.json, checked (FileFormatError naming it otherwise: exit 2)."""
    return read_json(path, check=check_params, hint=PARAMS_HINT, max_bytes=MAX_PARAMS_BYTES)


def check_report(data: Any) -> None:
    """The align report's shape, where it is one (another tool's file of that name is let be)."""
    report = expect_object(data, "the align report")
    if report.get("format") != REPORT_FORMAT:
        return
    expect_fields(report, {"method": str, REPORT_IMAGES: dict, REPORT_DEPTHS: dict,
                           REPORT_PARAMS_DIGEST: str})
    expect_fields(report.get(REPORT_DEPTHS) or {}, {"path": str}, REPORT_DEPTHS)
    for key, row in (report.get(REPORT_IMAGES) or {}).items():
        where = f"{REPORT_IMAGES}.{key}"
        expect_object(row, repr(where))
        expect_fields(row, {"key": str, "status": str, "reason": (str, type(None)),
                            "depth_bytes": (int, type(None))}, where)
        if row.get("status", "ok") not in STATUSES:
            raise ValueError(f"{where!r} has the status {row['status']!r}, not one of "
                             f"{', '.join(STATUSES)}")


def read_report(params: Path) -> Mapping[str, Any] | None:
    """The align report of this params file (`report_path`), None when there is none (or it
    is another tool's); FileFormatError naming it when it cannot be used."""
    path = report_path(params)
    if not os.path.lexists(path):
        return None
    data = read_json(path, check=check_report, hint=PARAMS_HINT)
    return data if data.get("format") == REPORT_FORMAT else None


def params_digest(data: Mapping[str, Any]) -> str:
    """A digest of the params' entries, the same for the file as written and as read back."""
    canonical = {str(key): [float(value["scale"]), float(value["offset"])]
                 for key, value in data.items()}
    text = repr(sorted(canonical.items())).encode("utf-8")
    return "sha256:" + hashlib.sha256(text).hexdigest()


def report_matches(report: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether the report was written with these params (reports without a digest: assumed)."""
    recorded = report.get(REPORT_PARAMS_DIGEST)
    return recorded is None or recorded == params_digest(data)


def depth_folder_record(depth_dir: Path) -> dict[str, Any]:
    """What the report records of the depth folder (with each row's "depth_bytes")."""
    return {"path": str(Path(depth_dir).resolve())}


def depth_bytes(path: Path) -> int | None:
    """The size of a depth map as fitted: with the path, what `check_depth_folder` compares."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def check_depth_folder(report: Mapping[str, Any], params: Path, depth_dir: Path) -> None:
    """DepthFolderMismatch when the fits were made for other depth maps than depth_dir's.

    The report records the folder's absolute path and each fitted map's size in bytes (a
    compressed PNG's size follows its pixels). The maps decide, not the path: a moved or copied
    folder has the same maps (accepted); another folder, or this one regenerated, has none of
    them unchanged (refused). A folder where some maps were regenerated since is accepted, as a
    rerun of `depthprior consistency` redoes just those. Reports without the record (older
    ones) are accepted.
    """
    folder = report.get(REPORT_DEPTHS)
    recorded = {posix_name(str(row.get("key") or key)): row["depth_bytes"]
                for key, row in (report.get(REPORT_IMAGES) or {}).items()
                if isinstance(row.get("depth_bytes"), int)}
    if not isinstance(folder, Mapping) or not recorded:
        return
    differ = []
    for stem, size in recorded.items():
        try:
            actual = depth_bytes(relative_join(depth_dir, stem, ".png"))
        except UnsafePathError:
            actual = None
        if actual == size:
            return  # one map it was fitted to is here, unchanged: this is its folder
        if actual is not None:
            differ.append(stem + ".png")
    what = (f"{len(differ)} of its {len(recorded)} depth maps differ there "
            f"({listing(differ, 3)})" if differ else "none of its depth maps are there")
    sparse = report.get("sparse")
    command = "depthprior align" + (f" --sparse {sparse}" if isinstance(sparse, str) else "")
    if isinstance(sparse, str) and Path(params) != default_path(sparse):
        command += f" -o {params}"
    raise DepthFolderMismatch(
        f"{params} holds fits made for the depth maps in {folder.get('path')}, not for those in "
        f"{depth_dir.resolve()} ({what}); rerun `{command} --depths {depth_dir}` for this folder"
    )


def stale_fits(report: Mapping[str, Any] | None, depth_dir: Path | None) -> dict[str, str]:
    """stem -> reason for each image whose prior is no longer the map its fit was made for
    (another size in bytes than the report recorded: regenerated, replaced, rotated): its fit
    is never applied until align runs again."""
    if report is None or depth_dir is None:
        return {}
    stale: dict[str, str] = {}
    for key, row in (report.get(REPORT_IMAGES) or {}).items():
        fitted = row.get("depth_bytes")
        if not isinstance(fitted, int) or isinstance(fitted, bool):
            continue
        stem = posix_name(str(row.get("key") or key))
        try:
            actual = depth_bytes(relative_join(depth_dir, stem, ".png"))
        except UnsafePathError:
            continue
        path = relative_join(depth_dir, stem, ".png")
        if actual is not None and actual != fitted and _is_prior(path, fitted_size(row)):
            stale[stem] = (f"its prior changed after align ({actual} bytes, the fit was made for "
                           f"{fitted}): rerun depthprior align")
    return stale


def fitted_size(row: Mapping[str, Any]) -> tuple[int, int] | None:
    """(height, width) of the map a report row's fit was made for, when recorded."""
    size = row.get("prior_size")
    if (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        return size[1], size[0]
    return None


def _is_prior(path: Path, size: tuple[int, int] | None) -> bool:
    """Whether path's header is a trainer's prior of that size: a damaged, 8-bit or resized
    file is the reader's to name (it fails that image), not a stale fit."""
    from ..files.raster import TRAINER_BITS, read_prior_header

    try:
        read_prior_header(path, size, bits=TRAINER_BITS)
    except ImageError:
        return False
    return True


def report_unreliable(report: Mapping[str, Any] | None) -> dict[str, str]:
    """stem -> reason for images the align report marks unreliable or failed, but for those it
    gives the trainer all the same (`for_trainer`: a precision warning only, as 3DGS sees it)."""
    images = report.get(REPORT_IMAGES) if report else None
    out: dict[str, str] = {}
    for key, record in (images or {}).items():
        status = record.get("status")
        if status == "unreliable" and record.get("for_trainer") is True:
            continue
        if status in ("unreliable", "failed"):
            reason = record.get("reason") or status
            out[posix_name(str(record.get("key") or key))] = f"align report: {status}: {reason}"
    return out


# ---------------------------------------------------------------- writing

def write(output: Path, entries: Mapping[str, Entry], report: Mapping[str, Any],
          per_image: Mapping[str, Mapping[str, Any]]) -> None:
    """depth_params.json at `output` and its report beside it: both written or neither.

    report: the command's fields (inputs, summary, thresholds); the format header, the params'
    digest and the per-image table are added here. Raises WriteError naming the file.
    """
    params = {key: {"scale": entry.scale, "offset": entry.offset} for key, entry in entries.items()}
    document = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "tool": {"name": "depthprior", "version": __version__},
        "created": now_utc(),
        REPORT_PARAMS_DIGEST: params_digest(params),
        **report,
        REPORT_IMAGES: dict(per_image),
    }
    try:
        report_text = encode_json(document, indent=1)
        params_text = encode_json(params, indent=2)
    except ValueError as error:  # a NaN slipped through: a bug, but never write a broken file
        raise WriteError(output, OSError(f"cannot encode it or its report: {error}")) from None
    write_together([(report_path(output), report_text), (output, params_text)])


__all__ = [
    "AlignWriteError",
    "DepthFolderMismatch",
    "DepthParams",
    "Entry",
    "PARAMS_NAME",
    "REPORT_FORMAT",
    "SCALE_BAND",
    "default_path",
    "entry_problem",
    "params_file",
    "read_params",
    "read_report",
    "report_path",
    "report_unreliable",
    "write",
]
