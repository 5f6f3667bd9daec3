"""Checks on generated outputs, a table, and a contact sheet a person can look at."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..errors import ImageError, UsageError, listing
from ..images import ImageItem, decode_rgb, discover, is_inside, normalise_extensions, safe_join
from .manifest import MANIFEST_NAME, ImageRecord, Manifest
from .store import PNG_MAX, count_levels, read_png16
from ..files.place import is_folder, is_present, join, local_folder, location

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
    sheet: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing and all(c.ok for c in self.checks)

    def format(self) -> str:
        header = f"{'image':<40} {'size':>11} {'levels':>7} {'bits':>5} {'source':<14} status"
        lines = [f"verify {self.out}: {self.present}/{self.expected} outputs present, "
                 f"{len(self.checks)} checked", header, "-" * len(header)]
        for check in self.checks:
            status = "; ".join(check.problems) or "ok"
            if check.warnings:
                status += " (" + "; ".join(check.warnings) + ")"
            bits = "" if check.precision_bits is None else f"{check.precision_bits:.1f}"
            lines.append(
                f"{_clip(check.name, 40):<40} {check.width:>5}x{check.height:<5} "
                f"{check.levels:>7} {bits:>5} {_clip(check.source, 14):<14} {status}"
            )
        lines.extend(f"MISSING {name}" for name in self.missing[:MISSING_SHOWN])
        hidden = self.missing[MISSING_SHOWN:]
        if hidden:
            lines.append(f"...{listing(hidden, limit=0)} missing")  # "... and N more missing"
        lines.extend(f"PROBLEM {problem}" for problem in self.problems)
        if self.sheet:
            lines.append(f"contact sheet: {self.sheet}")
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
    masks: str | Path | None = None,
) -> VerifyReport:
    """Check OUT against the manifest (and the images, when found); write a contact sheet.

    `masks`: a folder of `depthprior consistency` masks, shown beside each map and checked
    (uint8, the map's size); an image without one gets a warning and a blank panel.
    """
    out = local_folder(out, "verify reads OUT on this machine")
    if masks is not None and not Path(masks).is_dir():
        raise UsageError(f"mask folder not found: {masks}; run 'depthprior consistency' first")
    manifest = load_manifest(out)
    images_root = location(images) if images else (location(manifest.inputs) if manifest.inputs else None)
    items, problems = _expected_items(manifest, images_root, extensions)
    report = check_outputs(manifest, items, images_root=images_root, num_samples=num_samples,
                           all=all, sheet=sheet, masks=masks)
    report.problems.extend(problems)
    return report


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
    masks: str | Path | None = None,
) -> VerifyReport:
    """Check the outputs `manifest` records for `items` (the images expected in its folder).

    For a caller that already holds both (generate, just before): nothing is read again but
    the outputs and the sampled images themselves. `images_root` None: outputs only.
    """
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
    pictures = []
    for item, record in sampled:
        check, picture = _check_one(out, item, record, images_root)
        report.checks.append(check)
        if picture is not None:
            mask = _check_mask(Path(masks), check) if masks is not None else None
            pictures.append((check, (*picture, mask) if masks is not None else picture))
    if pictures:
        report.sheet = Path(sheet) if sheet else out / SHEET_NAME
        _write_sheet(report.sheet, pictures)
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
        if not (out / rel).is_file():
            check.problems.append(f"{rel} missing")
    if png_rel is None or check.problems:
        return check, None
    try:
        depth = read_png16(out / png_rel)
    except OSError:
        check.problems.append("not decodable")
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


def _check_mask(masks: Path, check: ImageCheck) -> np.ndarray:
    """The image's confidence mask (a black one when it is missing or wrong, with the reason)."""
    path = safe_join(masks, check.output.removesuffix(".png"), ".png")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    blank = np.zeros((check.height, check.width), np.uint8)
    if mask is None:
        check.warnings.append(f"no confidence mask {path}")
        return blank
    if mask.dtype != np.uint8 or mask.ndim != 2:
        check.problems.append(f"mask {path} is not a single-channel uint8 mask")
        return blank
    if mask.shape != (check.height, check.width):
        check.problems.append(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, "
                              f"not the map's {check.width}x{check.height}")
        return blank
    return mask


def _write_sheet(path: Path, pictures: list, row_height: int = 200) -> None:
    from .store import atomic_write_bytes

    rows = []
    for check, (image, depth, *mask) in pictures:
        coloured = colourise(depth)
        panels = [coloured] if image is None else [cv2.cvtColor(image, cv2.COLOR_RGB2BGR), coloured]
        panels = [_fit_height(panel, row_height) for panel in panels]
        panels += [_mask_panel(m, panels[-1].shape[:2]) for m in mask]
        row = np.concatenate(panels, axis=1)
        label = f"{check.name}   {row_label(check)}"
        strip = np.full((22, row.shape[1], 3), 255, dtype=np.uint8)
        cv2.putText(strip, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        row = np.concatenate([strip, row], axis=0)
        rows.append(row)
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0))) for row in rows]
    ok, buffer = cv2.imencode(".png", np.concatenate(rows, axis=0))
    if not ok:
        raise OSError("contact sheet encoding failed")
    atomic_write_bytes(path, buffer.tobytes())
    log.info("contact sheet written to %s", path)


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
