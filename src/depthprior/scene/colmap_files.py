"""The records of a COLMAP model's cameras, images and points3D files, read and checked.

pycolmap reads a truncated cameras.bin as zeros and a NaN pose as it is; everything downstream
(fits, exports) would then compute with garbage and exit 0. So the three files are parsed here
first, record by record, and refused with a ModelError naming the file and the record when a
record is short or the file has bytes left over, a camera has a non-positive or non-finite
focal length, a non-finite parameter, an empty size or one above the pixel cap, an image has a
zero or non-finite quaternion, a non-finite translation or refers to a camera that does not
exist, or a 3D point is not finite.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DepthpriorError, UsageError
from ..images import DEFAULT_MAX_PIXELS, check_pixels


class ModelError(UsageError):
    """The sparse folder is not a readable COLMAP model."""


#: COLMAP camera model id -> (name, number of parameters, number of focal lengths first)
CAMERA_MODELS: dict[int, tuple[str, int, int]] = {
    0: ("SIMPLE_PINHOLE", 3, 1),
    1: ("PINHOLE", 4, 2),
    2: ("SIMPLE_RADIAL", 4, 1),
    3: ("RADIAL", 5, 1),
    4: ("OPENCV", 8, 2),
    5: ("OPENCV_FISHEYE", 8, 2),
    6: ("FULL_OPENCV", 12, 2),
    7: ("FOV", 5, 2),
    8: ("SIMPLE_RADIAL_FISHEYE", 4, 1),
    9: ("RADIAL_FISHEYE", 5, 1),
    10: ("THIN_PRISM_FISHEYE", 12, 2),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16, 2),
    12: ("SIMPLE_DIVISION", 4, 1),
    13: ("DIVISION", 5, 2),
    14: ("SIMPLE_FISHEYE", 3, 1),
    15: ("FISHEYE", 4, 2),
    16: ("EUCM", 6, 2),
    17: ("EQUIRECTANGULAR", 2, 0),
}
MODEL_IDS = {name: model_id for model_id, (name, _count, _focal) in CAMERA_MODELS.items()}
INVALID_POINT = -1  # COLMAP's invalid point3D id, 2**64 - 1, read as int64
DAMAGED = "the model is damaged: export it again from COLMAP"
_UNSUPPORTED = ("not a camera model depthprior supports (COLMAP's: "
                + ", ".join(name for name, _count, _focal in CAMERA_MODELS.values())
                + "); undistort the images to PINHOLE (colmap image_undistorter) and pass that model")
_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass
class CameraRecord:
    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ImageRecord:
    image_id: int
    name: str
    qvec: np.ndarray  # (w, x, y, z) as stored
    tvec: np.ndarray
    camera_id: int
    num_points2D: int
    xy: np.ndarray  # Nx2, the keypoints that have a 3D point
    point3D_ids: np.ndarray  # N int64


@dataclass
class ModelFiles:
    cameras: dict[int, CameraRecord]
    images: dict[int, ImageRecord]
    point_ids: np.ndarray  # int64, file order
    point_xyz: np.ndarray  # Mx3


def read_model_files(path: Path, fmt: str,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ModelFiles:
    """Parse and check cameras, images and points3D (.bin or .txt). Raises ModelError."""
    ext = ".bin" if fmt == "binary" else ".txt"
    files = {stem: path / f"{stem}{ext}" for stem in ("cameras", "images", "points3D")}
    readers = (
        (_cameras_bin, _images_bin, _points_bin) if fmt == "binary"
        else (_cameras_txt, _images_txt, _points_txt)
    )
    cameras = _parse(files["cameras"], readers[0])
    images = _parse(files["images"], readers[1])
    point_ids, point_xyz = _parse(files["points3D"], readers[2])
    for camera in cameras.values():
        check_camera(files["cameras"], camera, max_pixels)
    for image in images.values():
        check_image(files["images"], image, cameras, files["cameras"].name)
    check_points(files["points3D"], point_ids, point_xyz)
    return ModelFiles(cameras, images, point_ids, point_xyz)


def _parse(file: Path, reader):
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read {file}: {error.strerror or error}") from None
    try:
        return reader(file, data)
    except ModelError:
        raise
    except (ValueError, UnicodeDecodeError, struct.error) as error:
        raise ModelError(f"{file}: unreadable ({error}); {DAMAGED}") from None


# ---------------------------------------------------------------- checks

def check_camera(file: Path, camera: CameraRecord, max_pixels: int | None) -> None:
    where = f"{file}: camera {camera.camera_id} ({camera.model})"
    try:
        check_pixels(camera.width, camera.height, max_pixels)
    except DepthpriorError:
        size = f"size {camera.width}x{camera.height}"
        why = "is empty" if min(camera.width, camera.height) <= 0 else (
            f"is above the pixel cap of {max_pixels / 1e6:g} MP")
        raise ModelError(f"{where}: {size} {why}; {DAMAGED}") from None
    params = camera.params
    if not np.all(np.isfinite(params)):
        raise ModelError(f"{where}: parameters {_numbers(params)} are not all finite; {DAMAGED}")
    focal_count = CAMERA_MODELS[MODEL_IDS[camera.model]][2]
    if np.any(params[:focal_count] <= 0):
        raise ModelError(f"{where}: focal length {_numbers(params[:focal_count])} is not "
                         f"positive; {DAMAGED}")


def check_image(file: Path, image: ImageRecord, cameras: dict[int, CameraRecord],
                cameras_file: str) -> None:
    where = f"{file}: image {image.name!r} (id {image.image_id})"
    if not np.all(np.isfinite(image.qvec)) or not float(np.linalg.norm(image.qvec)) > 1e-12:
        raise ModelError(f"{where}: rotation quaternion {_numbers(image.qvec)} is zero or not "
                         f"finite; {DAMAGED}")
    if not np.all(np.isfinite(image.tvec)):
        raise ModelError(f"{where}: translation {_numbers(image.tvec)} is not finite; {DAMAGED}")
    if image.camera_id not in cameras:
        raise ModelError(f"{where}: uses camera {image.camera_id}, which {cameras_file} does not "
                         f"have; {DAMAGED}")
    if not np.all(np.isfinite(image.xy)):
        raise ModelError(f"{where}: a keypoint position is not finite; {DAMAGED}")


def check_points(file: Path, ids: np.ndarray, xyz: np.ndarray) -> None:
    bad = ~np.all(np.isfinite(xyz), axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ModelError(f"{file}: point3D {int(ids[row])} has position {_numbers(xyz[row])}, "
                         f"not finite; {DAMAGED}")


def _numbers(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in np.ravel(values)) + "]"


def _unique(file: Path, table: dict, key: int, what: str) -> None:
    if key in table:
        raise ModelError(f"{file}: {what} id {key} appears twice; {DAMAGED}")


# ---------------------------------------------------------------- binary

class _Bytes:
    """A cursor over a binary model file that names the record a short read falls in."""

    def __init__(self, file: Path, data: bytes):
        self.file, self.data, self.offset = file, data, 0

    def truncated(self, record: str) -> ModelError:
        return ModelError(f"{self.file} is truncated at {record} ({len(self.data)} bytes); "
                          f"{DAMAGED}")

    def take(self, fmt: str, record: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise self.truncated(record)
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def array(self, dtype: np.dtype, count: int, record: str) -> np.ndarray:
        if count > (len(self.data) - self.offset) // dtype.itemsize:
            raise self.truncated(record)
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += count * dtype.itemsize
        return values

    def name(self, record: str) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise ModelError(f"{self.file} is truncated at {record} (no end to its name); "
                             f"{DAMAGED}")
        text = self.data[self.offset:end].decode("utf-8")
        self.offset = end + 1
        return text

    def count(self, smallest_record: int, what: str) -> int:
        (count,) = self.take("<Q", f"the number of {what}")
        if count > (len(self.data) - self.offset) // smallest_record:
            raise ModelError(f"{self.file} declares {count} {what} but is only "
                             f"{len(self.data)} bytes: truncated; {DAMAGED}")
        return count

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise ModelError(f"{self.file} has {len(self.data) - self.offset} bytes after its "
                             f"last record; {DAMAGED}")


def _cameras_bin(file: Path, data: bytes) -> dict[int, CameraRecord]:
    reader = _Bytes(file, data)
    cameras: dict[int, CameraRecord] = {}
    for index in range(reader.count(24, "cameras")):
        camera_id, model_id, width, height = reader.take("<iiQQ", f"camera record {index + 1}")
        if model_id not in CAMERA_MODELS:
            raise ModelError(f"{file}: camera {camera_id} has camera model id {model_id}, "
                             f"{_UNSUPPORTED}")
        model, count, _focal = CAMERA_MODELS[model_id]
        params = reader.array(np.dtype("<f8"), count, f"the parameters of camera {camera_id}")
        _unique(file, cameras, camera_id, "camera")
        cameras[camera_id] = CameraRecord(camera_id, model, int(width), int(height),
                                          params.astype(np.float64))
    reader.finish()
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


def _images_bin(file: Path, data: bytes) -> dict[int, ImageRecord]:
    reader = _Bytes(file, data)
    images: dict[int, ImageRecord] = {}
    for index in range(reader.count(73, "images")):
        record = f"image record {index + 1}"
        image_id, *pose, camera_id = reader.take("<I7dI", record)
        name = reader.name(f"the name of image {image_id}")
        (num,) = reader.take("<Q", f"the keypoint count of image {name!r}")
        rows = reader.array(_POINT2D, num, f"the keypoints of image {name!r}")
        xy = np.stack([rows["x"], rows["y"]], axis=1)
        _unique(file, images, image_id, "image")
        images[image_id] = _image(image_id, name, pose, camera_id, xy, rows["id"].copy())
    reader.finish()
    return images


def _image(image_id: int, name: str, pose, camera_id: int, xy: np.ndarray,
           ids: np.ndarray) -> ImageRecord:
    keep = ids != INVALID_POINT
    return ImageRecord(
        image_id=int(image_id), name=name,
        qvec=np.asarray(pose[:4], dtype=np.float64), tvec=np.asarray(pose[4:7], dtype=np.float64),
        camera_id=int(camera_id), num_points2D=int(len(ids)),
        xy=np.ascontiguousarray(xy[keep]), point3D_ids=np.ascontiguousarray(ids[keep]),
    )


_POINT3D = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length; then the track


def _points_bin(file: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    reader = _Bytes(file, data)
    count = reader.count(_POINT3D.size, "points3D")
    offset, end = reader.offset, len(data)
    ids, xyz = [], []
    for row in range(count):  # one unpack per point: the tracks are only stepped over
        if offset + _POINT3D.size > end:
            raise reader.truncated(f"point3D record {row + 1}")
        point_id, x, y, z, _r, _g, _b, _error, track = _POINT3D.unpack_from(data, offset)
        offset += _POINT3D.size + 8 * track
        ids.append(point_id)
        xyz.append((x, y, z))
    if offset > end:
        raise reader.truncated(f"the track of point3D {ids[-1]}")
    reader.offset = offset
    reader.finish()
    point_ids = np.array(ids, dtype=np.uint64).astype(np.int64)
    return point_ids, np.array(xyz, dtype=np.float64).reshape(-1, 3)


# ---------------------------------------------------------------- text

def _data_lines(data: bytes) -> list[str]:
    return [line for line in data.decode("utf-8").splitlines() if not line.startswith("#")]


def _cameras_txt(file: Path, data: bytes) -> dict[int, CameraRecord]:
    cameras: dict[int, CameraRecord] = {}
    for line in _data_lines(data):
        fields = line.split()
        if not fields:
            continue
        where = f"{file}: camera line {line[:40]!r}"
        if len(fields) >= 4 and fields[1] not in MODEL_IDS and _MODEL_NAME.fullmatch(fields[1]):
            raise ModelError(f"{where}: camera model {fields[1]} is {_UNSUPPORTED}")
        if len(fields) < 4 or fields[1] not in MODEL_IDS:
            raise ModelError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS; {DAMAGED}")
        _name, count, _focal = CAMERA_MODELS[MODEL_IDS[fields[1]]]
        if len(fields) != 4 + count:
            raise ModelError(f"{where}: {fields[1]} needs {count} parameters, the line has "
                             f"{len(fields) - 4}; {DAMAGED}")
        camera_id, width, height = _ints(where, fields[0], fields[2], fields[3])
        _unique(file, cameras, camera_id, "camera")
        cameras[camera_id] = CameraRecord(camera_id, fields[1], width, height,
                                          _floats(where, fields[4:]))
    return cameras


def _images_txt(file: Path, data: bytes) -> dict[int, ImageRecord]:
    lines = _data_lines(data)
    while lines and not lines[-1].strip():  # the points line may be empty: strip only the tail
        lines.pop()
    if len(lines) % 2:
        lines.append("")
    images: dict[int, ImageRecord] = {}
    for header, points in zip(lines[0::2], lines[1::2]):
        fields = header.strip().split(maxsplit=9)
        where = f"{file}: image line {header[:60]!r}"
        if len(fields) != 10:
            raise ModelError(f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME; "
                             f"{DAMAGED}")
        image_id, camera_id = _ints(where, fields[0], fields[8])
        values = _floats(f"{where} (its keypoints)", points.split())
        if values.size % 3:
            raise ModelError(f"{where}: its keypoint line holds {values.size} numbers, not "
                             f"X Y POINT3D_ID triples; {DAMAGED}")
        table = values.reshape(-1, 3)
        _unique(file, images, image_id, "image")
        images[image_id] = _image(image_id, fields[9], _floats(where, fields[1:8]), camera_id,
                                  table[:, :2].copy(), table[:, 2].astype(np.int64))
    return images


def _points_txt(file: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    ids: list[int] = []
    xyz: list[tuple[float, float, float]] = []
    for line in _data_lines(data):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8 or (len(fields) - 8) % 2:
            where = f"{file}: point3D line {line[:40]!r}"
            raise ModelError(f"{where}: expected POINT3D_ID X Y Z R G B ERROR and "
                             f"IMAGE_ID POINT2D_IDX pairs; {DAMAGED}")
        try:
            ids.append(int(fields[0]))
            xyz.append((float(fields[1]), float(fields[2]), float(fields[3])))
        except ValueError:
            raise ModelError(f"{file}: point3D line {line[:40]!r}: a value is not a number; "
                             f"{DAMAGED}") from None
    return np.array(ids, dtype=np.int64), np.array(xyz, dtype=np.float64).reshape(-1, 3)


def _ints(where: str, *texts: str) -> list[int]:
    try:
        return [int(text) for text in texts]
    except ValueError:
        raise ModelError(f"{where}: {' '.join(texts)!r} are not whole numbers; {DAMAGED}") from None


def _floats(where: str, texts: list[str]) -> np.ndarray:
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError:
        raise ModelError(f"{where}: a value is not a number; {DAMAGED}") from None
