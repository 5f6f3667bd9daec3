"""Depth at the scene's scale, from aligned priors, in the layouts nerfstudio and DN-Splatter read.

Both exports need depth_params.json from `depthprior align` (they fail with one line asking for
it rather than fitting silently with other settings) and the COLMAP model it was fitted on.
Each image's prior is loaded exactly as a 3DGS trainer would (`DepthPriors`: png / 2**16,
bilinear resize to the camera's size, ``scale * x + offset``), then ``depth = 1 / that`` in the
model's units; pixels whose aligned inverse depth is <= 0 have no depth (0). Images whose fit
failed or is an outlier are written as all-invalid maps, because both trainers need one depth
file per frame and treat 0 as "no depth".

nerfstudio (``ns-train ... nerfstudio-data --data DIR``, DIR holding transforms.json):
    DEPTH_DIR/<image name without ext>.png: uint16 depth in units of ``unit_scale`` scene units
    (default 1e-3: "millimetres", nerfstudio's default ``depth_unit_scale_factor``), 0 invalid;
    every frame gets ``"depth_file_path"`` relative to transforms.json. transforms.json is
    updated in place when it exists (its poses must be at the COLMAP model's scale: checked)
    or written from the model (nerfstudio's COLMAP conventions) when it does not.

DN-Splatter (``--data DATA``, its COLMAP dataparsers):
    DATA/mono_depth/<stem>_aligned.npy: float32 (H, W, 1) z-depth in the model's units (what its
    loaders pick first, with depth_unit_scale_factor 1), 0 invalid;
    DATA/mono_depth/<stem>.npy: float32 (H, W, 1) the unaligned prediction as depth x 1000
    (its convention for monocular depth in millimetres: exact for metric models, which predict
    1/m; relative units for disparity models), 0 where undefined.
    <stem> is the image's file name without extension: DN-Splatter pairs depth files with images
    by sorted position, so names must be unique and every registered image gets a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from .errors import UsageError
from .images import image_key, posix_name
from .priorset import PriorSet
from .store import PNG_MAX, atomic_write_bytes, read_png16, write_npy, write_png16


PARAMS_NAME = "depth_params.json"
NERFSTUDIO_DEPTH_DIR = "depthprior_depth"
DN_SPLATTER_DIR = "mono_depth"
UINT16_MAX = 65535
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
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"export {self.target}: {self.images} image(s) -> {self.out}"]
        if self.transforms is not None:
            lines.append(f"depth_file_path set for every frame in {self.transforms}")
        if self.invalid:
            shown = ", ".join(f"{k} ({v})" for k, v in list(self.invalid.items())[:5])
            more = f" and {len(self.invalid) - 5} more" if len(self.invalid) > 5 else ""
            lines.append(f"{len(self.invalid)} written as all-invalid (no usable fit): {shown}{more}")
        if self.out_of_range:
            lines.append(f"{self.out_of_range} pixel(s) outside the uint16 range left invalid")
        lines.extend(self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------- shared

def _open(depths: Path | str, sparse: Path | str, params: Path | str | None):
    from .colmap import read_model

    sparse = Path(sparse)
    params_path = Path(params) if params is not None else sparse / PARAMS_NAME
    if params_path.is_dir():
        params_path = params_path / PARAMS_NAME
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
        shown = ", ".join(repr(n) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UsageError(
            f"no depth prior in {priors.root} for {len(missing)} image(s) of the model: "
            f"{shown}{more}; run `depthprior generate` on the model's images"
        )


def aligned_depth(priors: PriorSet, name: str, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """(H, W) float32 z-depth in the model's units (0 = none) and why it is all-invalid, if so."""
    prior = priors.load(name, size)
    if not prior.reliable:
        return np.zeros(size, dtype=np.float32), prior.reason or "unreliable"
    inverse = prior.inverse_depth.astype(np.float64)
    valid = np.isfinite(inverse) & (inverse > 0)
    depth = np.zeros(size, dtype=np.float64)
    np.divide(1.0, inverse, out=depth, where=valid)
    return depth.astype(np.float32), None


