"""Synthetic scenes with known truth, for align and exporter tests.

A closed room (so every ray hits something) with a sphere and a cube inside; pinhole cameras on a
ring look at the middle. Everything is ray cast exactly, so the true depth of every pixel and of
every SfM point is known. `make_scene` writes:

    ROOT/images/<name>                  the frames (8-bit, shaded checkerboard), optional
    ROOT/sparse/0/                      a COLMAP model: cameras, images, points3D (.bin or .txt)
    ROOT/depths/<name without ext>.png  uint16 inverse-depth priors, png = a * (1/z) + b with a
                                        random affine per image, at prior_scale x the image size

Names are posix paths; with subfolders=True they alternate between cam0/ and cam1/. The model is
written as COLMAP 3.x text by hand; the binary model is that text read and rewritten by pycolmap.

    scene = make_scene(tmp_path, n_images=12, corrupt=0.1)
    scene.true_scale[name], scene.true_offset[name]   # 1/z = scale * png / 65536 + offset
    scene.inverse_depth_error(name, scale, offset)    # mean |fit - truth| / truth over pixels
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np  # imported before pycolmap: see the note in convert_to_binary

PNG_SCALE = 65536.0  # trainers read png / 2**16

# geometry (world: z up)
ROOM_LO = np.array([-6.0, -6.0, 0.0])
ROOM_HI = np.array([6.0, 6.0, 5.0])
SPHERE_CENTRE = np.array([-0.6, 0.5, 1.0])
SPHERE_RADIUS = 0.8
CUBE_LO = np.array([1.0, -1.5, 0.0])
CUBE_HI = np.array([2.0, -0.5, 1.0])


@dataclass
class Scene:
    root: Path
    sparse: Path  # ROOT/sparse/0
    depths: Path  # ROOT/depths
    images: Path  # ROOT/images (may be empty when write_images=False)
    names: list[str]  # COLMAP image names, e.g. "cam0/frame_000.jpg", in model order
    width: int  # stored image size = the camera size in the model
    height: int
    prior_width: int  # size of the depth PNGs
    prior_height: int
    K: np.ndarray  # 3x3 PINHOLE intrinsics at the image size (pixel centres at +0.5)
    cam_from_world: dict[str, np.ndarray]  # 3x4 [R | t] per name
    inverse_depth: dict[str, np.ndarray]  # true 1/z at image resolution, HxW float64
    prior_inverse_depth: dict[str, np.ndarray]  # true 1/z at the prior resolution
    prior: dict[str, np.ndarray]  # clean uint16 prior before corruption (prior resolution)
    written_prior: dict[str, np.ndarray]  # the uint16 PNG on disk (with corruption)
    true_scale: dict[str, float]  # 1/z = true_scale * png / 65536 + true_offset
    true_offset: dict[str, float]
    point_ids: np.ndarray  # (M,) int64
    point_xyz: np.ndarray  # (M, 3)
    observations: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (xy Nx2, point ids N)
    corrupted: dict[str, np.ndarray]  # name -> bool mask over observations
    model_format: str
    image_ids: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def key(name: str) -> str:
        return str(PurePosixPath(name).with_suffix(""))

    def depth_path(self, name: str) -> Path:
        return self.depths / (self.key(name) + ".png")

    def image_path(self, name: str) -> Path:
        return self.images / name

    def camera_centre(self, name: str) -> np.ndarray:
        pose = self.cam_from_world[name]
        return -pose[:, :3].T @ pose[:, 3]

    def inverse_depth_error(self, name: str, scale: float, offset: float) -> float:
        """Mean relative error of scale * clean_png / 65536 + offset against the true 1/z."""
        fitted = scale * self.prior[name].astype(np.float64) / PNG_SCALE + offset
        truth = self.prior_inverse_depth[name]
        return float(np.mean(np.abs(fitted - truth) / truth))


# ---------------------------------------------------------------- ray casting

def cast(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter t of the first hit and a material id per ray (dirs Nx3, not normalised)."""
    n = dirs.shape[0]
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    # room, seen from inside: the nearest wall in the direction of travel
    bound = np.where(safe > 0, ROOM_HI, ROOM_LO)
    t_room = np.min((bound - origin) / safe, axis=1)
    best = t_room
    material = np.zeros(n, dtype=np.int64)
    # sphere
    oc = origin - SPHERE_CENTRE
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = 2.0 * dirs @ oc
    c = oc @ oc - SPHERE_RADIUS**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    root = np.sqrt(np.where(hit, disc, 0.0))
    t_sphere = (-b - root) / (2 * a)
    hit &= t_sphere > 1e-9
    closer = hit & (t_sphere < best)
    best = np.where(closer, t_sphere, best)
    material[closer] = 1
    # cube, seen from outside (slab method)
    t1 = (CUBE_LO - origin) / safe
    t2 = (CUBE_HI - origin) / safe
    t_near = np.max(np.minimum(t1, t2), axis=1)
    t_far = np.min(np.maximum(t1, t2), axis=1)
    hit = (t_near < t_far) & (t_near > 1e-9)
    closer = hit & (t_near < best)
    best = np.where(closer, t_near, best)
    material[closer] = 2
    return best, material


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """3x4 cam_from_world for a camera at centre looking at target (x right, y down, z forward)."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world
    return np.concatenate([rotation, (-rotation @ centre)[:, None]], axis=1)


def render_inverse_depth(pose: np.ndarray, K: np.ndarray, width: int, height: int,
                         out_width: int, out_height: int) -> tuple[np.ndarray, np.ndarray]:
    """True 1/z (and material) at the pixel centres of an out_width x out_height grid."""
    us = (np.arange(out_width) + 0.5) * (width / out_width)
    vs = (np.arange(out_height) + 0.5) * (height / out_height)
    uu, vv = np.meshgrid(us, vs)
    z, material, _ = cast_pixels(pose, K, np.stack([uu.ravel(), vv.ravel()], axis=1))
    return (1.0 / z).reshape(out_height, out_width), material.reshape(out_height, out_width)


def cast_pixels(pose: np.ndarray, K: np.ndarray, xy: np.ndarray):
    """Camera depth z, material and world point of the first hit through pixel positions xy."""
    rotation, translation = pose[:, :3], pose[:, 3]
    centre = -rotation.T @ translation
    cam_dirs = np.stack(
        [(xy[:, 0] - K[0, 2]) / K[0, 0], (xy[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(xy))], axis=1
    )
    dirs = cam_dirs @ rotation  # camera z component 1: the ray parameter is the depth
    t, material = cast(centre, dirs)
    return t, material, centre + t[:, None] * dirs


def shade(points: np.ndarray, material: np.ndarray) -> np.ndarray:
    """A checkerboard texture per material, as uint8 RGB."""
    checker = (np.floor(points * 4.0).astype(np.int64).sum(axis=1) % 2).astype(np.float64)
    base = np.array([[170, 160, 150], [60, 150, 70], [180, 80, 60]], dtype=np.float64)[material]
    return np.clip(base * (0.6 + 0.4 * checker[:, None]), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- COLMAP text

def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z), w >= 0."""
    m = R
    trace = np.trace(m)
    if trace > 0:
        s = 0.5 / math.sqrt(trace + 1.0)
        q = [0.25 / s, (m[2, 1] - m[1, 2]) * s, (m[0, 2] - m[2, 0]) * s, (m[1, 0] - m[0, 1]) * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _num(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same double


def write_colmap_text(folder: Path, K: np.ndarray, width: int, height: int,
                      names: list[str], poses: dict[str, np.ndarray],
                      keypoints: dict[str, tuple[np.ndarray, np.ndarray]],
                      point_ids: np.ndarray, point_xyz: np.ndarray,
                      point_rgb: np.ndarray | None = None) -> None:
    """A COLMAP 3.x text model; keypoints[name] = (xy Nx2, point3D id or -1 per keypoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 PINHOLE {width} {height} {_num(K[0, 0])} {_num(K[1, 1])} {_num(K[0, 2])} {_num(K[1, 2])}\n"
    )
    tracks: dict[int, list[str]] = {int(pid): [] for pid in point_ids}
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for image_id, name in enumerate(names, start=1):
        pose = poses[name]
        q = rotmat_to_qvec(pose[:, :3])
        t = pose[:, 3]
        pose_text = " ".join(_num(v) for v in (*q, *t))
        lines.append(f"{image_id} {pose_text} 1 {name}")
        xy, ids = keypoints[name]
        parts = []
        for idx, ((x, y), pid) in enumerate(zip(xy, ids)):
            parts.append(f"{_num(x)} {_num(y)} {int(pid)}")
            if pid >= 0:
                tracks[int(pid)].append(f"{image_id} {idx}")
        lines.append(" ".join(parts))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    rgb = point_rgb if point_rgb is not None else np.full((len(point_ids), 3), 128, dtype=np.uint8)
    points = ["# 3D point list with one line of data per point:",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for pid, xyz, colour in zip(point_ids, point_xyz, rgb):
        track = " ".join(tracks[int(pid)])
        points.append(
            f"{int(pid)} {_num(xyz[0])} {_num(xyz[1])} {_num(xyz[2])} "
            f"{int(colour[0])} {int(colour[1])} {int(colour[2])} 0.5 {track}"
        )
    (folder / "points3D.txt").write_text("\n".join(points) + "\n")


def convert_to_binary(text_folder: Path, binary_folder: Path) -> None:
    # pycolmap stays a lazy import. Note: in pycolmap 4.2.1 + opencv wheels, a process that
    # imports pycolmap before numpy aborts in cv2.imencode('.png') (double free in deflateEnd).
    import pycolmap

    reconstruction = pycolmap.Reconstruction(str(text_folder))
    binary_folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(binary_folder))


def _footprint(xy: np.ndarray, width: int, height: int, shape: tuple[int, int]):
    """Top-left (row, col) of the 2x2 prior block that bilinear sampling reads at each xy."""
    rows, cols = shape
    u = np.clip(xy[:, 0] * (cols / width) - 0.5, 0, cols - 1)
    v = np.clip(xy[:, 1] * (rows / height) - 0.5, 0, rows - 1)
    return np.minimum(np.floor(v).astype(int), rows - 1), np.minimum(np.floor(u).astype(int), cols - 1)


def _corrupt(png: np.ndarray, xy: np.ndarray, fraction: float, width: int, height: int,
             rng: np.random.Generator) -> np.ndarray:
    """Overwrite prior blocks with random values until `fraction` of the observations read one.

    Returns the mask of observations whose bilinear footprint touches an overwritten pixel, so
    the corrupted fraction is exact even where footprints overlap.
    """
    target = int(round(fraction * len(xy)))
    mask = np.zeros(len(xy), dtype=bool)
    if target == 0:
        return mask
    rows, cols = _footprint(xy, width, height, png.shape)
    damaged = np.zeros(png.shape, dtype=bool)
    for index in rng.permutation(len(xy)):
        if mask.sum() >= target:
            break
        if mask[index]:
            continue
        i, j = rows[index], cols[index]
        block = damaged[i : i + 2, j : j + 2]
        block[...] = True
        png[i : i + 2, j : j + 2] = rng.integers(0, 65536)
        touched = (
            damaged[rows, cols]
            | damaged[np.minimum(rows + 1, png.shape[0] - 1), cols]
            | damaged[rows, np.minimum(cols + 1, png.shape[1] - 1)]
            | damaged[np.minimum(rows + 1, png.shape[0] - 1), np.minimum(cols + 1, png.shape[1] - 1)]
        )
        mask |= touched
    return mask


# ---------------------------------------------------------------- the scene

def make_scene(
    root: Path | str,
    *,
    n_images: int = 12,
    width: int = 160,
    height: int = 120,
    points_per_image: int = 250,
    subfolders: bool = False,
    prior_scale: float | tuple[float, float] = 1.0,
    corrupt: float = 0.0,
    seed: int = 0,
    model_format: str = "binary",
    image_ext: str = ".jpg",
    write_images: bool = True,
    few_points: dict[int, int] | None = None,
    pixel_noise: float = 0.0,
) -> Scene:
    """Write a synthetic scene under root and return its truth.

    prior_scale: depth PNG size relative to the image (a pair for x and y). corrupt: fraction of
    each image's SfM observations whose prior sample is replaced by a random value (the 2x2 PNG
    block that bilinear sampling reads is overwritten). few_points: {image index: n} keeps only n
    observations in those images. pixel_noise: std-dev (pixels) added to the observed positions.
    """
    if model_format not in ("binary", "text"):
        raise ValueError("model_format is 'binary' or 'text'")
    root = Path(root)
    rng = np.random.default_rng(seed)
    sx, sy = (prior_scale, prior_scale) if np.isscalar(prior_scale) else prior_scale
    prior_width, prior_height = max(2, round(width * sx)), max(2, round(height * sy))
    focal = 0.9 * width
    K = np.array([[focal, 0, width / 2], [0, focal * 1.02, height / 2], [0, 0, 1.0]])

    names: list[str] = []
    poses: dict[str, np.ndarray] = {}
    for index in range(n_images):
        folder = f"cam{index % 2}/" if subfolders else ""
        name = f"{folder}frame_{index:03d}{image_ext}"
        angle = 2 * math.pi * index / n_images + rng.uniform(-0.1, 0.1)
        radius = rng.uniform(3.2, 4.2)
        centre = np.array([radius * math.cos(angle), radius * math.sin(angle), rng.uniform(1.2, 2.2)])
        target = np.array([0.3, -0.3, 0.8]) + rng.normal(0, 0.3, 3)
        names.append(name)
        poses[name] = look_at(centre, target)

    # SfM points: surface points seen through random pixels of every image
    seeds = []
    for name in names:
        xy = rng.uniform([1.0, 1.0], [width - 1.0, height - 1.0], size=(points_per_image, 2))
        seeds.append(cast_pixels(poses[name], K, xy)[2])
    point_xyz = np.concatenate(seeds)
    point_ids = np.arange(1, len(point_xyz) + 1, dtype=np.int64)

    # observations: every image where a point is in front, inside, and not occluded
    observations: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        pose = poses[name]
        cam = point_xyz @ pose[:, :3].T + pose[:, 3]
        z = cam[:, 2]
        front = z > 0.05
        xy = np.full((len(z), 2), -1.0)
        xy[front] = (cam[front, :2] / z[front, None]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        inside = front & (xy[:, 0] >= 0.5) & (xy[:, 0] < width - 0.5)
        inside &= (xy[:, 1] >= 0.5) & (xy[:, 1] < height - 0.5)
        candidates = np.flatnonzero(inside)
        hit_z = cast_pixels(pose, K, xy[candidates])[0]
        visible = candidates[np.abs(hit_z - z[candidates]) <= 1e-6 * z[candidates]]
        observed_xy = xy[visible]
        if pixel_noise:
            observed_xy = observed_xy + rng.normal(0, pixel_noise, observed_xy.shape)
        observations[name] = (observed_xy, point_ids[visible])
    for index, count in (few_points or {}).items():
        name = names[index]
        xy, ids = observations[name]
        observations[name] = (xy[:count], ids[:count])
    # keep points that at least one image still observes
    seen = np.unique(np.concatenate([ids for _, ids in observations.values()]))
    keep = np.isin(point_ids, seen)
    point_ids, point_xyz = point_ids[keep], point_xyz[keep]

    # truth and priors
    inverse_depth, prior_inverse_depth, prior, written = {}, {}, {}, {}
    true_scale, true_offset, corrupted = {}, {}, {}
    images_dir = root / "images"
    depths_dir = root / "depths"
    for name in names:
        pose = poses[name]
        inverse_depth[name], material = render_inverse_depth(pose, K, width, height, width, height)
        inv = render_inverse_depth(pose, K, width, height, prior_width, prior_height)[0]
        prior_inverse_depth[name] = inv
        low = rng.uniform(0, 6000)
        high = rng.uniform(56000, 65535)
        a = (high - low) / (inv.max() - inv.min())
        b = low - a * inv.min()
        png = np.clip(np.rint(a * inv + b), 0, 65535).astype(np.uint16)
        prior[name] = png
        true_scale[name] = PNG_SCALE / a
        true_offset[name] = -b / a
        damaged = png.copy()
        xy, _ids = observations[name]
        mask = _corrupt(damaged, xy, corrupt, width, height, rng)
        corrupted[name] = mask
        written[name] = damaged
        target = depths_dir / (Scene.key(name) + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), damaged):
            raise OSError(f"cannot write {target}")
        if write_images:
            uu, vv = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
            _z, mat, world = cast_pixels(pose, K, np.stack([uu.ravel(), vv.ravel()], axis=1))
            rgb = shade(world, mat).reshape(height, width, 3)
            path = images_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {path}")

    # the model: keypoints are the observations plus a few without a 3D point
    keypoints = {}
    for name in names:
        xy, ids = observations[name]
        extra = rng.uniform([0, 0], [width, height], size=(max(1, len(xy) // 20), 2))
        keypoints[name] = (np.concatenate([xy, extra]), np.concatenate([ids, np.full(len(extra), -1)]))
    sparse = root / "sparse" / "0"
    if model_format == "text":
        write_colmap_text(sparse, K, width, height, names, poses, keypoints, point_ids, point_xyz)
    else:
        staging = root / "sparse" / "_text"
        write_colmap_text(staging, K, width, height, names, poses, keypoints, point_ids, point_xyz)
        convert_to_binary(staging, sparse)
        shutil.rmtree(staging)
    images_dir.mkdir(parents=True, exist_ok=True)

    return Scene(
        root=root,
        sparse=sparse,
        depths=depths_dir,
        images=images_dir,
        names=names,
        width=width,
        height=height,
        prior_width=prior_width,
        prior_height=prior_height,
        K=K,
        cam_from_world=poses,
        inverse_depth=inverse_depth,
        prior_inverse_depth=prior_inverse_depth,
        prior=prior,
        written_prior=written,
        true_scale=true_scale,
        true_offset=true_offset,
        point_ids=point_ids,
        point_xyz=point_xyz,
        observations=observations,
        corrupted=corrupted,
        model_format=model_format,
        image_ids={name: index for index, name in enumerate(names, start=1)},
    )


# ---------------------------------------------------------------- damaged models

#: byte offsets in a binary model with one camera: cameras.bin holds the count (8 bytes), then
#: camera id, model id (4 each), width, height (8 each) and the parameters (8 each); images.bin
#: holds the count, then per image: id (4), qvec (4x8), tvec (3x8), camera id (4), name, ...
CAMERA_SIZE_AT = 16
CAMERA_PARAMS_AT = 32
IMAGE_QVEC_AT = 12
IMAGE_TVEC_AT = 44
IMAGE_CAMERA_AT = 68
IMAGE_NAME_AT = 72


def patch_file(path: Path, offset: int, fmt: str, *values) -> None:
    """Overwrite little-endian values at a byte offset of a binary model file."""
    import struct

    data = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, data, offset, *values)
    path.write_bytes(bytes(data))


def first_image_name(images_bin: Path) -> str:
    data = images_bin.read_bytes()
    return data[IMAGE_NAME_AT:data.index(b"\0", IMAGE_NAME_AT)].decode()


# ---------------------------------------------------------------- wrong regions

def inject_blobs(scene: Scene, *, every: int = 3, seed: int = 0,
                 error: tuple[float, float] = (0.2, 0.5)) -> dict[str, np.ndarray]:
    """Overwrite a disc of every `every`-th prior with inverse depth off by 20-50% (either way).

    The disc (radius a sixth of the prior's height, random centre away from the border) is
    rewritten on disk as png = a * (1/z) * (1 + e) + b, e = +-U(error): the prior stays smooth
    and plausible there but wrong. Returns name -> boolean mask of the wrong pixels (prior size).
    """
    rng = np.random.default_rng(seed)
    wrong: dict[str, np.ndarray] = {}
    for index, name in enumerate(scene.names):
        rows, cols = scene.prior_height, scene.prior_width
        disc = np.zeros((rows, cols), dtype=bool)
        if index % every == 0:
            radius = rows / 6
            centre = rng.uniform([radius, radius], [cols - radius, rows - radius])
            yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
            disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
            factor = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(*error)
            a = PNG_SCALE / scene.true_scale[name]
            b = -scene.true_offset[name] * a
            png = scene.written_prior[name].copy()
            values = a * scene.prior_inverse_depth[name][disc] * factor + b
            png[disc] = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
            scene.written_prior[name] = png
            if not cv2.imwrite(str(scene.depth_path(name)), png):
                raise OSError(f"cannot write {scene.depth_path(name)}")
        wrong[name] = disc
    return wrong
