"""The report's per-frame pictures: small JPEG thumbnails of the photo, the prior and the mask.

JPEG only (never PNG): the assets may sit inside the depth folder, where every PNG is taken
for a prior by align and the exports.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..images import decode_rgb
from ..priors.verify import colourise

THUMB_WIDTH = 240
JPEG_QUALITY = 80
#: mask values at or above this are trusted (the confidence masks' convention)
MASK_TRUSTED = 128


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, THUMB_WIDTH / max(width, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("JPEG encoding failed")
    return buffer.tobytes()


def photo_thumbnail(path: Path, max_pixels: int | None) -> np.ndarray:
    """The photo as a small BGR array (ImageError when it cannot be read)."""
    rgb = decode_rgb(path, max_pixels)
    return shrink(rgb, thumbnail_size(rgb.shape[1], rgb.shape[0]))[..., ::-1]


def prior_thumbnail(depth: np.ndarray) -> np.ndarray:
    """The prior, colour-mapped (near = bright), as a small BGR array; an 8-bit prior (another
    tool's) is spread over the 16-bit range first."""
    if depth.dtype == np.uint8:
        depth = depth.astype(np.uint16) * 257
    size = thumbnail_size(depth.shape[1], depth.shape[0])
    return colourise(shrink(depth, size))


def overlay_base(photo: np.ndarray | None, colour: np.ndarray | None,
                 mask_size: tuple[int, int]) -> np.ndarray | None:
    """What a mask of mask_size = (height, width) is drawn over: the photo when it has the
    mask's aspect ratio, else the prior's thumbnail (a mask is never stretched to fit)."""
    height, width = mask_size
    for base in (photo, colour):
        if base is not None and abs(base.shape[1] / base.shape[0] - width / height) <= \
                0.02 * width / height:
            return base
    return None


def mask_overlay(base: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """base tinted red where the uint8 mask does not trust the prior; and the trusted
    fraction. base has the mask's aspect ratio (`overlay_base`): the mask is only shrunk."""
    trusted = float(np.mean(mask >= MASK_TRUSTED))
    small = shrink(mask, (base.shape[1], base.shape[0])).astype(np.float32)
    alpha = (0.7 * (1.0 - small / 255.0))[..., None]
    red = np.array([40, 40, 230], dtype=np.float32)
    tinted = base.astype(np.float32) * (1.0 - alpha) + red * alpha
    return tinted.astype(np.uint8), trusted
