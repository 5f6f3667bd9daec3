"""Every picture depthprior reads: input images, 16-bit priors and 8-bit masks.

The header is read first and checked before anything is decoded: the pixel cap (`--max-pixels`;
a 400 KB PNG can declare 20000x20000), the aspect ratio (a 15 KB 1x5000 PNG would make a
network input hundreds of thousands of pixels long) and, for priors and masks, the kind
(uint16 or uint8, one channel) and the size they must have. Problems are ImageError (one image
fails, the batch goes on) whose message says what is wrong and what to do.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..errors import ImageError, UsageError, first_line
from .place import Location, read_bytes, read_head

#: images (and any picture a command is handed, e.g. a server's reply) above this many pixels
#: are refused before they are decoded: a 400 KB PNG can declare 20000x20000 pixels
DEFAULT_MAX_PIXELS = 100_000_000
#: longer side / shorter side above this is refused: panoramas are 2:1 to 8:1; a 1x5000 strip
#: would be resized to a network input of 518 x 2.6 million pixels
MAX_ASPECT = 16.0


#: two pictures of one scene (a frame, its camera, its prior, its mask): relative aspect-ratio
#: difference allowed (a rounded downscale passes, a rotation or crop fails)
ASPECT_TOLERANCE = 0.05


def same_aspect(first: Sequence[int], second: Sequence[int]) -> bool:
    """Two sizes in the same order ((width, height) or (height, width)) of one aspect ratio,
    up to ASPECT_TOLERANCE."""
    return abs((first[0] / first[1]) / (second[0] / second[1]) - 1.0) <= ASPECT_TOLERANCE


@dataclass(frozen=True)
class Header:
    """What a picture's header declares."""

    width: int
    height: int
    channels: int | None = None  # samples per pixel as stored (None: unknown)
    bits: int | None = None  # bits per sample (None: unknown)
    format: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width), numpy's order."""
        return self.height, self.width


def check_pixels(width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_aspect: float | None = MAX_ASPECT) -> None:
    """ImageError when a picture of width x height is empty, above the pixel cap (None: no
    cap) or more elongated than max_aspect (None: no limit)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"image declares an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height / 1e6:.3g} MP, above the "
            f"--max-pixels cap of {max_pixels / 1e6:g} MP; downscale it or raise --max-pixels"
        )
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise ImageError(
            f"image is {width}x{height}, an aspect ratio of {max(width, height) / min(width, height):.0f}:1, "
            f"beyond the {max_aspect:g}:1 limit; crop it to a frame a depth model can see"
        )


# ---------------------------------------------------------------- headers

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def read_header(data: bytes) -> Header | None:
    """The header of a PNG, or of anything Pillow identifies, PFM or Radiance HDR; None if none
    can be read (the decoders then decide)."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 26:
        width, height = struct.unpack(">II", data[16:24])
        return Header(width, height, _PNG_CHANNELS.get(data[25]), data[24], "png")
    return _pillow_header(data) or _text_header(data)


def _pillow_header(data: bytes) -> Header | None:
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as pil:
            return Header(int(pil.size[0]), int(pil.size[1]), len(pil.getbands()), None,
                          (pil.format or "").lower())
    except Exception:  # noqa: BLE001 - unidentified or damaged: the decoders decide
        return None


#: PFM ("PF"/"Pf", "width height") and Radiance HDR ("-Y height +X width") headers, which
#: OpenCV decodes and Pillow does not identify
_PFM_HEADER = re.compile(rb"P[Ff]\s+(\d+)\s+(\d+)\s")
_HDR_SIZE = re.compile(rb"\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n")


def _text_header(data: bytes) -> Header | None:
    head = data[:4096]
    pfm = _PFM_HEADER.match(head)
    if pfm:
        return Header(int(pfm.group(1)), int(pfm.group(2)), format="pfm")
    hdr = _HDR_SIZE.search(head) if head.startswith(b"#?") else None
    if hdr:
        first, second = int(hdr.group(3)), int(hdr.group(6))
        width, height = (second, first) if hdr.group(2) == b"Y" else (first, second)
        return Header(width, height, format="hdr")
    return None


