"""What the exporters share: opening the inputs, output folders and their record, units, pooling."""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..depth_params import default_path, params_file
from ...errors import ImageError, UsageError, first_line, listing, one_line
from ...files.jsonfile import encode_json, expect_object, read_json
from ...files.outputs import OutputFolder
from ...images import check_pixels, is_inside, safe_join
from ..confidence import mask_name
from ..consistency import AGREED, TRUSTED
from ..priorset import MissingPriorError, PriorSet
from ...priors.manifest import image_folder
from ..weights import MaskFolders
from ...files.place import local_folder


#: nerfstudio depth PNGs hold uint16 steps of unit_scale: the largest depth they can say
NERFSTUDIO_DEPTH_STEPS = int(np.iinfo(np.uint16).max)
#: in each folder an export writes: the files it wrote, so a later export removes those it no
#: longer writes (and only those)
EXPORT_RECORD = ".depthprior-export.json"


@dataclass
class ExportSummary:
    target: str
    out: Path  # folder the depth files went to
    images: int = 0  # depth files written (per image)
    invalid: dict[str, str] = field(default_factory=dict)  # stem -> why written all-invalid
    out_of_range: int = 0  # pixels left invalid because their depth does not fit uint16
    transforms: Path | None = None
    downscaled: list[Path] = field(default_factory=list)  # depths_N folders written
    command: str | None = None  # the training command that reads this export
    unit_scale: float | None = None  # scene units per uint16 step (nerfstudio exports)
    floor_notes: list[str] = field(default_factory=list)  # DN-Splatter's 0.1-unit floor
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"export {self.target}: {self.images} image(s) -> {self.out}"]
        if self.transforms is not None:
            lines.append(f"depth_file_path set for every frame in {self.transforms}")
        for folder in self.downscaled:
            lines.append(f"downscaled depth -> {folder}")
        if self.invalid:
            shown = listing(f"{key} ({why})" for key, why in self.invalid.items())
            lines.append(f"{len(self.invalid)} written as all-invalid (no usable fit): {shown}")
        if self.out_of_range:
            lines.append(f"{self.out_of_range} pixel(s) outside the uint16 range left invalid")
        lines.extend(self.notes)
        if self.command:
            lines.append(f"train with: {self.command}")
        return "\n".join(one_line(line) for line in lines)  # a name's newline or escape never splits a line


def shell_word(text: str) -> str:
    """One path of a printed command, as a shell reads it and on one line: shlex.quote for a
    printable word; otherwise bash's $'...' with its newlines, control characters and
    undecodable bytes escaped (shlex would keep a raw newline, splitting the printed line). A
    relative path beginning with '-' gets './' (the trainers' parsers read it as an option)."""
    if text.startswith("-"):
        text = "./" + text
    if text.isprintable():
        return shlex.quote(text)
    escaped = []
    for char in text:
        code = ord(char)
        if char in "\\'":
            escaped.append("\\" + char)
        elif char.isprintable():
            escaped.append(char)
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
            escaped.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            escaped.append(f"\\x{code:02x}")
        else:
            escaped.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "$'" + "".join(escaped) + "'"


def _open(depths: Path | str, sparse: Path | str, params: Path | str | None):
    from ..colmap import read_model

    depths, sparse = local_folder(depths, "export reads DEPTHS on this machine"), Path(sparse)
    params_path = params_file(params) if params is not None else default_path(sparse)
    if not params_path.is_file():
        raise UsageError(
            f"no {params_path.name} at {params_path}: run `depthprior align --sparse {sparse} "
            f"--depths {depths}` first (or pass --params)"
        )
    priors = PriorSet(depths, params_path)
    model = read_model(sparse)
    registered = [image for image in model.images if image.registered]
    if not registered:
        raise UsageError(f"the COLMAP model in {sparse} has no registered images")
    return priors, model, registered


def _require_priors(priors: PriorSet, names: list[str]) -> None:
    missing = priors.missing(names)
    if missing:
        raise UsageError(
            f"no depth prior in {priors.root} for {len(missing)} image(s) of the model: "
            f"{listing(missing, quote=True)}; run `depthprior generate` on the model's images"
        )


