"""What the demo Space returns, read as one disparity map.

/on_submit answers with an 8-bit gray file and a "16-bit raw" file of the same disparity
(DESIGN.md, "The demo Space's contract"); choose_depth keeps whichever holds more distinct
levels and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store import count_levels
from .space_faults import Fault


@dataclass
class Choice:
    source: str  # "space:raw16" or "space:gray8"
    values: np.ndarray  # float32 disparity (near = large) at the returned size
    levels: int
    gray_levels: int
    raw_levels: int
    reason: str
    notes: list[str] = field(default_factory=list)


def choose_depth(gray: np.ndarray, raw: np.ndarray) -> Choice:
    """Build the disparity map from whichever returned file holds more distinct levels.

    Both files are disparity, near = bright. The raw file is the float disparity truncated to
    integers (only as many levels as the disparity spans units); the gray file is the same
    disparity min-max normalised to 0..255 (at most 256 levels). Ties go to the gray file,
    which cannot wrap. When the gray file is used and the raw file spans a range, the gray
    levels are mapped onto that range, so raw_min/raw_max in the manifest are in the Space's
    disparity units (to about one unit) whichever file an image used.
    """
    gray_levels, raw_levels = count_levels(_as_index(gray)), count_levels(_as_index(raw))
    consistent = _consistent(gray, raw)
    notes: list[str] = []
    if raw_levels > gray_levels and consistent:
        return Choice("space:raw16", raw.astype(np.float32), raw_levels, gray_levels, raw_levels,
                      f"the 16-bit raw file holds {raw_levels} distinct levels, "
                      f"the 8-bit gray file {gray_levels}", notes)
    if raw_levels > gray_levels:
        reason = (f"the 16-bit raw file holds more levels ({raw_levels}) but does not match the "
                  f"gray file (negative or wrapped values?), so the gray file ({gray_levels}) is used")
        notes.append("raw16 file inconsistent with gray8 file; gray8 used")
    else:
        reason = (f"the 16-bit raw file holds only {raw_levels} distinct levels "
                  f"(disparity truncated to integers), the 8-bit gray file {gray_levels}")
    gray_f = gray.astype(np.float32)
    low, high = float(raw.min()), float(raw.max())
    g_low, g_high = float(gray_f.min()), float(gray_f.max())
    if consistent and high > low and g_high > g_low:
        values = np.float32(low + 0.5) + (gray_f - np.float32(g_low)) * np.float32(
            (high - low) / (g_high - g_low))
    else:
        values = gray_f
        notes.append("values in gray levels (0..255), not disparity units")
    return Choice("space:gray8", values.astype(np.float32, copy=False), gray_levels, gray_levels,
                  raw_levels, reason, notes)


def _as_index(array: np.ndarray) -> np.ndarray:
    if array.dtype in (np.uint8, np.uint16):
        return array
    _, inverse = np.unique(array, return_inverse=True)
    return inverse.reshape(array.shape).astype(np.uint32)


def _consistent(gray: np.ndarray, raw: np.ndarray) -> bool:
    """True unless the raw file's values cannot be the gray file's disparity, truncated.

    gray = trunc(255 * t) and raw = trunc(d) for t = (d - min) / (max - min): normalised alike,
    they differ by at most one gray step plus about two raw units.
    """
    g_low, g_high = float(gray.min()), float(gray.max())
    r_low, r_high = float(raw.min()), float(raw.max())
    if r_high - r_low < 2 or g_high <= g_low:
        return True  # too few levels to judge; nothing to gain from the raw file anyway
    g = (gray[::2, ::2].astype(np.float32) - g_low) / (g_high - g_low)
    r = (raw[::2, ::2].astype(np.float32) - r_low) / (r_high - r_low)
    tolerance = 1.5 / (g_high - g_low) + 2.5 / (r_high - r_low)
    return float(np.quantile(np.abs(g - r), 0.999)) <= tolerance


def describe_array(array: np.ndarray) -> dict[str, Any]:
    return {
        "size": f"{array.shape[1]}x{array.shape[0]}",
        "channels": 1 if array.ndim == 2 else array.shape[2],
        "dtype": str(array.dtype),
        "range": f"{array.min()}..{array.max()}",
        "levels": count_levels(_as_index(array if array.ndim == 2 else array[..., 0])),
    }


def single_channel(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] >= 3 and np.array_equal(array[..., 0], array[..., 1]) \
            and np.array_equal(array[..., 1], array[..., 2]):
        return array[..., 0]
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[..., 0]
    raise Fault(f"expected a single-channel depth file, got shape {array.shape}")


def format_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    return "unknown format"