#: the headers of every format read here fit in this (JPEG's SOF after its EXIF segments too)
HEADER_BYTES = 1 << 20
#: a file whose header is not in its first HEADER_BYTES is read whole up to this
MAX_HEADER_SEARCH = 1 << 30


def stored_size(path: Location) -> tuple[int, int]:
    """(width, height) an image file declares, from its first bytes (a huge file is never read
    whole for its header); ImageError if unreadable."""
    header = read_header(read_head(path, HEADER_BYTES))
    if header is None:
        header = read_header(read_bytes(path, MAX_HEADER_SEARCH))
    if header is None:
        raise ImageError("not a readable image header")
    return header.width, header.height


# ---------------------------------------------------------------- input images

_JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")


def decode_rgb(path: Location, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stored pixel array as HxWx3 uint8 RGB; EXIF orientation is deliberately ignored.

    COLMAP and 3DGS read raw pixels, so the map must align with the stored array. Gray,
    RGBA, palette, 16-bit and CMYK inputs are converted. Only a regular file is read (a FIFO
    or device is refused without blocking), and a picture whose header declares more than
    max_pixels (None: no cap) or an extreme aspect ratio is refused before it is decoded.
    """
    return decode_rgb_bytes(read_bytes(path, encoded_limit(max_pixels)), str(path), max_pixels)


def encoded_limit(max_pixels: int | None) -> int | None:
    """The most bytes an image file within max_pixels can take (16-bit RGBA PNG, stored
    uncompressed, plus its metadata): a larger file or object is refused before it is read."""
    return None if max_pixels is None else max_pixels * 8 + (16 << 20)


def decode_rgb_bytes(data: bytes, name: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    header = read_header(data)
    if header is not None:
        check_pixels(header.width, header.height, max_pixels)
    image = _decode_with_opencv(data)
    if image is None:
        image = _decode_with_pillow(data)
    elif os.path.splitext(name)[1].lower() in _JPEG_EXTS or data[:2] == b"\xff\xd8":
        _check_jpeg_complete(data)
    check_pixels(image.shape[1], image.shape[0], max_pixels)  # formats without a readable header
    return _to_rgb8(image)


def read_image_or_fail(path: Location, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """decode_rgb for single-image commands: an unreadable file is a usage error naming it."""
    try:
        return decode_rgb(path, max_pixels)
    except ImageError as error:
        raise UsageError(f"{path}: {first_line(error)}") from None


def decode_stored(data: bytes | bytearray) -> np.ndarray | None:
    """A picture held in memory (a server's reply) as its stored array, any depth and channels;
    None when it cannot be decoded. Check its header (read_header, check_pixels) first."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None


# ---------------------------------------------------------------- priors and masks

_PRIOR_HINT = "rerun depthprior generate for it (or --overwrite)"
PRIOR_BITS = (16, 8)  # depthprior writes 16; another tool's 8-bit priors are read too (align)
TRAINER_BITS = (16,)  # what a trainer is given: png / 2**16 means nothing for an 8-bit file


def read_prior(path: Location, size: tuple[int, int] | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS,
               bits: tuple[int, ...] = PRIOR_BITS) -> np.ndarray:
    """A depth prior PNG as its stored HxW array: uint16 (depthprior's), or uint8 from another
    tool (few levels: align says so).

    `size` = (height, width) it must have (its manifest record's); ImageError naming the file
    when it is missing, not a single-channel 16- or 8-bit PNG (an RGB file: the image folder?),
    the wrong size, or over the caps.
    """
    return _read_plane(path, "depth prior", bits, size, max_pixels, _PRIOR_HINT)


def read_mask(path: Location, size: tuple[int, int] | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, hint: str | None = None) -> np.ndarray:
    """A mask PNG (consistency, exclusion) as its HxW uint8 array: single channel, 8 bits, and
    exactly `size` = (height, width) when given (never stretched to fit). `hint`: what to do
    about a bad one (default: rerun the command that wrote it)."""
    return _read_plane(path, "mask", (8,), size, max_pixels,
                       hint or "rerun the command that wrote it (e.g. depthprior consistency)")




def read_prior_header(path: Location, size: tuple[int, int] | None = None,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      bits: tuple[int, ...] = PRIOR_BITS) -> tuple[int, int]:
    """(height, width) of a depth prior PNG, checked as read_prior checks it, not decoded."""
    return _plane_header(path, "depth prior", bits, size, max_pixels, _PRIOR_HINT)[1].size


def _read_plane(path: Location, what: str, bits: tuple[int, ...], size: tuple[int, int] | None,
                max_pixels: int | None, hint: str) -> np.ndarray:
    data, header = _plane_header(path, what, bits, size, max_pixels, hint)
    plane = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    expected = np.uint16 if header.bits == 16 else np.uint8
    if plane is None or plane.ndim != 2 or plane.dtype != expected or plane.shape != header.size:
        raise ImageError(f"{what} {path} cannot be decoded (damaged): {hint}")
    return plane


def _plane_header(path: Location, what: str, bits: tuple[int, ...], size: tuple[int, int] | None,
                  max_pixels: int | None, hint: str) -> tuple[bytes, Header]:
    try:
        data = read_bytes(path)
    except ImageError as error:
        raise ImageError(f"{what} {path}: {first_line(error)}") from None
    header = read_header(data)
    kind = f"a single-channel {' or '.join(map(str, bits))}-bit PNG"
    if header is None or header.format != "png":
        raise ImageError(f"{what} {path} is not a PNG; it must be {kind}: {hint}")
    if header.channels != 1 or header.bits not in bits or data[25] == 3:
        raise ImageError(f"{what} {path} has {header.channels} channel(s) of {header.bits} bits; "
                         f"it must be {kind}: {hint}")
    try:
        check_pixels(header.width, header.height, max_pixels)
    except ImageError as error:
        raise ImageError(f"{what} {path}: {first_line(error)}") from None
    if size is not None and header.size != tuple(size):
        owner = "its depth prior" if what == "mask" else "its image"  # a mask has its prior's size
        raise ImageError(f"{what} {path} is {header.width}x{header.height}, {owner} is "
                         f"{size[1]}x{size[0]}: {hint}")
    return data, header


# zlib level 1 with the "up" filter: on smooth 16-bit depth maps about 2x faster and smaller
# than OpenCV's default filtering (80 ms -> 36 ms, 0.39 -> 0.34 MB for 2048x1362).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def encode_plane(image: np.ndarray) -> bytes:
    """A single-channel uint16 prior or uint8 mask as PNG bytes."""
    if image.ndim != 2 or image.dtype not in (np.uint16, np.uint8):
        raise ValueError("priors and masks are single-channel uint16 or uint8")
    ok, buffer = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


# ---------------------------------------------------------------- decoding

def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as error:  # e.g. OpenCV's own size limit
        raise ImageError(f"cannot decode: {first_line(error)}") from None


def _pillow():
    """PIL.Image with its own pixel guard off: every decode here is capped by check_pixels."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def _check_jpeg_complete(data: bytes) -> None:
    # OpenCV returns a grey-filled picture for a truncated JPEG; a complete one ends with EOI.
    if b"\xff\xd9" in data[-4096:]:
        return
    _decode_with_pillow(data)  # trailing data after EOI is legal: let Pillow decide


def _decode_with_pillow(data: bytes) -> np.ndarray:
    from PIL import UnidentifiedImageError

    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(pil, dtype=np.uint16 if pil.mode.startswith("I;16") else np.int32)
            return cv2.cvtColor(np.asarray(pil.convert("RGB")), cv2.COLOR_RGB2BGR)
    except UnidentifiedImageError:
        raise ImageError("not a decodable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageError(f"corrupt image: {reason}") from None


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = _scale_to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _scale_to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    top = max(int(image.max()), 1)
    return (image.astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)
