"""Depth at the scene's scale, from aligned priors, in the layouts nerfstudio and DN-Splatter read.

Both exports need depth_params.json from `depthprior align` (they fail with one line asking for
it rather than fitting silently with other settings) and the COLMAP model it was fitted on.
Each image's prior is loaded exactly as a 3DGS trainer would (`PriorSet`: png / 2**16,
bilinear resize to the camera's size, ``scale * x + offset``), then ``depth = 1 / that`` in the
model's units; pixels whose aligned inverse depth is <= 0 have no depth (0). Images whose fit
failed or is an outlier are written as all-invalid maps, because both trainers need one depth
file per frame and treat 0 as "no depth".

nerfstudio (``ns-train ... nerfstudio-data --data DIR``, DIR holding transforms.json):
    DEPTH_DIR/<image name without ext>.png: uint16 depth in units of ``unit_scale`` scene units
    (default 1e-3: "millimetres", nerfstudio's default ``depth_unit_scale_factor``), 0 invalid;
    every frame gets ``"depth_file_path"`` relative to transforms.json. transforms.json is
    updated in place when it exists (its poses must be at the COLMAP model's scale: checked)
    or written from the model (nerfstudio's COLMAP conventions) when it does not. Trained at 1/N
    size, nerfstudio opens DIR/depths_N/<file name of depth_file_path>: written for every
    DIR/images_N and every requested factor, min-pooled over valid depths.

DN-Splatter, `coolermap` parser (``--data DATA``, the model at DATA/colmap/sparse/0 unless
``--colmap-path``): it natsorts the image paths and the DATA/mono_depth/*_aligned.npy names
separately and pairs them by position, so files are named ``<rank>_<stem>``, rank = the image's
place in that order:
    <rank>_<stem>_aligned.npy: float32 (H, W, 1) z-depth in the model's units
    (depth_unit_scale_factor 1), 0 invalid;
    <rank>_<stem>.npy: float32 (H, W, 1) the unaligned prediction as depth x 1000
    (its convention for monocular depth in millimetres: exact for metric models, which predict
    1/m; relative units for disparity models), 0 where undefined.
DN-Splatter, `normal-nerfstudio` parser: reads depth_file_path of DATA/transforms.json times
1e-3, i.e. the nerfstudio export.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from .depth_params import default_path, params_file
from ..errors import ImageError, UsageError, listing
from ..images import DEFAULT_MAX_PIXELS, check_pixels, image_key, is_inside, posix_name, safe_join
from .confidence import load_mask
from .consistency import AGREED, TRUSTED
from .priorset import PriorSet
from ..priors.store import (
    TRAINER_SCALE,
    atomic_write_bytes,
    decode_inverse_depth,
    read_png16,
    write_npy,
    write_png16,
)
from ..files.place import local_folder


NERFSTUDIO_DEPTH_DIR = "depthprior_depth"
DN_SPLATTER_DIR = "mono_depth"
DN_SPLATTER_PARSERS = ("coolermap", "normal-nerfstudio")
#: nerfstudio opens DATA/depths_N/<file name of depth_file_path> when it trains at 1/N size
DOWNSCALED_DEPTHS = "depths_{}"
DOWNSCALED_IMAGES = re.compile(r"images_(\d+)")
#: nerfstudio depth PNGs hold uint16 steps of unit_scale: the largest depth they can say
NERFSTUDIO_DEPTH_STEPS = int(np.iinfo(np.uint16).max)
#: poses in an existing transforms.json must match the model's scale within this
SCALE_TOLERANCE = 0.01


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
    """Every reliable image has a confidence mask in `masks` (UsageError listing the others)."""
    if masks is None:
        return
    if not Path(masks).is_dir():
        raise UsageError(f"mask folder not found: {masks}; run `depthprior consistency`")
    missing = [name for name in names if priors.reliable(name)
               and not safe_join(masks, priors.stem(name), ".png").is_file()]
    if missing:
        raise UsageError(f"no confidence mask in {masks} for {len(missing)} image(s): "
                         f"{listing(missing, quote=True)}; rerun `depthprior consistency`")


def rejected(masks: Path | None, priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray | None:
    """Pixels the consistency mask rejects (confidence below trusted), at size; None without masks."""
    if masks is None:
        return None
    return load_mask(masks, priors.stem(name), size) < TRUSTED / AGREED


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
    png = read_png16(priors.path(name)).astype(np.float32)
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
    unit_scale: float = 1e-3,
    images_prefix: str = "images",
    downscales: tuple[int, ...] = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    masks: Path | str | None = None,
) -> ExportSummary:
    """uint16 depth PNGs in units of `unit_scale` + depth_file_path in transforms.json.

    transforms: updated in place if it exists, else written from the COLMAP model with frames
    ``<images_prefix>/<image name>``; masks: the folder of `depthprior consistency` (0 where
    it rejects); a folder (or a path not ending in .json) means
    FOLDER/transforms.json. out: depth folder (default DIR/depthprior_depth beside
    transforms.json). unit_scale: nerfstudio's depth_unit_scale_factor (pass the same value to
    ns-train when it is not the default 1e-3). downscales: factors N to write DIR/depths_N for,
    besides every DIR/images_N that exists.
    """
    if not unit_scale > 0:
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
    targets = [safe_join(out_dir, image.key, ".png") for image in matched]
    factors = _downscale_factors(base, downscales)
    if factors:
        _check_unique_basenames(targets)

    summary = ExportSummary("nerfstudio", out_dir, transforms=transforms)
    for frame, image, target in zip(frames, matched, targets):
        png = _depth_png(priors, image, unit_scale, summary, masks)
        write_png16(target, png)
        frame["depth_file_path"] = Path(os.path.relpath(target, base)).as_posix()
        for factor in factors:
            _write_downscaled(png, base, frame, factor, max_pixels)
        summary.images += 1
    summary.downscaled = [base / DOWNSCALED_DEPTHS.format(factor) for factor in factors]
    meta["depth_unit_scale_factor"] = unit_scale  # informative: nerfstudio takes it from ns-train
    text = json.dumps(meta, indent=4, allow_nan=False)
    atomic_write_bytes(transforms, text.encode("utf-8"))
    if summary.out_of_range:
        summary.notes.append(
            "some depths do not fit uint16 at this unit: pass a larger --unit-scale and the same "
            "value as nerfstudio's depth_unit_scale_factor"
        )
    if unit_scale != 1e-3:
        summary.notes.append(
            f"train with --pipeline.datamanager.dataparser.depth-unit-scale-factor {unit_scale:g}"
        )
    return summary


def _frames_for(transforms: Path, registered: list, images_prefix: str) -> tuple[dict, list, list]:
    """(transforms.json content, its frames, the model image of each frame)."""
    if not transforms.exists():
        meta = _transforms_from_model(registered, images_prefix)
        return meta, meta["frames"], list(registered)
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
        frames = meta["frames"]
        paths = [posix_name(frame["file_path"]) for frame in frames]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read {transforms} as a nerfstudio transforms.json: {error}") from None
    matched = _match_frames(frames, paths, registered, transforms)
    _check_scale(frames, matched, transforms)
    return meta, frames, matched


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
                      max_pixels: int | None) -> None:
    """DIR/depths_N/<file name of depth_file_path> at the size of DIR/images_N/<file name>."""
    size = _downscaled_size(base, frame, factor, png.shape, max_pixels)
    name = PurePosixPath(frame["depth_file_path"]).name
    write_png16(safe_join(base / DOWNSCALED_DEPTHS.format(factor), name), min_pool_valid(png, size))


def _downscaled_size(base: Path, frame: dict, factor: int, full: tuple[int, int],
                     max_pixels: int | None) -> tuple[int, int]:
    """The downscaled image's own size when it exists, else nerfstudio's floor(size / N)."""
    image = base / f"images_{factor}" / PurePosixPath(posix_name(frame["file_path"])).name
    if image.is_file():
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as picture:  # reads the header only
                width, height = picture.size
        except (OSError, UnidentifiedImageError) as error:
            raise UsageError(f"cannot read the size of {image}: {error}") from None
        try:
            check_pixels(width, height, max_pixels)
        except ImageError as error:
            raise UsageError(f"{image}: {error}") from None
        if height <= full[0] and width <= full[1]:
            return height, width
        raise UsageError(f"{image} is {width}x{height}, larger than its full-size camera")
    return max(full[0] // factor, 1), max(full[1] // factor, 1)


def min_pool_valid(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint16 depth (0 = none) shrunk to size: each pixel the nearest valid depth of its block.

    Depths across an edge are never blended: a block holding near and far surfaces takes the
    near one, and a block without any valid depth stays 0.
    """
    height, width = size
    empty = np.uint32(NERFSTUDIO_DEPTH_STEPS + 1)
    values = np.where(depth > 0, depth.astype(np.uint32), empty)
    rows = (np.arange(height) * depth.shape[0]) // height
    cols = (np.arange(width) * depth.shape[1]) // width
    pooled = np.minimum.reduceat(np.minimum.reduceat(values, rows, axis=0), cols, axis=1)
    return np.where(pooled == empty, 0, pooled).astype(np.uint16)


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
    applied = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])
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
        summary = export_nerfstudio(depths, sparse, data / "transforms.json", params=params,
                                    downscales=downscales, max_pixels=max_pixels, masks=masks)
        summary.target = "dn-splatter (normal-nerfstudio)"
        summary.command = (f"ns-train dn-splatter --pipeline.model.use-depth-loss True "
                           f"normal-nerfstudio --data {shlex.quote(str(data))} "
                           "--depth-unit-scale-factor 0.001")
        return summary
    return _export_coolermap(depths, sparse, data, params, out, max_pixels,
                             Path(masks) if masks is not None else None)


