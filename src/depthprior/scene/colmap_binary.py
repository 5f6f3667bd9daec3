"""A COLMAP model as the three classic binary files (cameras.bin, images.bin, points3D.bin),
with its images renumbered in a given order.

Some consumers read only the binary files (DN-Splatter's coolermap: nerfstudio's
``colmap_to_json`` opens cameras.bin and images.bin), and some pair data by image id order
(coolermap takes the intrinsics in image id order and the poses in natural name order). A text
model is converted with pycolmap (into a temporary folder, read back); a binary one is read
as it is. Renumbering rewrites the image ids in images.bin and in every track of points3D.bin.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import MissingDependencyError
from ..files.place import read_bytes
from .colmap_files import ModelError

MODEL_FILES = ("cameras.bin", "images.bin", "points3D.bin")
_COUNT = struct.Struct("<Q")
_IMAGE_HEAD = struct.Struct("<i4d3di")  # image id, qvec (w x y z), tvec, camera id
_POINT2D = 24  # x, y (double), point3D id (int64)
_POINT3D = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length
_TRACK = 8  # image id, point2D index (int32 each)


def binary_model(sparse: Path, fmt: str) -> dict[str, bytes]:
    """{file name: bytes} of the model in `sparse` ("binary" or "text") as binary files."""
    if fmt == "binary":
        return {name: read_bytes(sparse / name) for name in MODEL_FILES}
    try:
        import pycolmap
    except ImportError:
        raise MissingDependencyError("pycolmap", "colmap", "export") from None
    with tempfile.TemporaryDirectory(prefix="depthprior-colmap-") as scratch:
        pycolmap.Reconstruction(str(sparse)).write_binary(scratch)
        return {name: read_bytes(Path(scratch) / name) for name in MODEL_FILES}


def image_records(images_bin: bytes) -> list[tuple[int, str, bytes]]:
    """(image id, name, the record's bytes after its id) of every image, in file order."""
    try:
        (count,), offset = _COUNT.unpack_from(images_bin, 0), _COUNT.size
        records = []
        for _ in range(count):
            start = offset
            (image_id, *_pose, _camera) = _IMAGE_HEAD.unpack_from(images_bin, offset)
            offset += _IMAGE_HEAD.size
            end = images_bin.index(b"\0", offset)
            name = images_bin[offset:end].decode("utf-8")
            (points,) = _COUNT.unpack_from(images_bin, end + 1)
            offset = end + 1 + _COUNT.size + points * _POINT2D
            if offset > len(images_bin):
                raise ValueError
            records.append((image_id, name, images_bin[start + 4:offset]))
    except (struct.error, ValueError, UnicodeDecodeError):
        raise ModelError("images.bin is truncated or damaged; re-export the model") from None
    return records


def renumbered(files: dict[str, bytes], sort_key: Callable[[str], Any]) -> dict[str, bytes]:
    """The model with its images sorted by `sort_key(name)` and numbered 1, 2, ... in that
    order, images.bin written in it too."""
    records = {name: (image_id, rest) for image_id, name, rest in image_records(files["images.bin"])}
    order = sorted(records, key=sort_key)
    new_id = {records[name][0]: rank + 1 for rank, name in enumerate(order)}
    images = [_COUNT.pack(len(order))]
    for rank, name in enumerate(order):
        images.append(struct.pack("<i", rank + 1) + records[name][1])
    return {"cameras.bin": files["cameras.bin"], "images.bin": b"".join(images),
            "points3D.bin": _renumber_tracks(files["points3D.bin"], new_id)}


def _renumber_tracks(points_bin: bytes, new_id: dict[int, int]) -> bytes:
    data = bytearray(points_bin)
    old = np.array(sorted(new_id), dtype=np.int64)
    new = np.array([new_id[key] for key in old], dtype=np.int32)
    (count,), offset = _COUNT.unpack_from(data, 0), _COUNT.size
    for _ in range(count):
        track = _POINT3D.unpack_from(data, offset)[-1]
        offset += _POINT3D.size
        pairs = np.frombuffer(data, dtype="<i4", count=2 * track, offset=offset).reshape(-1, 2).copy()
        where = np.clip(np.searchsorted(old, pairs[:, 0]), 0, len(old) - 1)
        known = old[where] == pairs[:, 0]
        pairs[known, 0] = new[where[known]]
        data[offset:offset + track * _TRACK] = pairs.astype("<i4").tobytes()
        offset += track * _TRACK
    return bytes(data)
