"""The prior files: uint16 inverse-depth PNGs and float32 NPYs, and the mapping of values to
uint16. Writing (atomic, the lock) is files.outputs, reading and checking files.raster; the
manifest that describes them is manifest.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError
from ..files.outputs import (LOCK_NAME, TMP_MARK, OutputLock, atomic_write_bytes, check_writable,
                             now_utc, remove_stale_temporaries)
from ..files.place import Location, read_bytes
from ..files.raster import PNG_PARAMS, PRIOR_BITS, encode_plane, read_prior

PNG_MAX = 65535  # the PNG's full scale: raw_min..raw_max map to 0..PNG_MAX
TRAINER_SCALE = 65536.0  # 3DGS trainers read png / 2**16 (and fit scale and offset to that)


# ---------------------------------------------------------------- files

def depth_pngs(root: Path) -> dict[str, Path]:
    """Every finished depth PNG under a depth folder, by stem (relative posix path without
    .png); temporaries, hidden folders and the tool's own pictures (verify's sheet) left out.
    A linked folder is entered once (a link back up would list every map again and again)."""
    found = {}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if not filename.lower().endswith(".png") or TMP_MARK in filename:
                continue
            if Path(dirpath) == root and filename.startswith("depthprior_"):
                continue
            path = Path(dirpath, filename)
            found[path.relative_to(root).as_posix()[: -len(".png")]] = path
    return dict(sorted(found.items()))


def encode_png16(image: np.ndarray) -> bytes:
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError("depth PNGs are single-channel uint16")
    return encode_plane(image)


def write_png16(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png16(image))


def encode_npy(array: np.ndarray) -> bytes:
    """float32 .npy bytes (no pickles)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_npy(array))


def read_npy(path: Location) -> np.ndarray:
    """A float32 .npy written by write_npy (no pickles); OSError/ValueError when it is not one."""
    import io

    array = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    if array.dtype != np.float32:
        raise ValueError(f"{path} holds {array.dtype}, not float32")
    return array


def read_png16(path: Path | str, size: tuple[int, int] | None = None,
               bits: tuple[int, ...] = PRIOR_BITS) -> np.ndarray:
    """A depth PNG as its stored array (files.raster.read_prior: header checked first);
    OSError naming the file when it is missing, damaged, the wrong kind or size."""
    try:
        return read_prior(path, size, bits=bits)
    except ImageError as error:
        raise OSError(str(error)) from None


# ---------------------------------------------------------------- values -> uint16

@dataclass
class Encoded:
    png: np.ndarray  # HxW uint16, inverse depth min-max normalised
    raw_min: float
    raw_max: float
    raw_kind: str  # "disparity" or "inverse_depth" (1/m, from a metric model)
    levels: int  # distinct values in png
    constant: bool


def inverse_depth(values: np.ndarray, kind: str) -> tuple[np.ndarray, str]:
    """Map a prediction to the PNG's value space: inverse depth, near = large."""
    if kind == "disparity":
        return values, "disparity"
    if kind == "depth":
        positive = values > 0
        inv = np.zeros_like(values, dtype=np.float32)
        np.divide(1.0, values, out=inv, where=positive)
        return inv, "inverse_depth"
    raise ValueError(f"unknown map kind {kind!r}")


def encode_inverse_depth(values: np.ndarray, kind: str, bounds: tuple[float, float] | None = None) -> Encoded:
    """Per-image min-max to 0..65535, or `bounds` (a sequence's inverse-depth range, one
    mapping for all its frames). A constant map (range) is flagged and written as zeros."""
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("prediction contains NaN or infinite values")
    inv, raw_kind = inverse_depth(values.astype(np.float32, copy=False), kind)
    low, high = (float(inv.min()), float(inv.max())) if bounds is None else bounds
    constant = is_constant(low, high)
    if constant:
        png = np.zeros(inv.shape, dtype=np.uint16)
    else:
        scaled = (inv - np.float32(low)) * np.float32(PNG_MAX / (high - low))
        png = np.clip(scaled + 0.5, 0, PNG_MAX).astype(np.uint16)
    return Encoded(png, low, high, raw_kind, count_levels(png), constant)


#: a map whose range is below this fraction of its magnitude holds float rounding, not depth
#: (float32 resolves ~1.2e-7; 1e-5 is ~80 steps of it)
CONSTANT_SPAN = 1e-5


def is_constant(low: float, high: float) -> bool:
    """Whether values spanning low..high carry no structure: equal, or apart by rounding only."""
    return not (high - low) > CONSTANT_SPAN * max(abs(high), abs(low), 1e-30)


def decode_inverse_depth(png: np.ndarray, raw_min: float, raw_max: float) -> np.ndarray:
    return raw_min + png.astype(np.float32) / PNG_MAX * (raw_max - raw_min)


def count_levels(png: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(png.ravel(), minlength=1)))


__all__ = ["LOCK_NAME", "PNG_MAX", "PNG_PARAMS", "TMP_MARK", "TRAINER_SCALE", "Encoded", "OutputLock",
           "atomic_write_bytes", "check_writable", "count_levels", "decode_inverse_depth",
           "depth_pngs", "encode_inverse_depth", "encode_npy", "encode_png16", "inverse_depth", "is_constant",
           "now_utc", "read_npy", "read_png16", "remove_stale_temporaries", "write_npy", "write_png16"]
