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


def into_view(points: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid positions (N, 2), inverse depth (N,) and an in-front mask of world points in a view."""
    camera = points @ view.cam_from_world[:, :3].T + view.cam_from_world[:, 3]
    front = camera[:, 2] > 1e-9
    xy = np.full((len(points), 2), -1.0)
    if front.any():
        xy[front] = view.to_grid(camera[front])
    inverse = np.where(front, 1.0 / np.where(front, camera[:, 2], 1.0), 0.0)
    return xy, inverse, front


def footprint(inverse_depth: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 grid values around each position (N, 4) and whether all four exist.

    Positions have pixel centres at +0.5 (COLMAP); outside the centres' span there is no footprint.
    """
    rows, cols = inverse_depth.shape
    u, v = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    inside = (u >= 0) & (v >= 0) & (u <= cols - 1) & (v <= rows - 1)
    j0 = np.clip(np.floor(u), 0, max(cols - 2, 0)).astype(np.intp)
    i0 = np.clip(np.floor(v), 0, max(rows - 2, 0)).astype(np.intp)
    j1, i1 = np.minimum(j0 + 1, cols - 1), np.minimum(i0 + 1, rows - 1)
    corners = np.stack([inverse_depth[i0, j0], inverse_depth[i0, j1],
                        inverse_depth[i1, j0], inverse_depth[i1, j1]], axis=1).astype(np.float64)
    valid = inside & np.all(np.isfinite(corners) & (corners > 0), axis=1)
    return corners, valid


def forward(subject: View, witness: View, threshold: float):
    """Forward evidence: flat subject pixels, agree, in front, and relative depth differences."""
    points, flat = backproject(subject)
    xy, inverse, front = into_view(points, witness)
    corners, valid = footprint(witness.inverse_depth, xy)
    keep = front & valid
    flat, inverse, corners = flat[keep], inverse[keep], corners[keep]
    # depth of the point / depth of the witness's surface = surface 1/z / point 1/z
    ratio = corners / inverse[:, None]
    difference = np.min(np.abs(ratio - 1.0), axis=1)
    agree = difference <= threshold
    in_front = ~agree & (inverse * (1.0 - threshold) > corners.max(axis=1))
    return flat, agree, in_front, difference[agree | in_front]


def reverse(subject: View, witness: View, threshold: float) -> np.ndarray:
    """Flat subject pixels that a witness's point lands in front of by more than threshold."""
    points, _ = backproject(witness)
    xy, inverse, front = into_view(points, subject)
    corners, valid = footprint(subject.inverse_depth, xy)
    hit = front & valid & (inverse * (1.0 - threshold) > corners.max(axis=1))
    cols = subject.shape[1]
    nearest = np.floor(xy[hit]).astype(np.intp)
    return np.unique(nearest[:, 1] * cols + nearest[:, 0])


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


def temporal_error(first: View, second: View, keep_first: np.ndarray | None = None,
                   keep_second: np.ndarray | None = None) -> float | None:
    """TAE of one frame pair: mean AbsRel of each map projected into the other, both ways.

    As Video Depth Anything's temporal alignment error, with the poses: each pixel of one frame
    is moved into the other at its depth and its depth compared with the other's there
    (nearest pixel). `keep_*` restrict the pixels of each frame (masking); None when no pixel
    lands in either direction.
    """
    errors = [_abs_rel(first, second, keep_first, keep_second),
              _abs_rel(second, first, keep_second, keep_first)]
    errors = [e for e in errors if e is not None]
    return float(np.mean(errors)) if errors else None


def _abs_rel(source: View, target: View, keep_source, keep_target) -> float | None:
    points, flat = backproject(source)
    if keep_source is not None:
        chosen = keep_source.reshape(-1)[flat]
        points, flat = points[chosen], flat[chosen]
    xy, inverse, front = into_view(points, target)
    rows, cols = target.shape
    pixel = np.floor(xy).astype(np.intp)
    inside = front & (pixel[:, 0] >= 0) & (pixel[:, 1] >= 0) & (pixel[:, 0] < cols) & (pixel[:, 1] < rows)
    i, j = pixel[inside, 1], pixel[inside, 0]
    surface = target.inverse_depth[i, j].astype(np.float64)
    good = np.isfinite(surface) & (surface > 0)
    if keep_target is not None:
        good &= keep_target[i, j]
    if not good.any():
        return None
    # |z_moved - z_target| / z_target with z = 1 / inverse depth
    return float(np.mean(np.abs(surface[good] / inverse[inside][good] - 1.0)))