def _require_masks(masks: MaskFolders | None, priors: PriorSet, names: list[str]) -> None:
    """Every reliable image has a readable mask in every folder of `masks` (a confidence mask
    of its prior's size, an exclusion mask of its aspect ratio; UsageError listing the others),
    checked before any file is written."""
    if masks is None:
        return
    missing, bad = [], []
    for name in names:
        if not priors.reliable(name):
            continue
        for folder in masks.folders:
            if not os.path.isfile(safe_join(folder, mask_name(priors.stem(name)))):
                missing.append(f"{name!r} in {folder}")
                break
        else:
            try:
                masks.weight(priors.stem(name), priors.prior_size(name))
            except (ImageError, MissingPriorError) as error:
                bad.append(first_line(error))
    if missing:
        raise UsageError(f"no mask for {len(missing)} image(s): {listing(missing)}; rerun "
                         "`depthprior consistency` or `depthprior exclude`")
    if bad:
        raise UsageError(f"{len(bad)} mask(s) cannot be used: {bad[0]}")


def pixel_weights(masks: MaskFolders | None, priors: PriorSet, name: str,
                  size: tuple[int, int]) -> np.ndarray | None:
    """The product of an image's masks at size (confidence / 255, exclusion 0 or 1); None
    without masks."""
    if masks is None:
        return None
    return masks.weight(priors.stem(name), priors.prior_size(name), size)


