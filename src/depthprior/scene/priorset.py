"""Depth priors by image name, as a 3DGS trainer sees them, in numpy (no torch here).

Reproduces what the official 3DGS trainer does with `-d DEPTHS`:

1. read the uint16 PNG as ``png / TRAINER_SCALE`` (2**16, float32);
2. resize it to the training resolution with OpenCV's bilinear filter (``cv2.resize``);
3. with depth_params.json (read and checked by `depthprior.scene.depth_params`), mark the image
   unreliable when its scale is outside SCALE_BAND x the median of the positive scales, and
   apply ``scale * x + offset`` when scale > 0.

Where 3DGS is silently lenient this loader is strict, on purpose:

- a failed fit (scale <= 0) is unreliable even when every fit failed (3DGS then compares
  against a median of 0 and keeps the unaligned map);
- an image without an entry in depth_params.json is unreliable (3DGS prints a line and trains on
  the unaligned map as if it were aligned);
- a missing prior raises :class:`MissingPriorError` naming the image; it is never zeros;
- images that ``depthprior align`` reports as unreliable or failed (``<params stem>.report.json``
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

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from .depth_params import PARAMS_NAME, REPORT_IMAGES, SCALE_BAND, DepthParams, depth_file, fitted_size
from ..errors import DepthpriorError, ImageError, UsageError, first_line, listing
from ..files.raster import TRAINER_BITS, read_prior_header
from ..images import image_key, posix_name
from ..priors.manifest import ImageRecord, Manifest
from ..priors.store import TRAINER_SCALE, depth_pngs, read_png16


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
                self._files[stem] = depth_file(self.root, stem, f"{self.manifest.path} image {name!r}")
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
        failed = [n for n in names if self._aliases.get(posix_name(n)) in self._status]
        why = " (generate failed for some: see depthprior.json)" if failed else ""
        return (
            f"no depth prior in {self.root} for {len(names)} image(s): "
            f"{listing(names, quote=True)}{why}; "
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
            return False, f"no entry in {PARAMS_NAME}"
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

    # ------------------------------------------------------------------ files
    def prior_size(self, name: str) -> tuple[int, int]:
        """(height, width) the image's prior is stored at: its manifest record's, else what
        the PNG's header declares (nothing decoded); MissingPriorError when unreadable."""
        stem = self.stem(name)
        size = self._recorded_size(stem)
        if size is not None:
            return size
        path = self._files[stem]
        try:
            return read_prior_header(path, bits=TRAINER_BITS)
        except ImageError as error:
            raise MissingPriorError(self._unreadable(name, stem, path, error)) from None

    def read_png(self, name: str) -> np.ndarray:
        """The prior's stored uint16 PNG, of its recorded size; MissingPriorError naming the
        file and what is wrong otherwise."""
        stem = self.stem(name)
        path = self._files[stem]
        try:
            return read_png16(path, self._recorded_size(stem), bits=TRAINER_BITS)
        except OSError as error:
            raise MissingPriorError(self._unreadable(name, stem, path, error)) from None

    def check_readable(self, name: str) -> None:
        """The image's prior is there and its header is a prior's of the recorded size (cheap:
        nothing decoded); MissingPriorError naming it otherwise."""
        stem = self.stem(name)
        path = self._files[stem]
        try:
            read_prior_header(path, self._recorded_size(stem), bits=TRAINER_BITS)
        except ImageError as error:
            raise MissingPriorError(self._unreadable(name, stem, path, error)) from None

    def _recorded_size(self, stem: str) -> tuple[int, int] | None:
        """(height, width) the prior must have: its manifest record's, else (a folder another
        tool wrote) the size of the map align fitted, so a rotated or resized one is named."""
        record = self._records.get(stem)
        if record is not None and record.width > 0 and record.height > 0:
            return int(record.height), int(record.width)
        report = self.params.report if self.params is not None else None
        rows = (report or {}).get(REPORT_IMAGES) or {}
        row = rows.get(stem)
        return fitted_size(row) if isinstance(row, Mapping) else None

    def _unreadable(self, name: str, stem: str, path: Path, error: BaseException) -> str:
        record = self._records.get(stem)
        outputs = record.outputs if record is not None and record.ok else [".png"]
        hint = "" if any(o.endswith(".png") for o in outputs) else (
            " (generated without PNGs: rerun generate with --format png or both)"
        )
        return f"depth prior for {name!r} is missing or unreadable: {first_line(error)}{hint}"

    # ------------------------------------------------------------------ values
    def load(self, name: str, size: "tuple[int, int] | None" = None) -> PriorArray:
        """The prior for `name`, resized to ``size = (height, width)`` (None: stored size)."""
        stem = self.stem(name)
        hw = (int(size[0]), int(size[1])) if size is not None else None
        png = self.read_png(stem)
        values = png.astype(np.float32) / TRAINER_SCALE
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


__all__ = [
    "DepthParams",
    "MissingPriorError",
    "PARAMS_NAME",
    "PriorArray",
    "PriorSet",
    "SCALE_BAND",
]
