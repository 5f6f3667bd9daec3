"""Finding input images, mapping them to output names, and decoding their stored pixels."""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import cv2
import numpy as np

from .errors import ImageError, UnsafePathError, UsageError, first_line, listing
from .storage import Location, is_url, list_files, read_url, url_join

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: images (and any picture a command is handed, e.g. a server's reply) above this many pixels
#: are refused before they are decoded: a 400 KB PNG can declare 20000x20000 pixels
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class ImageItem:
    """One input image: its file, its name relative to the input root, and its output stem."""

    path: Location  # a local path, or a URL (depthprior.storage)
    name: str  # posix path relative to the input root, e.g. "cam0/frame_0001.jpg"
    outside: bool = False  # its real path lies outside the input root (reached through a link)

    @property
    def stem(self) -> str:
        return image_key(self.name)


@dataclass
class Scan:
    """What discovery found under an input root, and what it left alone and why."""

    root: Location
    items: list[ImageItem] = field(default_factory=list)
    #: relative name -> reason, for image-named entries that are not regular files
    #: (FIFO, socket, device, broken link) and folders that could not be listed
    skipped: dict[str, str] = field(default_factory=dict)
    #: relative name -> reason, for linked folders not entered (a loop, or already scanned)
    loops: dict[str, str] = field(default_factory=dict)

    @property
    def outside(self) -> list[ImageItem]:
        return [item for item in self.items if item.outside]


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


def safe_join(root: Location, relative: str, suffix: str = "") -> Path:
    """root / (relative + suffix), refused unless it stays inside root.

    Every file a command writes under its output folder goes through here: a name that is
    absolute, climbs with "..", holds a NUL, or resolves outside root through a link raises
    UnsafePathError (a UsageError) naming it. A URL root gives a URL (storage.url_join).
    """
    if is_url(root):
        return url_join(root, posix_name(relative) + suffix)  # type: ignore[return-value]
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


def is_inside(path: Location, folder: Location) -> bool:
    """Whether path lies in folder (links resolved), e.g. an output folder inside the inputs."""
    if is_url(path) or is_url(folder):
        return str(path).rstrip("/") == str(folder).rstrip("/") or \
            str(path).startswith(str(folder).rstrip("/") + "/")
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
    What was left out and why is in `scan(root, extensions)`.
    """
    return scan(root, extensions).items


def scan(root: Path | str, extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> Scan:
    """discover() with what it skipped: non-regular files, linked folders not entered.

    Hidden files and folders are left out. Only regular files (or links to one) are images.
    Linked folders are followed, each real folder entered at most once: a link back to an
    ancestor or to a folder already scanned is not entered and is listed in `loops`. Folders
    reached without a link are scanned first, so an alias never replaces its real name.
    A URL root lists the objects under it (storage.list_files).
    """
    exts = tuple(e.lower() for e in extensions)
    if is_url(root):
        found = _scan_url(str(root).rstrip("/"), exts)
    else:
        found = _scan_folder(Path(root), exts)
    if not found.items:
        raise UsageError(
            f"no images found in {root} (looked for {', '.join(exts)}; add others with --ext)"
            + _skipped_note(found)
        )
    found.items.sort(key=lambda item: item.name)
    check_collisions(found.items)
    return found


def _scan_url(root: str, exts: tuple[str, ...]) -> Scan:
    found = Scan(root)
    for name, size in list_files(root).items():
        if any(part.startswith(".") for part in name.split("/")) or not name.lower().endswith(exts):
            continue
        if size == 0:
            found.skipped[name] = "empty object (0 bytes)"
            continue
        found.items.append(ImageItem(url_join(root, name), name))
    if not found.items and not found.skipped and exts and root.lower().endswith(exts):
        found.items.append(ImageItem(root, root.rsplit("/", 1)[-1]))  # one image by its URL
    return found


def _scan_folder(root: Path, exts: tuple[str, ...]) -> Scan:
    found = Scan(root)
    if root.is_dir():
        _walk(found, exts)
    elif root.is_file():
        if not root.name.lower().endswith(exts):
            raise UsageError(f"{root} is not an image with one of the extensions {', '.join(exts)}")
        found.items.append(ImageItem(root, root.name))
    elif root.exists() or root.is_symlink():
        raise UsageError(f"{root} is neither a folder nor a regular image file; give a folder")
    else:
        raise UsageError(f"input folder not found: {root}")
    return found


def _skipped_note(found: Scan) -> str:
    if not found.skipped:
        return ""
    name, reason = next(iter(found.skipped.items()))
    return f"; skipped {len(found.skipped)} entries, e.g. {name}: {reason}"


def _walk(found: Scan, exts: tuple[str, ...]) -> None:
    """Fill found from its root: plain folders first, then linked ones, each real folder once."""
    real_root = os.path.realpath(found.root)
    entered: dict[tuple[int, int], str] = {}  # (device, inode) of each folder entered -> its name
    plain: list[tuple[Path, str]] = [(found.root, "")]
    linked: list[tuple[Path, str]] = []
    while plain or linked:
        folder, rel = plain.pop() if plain else linked.pop(0)
        if not _enter(found, folder, rel, entered):
            continue
        for entry in _list(found, folder, rel):
            name = f"{rel}/{entry.name}" if rel else entry.name
            if _is_folder(entry):
                (linked if entry.is_symlink() else plain).append((Path(entry.path), name))
            elif entry.name.lower().endswith(exts):
                _add_file(found, Path(entry.path), name, real_root)


def _enter(found: Scan, folder: Path, rel: str, entered: dict[tuple[int, int], str]) -> bool:
    """Whether folder is new (then it is marked entered); a repeat is listed in found.loops."""
    try:
        info = os.stat(folder)
    except OSError as error:
        found.skipped[rel] = f"folder cannot be opened: {error.strerror or error}"
        return False
    identity = (info.st_dev, info.st_ino)
    earlier = entered.get(identity)
    if earlier is None:
        entered[identity] = rel
        return True
    shown = earlier or "."
    if earlier == "" or rel.startswith(earlier + "/"):
        found.loops[rel] = f"links back to its own parent folder {shown!r} (a loop); not entered"
    else:
        found.loops[rel] = f"links to {shown!r}, already scanned; not entered again"
    return False


def _list(found: Scan, folder: Path, rel: str) -> list[os.DirEntry]:
    """The visible entries of folder, sorted by name; an unreadable folder is listed as skipped."""
    try:
        with os.scandir(folder) as entries:
            visible = [entry for entry in entries if not entry.name.startswith(".")]
    except OSError as error:
        found.skipped[rel or "."] = f"folder cannot be listed: {error.strerror or error}"
        return []
    return sorted(visible, key=lambda entry: entry.name)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _add_file(found: Scan, path: Path, name: str, real_root: str) -> None:
    """An image-named entry: a regular file becomes an item, anything else is skipped."""
    try:
        info = os.stat(path)
    except OSError as error:
        found.skipped[name] = _unreachable_reason(path, error)
        return
    if not stat.S_ISREG(info.st_mode):
        found.skipped[name] = f"{_kind(info.st_mode)}, not a regular file; not read"
        return
    outside = not _within(os.path.realpath(path), real_root)
    found.items.append(ImageItem(path, name, outside=outside))


def _unreachable_reason(path: Path, error: OSError) -> str:
    if path.is_symlink():
        return f"link that leads nowhere ({error.strerror or error}); not read"
    return f"cannot be read: {error.strerror or error}"


def _within(real_path: str, real_root: str) -> bool:
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    """A file type in words, e.g. for a FIFO named like an image."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


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
        others = f" (so would {listing(clashes[1:], limit=2, quote=True)})" if clashes[1:] else ""
        raise UsageError(
            f"name collision: {clashes[0]} would write the same output{others}; "
            "rename or move one of them"
        )


_JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")


def decode_rgb(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stored pixel array as HxWx3 uint8 RGB; EXIF orientation is deliberately ignored.

    COLMAP and 3DGS read raw pixels, so the map must align with the stored array. Gray,
    RGBA, palette, 16-bit and CMYK inputs are converted. Only a regular file is read (a FIFO
    or device is refused without blocking), and a picture whose header declares more than
    max_pixels (None: no cap) is refused before it is decoded. Raises ImageError with the reason.
    """
    data = read_url(path) if is_url(path) else read_regular_file(Path(path))
    _check_declared_size(data, max_pixels)
    image = _decode_with_opencv(data)
    if image is None:
        image = _decode_with_pillow(data)
    elif os.path.splitext(str(path))[1].lower() in _JPEG_EXTS or data[:2] == b"\xff\xd8":
        _check_jpeg_complete(data)
    check_pixels(image.shape[1], image.shape[0], max_pixels)  # formats without a readable header
    return _to_rgb8(image)


def stored_size(path: Path | str) -> tuple[int, int]:
    """(width, height) an image file declares, without decoding it; ImageError if unreadable."""
    data = read_regular_file(Path(path))
    size = _pillow_header_size(data) or _text_header_size(data)
    if size is None:
        raise ImageError("not a readable image header")
    return size


def read_image_or_fail(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """decode_rgb for single-image commands: an unreadable file is a usage error naming it."""
    try:
        return decode_rgb(path, max_pixels)
    except ImageError as error:
        raise UsageError(f"{path}: {first_line(error)}") from None


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as error:  # e.g. OpenCV's own size limit
        raise ImageError(f"cannot decode: {first_line(error)}") from None


def read_regular_file(path: Path) -> bytes:
    """The bytes of path, refused unless it is a regular file; never blocks on a FIFO or device."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(f"{_kind(mode)}, not a regular file; refused (give image files only)")
        try:
            data = handle.read()
        except OSError as error:
            raise ImageError(f"cannot read file: {error.strerror or error}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def _check_declared_size(data: bytes, max_pixels: int | None) -> None:
    """check_pixels on the size a header declares, before anything is decoded."""
    size = _pillow_header_size(data) or _text_header_size(data)
    if size is not None:
        check_pixels(size[0], size[1], max_pixels)


def _pillow_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, as Pillow reads it lazily; None if Pillow cannot."""
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as pil:
            return int(pil.size[0]), int(pil.size[1])
    except Exception:  # noqa: BLE001 - unidentified or damaged: the decoders decide
        return None


#: PFM ("PF"/"Pf", "width height") and Radiance HDR ("-Y height +X width") headers, which
#: OpenCV decodes and Pillow does not identify
_PFM_HEADER = re.compile(rb"P[Ff]\s+(\d+)\s+(\d+)\s")
_HDR_SIZE = re.compile(rb"\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n")


def _text_header_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4096]
    pfm = _PFM_HEADER.match(head)
    if pfm:
        return int(pfm.group(1)), int(pfm.group(2))
    hdr = _HDR_SIZE.search(head) if head.startswith(b"#?") else None
    if hdr:
        first, second = int(hdr.group(3)), int(hdr.group(6))
        return (second, first) if hdr.group(2) == b"Y" else (first, second)
    return None


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
