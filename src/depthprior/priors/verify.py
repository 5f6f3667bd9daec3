"""Checks on generated outputs, a table, and a contact sheet a person can look at."""

from __future__ import annotations

import glob
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from ..errors import ImageError, UsageError, WriteError, first_line, listing, one_line
from ..files.outputs import FolderInUse, OutputLock, atomic_write_bytes
from ..files.raster import read_mask
from ..exclusion.masks import KEPT_FROM
from ..exclusion.masks import REPORT_NAME as EXCLUDE_REPORT
from ..scene.weights import Folders, folder_list
from ..images import (OWN_PICTURE_PREFIX, ImageItem, decode_rgb, discover, is_inside,
                      normalise_extensions, safe_join)
from .manifest import MANIFEST_NAME, ImageRecord, Manifest
from .store import PNG_MAX, count_levels, read_png16
from ..files.place import Location, is_folder, is_present, join, local_folder, location

log = logging.getLogger(__name__)

SHEET_NAME = "depthprior_verify.png"
LOW_LEVELS = 256  # fewer distinct levels than an 8-bit image: coarse prior
MISSING_SHOWN = 20  # missing outputs listed one per line; the rest are counted


@dataclass
class ImageCheck:
    name: str
    output: str
    width: int = 0
    height: int = 0
    levels: int = 0
    source: str = ""
    precision_bits: float | None = None
    excluded: float | None = None  # fraction its exclusion mask leaves out (with one)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    out: Path
    expected: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    checks: list[ImageCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sheets: list[Path] = field(default_factory=list)  # the contact sheet's pages, in order
    sheet_error: str | None = None  # why (part of) the sheet could not be written

    @property
    def sheet(self) -> Path | None:
        return self.sheets[0] if self.sheets else None

    @property
    def ok(self) -> bool:
        return (not self.problems and not self.missing and self.sheet_error is None
                and all(c.ok for c in self.checks))

    def format(self) -> str:
        excluded = any(check.excluded is not None for check in self.checks)
        header = (f"{'image':<40} {'size':>11} {'levels':>7} {'bits':>5} {'source':<14} "
                  + f"{'excl.':>6} " * excluded + "status")
        lines = [f"verify {one_line(self.out)}: {self.present}/{self.expected} outputs present, "
                 f"{len(self.checks)} checked", header, "-" * len(header)]
        for check in self.checks:
            status = "; ".join(check.problems) or "ok"
            if check.warnings:
                status += " (" + "; ".join(check.warnings) + ")"
            bits = "" if check.precision_bits is None else f"{check.precision_bits:.1f}"
            share = "-" if check.excluded is None else f"{check.excluded:.1%}"
            lines.append(
                f"{_clip(one_line(check.name), 40):<40} {check.width:>5}x{check.height:<5} "
                f"{check.levels:>7} {bits:>5} {_clip(check.source, 14):<14} "
                + f"{share:>6} " * excluded + one_line(status)
            )
        lines.extend(f"MISSING {one_line(name)}" for name in self.missing[:MISSING_SHOWN])
        hidden = self.missing[MISSING_SHOWN:]
        if hidden:
            lines.append(f"...{listing(hidden, limit=0)} missing")  # "... and N more missing"
        lines.extend(f"PROBLEM {problem}" for problem in self.problems)
        if len(self.sheets) == 1:
            lines.append(f"contact sheet: {one_line(self.sheets[0])}")
        elif self.sheets:
            lines.append(f"contact sheet: {len(self.sheets)} pages, {one_line(self.sheets[0])} to "
                         f"{one_line(self.sheets[-1].name)}")
        if self.sheet_error:
            lines.append(f"PROBLEM contact sheet not written: {self.sheet_error}")
        lines.append("verify: OK" if self.ok else "verify: FAILED")
        return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def verify(
    out: str | Path,
    *,
    images: str | Path | None = None,
    num_samples: int = 8,
    all: bool = False,
    sheet: str | Path | None = None,
    extensions: Iterable[str] = (),
    masks: "Folders" = None,
) -> VerifyReport:
    """Check OUT against the manifest (and the images, when found); write a contact sheet.

    `masks`: folders of `depthprior consistency` or `depthprior exclude` masks (one or
    several), each shown beside each map and checked (uint8, the map's size); an image without
    one gets a warning and a blank panel. With an exclusion folder, each checked frame's
    excluded fraction is listed.
    """
    out = local_folder(out, "verify reads OUT on this machine")
    for folder in folder_list(masks):
        if not folder.is_dir():
            raise UsageError(f"mask folder not found: {folder}; run 'depthprior consistency' or "
                             "'depthprior exclude' first")
    manifest = load_manifest(out)
    recorded = location(manifest.inputs) if manifest.inputs else None  # the frames the priors came from
    images_root = location(images) if images else recorded
    if sheet is not None:
        for frames in {images_root, recorded}:
            _check_sheet_place(Path(sheet), out, frames)
    with _sheet_lock(Path(sheet) if sheet is not None else out / SHEET_NAME, out):
        items, problems = _expected_items(manifest, images_root, extensions)
        report = check_outputs(manifest, items, images_root=images_root, num_samples=num_samples,
                               all=all, sheet=sheet, masks=masks)
    report.problems.extend(problems)
    return report


@contextmanager
def _sheet_lock(sheet: Path, out: Path) -> Iterator[None]:
    """OUT's lock while the sheet is written into it: refused (FolderInUse) while a generate
    writes there. A folder this process cannot lock (read-only) is checked all the same."""
    lock = OutputLock(out)
    if is_inside(sheet, out):
        try:
            lock.acquire()
        except FolderInUse:
            raise
        except UsageError:
            pass
    try:
        yield
    finally:
        lock.release()


def _check_sheet_place(sheet: Path, out: Path, images_root: Location | None) -> None:
    """A sheet where a later command would read it as data is refused: among the frames, or
    in OUT other than beside the manifest as depthprior_*.png (align and export skip those)."""
    if isinstance(images_root, Path) and images_root.is_dir() and is_inside(sheet, images_root):
        raise UsageError(f"--sheet {sheet} is inside the image folder {images_root}: a later "
                         "generate would take it for a frame; write it elsewhere")
    own_name = sheet.name.startswith(OWN_PICTURE_PREFIX)
    if is_inside(sheet, out) and not (own_name and sheet.parent.resolve() == out.resolve()):
        raise UsageError(f"--sheet {sheet} is inside {out} where align and export would take it "
                         f"for a depth prior; name it {out / SHEET_NAME} (or any "
                         f"{OWN_PICTURE_PREFIX}*.png there) or write it outside")


def load_manifest(out: Path) -> Manifest:
    """The manifest of an output folder; UsageError when OUT is not one."""
    if not out.is_dir():
        raise UsageError(f"output folder not found: {out}")
    manifest = Manifest.load(out)
    if manifest is None:
        raise UsageError(f"{out} has no {MANIFEST_NAME}: not a depthprior output folder "
                         "(run depthprior generate first)")
    return manifest


def check_outputs(
    manifest: Manifest,
    items: list[ImageItem],
    *,
    images_root: Path | None = None,
    num_samples: int = 8,
    all: bool = False,
    sheet: str | Path | None = None,
    masks: "Folders" = None,
) -> VerifyReport:
    """Check the outputs `manifest` records for `items` (the images expected in its folder).

    For a caller that already holds both (generate, just before): nothing is read again but
    the outputs and the sampled images themselves. `images_root` None: outputs only.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"--num-samples must be a whole number of at least 1; got {num_samples!r}")
    out = manifest.root
    report = VerifyReport(out=out, expected=len(items))
    present = []
    for item in items:
        record = manifest.images.get(item.name)
        if record is None or not record.ok:
            reason = (record.error or "failed") if record else "no output"
            report.missing.append(f"{item.name}: {reason}")
            continue
        present.append((item, record))
    report.present = len(present)
    sampled = present if all else _sample(present, num_samples)
    sheets = ContactSheet(Path(sheet) if sheet else out / SHEET_NAME, paged=len(sampled) > SHEET_ROWS)
    for item, record in sampled:
        check, picture = _check_one(out, item, record, images_root)
        report.checks.append(check)
        if picture is not None:
            panels = [_check_mask(folder, check) for folder in folder_list(masks)]
            sheets.add(sheet_row(check, *picture, *panels))
    sheets.close()
    report.sheets, report.sheet_error = sheets.pages, sheets.error
    return report


def _expected_items(manifest: Manifest, images_root: Path | None,
                    extensions: Iterable[str]) -> tuple[list[ImageItem], list[str]]:
    """The images OUT should hold outputs for, and a problem when their folder is gone."""
    if images_root is not None and (is_folder(images_root) or is_present(images_root)):
        found = discover(images_root, normalise_extensions(extensions))
        return [item for item in found if not is_inside(item.path, manifest.root)], []
    problems = []
    if images_root is not None:
        problems.append(f"image folder {images_root} not found: checked outputs only")
    root = images_root or Path(".")
    return [ImageItem(join(root, name), name) for name in sorted(manifest.images)], problems


def _sample(entries: list, count: int) -> list:
    if count >= len(entries):
        return entries
    picks = np.linspace(0, len(entries) - 1, count).round().astype(int)
    return [entries[i] for i in sorted(set(picks.tolist()))]


def _check_one(out: Path, item: ImageItem, record: ImageRecord, images_root: Path | None):
    outputs = record.outputs
    png_rel = next((rel for rel in outputs if rel.endswith(".png")), None)
    check = ImageCheck(item.name, png_rel or ", ".join(outputs), source=record.source,
                       precision_bits=record.precision_bits)
    for rel in outputs:
        problem = _absence(out / rel)
        if problem:
            check.problems.append(f"{rel} {problem}")
    if png_rel is None or check.problems:
        return check, None
    try:
        depth = read_png16(out / png_rel)
    except OSError as error:
        check.problems.append(f"not readable: {first_line(error)}")
        return check, None
    if depth.dtype != np.uint16 or depth.ndim != 2:
        channels = 1 if depth.ndim == 2 else depth.shape[2]
        check.problems.append(f"not single-channel uint16 ({depth.dtype}, {channels} channels)")
    check.height, check.width = depth.shape[:2]
    check.levels = count_levels(depth.astype(np.uint16, copy=False).reshape(depth.shape[0], -1))
    if check.levels <= 1:
        check.problems.append("blank" if not depth.any() else "constant")
    elif check.levels < LOW_LEVELS:
        check.warnings.append(f"only {check.levels} distinct levels")
    elif (record.source_levels or LOW_LEVELS + 1) <= LOW_LEVELS:  # e.g. space:gray8, resized
        check.warnings.append(f"8-bit source data ({record.source_levels} levels) in a 16-bit PNG")
    if (record.width, record.height) != (check.width, check.height):
        check.problems.append("size differs from the manifest")
    if not record.decodable:
        check.problems.append("manifest lacks raw_min/raw_max")
    if record.constant:
        check.problems.append("constant prediction")
    image = None
    if images_root is not None and is_present(item.path):
        try:
            image = decode_rgb(item.path)
        except ImageError as error:
            check.warnings.append(f"image unreadable: {error}")
    if image is not None and image.shape[:2] != depth.shape[:2]:
        check.problems.append(
            f"size {check.width}x{check.height} != image {image.shape[1]}x{image.shape[0]}"
        )
    return check, (image, depth)


def _absence(path: Path) -> str | None:
    """Why an output named in the manifest is not there to check, or None when it is."""
    try:
        return None if path.is_file() else "missing"
    except OSError as error:  # e.g. a name too long for this file system
        return f"cannot be looked up ({error.strerror or first_line(error)})"


def _check_mask(masks: Path, check: ImageCheck) -> np.ndarray:
    """The image's mask in a folder (a black one when it is missing or wrong, with the reason):
    a mask that is there but is not a single-channel uint8 PNG of its map's size fails the
    image; a missing one is a warning (consistency writes none for the images it excludes).
    An exclusion mask also gives the image's excluded fraction."""
    path = safe_join(masks, check.output.removesuffix(".png"), ".png")
    blank = np.zeros((check.height, check.width), np.uint8)
    exclusion = (masks / EXCLUDE_REPORT).is_file()
    if not os.path.lexists(path):
        check.warnings.append(f"no {'exclusion' if exclusion else 'confidence'} mask {path}")
        return blank
    try:
        mask = read_mask(path, (check.height, check.width),
                         hint="rerun depthprior exclude for this folder (with --overwrite)" if exclusion else None)
    except ImageError as error:
        check.problems.append(first_line(error))
        return blank
    if exclusion:
        check.excluded = float(np.mean(mask < KEPT_FROM))
    return mask


#: rows on one page of the contact sheet: ~50 x 226 px tall, a few MB; more frames (--all on
#: thousands) make numbered pages instead of one sheet too large to open
SHEET_ROWS = 50


class ContactSheet:
    """The contact sheet written page by page (at most SHEET_ROWS rows held at once), through
    files.outputs. One page keeps the given name; more are NAME_001.png, NAME_002.png, ...
    Pages an earlier run left that this one did not write are removed. A write that fails is
    kept in `error` (the checks' verdict stands); the rest of the sheet is not attempted."""

    def __init__(self, path: Path, paged: bool):
        self.path, self.paged = path, paged
        self.rows: list[np.ndarray] = []
        self.pages: list[Path] = []
        self.error: str | None = None

    def add(self, row: np.ndarray) -> None:
        self.rows.append(row)
        if len(self.rows) >= SHEET_ROWS:
            self._write_page()

    def close(self) -> None:
        if self.rows:
            self._write_page()
        if self.error is None and self.pages:
            self._remove_stale()

    def _page_path(self, number: int) -> Path:
        if not self.paged:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{number:03d}{self.path.suffix}")

    def _write_page(self) -> None:
        rows, self.rows = self.rows, []
        if self.error is not None:
            return
        path = self._page_path(len(self.pages) + 1)
        try:
            atomic_write_bytes(path, _encode_page(rows))
        except WriteError as error:
            self.error = first_line(error)
            return
        self.pages.append(path)
        log.info("contact sheet written to %s", one_line(path))

    def _remove_stale(self) -> None:
        page = re.compile(re.escape(self.path.stem) + r"(_\d{3,})?" + re.escape(self.path.suffix))
        for old in self.path.parent.glob(f"{glob.escape(self.path.stem)}*{glob.escape(self.path.suffix)}"):
            if page.fullmatch(old.name) and old not in self.pages and old.is_file():
                try:
                    old.unlink()
                except OSError as error:
                    self.error = first_line(WriteError(old, error))


def _encode_page(rows: list[np.ndarray]) -> bytes:
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0))) for row in rows]
    ok, buffer = cv2.imencode(".png", np.concatenate(rows, axis=0))
    if not ok:
        raise ValueError("contact sheet encoding failed")
    return buffer.tobytes()


