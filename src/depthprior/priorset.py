"""Depth priors by image name, as a 3DGS trainer sees them, in numpy (no torch here).

Reproduces what the official 3DGS trainer does with `-d DEPTHS` (scene/cameras.py,
utils/camera_utils.py, scene/dataset_readers.py):

1. read the uint16 PNG as ``png / 2**16`` (float32);
2. resize it to the training resolution with OpenCV's bilinear filter (``cv2.resize``);
3. with depth_params.json, mark the image unreliable when its scale is below 0.2x or above 5x
   the median of the positive scales, and apply ``scale * x + offset`` when scale > 0.

Where 3DGS is silently lenient this loader is strict, on purpose:

- a failed fit (scale <= 0) is unreliable even when every fit failed (3DGS then compares
  against a median of 0 and keeps the unaligned map);
- an image without an entry in depth_params.json is unreliable (3DGS prints a line and trains on
  the unaligned map as if it were aligned);
- a missing prior raises :class:`MissingPriorError` naming the image; it is never zeros;
- images that ``depthprior align`` reports as unreliable or failed (``<params>.report.json``
  beside depth_params.json) are unreliable too;
- an entry whose scale/offset are not finite, overflow float32, or would make the prior
  constant or nowhere positive is unreliable and never applied (3DGS would train on zeros or
  infinities);
- a depth_params.json key or manifest stem that points outside the depth folder ("../x",
  "/etc/x") is refused with UnsafePathError.

`depthprior.training.DepthPriors` puts these arrays on a torch device; the exports use
`PriorSet` directly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from .errors import DepthpriorError, UnsafePathError, UsageError
from .images import image_key, posix_name, safe_join
from .manifest import ImageRecord, Manifest
from .store import depth_pngs, read_png16

#: 3DGS keeps an image when 0.2 * median <= scale <= 5 * median
SCALE_BAND = (0.2, 5.0)
#: 3DGS reads priors as png / 2**16 (not 65535)
PNG_DIVISOR = float(2**16)
PARAMS_NAME = "depth_params.json"
#: `depthprior align` writes <params stem>.report.json beside the params, in this format
REPORT_FORMAT = "depthprior-align-report"
REPORT_FALLBACK = "depth_params.report.json"
#: the report's per-image table (key -> {"status": "ok"|"unreliable"|"failed", "reason"})
REPORT_IMAGE_FIELDS = ("per_image", "images_detail", "images")


class MissingPriorError(DepthpriorError, LookupError):
    """A trainer asked for an image that has no prior (never treated as zeros)."""


@dataclass
class PriorArray:
    """One image's prior as a numpy array."""

    stem: str  # name without extension, relative to the depth folder
    inverse_depth: np.ndarray  # (H, W) float32; aligned when `aligned`
    reliable: bool  # False: a trainer skips this image's depth loss
    reason: str | None  # why it is unreliable
    scale: float | None
    offset: float | None
    aligned: bool  # scale and offset from depth_params.json applied


@dataclass(frozen=True)
class DepthParams:
    """depth_params.json: per-image scale/offset, the median scale, and reliability."""

    entries: dict[str, tuple[float, float]]
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
            path = Path(source)
            if path.is_dir():
                path = path / PARAMS_NAME
            if not path.is_file():
                raise UsageError(
                    f"depth params not found: {path}; run `depthprior align` to write it"
                )
            data = _read_json(path, "depth params")
            report = _find_report(path)
        if not isinstance(data, Mapping):
            raise UsageError(f"{path or 'depth params'}: expected an object of image names")
        entries = _entries(data, path, Path(depth_dir) if depth_dir is not None else Path("."))
        positive = [s for s, _ in entries.values() if math.isfinite(s) and s > 0]
        median = float(np.median(positive)) if positive else 0.0
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
        for stem, reason in _report_unreliable(report).items():
            unreliable.setdefault(stem, reason)
        return cls(entries, median, unreliable, path, frozenset(unusable))


