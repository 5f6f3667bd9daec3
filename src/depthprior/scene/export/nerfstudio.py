"""nerfstudio gets uint16 depth PNGs (and depths_N), depth_file_path per frame, sparse_pc.ply."""

from __future__ import annotations

import math
import os
import re
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ...errors import ImageError, UsageError, first_line, listing, one_line
from ...files.jsonfile import expect_fields, expect_object, read_json, write_json
from ...files.outputs import OutputFolder, atomic_write_bytes
from ...files.raster import stored_size
from ...images import DEFAULT_MAX_PIXELS, check_pixels, image_key, is_inside, posix_name, safe_join
from ..priorset import PriorSet
from ...priors.store import encode_png16
from ..weights import Folders, MaskFolders
from .common import (COLMAP_NOTES, ExportSummary, NERFSTUDIO_DEPTH_STEPS, _check_out, _check_sizes,
    _finish, _open, _require_masks, _require_priors, _size, aligned_depth,
    choose_unit, depth_span, floor_warning, pool_valid, shell_word, unit_warnings)


NERFSTUDIO_DEPTH_DIR = "depthprior_depth"
#: nerfstudio opens DATA/depths_N/<file name of depth_file_path> when it trains at 1/N size
DOWNSCALED_DEPTHS = "depths_{}"
DOWNSCALED_IMAGES = re.compile(r"images_(\d+)")
#: COLMAP world -> nerfstudio's: y and z swapped, the new z flipped (ns-process-data)
NERFSTUDIO_APPLIED = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, -1.0, 0.0, 0.0))
#: the sparse points beside transforms.json, as ns-process-data names them
SPARSE_PLY = "sparse_pc.ply"
#: poses in an existing transforms.json must match the model's scale within this
SCALE_TOLERANCE = 0.01


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
    masks: "Folders | MaskFolders" = None,
    require_points: bool = False,
) -> ExportSummary:
    """uint16 depth PNGs in units of `unit_scale` + depth_file_path in transforms.json.

    transforms: updated in place if it exists, else written from the COLMAP model with frames
    ``<images_prefix>/<image name>``; masks: folders of `depthprior consistency` or `depthprior
    exclude`, one or several (0 where one rejects or excludes); a folder (or a path not ending in .json) means
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
    masks = MaskFolders.of(masks)
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
        summary.notes.extend(unit_warnings(span, unit_scale))
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
    summary.command = (f"ns-train depth-nerfacto nerfstudio-data --data {shell_word(str(base))} "
                       f"--depth-unit-scale-factor {unit_scale!r}")
    summary.notes.extend(_colmap_parser_notes(base, out_dir, Path(sparse), priors.root, unit_scale))
    return summary


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
    """The fields this export reads or keeps, of the types nerfstudio gives them."""
    meta = expect_object(data)
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise TypeError("'frames' is not a list")
    expect_fields(meta, {"ply_file_path": str, "camera_model": str})
    if "applied_transform" in meta:
        _expect_matrix(meta["applied_transform"], ((3, 4),), "applied_transform")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise TypeError(f"frame {index} is not an object with a 'file_path' string")
        expect_fields(frame, {"depth_file_path": str, "mask_path": str, "colmap_im_id": int},
                      f"frames[{index}]")
        if "transform_matrix" in frame:
            _expect_matrix(frame["transform_matrix"], ((4, 4), (3, 4)), f"frames[{index}].transform_matrix")


def _expect_matrix(value: Any, shapes: tuple[tuple[int, int], ...], where: str) -> None:
    rows = value if isinstance(value, list) else None
    shape = (len(rows), len(rows[0])) if rows and isinstance(rows[0], list) else None
    numbers = shape is not None and all(
        isinstance(row, list) and len(row) == shape[1]
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row) for row in rows)
    if not numbers or shape not in shapes:
        wanted = " or ".join(f"{r}x{c}" for r, c in shapes)
        raise TypeError(f"{where!r} is not a {wanted} array of numbers")


def _depth_png(priors: PriorSet, image: Any, unit_scale: float, summary: ExportSummary,
               masks: MaskFolders | None = None) -> np.ndarray:
    """The image's depth as uint16 steps of unit_scale (0 = none), counted into summary."""
    depth, reason = aligned_depth(priors, image.name, _size(image), masks)
    scaled = depth.astype(np.float64) / unit_scale
    fits = (scaled >= 0.5) & (scaled < NERFSTUDIO_DEPTH_STEPS + 0.5)
    summary.out_of_range += int(np.count_nonzero((depth > 0) & ~fits))
    if reason:
        summary.invalid[image.key] = reason
    return np.where(fits, np.rint(scaled), 0).astype(np.uint16)


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


def _colmap_downscaled(out_dir: Path, factor: int) -> Path:
    return out_dir.parent / f"{out_dir.name}_{factor}"


def _colmap_parser_notes(base: Path, out_dir: Path, sparse: Path, priors_root: Path,
                         unit_scale: float) -> list[str]:
    """The command for nerfstudio's colmap parser, which reads the same depth PNGs, and the
    folder it must never be pointed at."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, base) if is_inside(path, base) else str(path.absolute())

    notes = [f"{COLMAP_NOTES[0]}: ns-train depth-nerfacto colmap --data "
             f"{shell_word(str(base))} --colmap-path {shell_word(rel(sparse))} --depths-path "
             f"{shell_word(rel(out_dir))} --depth-unit-scale-factor {unit_scale!r} (at "
             f"--downscale-factor N it reads {one_line(rel(out_dir))}_N/, written for every factor above)"]
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