def sheet_row(check: ImageCheck, image: np.ndarray | None, depth: np.ndarray, *mask: np.ndarray,
              row_height: int = 200) -> np.ndarray:
    """One frame's row: its label, the photo (when found), the coloured map, the mask."""
    coloured = colourise(depth)
    panels = [coloured] if image is None else [cv2.cvtColor(image, cv2.COLOR_RGB2BGR), coloured]
    panels = [_fit_height(panel, row_height) for panel in panels]
    panels += [_mask_panel(m, panels[-1].shape[:2]) for m in mask]
    row = np.concatenate(panels, axis=1)
    # OpenCV draws ASCII only, and a name that is not valid UTF-8 (surrogates) crashes it
    label = f"{check.name}   {row_label(check)}".encode("ascii", "backslashreplace").decode("ascii")
    strip = np.full((22, row.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, row], axis=0)


def _mask_panel(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask in grey (white = trusted, black = rejected) at the map panel's size."""
    resized = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR)


def row_label(check: ImageCheck) -> str:
    bits = "" if check.precision_bits is None else f"  {check.precision_bits:.1f} bits"
    return f"levels {check.levels}{bits}  {check.source}  " + ("ok" if check.ok else "PROBLEM")


def colourise(depth: np.ndarray) -> np.ndarray:
    """uint16 inverse depth -> BGR picture (near = bright/yellow with the inferno map)."""
    depth = depth if depth.ndim == 2 else depth[..., 0]
    eight = (depth.astype(np.float32) * (255.0 / PNG_MAX)).astype(np.uint8)
    return cv2.applyColorMap(eight, cv2.COLORMAP_INFERNO)


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