def rejected(masks: MaskFolders | None, priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray | None:
    """Pixels the masks reject (weight below consistency's trusted: rejected or excluded), at
    size; None without masks."""
    weights = pixel_weights(masks, priors, name, size)
    return None if weights is None else weights < TRUSTED / AGREED


def aligned_depth(priors: PriorSet, name: str, size: tuple[int, int],
                  masks: MaskFolders | None = None) -> tuple[np.ndarray, str | None]:
    """(H, W) float32 z-depth in the model's units (0 = none: also where `masks` reject) and
    why it is all-invalid, if so."""
    prior = priors.load(name, size)
    if not prior.reliable:
        return np.zeros(size, dtype=np.float32), prior.reason or "unreliable"
    inverse = prior.inverse_depth.astype(np.float64)
    valid = np.isfinite(inverse) & (inverse > 0)
    depth = np.zeros(size, dtype=np.float64)
    np.divide(1.0, inverse, out=depth, where=valid)
    drop = rejected(masks, priors, name, size)
    if drop is not None:
        depth[drop] = 0.0
    return depth.astype(np.float32), None


def _size(image: Any) -> tuple[int, int]:
    return int(image.camera.height), int(image.camera.width)


def _check_out(out_dir: Path, depths: Path, masks: MaskFolders | None) -> None:
    """The export's folder is neither in the priors' folder nor the masks' (it would overwrite
    them, or be read as priors later)."""
    folders = masks.folders if masks is not None else []
    for folder, what in ((depths, "depth folder"), *((mask, "mask folder") for mask in folders),
                         (image_folder(depths), "image folder the priors were made from")):
        if folder is not None and is_inside(out_dir, folder):
            raise UsageError(f"the export folder {out_dir} overlaps the {what} {folder}: the "
                             "export would overwrite or mix with its files; choose another --out")


def _check_sizes(images: list, max_pixels: int | None) -> None:
    """Every camera within the pixel cap before any map of its size is allocated."""
    for image in images:
        height, width = _size(image)
        try:
            check_pixels(width, height, max_pixels)
        except ImageError as error:
            raise UsageError(f"camera {image.camera.camera_id} of image {image.name!r}: {error}") from None


#: a depth PNG step must be at most 1/MIN_STEPS of the nearest depths (0.2% rounding at most)
MIN_STEPS = 256
#: the nearest and farthest depths the unit must serve: these percentiles of each image
SPAN_PERCENTILES = (0.1, 99.9)
#: DN-Splatter ignores depth at or below this many scene units (and does not rescale poses)
DN_SPLATTER_FLOOR = 0.1


@dataclass
class DepthSpan:
    near: float  # smallest per-image 0.1th percentile of valid depth (inf without any)
    far: float  # largest per-image 99.9th percentile
    valid: int = 0  # valid depth pixels
    under_floor: int = 0  # of which <= DN_SPLATTER_FLOOR

    def describe(self) -> str:
        return f"{self.near:.4g} to {self.far:.4g} units" if self.valid else "no valid depth"

    def add(self, depth: np.ndarray) -> None:
        values = depth[depth > 0]
        if values.size:
            near, far = np.percentile(values, SPAN_PERCENTILES)
            self.near, self.far = min(self.near, float(near)), max(self.far, float(far))
            self.valid += int(values.size)
            self.under_floor += int(np.count_nonzero(values <= DN_SPLATTER_FLOOR))


def depth_span(priors: PriorSet, images: list, masks: MaskFolders | None) -> DepthSpan:
    """The range of depths the export will write (each image at its camera's size)."""
    span = DepthSpan(math.inf, 0.0)
    for image in images:
        span.add(aligned_depth(priors, image.name, _size(image), masks)[0])
    return span


def choose_unit(span: DepthSpan) -> float:
    """Scene units per uint16 step: the far depths fit, the near ones get >= MIN_STEPS steps
    (UsageError when no unit does both). Two significant digits, rounded up."""
    if not span.valid:
        return 1e-3
    unit = _round_up(span.far / (NERFSTUDIO_DEPTH_STEPS - 1))
    if span.near / unit < MIN_STEPS:
        raise UsageError(
            f"the scene's depths span {span.describe()} ({span.far / span.near:.0f}x): 16-bit "
            f"depth at any one unit either drops the far ones or rounds the near ones to fewer "
            f"than {MIN_STEPS} steps; pass --unit-scale to choose (far depths beyond 65535 steps "
            "are left invalid), or use the DN-Splatter coolermap export (float32)"
        )
    return unit


def _round_up(value: float) -> float:
    exponent = math.floor(math.log10(value)) - 1
    return float(f"{math.ceil(value / 10.0 ** exponent * (1 - 1e-12)) * 10.0 ** exponent:.2g}")


def unit_warnings(span: DepthSpan, unit_scale: float) -> list[str]:
    """What a chosen --unit-scale does to the scene's depths: a UsageError when not one depth
    fits in 16 bits at it, a warning when the near ones round coarsely (far ones that drop out
    are counted by the export itself)."""
    if not span.valid:
        return []
    largest = (NERFSTUDIO_DEPTH_STEPS - 1) * unit_scale
    if span.near > largest:
        raise UsageError(f"at --unit-scale {unit_scale:g} even the nearest depths ({span.near:.4g} "
                         f"units) are beyond 65535 steps ({largest:.4g} units): every pixel would "
                         "be invalid; leave --unit-scale out to choose the unit from the scene")
    return _precision_warning(span, unit_scale)


def _precision_warning(span: DepthSpan, unit_scale: float) -> list[str]:
    if span.near / unit_scale >= MIN_STEPS:
        return []
    steps = span.near / unit_scale
    return [f"warning: at --unit-scale {unit_scale:g} the nearest depths ({span.near:.4g} units) "
            f"are {steps:.0f} step(s): up to {50 / max(steps, 1e-9):.2g}% rounding; leave "
            "--unit-scale out to choose the unit from the scene"]


def floor_warning(span: DepthSpan) -> list[str]:
    """DN-Splatter drops depth <= 0.1 units and does not normalise poses: say when that bites."""
    if not span.valid or span.under_floor == 0:
        return []
    share = 100.0 * span.under_floor / span.valid
    factor = _round_up(10 * DN_SPLATTER_FLOOR / span.near) if span.near > 0 else 10
    return [f"warning: DN-Splatter ignores depth <= {DN_SPLATTER_FLOOR} scene units and keeps the "
            f"model's scale: {share:.3g}% of the valid depth ({span.describe()}) would be dropped; "
            f"scale the COLMAP model by {factor:g}x or more (colmap model_transformer) and align "
            "again"]


def _finish(folder: OutputFolder) -> None:
    """Remove what an earlier export wrote into this folder and this one did not, then record
    what this one wrote."""
    record = folder.root / EXPORT_RECORD
    folder.remove_unproduced(_recorded(record))
    folder.write(EXPORT_RECORD, encode_json({"format": "depthprior-export",
                                             "files": sorted(folder.produced - {EXPORT_RECORD})}))


def _recorded(record: Path) -> list[str]:
    """The files an earlier export recorded in `record` ([] without one)."""
    def check(data: Any) -> None:
        files = expect_object(data).get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise TypeError("'files' is not a list of names")

    data = read_json(record, missing_ok=True, check=check,
                     hint="delete it; it only lists what an earlier export wrote")
    return [] if data is None else data["files"]


#: how the notes for nerfstudio's colmap parser start (left out of DN-Splatter's summary)
COLMAP_NOTES = ("nerfstudio's colmap parser reads the same depth", "warning: never pass --depths-path")
#: a block position without depth, above every uint16 depth
EMPTY_DEPTH = NERFSTUDIO_DEPTH_STEPS + 1


def depth_blocks(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, k) uint32: the uint16 depths (0 = none) of each small pixel's block of the full
    map, EMPTY_DEPTH where a block has no depth or is smaller than k. Block i spans rows
    [i H / h, (i + 1) H / h) (integer division), columns alike."""
    values = np.where(depth > 0, depth.astype(np.uint32), np.uint32(EMPTY_DEPTH))
    rows, row_in = _block_index(depth.shape[0], size[0])
    cols, col_in = _block_index(depth.shape[1], size[1])
    blocks = values[rows[:, None, :, None], cols[None, :, None, :]]
    inside = row_in[:, None, :, None] & col_in[None, :, None, :]
    blocks = np.where(inside, blocks, np.uint32(EMPTY_DEPTH))
    return blocks.reshape(size[0], size[1], -1)


def _block_index(full: int, small: int) -> tuple[np.ndarray, np.ndarray]:
    start = (np.arange(small) * full) // small
    end = (np.arange(1, small + 1) * full) // small
    span = max(int((end - start).max(initial=1)), 1)
    index = start[:, None] + np.arange(span)[None, :]
    return np.minimum(index, full - 1), index < end[:, None]


#: two middle depths of a block further apart than this (relative) are two surfaces
SURFACE_GAP = 0.05


def pool_valid(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint16 depth (0 = none) shrunk to size: each pixel the median of its block's valid
    depths, a block without any stays 0.

    With an even count, the two middle depths are averaged only when they are within
    SURFACE_GAP of each other (one surface); otherwise the nearer is taken, so a block is never
    a blend across an edge (a block with two surfaces takes the one most of it shows). On a
    noisy surface the median is unbiased, where the nearest depth (min-pooling) is biased
    toward the camera by about 1-2 noise sigmas (benchmarks/pooling_bench.py).
    """
    blocks = np.sort(depth_blocks(depth, size), axis=-1)
    count = (blocks < EMPTY_DEPTH).sum(axis=-1)
    lower = np.take_along_axis(blocks, (np.maximum(count - 1, 0) // 2)[..., None], -1)[..., 0]
    upper = np.take_along_axis(blocks, (count // 2)[..., None], -1)[..., 0]
    lower, upper = lower.astype(np.float64), upper.astype(np.float64)
    same = upper <= lower * (1.0 + SURFACE_GAP)
    pooled = np.where(same, np.rint((lower + upper) / 2.0), lower)
    return np.where(count > 0, pooled, 0).astype(np.uint16)


def min_pool_valid(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint16 depth (0 = none) shrunk to size: each pixel the nearest valid depth of its block
    (what the export wrote before; kept for benchmarks/pooling_bench.py)."""
    blocks = depth_blocks(depth, size)
    pooled = blocks.min(axis=-1)
    return np.where(pooled == EMPTY_DEPTH, 0, pooled).astype(np.uint16)
