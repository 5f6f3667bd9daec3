"""Depth at the scene's scale, from aligned priors, in the layouts nerfstudio, DN-Splatter and
SparseGS read.

Every export needs depth_params.json from `depthprior align` (they fail with one line asking
for it rather than fitting silently with other settings) and the COLMAP model it was fitted on.
Each image's prior is loaded exactly as a 3DGS trainer would (`PriorSet`: png / 2**16,
bilinear resize to the camera's size, ``scale * x + offset``), then ``depth = 1 / that`` in the
model's units; pixels whose aligned inverse depth is <= 0 have no depth (0). Images whose fit
failed or is an outlier are written as all-invalid maps, because the trainers need one depth
file per frame and treat 0 as "no depth". Each export prints the command that reads it.

nerfstudio (``ns-train depth-nerfacto nerfstudio-data --data DIR --depth-unit-scale-factor U``):
    DEPTH_DIR/<image name without ext>.png: uint16 depth in units of U scene units, U chosen
    from the scene's depth range unless given (`choose_unit`), 0 invalid; every frame gets
    ``"depth_file_path"``; DIR/sparse_pc.ply + ``ply_file_path`` (the model's points, as
    ns-process-data writes them) unless one is named. transforms.json is updated in place when
    it exists (its poses must be at the COLMAP model's scale: checked) or written from the
    model. Trained at 1/N size, nerfstudio-data opens DIR/depths_N/<file name of
    depth_file_path> and the colmap parser <depths-path>_N/<image name>.png: both written for
    every DIR/images_N and requested factor, each pixel the median of its block's valid depths.

DN-Splatter, `coolermap` parser (``--data DATA --colmap-path ...``): it natsorts the image
paths and the DATA/mono_depth/*_aligned.npy names separately and pairs them by position, so
files are named ``<rank>_<stem>``, rank = the image's place in that order:
    <rank>_<stem>_aligned.npy: float32 (H, W, 1) z-depth in the model's units
    (depth_unit_scale_factor 1), 0 invalid;
    <rank>_<stem>.npy: float32 (H, W, 1) the unaligned prediction as depth x 1000
    (its convention for monocular depth in millimetres: exact for metric models, which predict
    1/m; relative units for disparity models), 0 where undefined.
    It reads cameras.bin/images.bin only and takes intrinsics in image id order: a text model,
    or ids out of name order across cameras, get DATA/depthprior_colmap (binary, renumbered).
DN-Splatter, `normal-nerfstudio` parser: the nerfstudio export into DATA/transforms.json.
With masks, both also write DATA/depth_normals_mask/<rank>_<stem>.jpg (AGS-Mesh: 255 = drop).

SparseGS (``python train.py -s SCENE``): SCENE/depths/<file name up to its first dot>.npy,
float32 (H, W) z-depth, flat (colliding names refused).
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
import unicodedata
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from .depth_params import default_path, params_file
from ..errors import ImageError, UsageError, first_line, listing
from ..files.jsonfile import encode_json, expect_object, read_json, write_json
from ..files.outputs import OutputFolder, atomic_write_bytes
from ..files.raster import read_mask, stored_size
from ..images import DEFAULT_MAX_PIXELS, check_pixels, image_key, is_inside, posix_name, safe_join
from .confidence import load_mask, mask_name
from .consistency import AGREED, TRUSTED
from .priorset import MissingPriorError, PriorSet
from ..priors.store import TRAINER_SCALE, decode_inverse_depth, encode_npy, encode_png16
from ..files.place import local_folder


NERFSTUDIO_DEPTH_DIR = "depthprior_depth"
DN_SPLATTER_DIR = "mono_depth"
DN_SPLATTER_PARSERS = ("coolermap", "normal-nerfstudio")
#: AGS-Mesh's depth/normal confidence: DATA/depth_normals_mask/*.jpg, 255 = drop
DROP_MASK_DIR = "depth_normals_mask"
#: where the binary model coolermap needs is written (DATA/...) when --sparse cannot serve it
COOLERMAP_MODEL_DIR = "depthprior_colmap"
#: nerfstudio opens DATA/depths_N/<file name of depth_file_path> when it trains at 1/N size
DOWNSCALED_DEPTHS = "depths_{}"
DOWNSCALED_IMAGES = re.compile(r"images_(\d+)")
#: nerfstudio depth PNGs hold uint16 steps of unit_scale: the largest depth they can say
NERFSTUDIO_DEPTH_STEPS = int(np.iinfo(np.uint16).max)
#: COLMAP world -> nerfstudio's: y and z swapped, the new z flipped (ns-process-data)
NERFSTUDIO_APPLIED = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, -1.0, 0.0, 0.0))
#: the sparse points beside transforms.json, as ns-process-data names them
SPARSE_PLY = "sparse_pc.ply"
#: poses in an existing transforms.json must match the model's scale within this
SCALE_TOLERANCE = 0.01
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
        return "\n".join(lines)


# ---------------------------------------------------------------- shared

def _open(depths: Path | str, sparse: Path | str, params: Path | str | None):
    from .colmap import read_model

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


def _require_masks(masks: Path | None, priors: PriorSet, names: list[str]) -> None:
    """Every reliable image has a readable confidence mask of its prior's size in `masks`
    (UsageError listing the others), checked before any file is written."""
    if masks is None:
        return
    if not Path(masks).is_dir():
        raise UsageError(f"mask folder not found: {masks}; run `depthprior consistency`")
    missing, bad = [], []
    for name in names:
        if not priors.reliable(name):
            continue
        path = safe_join(masks, mask_name(priors.stem(name)))
        if not os.path.isfile(path):
            missing.append(name)
            continue
        try:
            read_mask(path, priors.prior_size(name))
        except (ImageError, MissingPriorError) as error:
            bad.append(first_line(error))
    if missing:
        raise UsageError(f"no confidence mask in {masks} for {len(missing)} image(s): "
                         f"{listing(missing, quote=True)}; rerun `depthprior consistency`")
    if bad:
        raise UsageError(f"{len(bad)} confidence mask(s) cannot be used: {bad[0]}")


def rejected(masks: Path | None, priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray | None:
    """Pixels the consistency mask rejects (confidence below trusted), at size; None without masks."""
    if masks is None:
        return None
    confidence = load_mask(masks, priors.stem(name), priors.prior_size(name), size)
    return confidence < TRUSTED / AGREED


def aligned_depth(priors: PriorSet, name: str, size: tuple[int, int],
                  masks: Path | None = None) -> tuple[np.ndarray, str | None]:
    """(H, W) float32 z-depth in the model's units (0 = none: also where `masks` rejects) and
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