class PriorSet:
    """Image name -> prior array at a training resolution.

    ``depth_dir`` is the folder `depthprior generate` wrote (PNGs + depthprior.json). ``params``
    is depth_params.json from `depthprior align` (a path, the sparse folder holding it, or a
    dict); without it the priors are returned unaligned as ``png / 2**16`` (fine for the
    Pearson and scale-and-shift-invariant losses, meaningless for the L1 loss).

    Names are accepted with or without extension (``frame_001.jpg``, ``frame_001``), as the
    relative path the images were generated from (``cam0/frame_001.jpg``) or, when unambiguous,
    as the bare file name.
    """

    def __init__(
        self,
        depth_dir: "str | os.PathLike[str]",
        params: "str | os.PathLike[str] | Mapping[str, Any] | DepthParams | None" = None,
        *,
        scale_band: tuple[float, float] = SCALE_BAND,
    ):
        self.root = Path(depth_dir)
        if not self.root.is_dir():
            raise UsageError(f"depth folder not found: {self.root}")
        self.params = (DepthParams.load(params, scale_band, self.root) if params is not None
                       else None)
        self.manifest = Manifest.load(self.root)
        self._files: dict[str, Path] = {}  # stem -> png
        self._records: dict[str, ImageRecord] = {}  # stem -> manifest record
        self._status: dict[str, str] = {}  # stem -> manifest status when not ok
        self._aliases: dict[str, str] = {}  # any accepted spelling -> stem
        if self.manifest is not None:
            for name, record in self.manifest.images.items():
                stem = posix_name(record.stem or image_key(name))
                self._files[stem] = _inside(self.root, stem, f"{self.manifest.path} image {name!r}")
                self._records[stem] = record
                if not record.ok:
                    self._status[stem] = record.status
                self._aliases[posix_name(name)] = stem
        else:
            self._files.update(depth_pngs(self.root))
        for stem in self._files:
            self._aliases[stem] = stem
        by_base: dict[str, list[str]] = {}
        for stem in self._files:
            by_base.setdefault(PurePosixPath(stem).name, []).append(stem)
        self._by_base = by_base

    # ------------------------------------------------------------------ names
    @property
    def names(self) -> list[str]:
        """Stems (relative names without extension) of every image with a prior."""
        return sorted(s for s in self._files if s not in self._status)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is not None

    def stem(self, name: str) -> str:
        """The prior's stem for a trainer's image name; MissingPriorError if it has none."""
        stem = self._resolve(name)
        if stem is None:
            raise MissingPriorError(self._missing_message([name]))
        return stem

    def missing(self, names: Iterable[str]) -> list[str]:
        """The names (as given) that have no prior."""
        return [name for name in names if self._resolve(name) is None]

    def check(self, names: Iterable[str]) -> None:
        """Raise one MissingPriorError listing every name without a prior (call at startup)."""
        missing = self.missing(names)
        if missing:
            raise MissingPriorError(self._missing_message(missing))

    def _resolve(self, name: str) -> str | None:
        key = posix_name(name)
        stem = self._aliases.get(key)
        if stem is None:
            without = str(PurePosixPath(key).with_suffix("")) if PurePosixPath(key).suffix else key
            stem = self._aliases.get(without)
            if stem is None:
                matches = self._by_base.get(without) or self._by_base.get(key) or []
                stem = matches[0] if len(matches) == 1 else None
        if stem is None or stem in self._status:
            return None
        return stem

    def _missing_message(self, names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        failed = [n for n in names if self._aliases.get(posix_name(n)) in self._status]
        why = " (generate failed for some: see depthprior.json)" if failed else ""
        return (
            f"no depth prior in {self.root} for {len(names)} image(s): {shown}{more}{why}; "
            f"it has {len(self.names)} priors"
        )

    def record(self, name: str) -> ImageRecord | None:
        """The image's manifest record (raw_min, raw_max, raw_kind, ...); None without one."""
        return self._records.get(self.stem(name))

    def path(self, name: str) -> Path:
        """The prior's PNG."""
        return self._files[self.stem(name)]

    # ------------------------------------------------------------------ reliability
    def reliability(self, name: str) -> tuple[bool, str | None]:
        """(reliable, reason) for one image; a trainer skips unreliable images."""
        stem = self.stem(name)
        if self.params is None:
            return True, None
        if stem not in self.params.entries:
            return False, "no entry in depth_params.json"
        reason = self.params.unreliable.get(stem)
        return reason is None, reason

    def reliable(self, name: str) -> bool:
        return self.reliability(name)[0]

    @property
    def unreliable(self) -> dict[str, str]:
        """stem -> reason for every prior a trainer should skip."""
        out = {}
        for stem in self.names:
            ok, reason = self.reliability(stem)
            if not ok:
                out[stem] = reason or "unreliable"
        return out

    # ------------------------------------------------------------------ values
    def load(self, name: str, size: "tuple[int, int] | None" = None) -> PriorArray:
        """The prior for `name`, resized to ``size = (height, width)`` (None: stored size)."""
        stem = self.stem(name)
        hw = (int(size[0]), int(size[1])) if size is not None else None
        path = self._files[stem]
        try:
            png = read_png16(path)
        except OSError:
            record = self._records.get(stem)
            outputs = record.outputs if record is not None and record.ok else [".png"]
            hint = "" if any(o.endswith(".png") for o in outputs) else (
                " (generated without PNGs: rerun generate with --format png or both)"
            )
            raise MissingPriorError(
                f"depth prior for {name!r} is missing or unreadable: {path}{hint}"
            ) from None
        if png.ndim != 2 or png.dtype != np.uint16:
            raise UsageError(f"{path} is not a single-channel uint16 depth PNG")
        values = png.astype(np.float32) / PNG_DIVISOR
        if hw is not None and hw != values.shape:
            values = cv2.resize(values, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        values[values < 0] = 0
        reliable, reason = self.reliability(stem)
        scale = offset = None
        aligned = False
        if self.params is not None and stem in self.params.entries:
            scale, offset = self.params.entries[stem]
            if scale > 0 and stem not in self.params.unusable:
                values = values * scale + offset
                aligned = True
        return PriorArray(stem, np.ascontiguousarray(values), reliable, reason, scale, offset,
                          aligned)


#: the largest value of png / 2**16
PRIOR_MAX = 65535 / PNG_DIVISOR


def entry_problem(scale: float, offset: float) -> str:
    """Why a depth_params.json entry cannot be applied, or '' when it can.

    Applied to every prior value x in [0, PRIOR_MAX] as float32 ``scale * x + offset``, it must
    give finite numbers that vary with x and are positive somewhere; a failed fit has scale <= 0.
    """
    if not (math.isfinite(scale) and math.isfinite(offset)):
        return f"scale {scale:g} / offset {offset:g} in depth_params.json is not a finite number"
    if scale <= 0:
        return f"failed fit in depth_params.json (scale {scale:g})"
    with np.errstate(all="ignore"):
        low = np.float32(offset)
        high = np.float32(scale) * np.float32(PRIOR_MAX) + low
    if not (np.isfinite(low) and np.isfinite(high)):
        return (f"scale {scale:g} / offset {offset:g} in depth_params.json overflow 32-bit "
                "floats: unusable")
    if not high > 0:
        return (f"scale {scale:g} / offset {offset:g} in depth_params.json make every inverse "
                "depth negative or zero: unusable")
    if high == low:
        return (f"scale {scale:g} is too small next to offset {offset:g} in depth_params.json: "
                "the aligned prior would be constant")
    return ""


def _entries(data: Mapping[str, Any], path: Path | None,
             depth_dir: Path) -> dict[str, tuple[float, float]]:
    """stem -> (scale, offset) as written; keys that would leave depth_dir are refused."""
    source = path or "depth params"
    entries: dict[str, tuple[float, float]] = {}
    for key, value in data.items():
        try:
            scale, offset = float(value["scale"]), float(value["offset"])
        except (TypeError, KeyError, ValueError, OverflowError):
            raise UsageError(
                f"{source}: entry {key!r} needs numeric 'scale' and 'offset'"
            ) from None
        stem = posix_name(str(key))
        _inside(depth_dir, stem, f"{source} key {key!r}")
        entries[stem] = (scale, offset)
    return entries


def _inside(root: Path, stem: str, what: str) -> Path:
    """root/stem.png, or UnsafePathError naming `what` when that would leave root."""
    try:
        return safe_join(root, stem, ".png")
    except UnsafePathError:
        raise UnsafePathError(
            f"{what} points outside the depth folder {root}; refused (image names are "
            "relative paths without '..')"
        ) from None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the {what} file {path}: {error}") from None


def _find_report(params_path: Path) -> Mapping[str, Any] | None:
    """The report `depthprior align` writes beside its params file (<stem>.report.json)."""
    for path in (params_path.with_name(params_path.stem + ".report.json"),
                 params_path.with_name(REPORT_FALLBACK)):
        if path.is_file():
            data = _read_json(path, "align report")
            if isinstance(data, Mapping) and data.get("format") == REPORT_FORMAT:
                return data
    return None


def _report_unreliable(report: Mapping[str, Any] | None) -> dict[str, str]:
    """stem -> reason for images the align report marks unreliable or failed."""
    out: dict[str, str] = {}
    images = None
    for field in REPORT_IMAGE_FIELDS:
        candidate = report.get(field) if report else None
        if isinstance(candidate, Mapping):
            images = candidate
            break
    if images is None:
        return out
    for key, record in images.items():
        if not isinstance(record, Mapping):
            continue
        status = record.get("status")
        if status in ("unreliable", "failed"):
            reason = record.get("reason") or status
            out[posix_name(str(record.get("key") or key))] = f"align report: {status}: {reason}"
    return out


__all__ = [
    "DepthParams",
    "MissingPriorError",
    "PARAMS_NAME",
    "PriorArray",
    "PriorSet",
    "SCALE_BAND",
]
