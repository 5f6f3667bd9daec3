"""Finding input images, mapping them to output names, and decoding their stored pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import cv2
import numpy as np

from .errors import ImageError, UnsafePathError, UsageError

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: images (and any picture a command is handed, e.g. a server's reply) above this many pixels
#: are refused before they are decoded: a 400 KB PNG can declare 20000x20000 pixels
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class ImageItem:
    """One input image: its file, its name relative to the input root, and its output stem."""

    path: Path
    name: str  # posix path relative to the input root, e.g. "cam0/frame_0001.jpg"

    @property
    def stem(self) -> str:
        return image_key(self.name)

    def output(self, suffix: str) -> str:
        return self.stem + suffix


def image_key(name: str) -> str:
    """An image's relative name without extension: its output stem and its depth_params.json key.

    The 3DGS trainer strips the text after the last dot (`name[:-len(ext) - 1]`); for every name
    whose file part has an extension this is the same thing. On POSIX a backslash is an ordinary
    character of a file name, never a separator.
    """
    return str(PurePosixPath(posix_name(name)).with_suffix(""))


def posix_name(name: str) -> str:
    """A relative name as written on any system: "/" between parts, no leading "./".

    Only this system's own separator is translated: on POSIX `a\\b.jpg` is one file name.
    """
    name = str(name)
    if os.sep != "/":
        name = name.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def safe_join(root: Path | str, relative: str, suffix: str = "") -> Path:
    """root / (relative + suffix), refused unless it stays inside root.

    Every file a command writes under its output folder goes through here: a name that is
    absolute, climbs with "..", holds a NUL, or resolves outside root through a link raises
    UnsafePathError (a UsageError) naming it.
    """
    root = Path(root)
    text = posix_name(relative) + suffix
    parts = PurePosixPath(text).parts
    if (
        not text
        or "\x00" in text
        or text.startswith("/")
        or any(part == ".." for part in parts)
        or not parts
    ):
        raise UnsafePathError(f"name {relative!r} would be written outside {root}; refused")
    target = root.joinpath(*parts)
    if not is_inside(target, root):
        raise UnsafePathError(
            f"name {relative!r} resolves outside {root} (through a link); refused"
        )
    return target


def check_pixels(width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """ImageError when a picture of width x height is above the pixel cap (None: no cap)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"image declares an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the "
            f"--max-pixels cap of {max_pixels / 1e6:g} MP; downscale it or raise --max-pixels"
        )


def is_inside(path: Path, folder: Path) -> bool:
    """Whether path lies in folder (links resolved), e.g. an output folder inside the inputs."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def normalise_extensions(extra: Iterable[str] = ()) -> tuple[str, ...]:
    exts = list(DEFAULT_EXTENSIONS)
    for ext in extra:
        ext = ext.strip().lower()
        if not ext:
            continue
        ext = ext if ext.startswith(".") else "." + ext
        if ext not in exts:
            exts.append(ext)
    return tuple(exts)


def discover(root: Path | str, extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> list[ImageItem]:
    """All images under root (recursive, case-insensitive extensions), sorted by name.

    Raises UsageError for a missing folder, no images, or two inputs that map to one output.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"input folder not found: {root}")
    exts = tuple(e.lower() for e in extensions)
    if root.is_file():
        if root.suffix.lower() not in exts:
            raise UsageError(f"{root} is not an image with one of the extensions {', '.join(exts)}")
        items = [ImageItem(root, root.name)]
    else:
        items = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in filenames:
                if filename.startswith(".") or not filename.lower().endswith(exts):
                    continue
                path = Path(dirpath) / filename
                items.append(ImageItem(path, path.relative_to(root).as_posix()))
    if not items:
        raise UsageError(
            f"no images found in {root} (looked for {', '.join(exts)}; add others with --ext)"
        )
    items.sort(key=lambda item: item.name)
    check_collisions(items)
    return items


def check_collisions(items: Iterable[ImageItem]) -> None:
    """Two inputs whose outputs would be the same file (a.jpg + a.png) are an error."""
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for item in items:
        key = item.stem.lower()  # case-insensitive file systems would merge these too
        if key in seen:
            clashes.append(f"{seen[key]} and {item.name}")
        else:
            seen[key] = item.name
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise UsageError(
            f"name collision: {clashes[0]} would write the same output{more}; "
            "rename or move one of them"
        )


_JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")


def decode_rgb(path: Path | str) -> np.ndarray:
    """Stored pixel array as HxWx3 uint8 RGB; EXIF orientation is deliberately ignored.

    COLMAP and 3DGS read raw pixels, so the map must align with the stored array. Gray,
    RGBA, palette, 16-bit and CMYK inputs are converted. Raises ImageError with the reason.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from None
    if data.size == 0:
        raise ImageError("empty file (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        image = _decode_with_pillow(path)
    elif path.suffix.lower() in _JPEG_EXTS or data[:2].tobytes() == b"\xff\xd8":
        _check_jpeg_complete(path, data)
    return _to_rgb8(image)


def read_image_or_fail(path: Path | str) -> np.ndarray:
    """decode_rgb for single-image commands: an unreadable file is a usage error naming it."""
    try:
        return decode_rgb(path)
    except ImageError as error:
        raise UsageError(f"{path}: {error}") from None


def _check_jpeg_complete(path: Path, data: np.ndarray) -> None:
    # OpenCV returns a grey-filled picture for a truncated JPEG; a complete one ends with EOI.
    if b"\xff\xd9" in data[-4096:].tobytes():
        return
    _decode_with_pillow(path)  # trailing data after EOI is legal: let Pillow decide


def _decode_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as pil:
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
