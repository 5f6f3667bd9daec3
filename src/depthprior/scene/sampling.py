"""Sampling a depth map at a COLMAP image's SfM points: (prior values, 1/z) pairs to fit.

Two samplers, one per estimator of `fitting`:
- `observations` + `sample_bilinear`: points in front of the camera and inside its image,
  sampled bilinearly between pixel centres (positions scaled on each axis by map size / camera
  size, so downscaled priors work);
- `official_samples`: exactly the samples of gaussian-splatting's utils/make_depth_scale.py.
"""

from __future__ import annotations

import numpy as np

from .colmap import ModelImage, SparseModel
from ..priors.store import PNG_MAX, TRAINER_SCALE

# the official make_depth_scale.py reads its prior as png / 65535
OFFICIAL_DIVISOR = float(PNG_MAX)
REMAP_MAX_SIDE = 32767  # cv2.remap refuses images and maps this wide or tall


def official_samples(model: SparseModel, image: ModelImage, depth: np.ndarray,
                     positions: bool = False) -> tuple:
    """The samples of gaussian-splatting's utils/make_depth_scale.py: prior, 1/z, span of 1/z.

    Its points: every observation with a point id in [0, largest id] (a missing point counts as
    the origin, as in its lookup table); the span of 1/z is taken over all of them. Its samples:
    those with 1/z > 0 whose position `xy * s`, s = map rows / camera height on both axes, no
    half-pixel shift, float32, lies in [0, camera size * s); the prior is `png / 65535` in
    float32, read there by OpenCV 4's bilinear cv2.remap with replicated border (remap_linear).
    positions: also return those sample positions on the map (N, 2).
    """
    ids = image.point3D_ids
    if not image.registered or image.cam_from_world is None or model.point_ids.size == 0:
        return (np.zeros(0, np.float32), np.zeros(0), 0.0) + ((np.zeros((0, 2)),) if positions else ())
    in_range = (ids >= 0) & (ids <= model.point_ids[-1])
    xyz, found = model.lookup_points(ids[in_range])
    xyz = np.where(found[:, None], xyz, 0.0)
    pose = image.cam_from_world
    z = xyz @ pose[2, :3] + pose[2, 3]
    with np.errstate(divide="ignore"):
        inverse = 1.0 / z
    span = float(inverse.max() - inverse.min()) if inverse.size else 0.0
    s = depth.shape[0] / image.camera.height
    maps = (image.xy[in_range] * s).astype(np.float32)
    valid = (
        (maps[:, 0] >= 0) & (maps[:, 1] >= 0)
        & (maps[:, 0] < image.camera.width * s) & (maps[:, 1] < image.camera.height * s)
        & (inverse > 0)
    )
    prior = remap_linear(depth.astype(np.float32) / OFFICIAL_DIVISOR, maps[valid])
    return (prior, inverse[valid], span) + ((maps[valid],) if positions else ())


#: OpenCV 4's remap rounds each sample position to 1/32 pixel (INTER_BITS = 5) before it
#: interpolates; OpenCV 5 interpolates at the exact position. The official script's numbers are
#: OpenCV 4's, so the rule is reproduced here whatever OpenCV is installed.
REMAP_SUBPIXELS = 32


