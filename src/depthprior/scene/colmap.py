"""Reading a COLMAP sparse model (binary or text) into plain numpy arrays, through pycolmap.

The three files are parsed and checked first (colmap_files: complete records, positive finite
intrinsics, sizes within the pixel cap, finite poses, existing cameras); a damaged model is a
ModelError naming the file and the record. pycolmap then reads the model (poses through
rigs/frames, 3D points). Its per-keypoint accessors cost a few microseconds each, ~10 s for a
500-image scene, so the 2D observations come from the parsed files, checked against what pycolmap
read (image names and keypoint counts); on any disagreement the slow pycolmap path is used.
pycolmap is imported only when a model is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .colmap_files import DAMAGED, ModelError, read_model_files
from ..errors import MissingDependencyError
from ..images import DEFAULT_MAX_PIXELS, image_key

MODEL_FILES = ("cameras", "images", "points3D")


@dataclass
class ModelCamera:
    camera_id: int
    model: str  # "PINHOLE", "SIMPLE_RADIAL", ...
    width: int
    height: int
    params: np.ndarray


@dataclass
class ModelImage:
    """One image of the model: its pose and the 2D observations that have a 3D point."""

    image_id: int
    name: str  # relative posix path as stored in the model, e.g. "cam0/frame_001.jpg"
    camera: ModelCamera
    registered: bool
    cam_from_world: np.ndarray | None  # 3x4 [R | t], None when not registered
    xy: np.ndarray  # Nx2 float64 pixel positions (COLMAP: pixel centres at +0.5)
    point3D_ids: np.ndarray  # N int64

    @property
    def key(self) -> str:
        return image_key(self.name)


@dataclass
class SparseModel:
    path: Path
    format: str  # "binary" or "text"
    cameras: dict[int, ModelCamera]
    images: list[ModelImage]  # sorted by name
    point_ids: np.ndarray  # sorted int64
    point_xyz: np.ndarray  # Mx3 float64, same order as point_ids
    point_rgb: np.ndarray | None = None  # Mx3 uint8, same order as point_ids

    def lookup_points(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """xyz of the given 3D point ids, and a mask of the ids that exist in the model."""
        if self.point_ids.size == 0 or ids.size == 0:
            return np.zeros((ids.size, 3)), np.zeros(ids.size, dtype=bool)
        where = np.searchsorted(self.point_ids, ids)
        where = np.clip(where, 0, self.point_ids.size - 1)
        found = self.point_ids[where] == ids
        return self.point_xyz[where], found


def model_format(path: Path) -> str:
    """'binary' or 'text' (binary wins when both are complete, as in COLMAP); ModelError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"sparse model folder not found: {path}")
    if not path.is_dir():
        raise ModelError(f"{path} is a file; pass the folder that holds cameras/images/points3D")
    for ext, kind in ((".bin", "binary"), (".txt", "text")):
        if all((path / f"{stem}{ext}").is_file() for stem in MODEL_FILES):
            return kind
    hint = ""
    nested = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    for sub in nested:
        if any((sub / f"{stem}.bin").is_file() or (sub / f"{stem}.txt").is_file() for stem in MODEL_FILES):
            hint = f"; did you mean {sub}?"
            break
    raise ModelError(
        f"{path} is not a COLMAP model: expected cameras, images and points3D "
        f"(.bin or .txt) in it{hint}"
    )


def read_model(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SparseModel:
    """Read a COLMAP model folder (binary or text) into numpy arrays. Raises ModelError.

    The files are parsed and checked record by record first (colmap_files); pycolmap then reads
    the poses (rigs and frames included) and the points.
    """
    path = Path(path)
    fmt = model_format(path)
    files = read_model_files(path, fmt, max_pixels)
    try:
        import pycolmap
    except ImportError:
        raise MissingDependencyError("pycolmap", "colmap", "align") from None
    try:
        rec = pycolmap.Reconstruction(str(path))
    except Exception as error:  # pycolmap raises ValueError, IndexError, RuntimeError ...
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot read the COLMAP model in {path}: {reason}") from None

    cameras = {
        int(cid): ModelCamera(
            camera_id=int(cid),
            model=str(cam.model_name),
            width=int(cam.width),
            height=int(cam.height),
            params=np.asarray(cam.params, dtype=np.float64),
        )
        for cid, cam in rec.cameras.items()
    }
    fast = True
    images: list[ModelImage] = []
    for image_id, image in rec.images.items():
        record = files.images.get(int(image_id)) if fast else None
        same = record is not None and record.name == image.name
        if not same or record.num_points2D != image.num_points2D():
            fast = False  # the files disagree with pycolmap: trust pycolmap from here on
            xy, ids = _observations_from_pycolmap(image)
        else:
            xy, ids = record.xy, record.point3D_ids
        images.append(_model_image(path, image, cameras, xy, ids))
    images.sort(key=lambda item: item.name)

    count = rec.num_points3D()
    point_ids = np.empty(count, dtype=np.int64)
    point_xyz = np.empty((count, 3), dtype=np.float64)
    point_rgb = np.empty((count, 3), dtype=np.uint8)
    for row, (pid, point) in enumerate(rec.points3D.items()):
        point_ids[row] = pid
        point_xyz[row] = point.xyz
        point_rgb[row] = point.color
    order = np.argsort(point_ids, kind="stable")
    return SparseModel(path, fmt, cameras, images, point_ids[order], point_xyz[order],
                       point_rgb[order])


def _model_image(path: Path, image: Any, cameras: dict[int, ModelCamera], xy: np.ndarray,
                 ids: np.ndarray) -> ModelImage:
    name = str(image.name)
    camera = cameras.get(int(image.camera_id))
    if camera is None:
        raise ModelError(f"{path}: image {name!r} uses camera {int(image.camera_id)}, which the "
                         f"model does not have; {DAMAGED}")
    registered = bool(image.has_pose)
    pose = np.asarray(image.cam_from_world().matrix(), dtype=np.float64) if registered else None
    if pose is not None and not np.all(np.isfinite(pose)):
        raise ModelError(f"{path}: image {name!r} has a pose that is not finite; {DAMAGED}")
    return ModelImage(image_id=int(image.image_id), name=name, camera=camera,
                      registered=registered, cam_from_world=pose, xy=xy, point3D_ids=ids)


# ---------------------------------------------------------------- observations

def _observations_from_pycolmap(image: Any) -> tuple[np.ndarray, np.ndarray]:
    points = [p for p in image.points2D if p.has_point3D()]
    if not points:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    xy = np.array([p.xy for p in points], dtype=np.float64).reshape(-1, 2)
    ids = np.array([p.point3D_id for p in points], dtype=np.uint64).astype(np.int64)
    return xy, ids