def _export_coolermap(depths, sparse, data: Path, params, out, max_pixels,
                      masks: Path | None) -> ExportSummary:
    priors, _model, registered = _open(depths, sparse, params)
    out_dir = Path(out) if out is not None else data / DN_SPLATTER_DIR
    _check_glob_safe(data)
    _require_priors(priors, [image.name for image in registered])
    _require_masks(masks, priors, [image.name for image in registered])
    _check_sizes(registered, max_pixels)
    stems = coolermap_stems([image.name for image in registered])
    _refuse_stale(out_dir, {stems[image.name] + "_aligned.npy" for image in registered})

    summary = ExportSummary("dn-splatter (coolermap)", out_dir)
    for image in registered:
        stem, size = stems[image.name], _size(image)
        depth, reason = aligned_depth(priors, image.name, size, masks)
        unaligned = unaligned_depth_mm(priors, image.name, size)
        drop = rejected(masks, priors, image.name, size) if reason is None else None
        if drop is not None:
            unaligned[drop] = 0.0
        write_npy(safe_join(out_dir, stem, "_aligned.npy"), depth[..., None])
        write_npy(safe_join(out_dir, stem, ".npy"), unaligned[..., None])
        summary.images += 1
        if reason:
            summary.invalid[image.key] = reason
    summary.command = _coolermap_command(data, Path(sparse))
    if out_dir.resolve() != (data / DN_SPLATTER_DIR).resolve():
        summary.notes.append(f"note: coolermap reads DATA/{DN_SPLATTER_DIR}; move {out_dir} there")
    if not (data / "images").is_dir():
        summary.notes.append(f"note: coolermap reads the frames from {data / 'images'}/<image name>; "
                             "put them there or add --images-path to the command")
    return summary


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


def _refuse_stale(out_dir: Path, ours: set[str]) -> None:
    """Other *_aligned.npy files would join coolermap's sorted list and shift every pair."""
    found = glob.glob(os.path.join(glob.escape(str(out_dir)), "*_aligned.npy"))
    stale = sorted(os.path.basename(path) for path in found if os.path.basename(path) not in ours)
    if stale:
        raise UsageError(
            f"{out_dir} holds {len(stale)} other *_aligned.npy file(s) ({listing(stale)}) that "
            "DN-Splatter would pair with images too: delete them (or the folder) and export again"
        )


def _coolermap_command(data: Path, sparse: Path) -> str:
    colmap = os.path.relpath(sparse, data) if is_inside(sparse, data) else str(sparse.absolute())
    return (f"ns-train dn-splatter --pipeline.model.use-depth-loss True coolermap "
            f"--data {shlex.quote(str(data))} --colmap-path {shlex.quote(colmap)} "
            "--depth-unit-scale-factor 1")


__all__ = ["ExportSummary", "aligned_depth", "coolermap_stems", "export_dn_splatter",
           "export_nerfstudio", "min_pool_valid", "natural_key", "unaligned_depth_mm"]
