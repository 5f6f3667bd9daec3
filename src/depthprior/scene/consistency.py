"""Multi-view consistency of aligned inverse-depth maps: the maths, on plain arrays.

A `View` is one image's aligned inverse depth 1/z on a grid, the normalised camera rays of the
grid's pixel centres, its pose, and its camera's projection onto the grid. A witness judges a
subject's pixels in two directions:

- forward: the subject's pixel, back-projected at its depth and seen from the witness, is
  compared with the witness's surface there (the 2x2 grid pixels around the landing point).
  Within `threshold` (relative depth) of one of them: agrees. In front of all of them by more
  than `threshold`: contradicted (the witness sees through that point). Behind: hidden from the
  witness, no evidence.
- reverse: the witness's own points, seen from the subject, must not land in front of the
  subject's surface by more than `threshold` (the subject would be seeing through them). This
  is what catches a subject pixel that is too far: forward, it only hides.

Each witness gives a pixel at most one vote; a pixel is rejected when more witnesses contradict
it than agree (`confidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

REJECTED = 0  # more witnesses contradict the pixel than agree
EXCLUDED = 0  # an exclusion mask (sky, people: depthprior exclude) leaves the pixel out
UNSEEN = 128  # no witness has evidence: kept (>= TRUSTED), at half the weight of a confirmed pixel
TRUSTED = 128  # mask values from here up are trusted
AGREED = 255  # every witness with evidence agrees


@dataclass
class View:
    inverse_depth: np.ndarray  # (h, w) float32 aligned 1/z; <= 0 or not finite: no depth
    rays: np.ndarray  # (h, w, 2) normalised camera coordinates (x/z, y/z) of the pixel centres
    cam_from_world: np.ndarray  # 3x4 [R | t]
    to_grid: Callable[[np.ndarray], np.ndarray]  # camera xyz (N, 3), z > 0 -> grid xy (N, 2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.inverse_depth.shape


@dataclass
class Votes:
    agree: np.ndarray  # (h, w) bool
    contradict: np.ndarray  # (h, w) bool
    disagreement: np.ndarray  # relative depth differences of the forward evidence, 1-D


def backproject(view: View) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) of the pixels that have a depth, and their flat pixel indices."""
    inverse = view.inverse_depth.reshape(-1)
    flat = np.flatnonzero(np.isfinite(inverse) & (inverse > 0))
    z = 1.0 / inverse[flat].astype(np.float64)
    rays = view.rays.reshape(-1, 2)[flat]
    camera = np.column_stack([rays * z[:, None], z])
    rotation, translation = view.cam_from_world[:, :3], view.cam_from_world[:, 3]
    return (camera - translation) @ rotation, flat


@dataclass
class Landing:
    """Source pixels moved into a target camera, in front of it (all 1-D, one entry a pixel)."""
    flat: np.ndarray  # flat source pixel indices
    x: np.ndarray  # target grid positions, pixel centres at +0.5
    y: np.ndarray
    inverse: np.ndarray  # float64 1/z of the point seen from the target


