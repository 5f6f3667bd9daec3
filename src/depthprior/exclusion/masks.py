"""Exclusion masks and their folder: DIR/<image key>.png (uint8 at the image's stored size,
0 = excluded, 255 = kept) and DIR/exclude.json (per image the excluded fraction per class, and
the identity of the model and settings that made them). Every consumer (align, consistency,
training, export, verify, report) reads them through `load_kept` and `read_report` here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ImageError, UsageError, first_line
from ..files.jsonfile import expect_fields, expect_object, read_json
from ..files.raster import read_mask, same_aspect
from ..images import image_key, mask_name, safe_join

REPORT_NAME = "exclude.json"
FORMAT_VERSION = 1
EXCLUDED = 0
KEPT = 255
#: mask values from here up are kept (masks hold only 0 and 255; a resized one is cut here)
KEPT_FROM = 128
_HINT = "rerun depthprior exclude for this folder (with --overwrite)"
#: the largest --dilate, in pixels of the frame's stored size: a fringe of 256 px is an eighth
#: of a 4K frame's height on each side; beyond it a few excluded pixels (a bird in the sky)
#: exclude whole frames, in silence (it was unbounded: 99999999 excluded everything)
MAX_DILATE = 256


class ExclusionMissing(UsageError):
    """An image has no usable exclusion mask in a folder a consumer was given."""


def make_mask(groups: np.ndarray, names: list[str], dilate: int) -> tuple[np.ndarray, dict[str, float]]:
    """A group map (0 kept, k the k-th class group) -> (mask, excluded fraction per class, and
    "total" after dilation). --dilate excludes too every pixel whose centre lies within
    `dilate` pixels (Euclidean) of an excluded one."""
    excluded = groups > 0
    fractions = {name: float((groups == index).mean()) for index, name in enumerate(names, start=1)}
    if dilate > 0 and excluded.any() and not excluded.all():
        distance = cv2.distanceTransform((~excluded).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        excluded = distance <= dilate
    fractions["total"] = float(excluded.mean())
    return np.where(excluded, EXCLUDED, KEPT).astype(np.uint8), fractions


def read_report(folder: Path | str) -> dict[str, Any] | None:
    """exclude.json of a mask folder as {"identity": ..., "images": {name: entry}}; None when
    there is none; FileFormatError naming it when it is not one depthprior exclude wrote."""
    return read_json(Path(folder) / REPORT_NAME, missing_ok=True, check=_check_report, hint=_HINT)


def _check_report(data: Any) -> None:
    document = expect_object(data)
    expect_fields(document, {"identity": dict, "images": dict, "version": int})
    if not isinstance(document.get("images"), dict):
        raise TypeError("'images' is not an object of image names")
    for name, entry in document["images"].items():
        if not isinstance(entry, dict):
            raise TypeError(f"the entry of image {name!r} is not an object")
        expect_fields(entry, {"key": str, "status": str, "size": list, "fractions": dict,
                              "source": list, "reason": str}, name)
        key = entry.get("key")
        if key is not None and key != image_key(name):
            raise TypeError(f"the key {key!r} of image {name!r} is not its image key {image_key(name)!r}")
        size = entry.get("size")
        if size is not None and (len(size) != 2 or not all(_count(v) for v in size)):
            raise TypeError(f"'size' of image {name!r} is not [height, width]")
        for label, value in (entry.get("fractions") or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise TypeError(f"fraction {label!r} of image {name!r} is not in [0, 1]")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class ExclusionFolder:
    """A mask folder as consumers read it: per image key, its kept pixels at the size asked."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"exclusion mask folder not found: {self.root}; run 'depthprior exclude' first")
        report = read_report(self.root)
        if report is None:
            raise UsageError(f"{self.root} holds no {REPORT_NAME}: it is not a folder 'depthprior "
                             "exclude' wrote")
        self.identity = report.get("identity") or {}
        self.entries = {entry.get("key") or name: entry for name, entry in report["images"].items()}

    def check_covers(self, keys: "list[str]", model: Path | str) -> None:
        """UsageError (exit 2, nothing written) when the folder holds a mask for none of `keys`
        (the images of the COLMAP model `model`): masks of another image set, not a folder
        whose masks a few images lack (those fail alone)."""
        for key in keys:
            try:
                if os.path.isfile(safe_join(self.root, mask_name(key))):
                    return
            except UsageError:
                continue
        if keys:
            raise UsageError(f"{self.root} has no exclusion mask for any image of {model}; wrong "
                             "folder? run depthprior exclude")

    def fraction(self, key: str) -> float | None:
        """The excluded fraction of an image (after dilation), None when it has no mask here."""
        entry = self.entries.get(key)
        value = (entry or {}).get("fractions", {}).get("total") if entry and entry.get("status") == "ok" else None
        return float(value) if value is not None else None

    def classes(self, key: str) -> dict[str, float]:
        entry = self.entries.get(key) or {}
        return {name: float(v) for name, v in (entry.get("fractions") or {}).items() if name != "total"}

    def kept(self, key: str, stored: tuple[int, int] | None = None,
             size: tuple[int, int] | None = None) -> np.ndarray:
        """An image's kept pixels as a bool HxW: at `size` (height, width) when given (nearest;
        the mask must have its aspect ratio), else at the mask's own size, which must be
        `stored` (the image's and its prior's) when given. ExclusionMissing naming the file
        when it is missing, damaged or the wrong size."""
        path = safe_join(self.root, mask_name(key))
        if not os.path.isfile(path):
            raise ExclusionMissing(f"no exclusion mask for {key!r}: {path} is missing; {_HINT}")
        try:
            mask = read_mask(path, stored, hint=_HINT)
        except ImageError as error:
            raise ExclusionMissing(first_line(error)) from None
        kept = mask >= KEPT_FROM
        if size is not None and not same_aspect(kept.shape, tuple(size)):
            raise ExclusionMissing(f"exclusion mask {path} is {mask.shape[1]}x{mask.shape[0]}, its "
                                   f"prior is {size[1]}x{size[0]}: another aspect ratio (another "
                                   f"image?); {_HINT}")
        if size is not None and tuple(size) != kept.shape:
            kept = cv2.resize(kept.astype(np.uint8), (int(size[1]), int(size[0])),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        return kept

    def digest(self, key: str) -> bytes:
        """sha256 of an image's mask file (b"" when it has none): what a consumer's resume keys on."""
        import hashlib

        from ..files.place import read_regular_file

        try:
            return hashlib.sha256(read_regular_file(safe_join(self.root, mask_name(key)))).digest()
        except OSError:
            return b""

    def weight(self, key: str, stored: tuple[int, int] | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
        """kept() as float32 weights: 1 kept, 0 excluded."""
        return self.kept(key, stored, size).astype(np.float32)


__all__ = ["EXCLUDED", "KEPT", "KEPT_FROM", "REPORT_NAME", "ExclusionFolder", "ExclusionMissing", "make_mask",
           "mask_name", "read_report"]