def unaligned_depth_mm(priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: 1000 / (the prior's raw inverse depth), 0 where that is <= 0."""
    png = priors.read_png(name).astype(np.float32)
    if png.shape != size:
        png = cv2.resize(png, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    record = priors.record(name)
    if record is not None and record.ok and record.decodable:
        raw = decode_inverse_depth(png, record.raw_min, record.raw_max).astype(np.float64)
    else:  # no manifest: the normalised values, as 3DGS reads them
        raw = png.astype(np.float64) / TRAINER_SCALE
    depth = np.zeros(size, dtype=np.float64)
    np.divide(1000.0, raw, out=depth, where=raw > 0)
    return depth.astype(np.float32)


def _size(image: Any) -> tuple[int, int]:
    return int(image.camera.height), int(image.camera.width)


def _check_out(out_dir: Path, depths: Path, masks: Path | None) -> None:
    """The export's folder is neither in the priors' folder nor the masks' (it would overwrite
    them, or be read as priors later)."""
    for folder, what in ((depths, "depth folder"), (masks, "mask folder")):
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


def _check_finite(meta: dict[str, Any], transforms: Path) -> None:
    """No NaN or infinity anywhere in transforms.json (JSON has no such numbers)."""
    for key, value in meta.items():
        if key != "frames" and not _all_finite(value):
            raise UsageError(f"{transforms}: {key!r} holds a non-finite number; fix the camera model")
    for index, frame in enumerate(meta["frames"]):
        for key, value in frame.items():
            if not _all_finite(value):
                raise UsageError(
                    f"{transforms}: frame {index} ({frame.get('file_path')!r}) has a non-finite "
                    f"number in {key!r}; fix its pose in the model or transforms.json"
                )


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _centre(image: Any) -> np.ndarray:
    pose = image.cam_from_world
    return -pose[:, :3].T @ pose[:, 3]


# ---------------------------------------------------------------- nerfstudio

def export_nerfstudio(
    depths: Path | str,
    sparse: Path | str,
    transforms: Path | str,
    *,
    params: Path | str | None = None,
    out: Path | str | None = None,
    unit_scale: float | None = None,
    images_prefix: str = "images",
    downscales: tuple[int, ...] = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    masks: Path | str | None = None,
    require_points: bool = False,
) -> ExportSummary:
    """uint16 depth PNGs in units of `unit_scale` + depth_file_path in transforms.json.

    transforms: updated in place if it exists, else written from the COLMAP model with frames
    ``<images_prefix>/<image name>``; masks: the folder of `depthprior consistency` (0 where
    it rejects); a folder (or a path not ending in .json) means
    FOLDER/transforms.json. out: depth folder (default DIR/depthprior_depth beside
    transforms.json). unit_scale: scene units per PNG step, nerfstudio's depth_unit_scale_factor
    (the printed command passes it); None chooses it from the scene's depth range
    (`choose_unit`), refusing a range 16 bits cannot hold. downscales: factors N to write
    DIR/depths_N for, besides every DIR/images_N that exists. The model's points go to
    DIR/sparse_pc.ply (``ply_file_path``) unless transforms.json names a point cloud;
    require_points refuses an export that cannot give one.
    """
    if unit_scale is not None and not unit_scale > 0:
        raise UsageError("--unit-scale must be > 0")
    transforms = Path(transforms)
    if transforms.is_dir() or transforms.suffix.lower() != ".json":
        transforms = transforms / "transforms.json"  # a (new) dataset folder
    priors, model, registered = _open(depths, sparse, params)
    base = transforms.parent
    out_dir = Path(out) if out is not None else base / NERFSTUDIO_DEPTH_DIR

    meta, frames, matched = _frames_for(transforms, registered, images_prefix)
    _check_finite(meta, transforms)
    _require_priors(priors, [image.name for image in matched])
    masks = Path(masks) if masks is not None else None
    _require_masks(masks, priors, [image.name for image in matched])
    _check_sizes(matched, max_pixels)
    _check_out(out_dir, priors.root, masks)
    targets = [safe_join(out_dir, image.key, ".png") for image in matched]
    factors = _downscale_factors(base, downscales)
    if factors:
        _check_unique_basenames(targets)

    ply, ply_note = _point_cloud(meta, frames, matched, model, base)
    if ply is None and "ply_file_path" not in meta:
        if require_points:
            raise UsageError(f"DN-Splatter's normal-nerfstudio parser needs 3D points (ply_file_path "
                             f"in transforms.json), and {ply_note}: use the coolermap parser, or "
                             "a transforms.json made from this model")
        ply_note = f"warning: {ply_note}: splatfacto starts from random points"
    summary = ExportSummary("nerfstudio", out_dir, transforms=transforms)
    summary.notes.append(ply_note)
    span = depth_span(priors, matched, masks)
    if unit_scale is None:
        unit_scale = choose_unit(span)
        summary.notes.append(f"depth unit {unit_scale!r} scene units per step, chosen from the "
                             f"scene's depths ({span.describe()})")
    else:
        summary.notes.extend(_precision_warning(span, unit_scale))
    summary.unit_scale = unit_scale
    summary.floor_notes = floor_warning(span)
    with ExitStack() as stack:
        folder = stack.enter_context(OutputFolder(out_dir))
        small = {factor: stack.enter_context(OutputFolder(base / DOWNSCALED_DEPTHS.format(factor)))
                 for factor in factors}
        # nerfstudio's colmap parser opens <depths-path>_N/<image name>.png at downscale N
        beside = {factor: stack.enter_context(OutputFolder(_colmap_downscaled(out_dir, factor)))
                  for factor in factors}
        for frame, image, target in zip(frames, matched, targets):
            png = _depth_png(priors, image, unit_scale, summary, masks)
            folder.write(f"{image.key}.png", encode_png16(png))
            frame["depth_file_path"] = Path(os.path.relpath(target, base)).as_posix()
            for factor in factors:
                pooled = _write_downscaled(png, base, frame, factor, max_pixels, small[factor])
                beside[factor].write(f"{image.key}.png", pooled)
            summary.images += 1
        summary.downscaled = [folder for factor in factors for folder in
                              (base / DOWNSCALED_DEPTHS.format(factor), _colmap_downscaled(out_dir, factor))]
        meta["depth_unit_scale_factor"] = unit_scale  # informative: nerfstudio takes it from ns-train
        if ply is not None:
            atomic_write_bytes(base / SPARSE_PLY, ply)
            meta["ply_file_path"] = SPARSE_PLY
        write_json(transforms, meta, indent=4)
        for owned in (folder, *small.values(), *beside.values()):
            _finish(owned)
    if summary.out_of_range:
        summary.notes.append(
            "some depths do not fit uint16 at this unit: pass a larger --unit-scale (the printed "
            "command passes the same value to nerfstudio)"
        )
    summary.command = (f"ns-train depth-nerfacto nerfstudio-data --data {shlex.quote(str(base))} "
                       f"--depth-unit-scale-factor {unit_scale!r}")
    summary.notes.extend(_colmap_parser_notes(base, out_dir, Path(sparse), priors.root, unit_scale))
    return summary


# ---------------------------------------------------------------- depth units

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


def depth_span(priors: PriorSet, images: list, masks: Path | None) -> DepthSpan:
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


def _precision_warning(span: DepthSpan, unit_scale: float) -> list[str]:
    if not span.valid or span.near / unit_scale >= MIN_STEPS:
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


def _point_cloud(meta: dict, frames: list[dict], matched: list, model: Any,
                 base: Path) -> tuple[bytes | None, str]:
    """(DIR/sparse_pc.ply's bytes, what the summary says): the model's points, xyz + rgb, in
    the poses' frame, as ns-process-data writes them with ``ply_file_path``; None when an
    existing ply_file_path is kept or no points can be given (the note says why).

    splatfacto starts from random points without one, and DN-Splatter's normal-nerfstudio
    parser fails (KeyError 'points3D_xyz')."""
    if "ply_file_path" in meta:
        return None, f"point cloud: kept ply_file_path {meta['ply_file_path']!r}"
    applied = _world_transform(meta, frames, matched)
    if applied is None:
        return None, (f"the poses in transforms.json are not the COLMAP model's in nerfstudio's "
                      f"frame, so the model's points cannot be written as {SPARSE_PLY}")
    if model.point_xyz.size == 0:
        return None, f"the COLMAP model has no 3D points to write as {SPARSE_PLY}"
    xyz = model.point_xyz @ applied[:, :3].T + applied[:, 3]
    return encode_ply(xyz, model.point_rgb), f"{len(xyz)} sparse point(s) -> {base / SPARSE_PLY} (ply_file_path)"


def _world_transform(meta: dict, frames: list[dict], matched: list) -> np.ndarray | None:
    """The 3x4 map from COLMAP world to the frames' world (their applied_transform, else
    nerfstudio's), or None when the frames' positions do not follow it."""
    applied = np.asarray(meta.get("applied_transform", NERFSTUDIO_APPLIED), dtype=np.float64)
    if applied.shape != (3, 4) or not np.all(np.isfinite(applied)):
        return None
    centres = np.array([_centre(image) for image in matched])
    theirs = np.array([np.asarray(f["transform_matrix"], dtype=np.float64)[:3, 3] for f in frames])
    extent = float(np.ptp(centres, axis=0).max(initial=0.0)) + 1.0
    if np.abs(centres @ applied[:, :3].T + applied[:, 3] - theirs).max() > 1e-5 * extent:
        return None
    return applied


def encode_ply(xyz: np.ndarray, rgb: np.ndarray | None) -> bytes:
    """Binary little-endian PLY of float32 x, y, z and uchar red, green, blue per vertex."""
    vertex = np.zeros(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for axis, name in enumerate("xyz"):
        vertex[name] = xyz[:, axis]
    if rgb is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertex[name] = rgb[:, channel]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(vertex)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    return header.encode("ascii") + vertex.tobytes()


def _frames_for(transforms: Path, registered: list, images_prefix: str) -> tuple[dict, list, list]:
    """(transforms.json content, its frames, the model image of each frame)."""
    if transforms.is_dir():
        raise UsageError(f"{transforms} is a folder; pass the transforms.json to update or a "
                         "new path for one")
    if not os.path.lexists(transforms):
        meta = _transforms_from_model(registered, images_prefix)
        return meta, meta["frames"], list(registered)
    meta = read_json(transforms, check=_check_transforms,
                     hint="pass a nerfstudio transforms.json, or a new path to write one")
    frames = meta["frames"]
    paths = [posix_name(frame["file_path"]) for frame in frames]
    matched = _match_frames(frames, paths, registered, transforms)
    _check_scale(frames, matched, transforms)
    return meta, frames, matched


def _check_transforms(data: Any) -> None:
    frames = expect_object(data).get("frames")
    if not isinstance(frames, list):
        raise TypeError("'frames' is not a list")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise TypeError(f"frame {index} is not an object with a 'file_path' string")


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


def _depth_png(priors: PriorSet, image: Any, unit_scale: float, summary: ExportSummary,
               masks: Path | None = None) -> np.ndarray:
    """The image's depth as uint16 steps of unit_scale (0 = none), counted into summary."""
    depth, reason = aligned_depth(priors, image.name, _size(image), masks)
    scaled = depth.astype(np.float64) / unit_scale
    fits = (scaled >= 0.5) & (scaled < NERFSTUDIO_DEPTH_STEPS + 0.5)
    summary.out_of_range += int(np.count_nonzero((depth > 0) & ~fits))
    if reason:
        summary.invalid[image.key] = reason
    return np.where(fits, np.rint(scaled), 0).astype(np.uint16)


# ---------------------------------------------------------------- nerfstudio, downscaled

def _downscale_factors(base: Path, requested: tuple[int, ...]) -> list[int]:
    """Requested factors plus N of every DIR/images_N folder nerfstudio may train from."""
    factors = {int(factor) for factor in requested}
    if any(factor < 2 for factor in factors):
        raise UsageError("--downscales: every factor must be an integer >= 2")
    if base.is_dir():
        for entry in base.iterdir():
            match = DOWNSCALED_IMAGES.fullmatch(entry.name)
            if match and entry.is_dir() and int(match.group(1)) > 1:
                factors.add(int(match.group(1)))
    return sorted(factors)


def _check_unique_basenames(targets: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for target in targets:
        if target.name in seen:
            raise UsageError(
                f"nerfstudio looks downscaled depth up by file name only (depths_N/<name>), and "
                f"{seen[target.name]} and {target} share {target.name!r}: give the frames unique "
                "file names, or train at full size without images_N folders or --downscales"
            )
        seen[target.name] = target


def _write_downscaled(png: np.ndarray, base: Path, frame: dict, factor: int,
                      max_pixels: int | None, folder: OutputFolder) -> bytes:
    """DIR/depths_N/<file name of depth_file_path> at the size of DIR/images_N/<file name>;
    returns the PNG's bytes."""
    size = _downscaled_size(base, frame, factor, png.shape, max_pixels)
    name = PurePosixPath(frame["depth_file_path"]).name
    data = encode_png16(pool_valid(png, size))
    folder.write(name, data)
    return data


#: how the notes for nerfstudio's colmap parser start (left out of DN-Splatter's summary)
COLMAP_NOTES = ("nerfstudio's colmap parser reads the same depth", "warning: never pass --depths-path")


def _colmap_downscaled(out_dir: Path, factor: int) -> Path:
    return out_dir.parent / f"{out_dir.name}_{factor}"


def _colmap_parser_notes(base: Path, out_dir: Path, sparse: Path, priors_root: Path,
                         unit_scale: float) -> list[str]:
    """The command for nerfstudio's colmap parser, which reads the same depth PNGs, and the
    folder it must never be pointed at."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, base) if is_inside(path, base) else str(path.absolute())

    notes = [f"{COLMAP_NOTES[0]}: ns-train depth-nerfacto colmap --data "
             f"{shlex.quote(str(base))} --colmap-path {shlex.quote(rel(sparse))} --depths-path "
             f"{shlex.quote(rel(out_dir))} --depth-unit-scale-factor {unit_scale!r} (at "
             f"--downscale-factor N it reads {rel(out_dir)}_N/, written for every factor above)"]
    if is_inside(priors_root, base):
        notes.append(f"{COLMAP_NOTES[1]} {rel(priors_root)}: it holds 3DGS "
                     "inverse-depth PNGs (png / 65536), which nerfstudio would read as depth in "
                     "units of --depth-unit-scale-factor")
    return notes


def _downscaled_size(base: Path, frame: dict, factor: int, full: tuple[int, int],
                     max_pixels: int | None) -> tuple[int, int]:
    """The downscaled image's own size when it exists, else nerfstudio's floor(size / N)."""
    image = base / f"images_{factor}" / PurePosixPath(posix_name(frame["file_path"])).name
    if os.path.isfile(image):
        try:
            width, height = stored_size(image)  # the header only
            check_pixels(width, height, max_pixels)
        except ImageError as error:
            raise UsageError(f"cannot read the size of {image}: {first_line(error)}") from None
        if height <= full[0] and width <= full[1]:
            return height, width
        raise UsageError(f"{image} is {width}x{height}, larger than its full-size camera")
    return max(full[0] // factor, 1), max(full[1] // factor, 1)


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


def _match_frames(frames: list[dict], paths: list[str], registered: list, transforms: Path) -> list:
    by_id = {image.image_id: image for image in registered}
    matched, unmatched = [], []
    for frame, path in zip(frames, paths):
        image = by_id.get(frame.get("colmap_im_id")) if "colmap_im_id" in frame else None
        if image is not None and not _is_suffix(image.name, path):
            image = None  # ids from another model: fall back to names
        if image is None:
            stem = image_key(path)
            candidates = [
                im for im in registered if _is_suffix(im.name, path) or _is_suffix(im.key, stem)
            ]
            image = max(candidates, key=lambda im: len(im.name)) if candidates else None
        if image is None:
            unmatched.append(path)
        matched.append(image)
    if unmatched:
        raise UsageError(
            f"{len(unmatched)} frame(s) of {transforms} are not registered images of the COLMAP "
            f"model: {listing(unmatched, quote=True)}"
        )
    return matched


def _is_suffix(name: str, path: str) -> bool:
    return path == name or path.endswith("/" + name)


def _check_scale(frames: list[dict], matched: list, transforms: Path) -> None:
    """Poses in transforms.json must be at the model's scale, or the depths would not fit them."""
    try:
        ours = np.array([np.asarray(f["transform_matrix"], dtype=np.float64)[:3, 3] for f in frames])
    except (KeyError, ValueError, IndexError, TypeError):
        raise UsageError(f"{transforms}: every frame needs a 4x4 transform_matrix") from None
    theirs = np.array([_centre(image) for image in matched])
    if len(ours) < 2:
        return
    pick = np.linspace(0, len(ours) - 1, min(len(ours), 200)).astype(int)
    a, b = np.triu_indices(len(pick), 1)
    d_model = np.linalg.norm(theirs[pick][a] - theirs[pick][b], axis=1)
    d_json = np.linalg.norm(ours[pick][a] - ours[pick][b], axis=1)
    usable = d_model > 1e-9 * max(float(d_model.max(initial=0.0)), 1e-300)
    if not usable.any():
        return
    ratio = float(np.median(d_json[usable] / d_model[usable]))
    if abs(ratio - 1.0) > SCALE_TOLERANCE:
        raise UsageError(
            f"the poses in {transforms} are at {ratio:.4g}x the scale of the COLMAP model, so "
            "depths from this model would not match them: use the transforms.json made from "
            "this model, or let the export write one (pass a new --transforms path)"
        )


def _camera_fields(camera: Any) -> dict[str, Any]:
    p = [float(v) for v in camera.params]
    fields: dict[str, Any] = {"w": int(camera.width), "h": int(camera.height)}
    if camera.model == "SIMPLE_PINHOLE":
        f, cx, cy, k1, k2, p1, p2 = p[0], p[1], p[2], 0.0, 0.0, 0.0, 0.0
        fx = fy = f
    elif camera.model == "PINHOLE":
        fx, fy, cx, cy = p[:4]
        k1 = k2 = p1 = p2 = 0.0
    elif camera.model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, k1 = p[1], p[2], p[3]
        k2 = p1 = p2 = 0.0
    elif camera.model == "RADIAL":
        fx = fy = p[0]
        cx, cy, k1, k2 = p[1], p[2], p[3], p[4]
        p1 = p2 = 0.0
    elif camera.model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p[:8]
    else:
        raise UsageError(
            f"camera model {camera.model} is not supported for writing transforms.json: "
            "undistort the images (colmap image_undistorter) or make transforms.json with "
            "ns-process-data and pass it with --transforms"
        )
    fields.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, k1=k1, k2=k2, p1=p1, p2=p2,
                  camera_model="OPENCV")
    return fields


def _transforms_from_model(registered: list, images_prefix: str) -> dict[str, Any]:
    """transforms.json in nerfstudio's COLMAP conventions (as ns-process-data writes it)."""
    # world: nerfstudio swaps y and z and flips the new z (applied_transform); camera: OpenCV
    # (x right, y down, z forward) -> OpenGL (x right, y up, z back).
    applied = np.array(NERFSTUDIO_APPLIED)
    cameras = {image.camera.camera_id: image.camera for image in registered}
    meta: dict[str, Any] = {}
    single = len(cameras) == 1
    if single:
        meta.update(_camera_fields(next(iter(cameras.values()))))
    frames = []
    prefix = posix_name(images_prefix).strip("/")
    for image in registered:
        w2c = np.vstack([image.cam_from_world, [0, 0, 0, 1]])
        c2w = np.linalg.inv(w2c)
        c2w[:3, 1:3] *= -1
        c2w = np.vstack([applied @ c2w, [0, 0, 0, 1]])
        frame: dict[str, Any] = {
            "file_path": f"{prefix}/{image.name}" if prefix else image.name,
            "transform_matrix": c2w.tolist(),
            "colmap_im_id": image.image_id,
        }
        if not single:
            frame.update(_camera_fields(image.camera))
        frames.append(frame)
    meta["frames"] = frames
    meta["applied_transform"] = applied.tolist()
    return meta


# ---------------------------------------------------------------- DN-Splatter

def export_dn_splatter(
    depths: Path | str,
    sparse: Path | str,
    data: Path | str,
    *,
    params: Path | str | None = None,
    out: Path | str | None = None,
    parser: str = "coolermap",
    downscales: tuple[int, ...] = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    masks: Path | str | None = None,
) -> ExportSummary:
    """Depth laid out as DN-Splatter's `parser` reads it, and the command that trains on it.

    coolermap: DATA/mono_depth/<rank>_<stem>_aligned.npy in the model's units, named so that
    their natural order is the images' natural order (coolermap pairs them by position).
    normal-nerfstudio: the nerfstudio export into DATA/transforms.json (uint16 millimetres, the
    parser's depth_unit_scale_factor 1e-3).
    """
    if parser not in DN_SPLATTER_PARSERS:
        raise UsageError(f"--parser must be one of {', '.join(DN_SPLATTER_PARSERS)}, not {parser!r}")
    data = Path(data)
    if parser == "normal-nerfstudio":
        if masks is not None:
            priors, _model, registered = _open(depths, sparse, params)
            _check_drop_masks_free(data, registered, parser)
        summary = export_nerfstudio(depths, sparse, data / "transforms.json", params=params,
                                    downscales=downscales, max_pixels=max_pixels, masks=masks,
                                    require_points=True)
        summary.target = "dn-splatter (normal-nerfstudio)"
        summary.notes = [note for note in summary.notes if not note.startswith(COLMAP_NOTES)]
        summary.command = (f"ns-train dn-splatter --pipeline.model.use-depth-loss True "
                           f"normal-nerfstudio --data {shlex.quote(str(data))} "
                           f"--depth-unit-scale-factor {summary.unit_scale!r}")
        summary.notes.extend(summary.floor_notes)
        if masks is not None:
            _write_drop_masks(data, priors, registered, Path(masks), summary, parser)
        return summary
    return _export_coolermap(depths, sparse, data, params, out, max_pixels,
                             Path(masks) if masks is not None else None)


def _export_coolermap(depths, sparse, data: Path, params, out, max_pixels,
                      masks: Path | None) -> ExportSummary:
    priors, model, registered = _open(depths, sparse, params)
    out_dir = Path(out) if out is not None else data / DN_SPLATTER_DIR
    _check_glob_safe(data)
    _check_out(out_dir, priors.root, masks)
    _require_priors(priors, [image.name for image in registered])
    _require_masks(masks, priors, [image.name for image in registered])
    _check_sizes(registered, max_pixels)
    _check_not_globbed([image.name for image in registered])
    stems = coolermap_stems([image.name for image in registered])
    for image in registered:
        safe_join(out_dir, stems[image.name], "_aligned.npy")  # every target before any write

    ours = {stems[image.name] + "_aligned.npy" for image in registered}
    _refuse_stale(out_dir, ours | set(_recorded(out_dir / EXPORT_RECORD)))
    if masks is not None:
        _check_drop_masks_free(data, registered, "coolermap")
    why_rewrite = _coolermap_model_problem(model, registered)

    summary = ExportSummary("dn-splatter (coolermap)", out_dir)
    span = DepthSpan(math.inf, 0.0)
    written: dict[str, np.ndarray] = {}  # name -> where a depth was written (with masks)
    with OutputFolder(out_dir) as folder:
        for image in registered:
            stem, size = stems[image.name], _size(image)
            depth, reason = aligned_depth(priors, image.name, size, masks)
            span.add(depth)
            if masks is not None:
                written[image.name] = depth > 0
            unaligned = unaligned_depth_mm(priors, image.name, size)
            drop = rejected(masks, priors, image.name, size) if reason is None else None
            if drop is not None:
                unaligned[drop] = 0.0
            folder.write(stem + "_aligned.npy", encode_npy(depth[..., None]))
            folder.write(stem + ".npy", encode_npy(unaligned[..., None]))
            summary.images += 1
            if reason:
                summary.invalid[image.key] = reason
        _finish(folder)
    if masks is not None:
        _write_drop_masks(data, priors, registered, masks, summary, "coolermap", written)
    colmap_dir = Path(sparse)
    if why_rewrite:
        colmap_dir = data / COOLERMAP_MODEL_DIR
        _write_coolermap_model(model, colmap_dir)
        summary.notes.append(f"binary model for coolermap, images numbered in name order -> "
                             f"{colmap_dir} ({why_rewrite})")
    summary.command = _coolermap_command(data, colmap_dir)
    summary.notes.extend(floor_warning(span))
    if out_dir.resolve() != (data / DN_SPLATTER_DIR).resolve():
        summary.notes.append(f"note: coolermap reads DATA/{DN_SPLATTER_DIR}; move {out_dir} there")
    if not (data / "images").is_dir():
        summary.notes.append(f"note: coolermap reads the frames from {data / 'images'}/<image name>; "
                             "put them there or add --images-path to the command")
    return summary


def _write_drop_masks(data: Path, priors: PriorSet, registered: list, masks: Path,
                      summary: ExportSummary, parser: str,
                      depths_of: dict[str, np.ndarray] | None = None) -> None:
    """DATA/depth_normals_mask/<rank>_<stem>.jpg, as AGS-Mesh reads them: natural-sorted and
    paired by position with the parser's list of images (rank = the image's place in it),
    value = 255 x (1 - confidence), i.e. 255 where a pixel is to be dropped (rejected by the
    mask, or without depth)."""
    folder_path = data / DROP_MASK_DIR
    stems = _check_drop_masks_free(data, registered, parser)
    with OutputFolder(folder_path) as folder:
        for image in registered:
            size = _size(image)
            if depths_of is not None:
                has_depth = depths_of[image.name]
            else:
                has_depth = aligned_depth(priors, image.name, size, masks)[0] > 0
            confidence = load_mask(masks, priors.stem(image.name), priors.prior_size(image.name), size)
            drop = np.where(has_depth, np.rint(255.0 * (1.0 - np.clip(confidence, 0, 1))), 255)
            folder.write(stems[image.name] + ".jpg", encode_jpeg(drop.astype(np.uint8)))
        _finish(folder)
    summary.notes.append(f"drop masks (255 = drop, AGS-Mesh's confidence 1 - value/255) -> {folder_path}")


def _check_drop_masks_free(data: Path, registered: list, parser: str) -> dict[str, str]:
    """Image name -> drop mask stem; refuses other *.jpg in the folder (they would shift the
    by-position pairing).

    coolermap lists the images in natural order; normal-nerfstudio sorts its frames by path
    (np.argsort of the file names), which the ranks follow then."""
    folder_path = data / DROP_MASK_DIR
    names = [image.name for image in registered]
    if parser == "coolermap":
        stems = coolermap_stems(names)
    else:
        ordered = sorted(names, key=lambda name: PurePosixPath("images", name).parts)
        width = max(5, len(str(len(ordered) - 1)))
        stems = {name: f"{rank:0{width}d}_{PurePosixPath(name).stem}"
                 for rank, name in enumerate(ordered)}
    ours = {stems[image.name] + ".jpg" for image in registered}
    _refuse_stale(folder_path, ours | set(_recorded(folder_path / EXPORT_RECORD)), "*.jpg",
                  "AGS-Mesh")
    return stems


def encode_jpeg(plane: np.ndarray) -> bytes:
    """Single-channel JPEG at quality 100 (the format AGS-Mesh globs)."""
    ok, data = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, 100])
    if not ok:
        raise UsageError("cannot encode a drop mask as JPEG")
    return data.tobytes()


def _check_not_globbed(names: list[str]) -> None:
    """coolermap globs mono_depth/*_aligned.npy: the unaligned <rank>_<stem>.npy of a stem
    ending in _aligned would be read as one more aligned depth."""
    caught = [name for name in names if PurePosixPath(name).stem.endswith("_aligned")]
    if caught:
        raise UsageError(
            f"DN-Splatter reads every mono_depth/*_aligned.npy as an aligned depth, so the files of "
            f"{listing(caught, quote=True)} (a name ending in _aligned) would be paired with other "
            "images: rename those images (and in the model) and export again"
        )


def _coolermap_model_problem(model: Any, registered: list) -> str | None:
    """Why coolermap cannot read the model as it is, or None.

    coolermap opens cameras.bin and images.bin (no text), and takes each frame's intrinsics in
    image id order but its pose and file name in natural name order: with cameras of different
    intrinsics and ids out of name order, frames get another image's intrinsics.
    """
    if model.format != "binary":
        return "coolermap reads cameras.bin and images.bin; the model is text"
    by_id = sorted(registered, key=lambda image: image.image_id)
    by_name = sorted(registered, key=lambda image: natural_key(f"images/{image.name}"))
    shifted = [named.name for named, numbered in zip(by_name, by_id)
               if _intrinsics(named.camera) != _intrinsics(numbered.camera)]
    if shifted:
        return (f"coolermap gives frames the intrinsics of the image with the same place in image "
                f"id order; the ids are not in name order, so {len(shifted)} frame(s) "
                f"({listing(shifted, quote=True)}) would get another camera's")
    return None


def _intrinsics(camera: Any) -> tuple:
    return (camera.model, camera.width, camera.height, tuple(np.asarray(camera.params).tolist()))


def _write_coolermap_model(model: Any, folder_path: Path) -> None:
    from .colmap_binary import binary_model, renumbered

    files = renumbered(binary_model(model.path, model.format),
                       lambda name: natural_key(f"images/{name}"))
    with OutputFolder(folder_path) as folder:
        folder.write_together(sorted(files.items()))
        _finish(folder)


# ---------------------------------------------------------------- SparseGS

SPARSEGS_DIR = "depths"


def export_sparsegs(
    depths: Path | str,
    sparse: Path | str,
    scene: Path | str,
    *,
    params: Path | str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ExportSummary:
    """SCENE/depths/<stem>.npy as SparseGS reads them, and the command that trains on them.

    SparseGS (``python train.py -s SCENE``) opens SCENE/images/<basename of the image name> and
    np.load(SCENE/depths/<that basename up to its first dot>.npy) for every image of
    SCENE/sparse/0: one flat folder, so names that meet there are refused. Its Pearson depth
    loss wants depth-like values (correlated with rendered z-depth): each file is float32 (H, W)
    z-depth in the model's units from the aligned prior; pixels without depth take the image's
    farthest depth; an image whose fit failed is all zeros (constant: no depth gradient).
    """
    priors, _model, registered = _open(depths, sparse, params)
    scene = Path(scene)
    out_dir = scene / SPARSEGS_DIR
    if is_inside(out_dir, priors.root) or is_inside(priors.root, out_dir):
        raise UsageError(
            f"SparseGS reads {out_dir}/*.npy, which overlaps the prior folder {priors.root}: "
            "generate the priors into another folder (e.g. SCENE/depthprior), align, and export again"
        )
    _require_priors(priors, [image.name for image in registered])
    _check_sizes(registered, max_pixels)
    stems = sparsegs_stems([image.name for image in registered])

    summary = ExportSummary("sparsegs", out_dir)
    with OutputFolder(out_dir) as folder:
        for image in registered:
            depth, reason = aligned_depth(priors, image.name, _size(image))
            valid = depth > 0
            if valid.any():
                depth = np.where(valid, depth, depth[valid].max())
            folder.write(stems[image.name] + ".npy", encode_npy(depth.astype(np.float32)))
            summary.images += 1
            if reason:
                summary.invalid[image.key] = reason
        _finish(folder)
    model_dir = scene / "sparse" / "0"
    if not (model_dir.is_dir() and os.path.samefile(model_dir, sparse)):
        summary.notes.append(f"note: SparseGS reads the model from {model_dir}; put the model "
                             f"the priors were aligned to ({sparse}) there")
    if not (scene / "images").is_dir():
        summary.notes.append(f"note: SparseGS reads the frames from {scene / 'images'}/<file name>")
    summary.command = f"python train.py -s {shlex.quote(str(scene))}"
    return summary


def sparsegs_stems(names: list[str]) -> dict[str, str]:
    """Image name -> SparseGS's image_name (basename up to its first dot); UsageError for
    names that meet in its flat folders or have no such stem."""
    stems = {name: PurePosixPath(name).name.split(".")[0] for name in names}
    empty = [name for name, stem in stems.items() if not stem]
    if empty:
        raise UsageError(f"SparseGS names depth by the file name up to its first dot, which is "
                         f"empty for {listing(empty, quote=True)}: rename those images")
    seen: dict[str, str] = {}
    for name, stem in stems.items():
        if stem in seen:
            raise UsageError(
                f"SparseGS reads images/<file name> and depths/<file name up to its first dot>.npy "
                f"from flat folders, so {seen[stem]!r} and {name!r} both become {stem!r}: rename "
                "one of them (in the model and on disk)"
            )
        seen[stem] = name
    return stems


def natural_key(text: str) -> tuple:
    """natsort's default key: NFD text split into strings and unsigned integers.

    Runs of decimal digits are one integer; a digit that is not a decimal (e.g. "²") is one on
    its own; a key starts with a string and never holds two integers side by side.
    """
    key: list[Any] = []
    for part in _natural_parts(unicodedata.normalize("NFD", text)):
        if isinstance(part, int) and (not key or isinstance(key[-1], int)):
            key.append("")
        key.append(part)
    return tuple(key)


def _natural_parts(text: str):
    for run in re.split(r"(\d+)", text):
        if run and run[0].isdecimal():
            yield int(run)
            continue
        start = 0
        for index, char in enumerate(run):
            if unicodedata.digit(char, None) is not None:
                if index > start:
                    yield run[start:index]
                yield unicodedata.digit(char)
                start = index + 1
        if start < len(run):
            yield run[start:]


def coolermap_stems(names: list[str]) -> dict[str, str]:
    """Image name -> depth file stem "<rank>_<file stem>", rank = the image's place in coolermap.

    coolermap natsorts the image paths (DATA/images/<name>) and the depth file names separately
    and pairs them by position. Zero-padded ranks in front make the depth files' natural order
    the images' own, whatever the folders and stems are.
    """
    keys = {name: natural_key(f"images/{name}") for name in names}
    ordered = sorted(names, key=keys.__getitem__)
    for first, second in zip(ordered, ordered[1:]):
        if keys[first] == keys[second]:
            raise UsageError(
                f"DN-Splatter sorts {first!r} and {second!r} as equal (natural order), so their "
                "order and their depth files' pairing is arbitrary: rename one of them"
            )
    width = max(5, len(str(len(ordered) - 1)))
    return {name: f"{rank:0{width}d}_{PurePosixPath(name).stem}" for rank, name in enumerate(ordered)}


def _check_glob_safe(data: Path) -> None:
    if glob.has_magic(str(data)) or glob.has_magic(str(data.absolute())):
        raise UsageError(
            f"DN-Splatter finds depth with glob('{data}/mono_depth/*_aligned.npy'), which reads "
            f"*, ? and [ in the data path as patterns: move the scene to a path without them"
        )


def _refuse_stale(out_dir: Path, ours: set[str], pattern: str = "*_aligned.npy",
                  reader: str = "DN-Splatter") -> None:
    """Other files matching the consumer's glob would join its sorted list and shift every pair."""
    found = glob.glob(os.path.join(glob.escape(str(out_dir)), pattern))
    stale = sorted(os.path.basename(path) for path in found if os.path.basename(path) not in ours)
    if stale:
        raise UsageError(
            f"{out_dir} holds {len(stale)} other {pattern} file(s) ({listing(stale)}) that "
            f"{reader} would pair with images too: delete them (or the folder) and export again"
        )


def _coolermap_command(data: Path, sparse: Path) -> str:
    colmap = os.path.relpath(sparse, data) if is_inside(sparse, data) else str(sparse.absolute())
    return (f"ns-train dn-splatter --pipeline.model.use-depth-loss True coolermap "
            f"--data {shlex.quote(str(data))} --colmap-path {shlex.quote(colmap)} "
            "--depth-unit-scale-factor 1")


__all__ = ["ExportSummary", "aligned_depth", "coolermap_stems", "export_dn_splatter",
           "export_nerfstudio", "export_sparsegs", "sparsegs_stems", "min_pool_valid", "pool_valid", "natural_key", "unaligned_depth_mm"]