def relative_pose(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation of target-camera from source-camera coordinates."""
    rotation = target[:, :3] @ source[:, :3].T
    return rotation, target[:, 3] - rotation @ source[:, 3]


def land(source: View, target: View) -> Landing:
    """Every source pixel with a depth, moved at that depth into the target's grid.

    One pass on flat float64 arrays: camera-to-camera pose, no world points, no (N, 3)
    temporaries but the one the camera model needs.
    """
    inverse = source.inverse_depth.reshape(-1)
    flat = np.flatnonzero(np.isfinite(inverse) & (inverse > 0))
    z = 1.0 / inverse[flat].astype(np.float64)
    rays = source.rays.reshape(-1, 2)
    rx, ry = (rays[:, axis].take(flat).astype(np.float64) for axis in (0, 1))
    r, t = relative_pose(source.cam_from_world, target.cam_from_world)
    depth = (r[2, 0] * rx + r[2, 1] * ry + r[2, 2]) * z + t[2]
    front = depth > 1e-9
    if not front.all():
        front = np.flatnonzero(front)
        flat, rx, ry, z, depth = flat[front], rx[front], ry[front], z[front], depth[front]
    camera = np.empty((flat.size, 3))
    camera[:, 0] = (r[0, 0] * rx + r[0, 1] * ry + r[0, 2]) * z + t[0]
    camera[:, 1] = (r[1, 0] * rx + r[1, 1] * ry + r[1, 2]) * z + t[1]
    camera[:, 2] = depth
    xy = target.to_grid(camera) if flat.size else np.zeros((0, 2))
    return Landing(flat, xy[:, 0], xy[:, 1], 1.0 / depth)


def footprint(inverse_depth: np.ndarray, x: np.ndarray,
              y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Positions with a full 2x2 footprint: their indices into x and y, the four grid values
    around each (float64) and the largest of them (the nearest surface).

    Pixel centres are at +0.5 (COLMAP); outside the centres' span there is no footprint, nor
    where one of the four has no depth.
    """
    rows, cols = inverse_depth.shape
    u, v = x - 0.5, y - 0.5
    inside = np.flatnonzero((u >= 0) & (v >= 0) & (u <= cols - 1) & (v <= rows - 1))
    # u, v >= 0: truncation is floor
    top_left = (np.minimum(v[inside].astype(np.intp), max(rows - 2, 0)) * cols
                + np.minimum(u[inside].astype(np.intp), max(cols - 2, 0)))
    values = inverse_depth.reshape(-1)
    right, down = int(cols > 1), cols if rows > 1 else 0
    steps = (0, right, down, down + right)
    corners = [values.take(top_left + step).astype(np.float64) for step in steps]
    low, high = _pairwise(np.minimum, corners), _pairwise(np.maximum, corners)
    valid = (low > 0) & np.isfinite(high)  # NaN fails the first, +inf the second
    return inside[valid], [c[valid] for c in corners], high[valid]


def _pairwise(ufunc: np.ufunc, four: list[np.ndarray]) -> np.ndarray:
    """ufunc over four arrays, elementwise, without stacking them."""
    return ufunc(ufunc(four[0], four[1]), ufunc(four[2], four[3]))


def forward(subject: View, witness: View, threshold: float):
    """Forward evidence: flat subject pixels, agree, in front, and relative depth differences."""
    landing = land(subject, witness)
    where, corners, nearest_surface = footprint(witness.inverse_depth, landing.x, landing.y)
    inverse = landing.inverse[where]
    # depth of the point / depth of the witness's surface = surface 1/z / point 1/z
    difference = _pairwise(np.minimum, [np.abs(c / inverse - 1.0) for c in corners])
    agree = difference <= threshold
    in_front = ~agree & (inverse * (1.0 - threshold) > nearest_surface)
    return landing.flat[where], agree, in_front, difference[agree | in_front]


def reverse(subject: View, witness: View, threshold: float) -> np.ndarray:
    """Flat subject pixels that a witness's point lands in front of by more than threshold
    (a pixel may be listed more than once)."""
    landing = land(witness, subject)
    where, _, nearest_surface = footprint(subject.inverse_depth, landing.x, landing.y)
    hit = where[landing.inverse[where] * (1.0 - threshold) > nearest_surface]
    cols = subject.shape[1]
    # inside the centres' span: x, y >= 0.5, truncation is floor
    return landing.y[hit].astype(np.intp) * cols + landing.x[hit].astype(np.intp)


def witness_votes(subject: View, witness: View, threshold: float) -> Votes:
    """One witness's vote on every subject pixel: agree, contradict, or neither."""
    size = subject.inverse_depth.size
    flat, agree, in_front, difference = forward(subject, witness, threshold)
    contradict = np.zeros(size, dtype=bool)
    contradict[flat[in_front]] = True
    contradict[reverse(subject, witness, threshold)] = True
    agreeing = np.zeros(size, dtype=bool)
    agreeing[flat[agree]] = True
    agreeing &= ~contradict
    shape = subject.shape
    return Votes(agreeing.reshape(shape), contradict.reshape(shape), difference)


def confidence(agree: np.ndarray, contradict: np.ndarray) -> np.ndarray:
    """uint8 mask from per-pixel vote counts: 0 rejected, 128 unseen, 128..255 agreeing share."""
    agree = agree.astype(np.float64)
    seen = agree + contradict
    share = np.divide(agree, seen, out=np.zeros_like(agree), where=seen > 0)
    mask = np.rint(AGREED * share).astype(np.uint8)
    mask[contradict > agree] = REJECTED
    mask[seen == 0] = UNSEEN
    return mask


def temporal_error(first: View, second: View, keep_first: np.ndarray,
                   keep_second: np.ndarray) -> tuple[float | None, float | None]:
    """TAE of one frame pair, mean AbsRel of each map projected into the other both ways:
    with every pixel, and with only the kept pixels of each frame (masking).

    As Video Depth Anything's temporal alignment error, with the poses: each pixel of one frame
    is moved into the other at its depth and its depth compared with the other's there
    (nearest pixel). None where no pixel lands in either direction.
    """
    there = _abs_rel(first, second, keep_first, keep_second)
    back = _abs_rel(second, first, keep_second, keep_first)
    return _mean(there[0], back[0]), _mean(there[1], back[1])


def _mean(*errors: float | None) -> float | None:
    present = [e for e in errors if e is not None]
    return float(np.mean(present)) if present else None


def _abs_rel(source: View, target: View, keep_source: np.ndarray,
             keep_target: np.ndarray) -> tuple[float | None, float | None]:
    """Mean |z_moved - z_target| / z_target of the source pixels landing on a target pixel with
    a depth: all of them, and those kept in both frames (None where there are none)."""
    landing = land(source, target)
    rows, cols = target.shape
    x, y = landing.x, landing.y
    inside = np.flatnonzero((x >= 0) & (y >= 0) & (x < cols) & (y < rows))
    pixel = y[inside].astype(np.intp) * cols + x[inside].astype(np.intp)  # x, y >= 0: floor
    surface = target.inverse_depth.reshape(-1)[pixel].astype(np.float64)
    good = np.isfinite(surface) & (surface > 0)
    # z = 1 / inverse depth
    error = np.abs(surface / landing.inverse[inside] - 1.0)
    kept = good & keep_source.reshape(-1)[landing.flat[inside]] & keep_target.reshape(-1)[pixel]
    return tuple(float(np.mean(error[chosen])) if chosen.any() else None for chosen in (good, kept))
