"""Reading a COLMAP sparse model (binary or text) into plain numpy arrays, through pycolmap.

pycolmap reads and validates the model (cameras, poses, rigs/frames, 3D points). Its per-keypoint
accessors cost a few microseconds each, which is ~10 s for a 500-image scene, so the 2D
observations are taken from images.bin / images.txt with numpy instead, and checked against what
pycolmap read (image names and keypoint counts); on any disagreement the slow pycolmap path is
used. pycolmap is imported only when a model is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingDependencyError, UsageError
from .images import image_key

MODEL_FILES = ("cameras", "images", "points3D")


class ModelError(UsageError):
    """The sparse folder is not a readable COLMAP model."""


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

    @property
    def num_registered(self) -> int:
        return sum(image.registered for image in self.images)

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


def read_model(path: Path | str) -> SparseModel:
    """Read a COLMAP model folder (binary or text) into numpy arrays. Raises ModelError."""
    path = Path(path)
    fmt = model_format(path)
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

    fast = _observations_from_files(path, fmt)
    images: list[ModelImage] = []
    for image_id, image in rec.images.items():
        image_id = int(image_id)
        name = str(image.name)
        observed = fast.get(image_id) if fast is not None else None
        if observed is None or observed[0] != name or observed[1] != image.num_points2D():
            if fast is not None:
                fast = None  # the files disagree with pycolmap: trust pycolmap from here on
            xy, ids = _observations_from_pycolmap(image)
        else:
            xy, ids = observed[2], observed[3]
        registered = bool(image.has_pose)
        pose = np.asarray(image.cam_from_world().matrix(), dtype=np.float64) if registered else None
        images.append(
            ModelImage(
                image_id=image_id,
                name=name,
                camera=cameras[int(image.camera_id)],
                registered=registered,
                cam_from_world=pose,
                xy=xy,
                point3D_ids=ids,
            )
        )
    images.sort(key=lambda item: item.name)

    count = rec.num_points3D()
    point_ids = np.empty(count, dtype=np.int64)
    point_xyz = np.empty((count, 3), dtype=np.float64)
    for row, (pid, point) in enumerate(rec.points3D.items()):
        point_ids[row] = pid
        point_xyz[row] = point.xyz
    order = np.argsort(point_ids, kind="stable")
    return SparseModel(path, fmt, cameras, images, point_ids[order], point_xyz[order])


# ---------------------------------------------------------------- observations

def _observations_from_pycolmap(image: Any) -> tuple[np.ndarray, np.ndarray]:
    points = [p for p in image.points2D if p.has_point3D()]
    if not points:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    xy = np.array([p.xy for p in points], dtype=np.float64).reshape(-1, 2)
    ids = np.array([p.point3D_id for p in points], dtype=np.uint64).astype(np.int64)
    return xy, ids


Observed = tuple[str, int, np.ndarray, np.ndarray]  # name, num_points2D, xy, point3D ids


def _observations_from_files(path: Path, fmt: str) -> dict[int, Observed] | None:
    """Per image id: name, keypoint count, and the observations with a 3D point; None on failure."""
    try:
        if fmt == "binary":
            return _parse_images_bin((path / "images.bin").read_bytes())
        return _parse_images_txt((path / "images.txt").read_text(encoding="utf-8"))
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
_INVALID = -1  # COLMAP's invalid point3D id, 2**64 - 1, read as int64


def _keep_observed(xy: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids != _INVALID
    return np.ascontiguousarray(xy[keep]), np.ascontiguousarray(ids[keep])


def _parse_images_bin(data: bytes) -> dict[int, Observed]:
    (count,) = struct.unpack_from("<Q", data, 0)
    offset = 8
    out: dict[int, Observed] = {}
    for _ in range(count):
        (image_id,) = struct.unpack_from("<I", data, offset)
        offset += 4 + 7 * 8 + 4  # image id, qvec + tvec, camera id
        end = data.index(b"\0", offset)
        name = data[offset:end].decode("utf-8")
        offset = end + 1
        (num,) = struct.unpack_from("<Q", data, offset)
        offset += 8
        rows = np.frombuffer(data, dtype=_POINT2D, count=num, offset=offset)
        offset += num * _POINT2D.itemsize
        xy = np.stack([rows["x"], rows["y"]], axis=1)
        out[int(image_id)] = (name, int(num), *_keep_observed(xy, rows["id"].copy()))
    if offset != len(data):
        raise ValueError("trailing bytes in images.bin")
    return out


def _parse_images_txt(text: str) -> dict[int, Observed]:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    # two lines per image; the points line may be empty, so strip only trailing blank lines
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 2:
        lines.append("")
    out: dict[int, Observed] = {}
    for header, points in zip(lines[0::2], lines[1::2]):
        fields = header.strip().split(maxsplit=9)
        if len(fields) != 10:
            raise ValueError("bad image line")
        values = np.array(points.split(), dtype=np.float64)
        if values.size % 3:
            raise ValueError("bad points line")
        table = values.reshape(-1, 3)
        ids = table[:, 2].astype(np.int64)
        out[int(fields[0])] = (fields[9], len(table), *_keep_observed(table[:, :2].copy(), ids))
    return out