def unaligned_depth_mm(priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: 1000 / (the prior's raw inverse depth), 0 where that is <= 0."""
    png = read_png16(priors.path(name))
    record = priors.record(name) or {}
    unit = png.astype(np.float32) / np.float32(PNG_MAX)
    if unit.shape != size:
        unit = cv2.resize(unit, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if "raw_min" in record and "raw_max" in record:
        low, high = float(record["raw_min"]), float(record["raw_max"])
        raw = low + unit.astype(np.float64) * (high - low)
    else:  # no manifest: the normalised values, as 3DGS reads them
        raw = unit.astype(np.float64) * (PNG_MAX / 65536.0)
    depth = np.zeros(size, dtype=np.float64)
    np.divide(1000.0, raw, out=depth, where=raw > 0)
    return depth.astype(np.float32)


def _size(image: Any) -> tuple[int, int]:
    return int(image.camera.height), int(image.camera.width)


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
) -> ExportSummary:
    """uint16 depth PNGs in units of `unit_scale` + depth_file_path in transforms.json.

    transforms: updated in place if it exists, else written from the COLMAP model with frames
    ``<images_prefix>/<image name>``; a folder (or a path not ending in .json) means
    FOLDER/transforms.json. out: depth folder (default DIR/depthprior_depth beside
    transforms.json). unit_scale: nerfstudio's depth_unit_scale_factor (pass the same value to
    ns-train when it is not the default 1e-3).
    """
    if not unit_scale > 0:
        raise UsageError("--unit-scale must be > 0")
    transforms = Path(transforms)
    if transforms.is_dir() or transforms.suffix.lower() != ".json":
        transforms = transforms / "transforms.json"  # a (new) dataset folder
    priors, model, registered = _open(depths, sparse, params)
    base = transforms.parent
    out_dir = Path(out) if out is not None else base / NERFSTUDIO_DEPTH_DIR

    if transforms.exists():
        try:
            meta = json.loads(transforms.read_text(encoding="utf-8"))
            frames = meta["frames"]
            paths = [posix_name(frame["file_path"]) for frame in frames]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"cannot read {transforms} as a nerfstudio transforms.json: {error}") from None
        matched = _match_frames(frames, paths, registered, transforms)
        _check_scale(frames, matched, transforms)
    else:
        meta = _transforms_from_model(registered, images_prefix)
        frames = meta["frames"]
        matched = list(registered)
    _require_priors(priors, [image.name for image in matched])

    summary = ExportSummary("nerfstudio", out_dir, transforms=transforms)
    for frame, image in zip(frames, matched):
        size = _size(image)
        depth, reason = aligned_depth(priors, image.name, size)
        scaled = depth.astype(np.float64) / unit_scale
        fits = (scaled >= 0.5) & (scaled < UINT16_MAX + 0.5)
        summary.out_of_range += int(np.count_nonzero((depth > 0) & ~fits))
        png = np.where(fits, np.rint(scaled), 0).astype(np.uint16)
        target = out_dir / f"{image.key}.png"
        write_png16(target, png)
        frame["depth_file_path"] = Path(os.path.relpath(target, base)).as_posix()
        summary.images += 1
        if reason:
            summary.invalid[image.key] = reason
    meta["depth_unit_scale_factor"] = unit_scale  # informative: nerfstudio takes it from ns-train
    text = json.dumps(meta, indent=4)
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
        shown = ", ".join(repr(p) for p in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise UsageError(
            f"{len(unmatched)} frame(s) of {transforms} are not registered images of the COLMAP "
            f"model: {shown}{more}"
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
) -> ExportSummary:
    """DATA/mono_depth/<stem>.npy and <stem>_aligned.npy for every registered image."""
    priors, _model, registered = _open(depths, sparse, params)
    out_dir = Path(out) if out is not None else Path(data) / DN_SPLATTER_DIR
    stems: dict[str, list[str]] = {}
    for image in registered:
        stems.setdefault(PurePosixPath(image.name).stem, []).append(image.name)
    clashes = {stem: names for stem, names in stems.items() if len(names) > 1}
    if clashes:
        stem, names = next(iter(clashes.items()))
        raise UsageError(
            f"DN-Splatter names depth files by file name only, and {len(clashes)} name(s) "
            f"repeat across folders (e.g. {stem!r}: {', '.join(names[:3])}); rename the frames"
        )
    _require_priors(priors, [image.name for image in registered])

    summary = ExportSummary("dn-splatter", out_dir)
    written = set()
    for image in registered:
        stem = PurePosixPath(image.name).stem
        size = _size(image)
        depth, reason = aligned_depth(priors, image.name, size)
        write_npy(out_dir / f"{stem}_aligned.npy", depth[..., None])
        write_npy(out_dir / f"{stem}.npy", unaligned_depth_mm(priors, image.name, size)[..., None])
        written.update({f"{stem}_aligned.npy", f"{stem}.npy"})
        summary.images += 1
        if reason:
            summary.invalid[stem] = reason
    stale = sorted(p.name for p in out_dir.glob("*.npy") if p.name not in written)
    if stale:
        summary.notes.append(
            f"warning: {len(stale)} other .npy file(s) in {out_dir} (e.g. {stale[0]}) will shift "
            "DN-Splatter's pairing of depth files with images; delete them"
        )
    return summary


__all__ = ["ExportSummary", "aligned_depth", "export_dn_splatter", "export_nerfstudio",
           "unaligned_depth_mm"]
