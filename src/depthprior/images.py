"""Finding input images and mapping them to output names (decoding them: files.raster)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from .errors import UnsafePathError, UsageError, listing
from .files import place
from .files.place import Location
from .files.localfile import file_kind as _kind
from .files.localfile import read_regular_file
from .files.localfile import version as file_version
from .files.raster import (DEFAULT_MAX_PIXELS, check_pixels, decode_rgb, read_image_or_fail,
                           stored_size)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: files that mark a folder depthprior wrote (owners: priors.manifest.MANIFEST_NAME,
#: scene.confidence.REPORT_NAME, exclusion.masks.REPORT_NAME), whose pictures are never frames of a later run
OUTPUT_MARKERS = {
    "depthprior.json": "a depthprior generate output folder (it holds depthprior.json)",
    "consistency.json": "a depthprior consistency mask folder (it holds consistency.json)",
    "exclude.json": "a depthprior exclude mask folder (it holds exclude.json)",
}
#: a report page's pictures folder is PAGE_files beside PAGE.html (report.build.ASSETS_SUFFIX)
REPORT_ASSETS_SUFFIX = "_files"
#: verify's contact sheet (depthprior_verify.png, its pages) and other pictures depthprior
#: draws start with this
OWN_PICTURE_PREFIX = "depthprior_"


@dataclass(frozen=True)
class ImageItem:
    """One input image: its file, its name relative to the input root, and its output stem."""

    path: Location  # a local path, or a URL (files.place)
    name: str  # posix path relative to the input root, e.g. "cam0/frame_0001.jpg"
    outside: bool = False  # its real path lies outside the input root (reached through a link)
    #: an object's version as its listing gives it (files.objectstore.object_version); local
    #: files are read for theirs
    listed_version: str = ""

    @property
    def version(self) -> str:
        """Which version of the frame this is (files.localfile.version; an object's listing's): a
        rerun redoes a frame whose version differs from the one its prior was made from."""
        return self.listed_version if self.listed_version or not place.is_local(self.path) \
            else file_version(Path(self.path))

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
    #: hidden folders and image-named files (a name starting with "."), never inputs
    hidden: list[str] = field(default_factory=list)

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


def mask_name(key: str) -> str:
    """An image's mask file (consistency's, exclusion's), relative to its mask folder."""
    return f"{key}.png"


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
    UnsafePathError (a UsageError) naming it. A URL root gives a URL (files.place).
    """
    return place.join(root, posix_name(relative), suffix)  # type: ignore[return-value]


def relative_join(root: Path, relative: str, suffix: str = "") -> Path:
    """root / (relative + suffix) by the name alone (UnsafePathError for a name that is
    absolute, climbs with "..", or holds a NUL); links are not looked at. For reading a file
    named in a manifest or params: a link the folder's owner made is theirs to follow."""
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
    return Path(root).joinpath(*parts)


def is_inside(path: Location, folder: Location) -> bool:
    """Whether path lies in folder (links resolved), e.g. an output folder inside the inputs."""
    return place.is_inside(path, folder)


def normalise_extensions(extra: Iterable[str] | str = ()) -> tuple[str, ...]:
    """The default extensions and `extra` (one extension or several), lower case with a dot."""
    if isinstance(extra, str):
        extra = [extra]
    exts = list(DEFAULT_EXTENSIONS)
    for given in extra:
        ext = given.strip().lower()
        ext = ext if ext.startswith(".") else "." + ext
        if len(ext) < 2 or any(c in ext[1:] for c in "./\\*?[] "):
            raise UsageError(f"--ext {given!r} is not a file extension: give one like .tif (no "
                             "wildcards or paths)")
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
    A URL root lists the objects under it (files.place), refused keys among the skipped.
    """
    exts = tuple(e.lower() for e in extensions)
    if place.is_local(root):
        found = _scan_folder(Path(root), exts)
    else:
        found = _scan_objects(place.ObjectPlace(place.location(root)), exts)
    if found.hidden:
        found.hidden.sort()
    if not found.items:
        raise UsageError(
            f"no images found in {root} (looked for {', '.join(exts)}; add others with --ext)"
            + _skipped_note(found)
        )
    found.items.sort(key=lambda item: item.name)
    check_collisions(found.items)
    return found


def _scan_objects(root: place.ObjectPlace, exts: tuple[str, ...]) -> Scan:
    found = Scan(root.location)
    listing = root.listing()
    for name, reason in listing.refused.items():
        if name.lower().endswith(exts):
            found.skipped[name] = reason
    for name, size in listing.files.items():
        if not name.lower().endswith(exts):
            continue
        if any(part.startswith(".") for part in name.split("/")):
            found.skipped[name] = "hidden (a name starting with '.'): left out"
            continue
        if size == 0:
            found.skipped[name] = "empty object (0 bytes)"
            continue
        found.items.append(ImageItem(root.child(name).location, name, listed_version=listing.versions[name]))
    url = str(root)
    if not found.items and not found.skipped and exts and url.lower().endswith(exts):
        found.items.append(ImageItem(url, url.rsplit("/", 1)[-1]))  # one image by its URL
    return found


def _scan_folder(root: Path, exts: tuple[str, ...]) -> Scan:
    found = Scan(root)
    if root.is_dir():
        made_by = depthprior_output(root)
        if made_by:
            raise UsageError(f"{root} is {made_by}, not a folder of frames; give the folder of "
                             "the images themselves")
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
        entries = _list(found, folder, rel)
        names = {entry.name for entry in entries}
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            is_folder = _is_folder(entry)
            if not is_folder and not entry.name.lower().endswith(exts):
                continue
            if entry.name.startswith("."):
                found.hidden.append(name + ("/" if is_folder else ""))
            elif is_folder:
                made_by = depthprior_output(Path(entry.path), names)
                if made_by:
                    found.skipped[name + "/"] = f"{made_by}; not read as frames"
                else:
                    (linked if entry.is_symlink() else plain).append((Path(entry.path), name))
            elif entry.name.startswith(OWN_PICTURE_PREFIX):
                found.skipped[name] = "a picture depthprior drew (e.g. verify's contact sheet); not a frame"
            else:
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
    """The entries of folder, sorted by name; an unreadable folder is listed as skipped."""
    try:
        with os.scandir(folder) as entries:
            listed = list(entries)
    except OSError as error:
        found.skipped[rel or "."] = f"folder cannot be listed: {error.strerror or error}"
        return []
    return sorted(listed, key=lambda entry: entry.name)


def depthprior_output(folder: Path, siblings: Iterable[str] = ()) -> str | None:
    """What depthprior output `folder` is (a generate OUT, a mask folder, a report's pictures
    beside their page among `siblings`), or None for any other folder."""
    for marker, what in OUTPUT_MARKERS.items():
        if os.path.lexists(folder / marker):
            return what
    page = folder.name.removesuffix(REPORT_ASSETS_SUFFIX)
    if folder.name.endswith(REPORT_ASSETS_SUFFIX) and f"{page}.html" in set(siblings):
        return f"the pictures of the report {page}.html"
    return None


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


__all__ = ["DEFAULT_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ImageItem", "Scan", "check_collisions",
           "check_pixels", "decode_rgb", "discover", "image_key", "is_inside", "normalise_extensions",
           "posix_name", "read_image_or_fail", "read_regular_file", "relative_join", "safe_join", "scan",
           "stored_size"]