def remap_linear(values: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """OpenCV 4's bilinear `cv2.remap` (replicated border) at float32 (x, y) positions, in order:
    each position rounded to the nearest 1/32 pixel (ties to even, as cvRound), then exact
    bilinear between the four neighbours, indices clamped to the map."""
    if len(maps) == 0:
        return np.zeros(0, dtype=values.dtype)
    scaled = np.rint(np.asarray(maps, dtype=np.float32) * np.float32(REMAP_SUBPIXELS)).astype(np.int64)
    whole, part = scaled >> 5, (scaled & (REMAP_SUBPIXELS - 1)) / REMAP_SUBPIXELS
    rows, cols = values.shape[:2]
    j0, i0 = np.clip(whole[:, 0], 0, cols - 1), np.clip(whole[:, 1], 0, rows - 1)
    j1, i1 = np.clip(whole[:, 0] + 1, 0, cols - 1), np.clip(whole[:, 1] + 1, 0, rows - 1)
    fx, fy = part[:, 0], part[:, 1]
    at = lambda i, j: values[i, j].astype(np.float64)  # noqa: E731 - gather, then widen
    top = at(i0, j0) * (1.0 - fx) + at(i0, j1) * fx
    bottom = at(i1, j0) * (1.0 - fx) + at(i1, j1) * fx
    return (top * (1.0 - fy) + bottom * fy).astype(values.dtype)


# ---------------------------------------------------------------- sampling

def observations(model: SparseModel, image: ModelImage) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions and inverse depth 1/z of the image's observed 3D points.

    Keeps points in front of the camera (z > 0) and inside the camera's image; positions are in
    COLMAP pixels (the top-left corner of the image is 0,0; pixel centres are at +0.5).
    """
    if not image.registered or image.cam_from_world is None or image.point3D_ids.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    xyz, found = model.lookup_points(image.point3D_ids)
    pose = image.cam_from_world
    z = xyz @ pose[2, :3] + pose[2, 3]
    xy = image.xy
    width, height = image.camera.width, image.camera.height
    keep = found & (z > 0) & np.isfinite(z)
    keep &= (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    return xy[keep], 1.0 / z[keep]


def sample_bilinear(depth: np.ndarray, xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stored values of a depth map at COLMAP pixel positions of a width x height camera.

    The map may have another resolution (a downscaled prior): positions are scaled on each axis
    by map size / camera size. Bilinear between pixel centres; edges are replicated.
    """
    if depth.ndim == 3:
        depth = depth[..., 0]  # as the trainer does with a multi-channel file
    rows, cols = depth.shape
    u = xy[:, 0] * (cols / width) - 0.5
    v = xy[:, 1] * (rows / height) - 0.5
    u = np.clip(u, 0.0, cols - 1.0)
    v = np.clip(v, 0.0, rows - 1.0)
    j0 = np.minimum(np.floor(u).astype(np.intp), cols - 1)
    i0 = np.minimum(np.floor(v).astype(np.intp), rows - 1)
    j1 = np.minimum(j0 + 1, cols - 1)
    i1 = np.minimum(i0 + 1, rows - 1)
    fu = u - j0
    fv = v - i0
    def at(i: np.ndarray, j: np.ndarray) -> np.ndarray:  # gather first: the map stays uint16
        return depth[i, j].astype(np.float64)

    top = at(i0, j0) * (1.0 - fu) + at(i0, j1) * fu
    bottom = at(i1, j0) * (1.0 - fu) + at(i1, j1) * fu
    return top * (1.0 - fv) + bottom * fv


def method_samples(method: str, model: SparseModel, image: ModelImage, depth: np.ndarray,
                   kept: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, float | None, int] | None:
    """(prior, SfM 1/z, the official span or None, samples dropped) at the image's SfM points,
    sampled the way `method` samples them ("mad": the official script's way; else pixel
    centres, png / 2**16); None for a map cv2.remap cannot sample (mad, a side of
    REMAP_MAX_SIDE or more). `kept`: a bool map of the prior's size; samples on its False
    pixels (an exclusion mask's sky, people) are dropped and counted."""
    if method == "mad":
        if max(depth.shape) >= REMAP_MAX_SIDE:
            return None
        prior, target, span, xy = official_samples(model, image, depth, positions=True)
        scale = (1.0, 1.0)  # official positions are on the map's pixels already
    else:
        xy, target = observations(model, image)
        prior = sample_bilinear(depth, xy, image.camera.width, image.camera.height) / TRAINER_SCALE
        span, scale = None, (depth.shape[1] / image.camera.width, depth.shape[0] / image.camera.height)
    if kept is None:
        return prior, target, span, 0
    keep = on_kept_pixels(kept, xy, scale)
    return prior[keep], target[keep], span, int((~keep).sum())


def on_kept_pixels(kept: np.ndarray, xy: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Which positions (x, y), scaled per axis by `scale` onto `kept`'s pixels, land on a True
    pixel (the pixel they fall in; clamped to the map)."""
    rows, cols = kept.shape
    j = np.clip(np.floor(xy[:, 0] * scale[0]).astype(np.intp), 0, cols - 1)
    i = np.clip(np.floor(xy[:, 1] * scale[1]).astype(np.intp), 0, rows - 1)
    return kept[i, j]
