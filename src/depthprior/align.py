"""Per-image scale/offset of the depth priors against a COLMAP model's SfM points.

A monocular prior is inverse depth up to an unknown scale and offset per image. For every
registered image, its observed 3D points are moved into the camera (z), the prior is sampled
bilinearly at their pixels, and `1/z ~ scale * png / 65536 + offset` is fitted. The result is
`depth_params.json`, the file the official 3DGS trainer reads with `-d`:

    {"<image name without extension>": {"scale": s, "offset": o}, ...}

Every image of the model gets an entry; a failed fit is written as scale 0, offset 0 (the
trainer then ignores that image's depth). A JSON report beside it holds the per-image details.

Two estimators:
- "mad": the official recipe, gaussian-splatting's utils/make_depth_scale.py, on its samples
  (`official_samples`): match the median and the mean absolute deviation of both sides. It
  writes that script's numbers; what depthprior objects to is a note (status unreliable), not a
  failure. Breaks when some samples are wrong (sky, thin stems, reflections, depth edges): the
  mean absolute deviation follows the outliers.
- "robust" (default): least-median-of-squares over sampled point pairs, then Tukey-biweight IRLS
  and a least-squares polish on the inliers, on bilinear samples between pixel centres.
  Deterministic (fixed seed), tolerates up to half of the samples being nonsense.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import __version__
from .colmap import ModelImage, SparseModel, read_model
from .images import image_key, stored_size
from .priorset import SCALE_BAND
from .errors import DepthpriorError, ImageError, UsageError
from .manifest import Manifest, ManifestError
from .store import atomic_write_bytes, depth_pngs, read_png16

log = logging.getLogger(__name__)

METHODS = ("robust", "mad")
PNG_SCALE = 65536.0  # trainers read png / 2**16
PARAMS_NAME = "depth_params.json"
CONVENTIONS = {
    "robust": "1/z = scale * png / 65536 + offset; scale 0 marks a failed fit",
    "mad": "1/z = scale * png / 65535 + offset as fitted by the official make_depth_scale.py "
           "(the 3DGS trainer applies it to png / 65536); scale 0 marks a failed fit",
}
REPORT_FORMAT = "depthprior-align-report"
REPORT_VERSION = 1

MIN_POINTS = 11  # the recipe fits only with more than 10 points
MIN_PRIOR_RANGE = 16 / PNG_SCALE  # prior samples spanning fewer PNG levels are degenerate
MIN_TARGET_RANGE = 1e-3  # SfM inverse depths spanning less (relative to their median) too
MIN_INLIER_FRACTION = 0.5  # below this the robust fit has no majority to stand on: failed
LOW_INLIER_FRACTION = 0.6  # below this: unreliable
MAX_RESIDUAL = 0.15  # median relative residual of the inliers above this: unreliable
SIGMA_FLOOR = 1e-3  # the residual scale is at least this fraction of the median 1/z
ASPECT_TOLERANCE = 0.05  # depth map / frame vs camera: relative aspect-ratio difference allowed

# the official make_depth_scale.py: png / 65535, fits only more than 10 samples whose 1/z
# (over all observations) spans more than 1e-3
OFFICIAL_DIVISOR = float(2**16 - 1)
OFFICIAL_MIN_SPAN = 1e-3
REMAP_MAX_SIDE = 32767  # cv2.remap refuses images and maps this wide or tall
REMAP_COLUMNS = 1024  # so the sample positions go in as blocks of this many columns


class DepthFilesError(UsageError):
    """Depth maps missing, or the depth folder does not match the model."""


class AlignWriteError(DepthpriorError):
    """depth_params.json or the report could not be written."""


# ---------------------------------------------------------------- fitting

@dataclass(frozen=True)
class Fit:
    """One image's fit of `target ~ scale * prior + offset` (prior = png / 65536, target = 1/z)."""

    scale: float
    offset: float
    points: int
    inliers: int
    residual: float  # median |fit - target| / target over the inliers (nan when not fitted)
    ok: bool
    reason: str = ""

    @classmethod
    def failed(cls, points: int, reason: str) -> "Fit":
        return cls(0.0, 0.0, points, 0, float("nan"), False, reason)


def _checks(prior: np.ndarray, target: np.ndarray, min_points: int) -> str:
    """Why these samples cannot be fitted, or '' when they can."""
    n = prior.size
    if n < min_points:
        return f"only {n} usable SfM points (need {min_points})"
    if float(np.ptp(prior)) < MIN_PRIOR_RANGE:
        return "prior is nearly constant at the SfM points"
    median = float(np.median(target))
    if median <= 0 or float(np.ptp(target)) < MIN_TARGET_RANGE * median:
        return "SfM inverse depths span too small a range"
    # the prior must grow with 1/z; a falling one is depth, not inverse depth, or the wrong file
    agreement = np.sign(prior - np.median(prior)) * np.sign(target - median)
    if float(np.sum(agreement)) < 0:
        return "prior falls where SfM inverse depth rises (depth instead of inverse depth, or wrong file?)"
    return ""


def _summary(prior: np.ndarray, target: np.ndarray, scale: float, offset: float,
             inliers: np.ndarray | None = None) -> tuple[int, float]:
    """Inlier count and median relative residual. Inliers default to |r| <= 3 robust sigmas."""
    residual = scale * prior + offset - target
    if inliers is None:
        inliers = _inlier_mask(residual, target)
    if not inliers.any():
        return 0, float("nan")
    relative = np.abs(residual[inliers]) / np.abs(target[inliers])
    return int(inliers.sum()), float(np.median(relative))


def _inlier_mask(residual: np.ndarray, target: np.ndarray) -> np.ndarray:
    """|r| <= 3 sigma, with sigma re-estimated from the points inside the band until it settles.

    The global median overstates sigma when many points are outliers (and hugely so when a fit
    broke down); estimating it near the line makes the inlier count mean "agrees with the fit".
    """
    size = np.abs(residual)
    floor = SIGMA_FLOOR * float(np.median(np.abs(target)))
    sigma = _robust_sigma(residual, target)
    for _ in range(10):
        band = size <= 3.0 * sigma
        if np.count_nonzero(band) < 3:
            break
        updated = max(1.4826 * float(np.median(size[band])), floor, np.finfo(np.float64).tiny)
        if updated >= 0.99 * sigma:
            break
        sigma = updated
    return size <= 3.0 * sigma


def _robust_sigma(residual: np.ndarray, target: np.ndarray) -> float:
    n = residual.size
    sigma = 1.4826 * float(np.median(np.abs(residual))) * (1.0 + 5.0 / max(n - 2, 1))
    # near-exact data (synthetic, or a prior that really is affine in 1/z) would otherwise get a
    # band thinner than the PNG quantisation: nothing agrees more closely than 0.1% anyway
    floor = SIGMA_FLOOR * float(np.median(np.abs(target)))
    return max(sigma, floor, np.finfo(np.float64).tiny)


def fit_mad(prior: np.ndarray, target: np.ndarray, *, span: float | None = None,
            min_points: int = MIN_POINTS) -> Fit:
    """The official 3DGS recipe: match medians and mean absolute deviations of both sides.

    scale = mean|t - median(t)| / mean|p - median(p)|, offset = median(t) - scale * median(p),
    in the dtypes given (the official script's prior samples are float32). span: the range of
    1/z that the script checks (over all observations; default: over target). Fails only where
    the script writes 0 (no more than 10 samples, span not above 1e-3) or no number (a zero
    deviation); the checks of the robust fit become a note in `reason` of a fit that is ok.
    """
    prior = np.asarray(prior)
    target = np.asarray(target, dtype=np.float64)
    n = prior.size
    span = float(np.ptp(target)) if span is None and n else (span or 0.0)
    if n < min_points:
        return Fit.failed(n, f"only {n} usable SfM points (the recipe needs {min_points})")
    if not span > OFFICIAL_MIN_SPAN:
        return Fit.failed(n, f"SfM inverse depths span {span:.3g}, not more than "
                             f"{OFFICIAL_MIN_SPAN:g} (the recipe's limit)")
    t_sfm = np.median(target)
    s_sfm = np.mean(np.abs(target - t_sfm))
    t_mono = np.median(prior)
    s_mono = np.mean(np.abs(prior - t_mono))
    if not (s_mono > 0 and s_sfm > 0):
        side = "prior" if not s_mono > 0 else "SfM inverse depth"
        return Fit.failed(n, f"{side} is constant at the SfM points: the recipe divides by zero")
    scale = s_sfm / s_mono  # numpy float64, as in the script: the offset is computed in float64
    offset = float(t_sfm - t_mono * scale)
    scale = float(scale)
    if not (math.isfinite(scale) and math.isfinite(offset)):
        return Fit.failed(n, "the recipe gives no finite scale/offset (a point at depth 0?)")
    prior64 = prior.astype(np.float64)
    note = _checks(prior64, target, min_points)
    inliers, residual = _summary(prior64, target, scale, offset)
    return Fit(scale, offset, n, inliers, residual, True, note)


def fit_robust(
    prior: np.ndarray,
    target: np.ndarray,
    *,
    min_points: int = MIN_POINTS,
    seed: int = 0,
    trials: int = 256,
    sample: int = 1024,
) -> Fit:
    """Outlier-tolerant fit of target ~ scale * prior + offset.

    1. Least median of squares: lines through `trials` random point pairs, each scored by the
       median absolute residual on up to `sample` points; the best one wins (breakdown 50%).
    2. Tukey-biweight IRLS from there, with the residual scale of step 1.
    3. Least squares on the inliers (|residual| <= 3 robust sigmas).
    Deterministic for a given seed; about a millisecond per thousand points.
    """
    prior = np.asarray(prior, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n = prior.size
    reason = _checks(prior, target, min_points)
    if reason:
        return Fit.failed(n, reason)
    rng = np.random.default_rng(seed)

    # 1. LMedS over random pairs (plus the plain least-squares line as one more candidate)
    first = rng.integers(0, n, trials)
    second = rng.integers(0, n, trials)
    dx = prior[second] - prior[first]
    usable = np.abs(dx) >= MIN_PRIOR_RANGE / 4
    if not usable.any():
        return Fit.failed(n, "prior is nearly constant at the SfM points")
    slopes = (target[second] - target[first])[usable] / dx[usable]
    offsets = target[first][usable] - slopes * prior[first][usable]
    ls_scale, ls_offset = _least_squares(prior, target, np.ones(n))
    slopes = np.append(slopes, ls_scale)
    offsets = np.append(offsets, ls_offset)
    subset = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    residuals = np.abs(slopes[:, None] * prior[subset] + offsets[:, None] - target[subset])
    middle = residuals.shape[1] // 2
    scores = np.partition(residuals, middle, axis=1)[:, middle]
    best = int(np.argmin(scores))
    scale, offset = float(slopes[best]), float(offsets[best])

    # 2. Tukey biweight IRLS with a fixed scale estimate
    sigma = _robust_sigma(scale * prior + offset - target, target)
    c = 4.685 * sigma
    for _ in range(30):
        residual = scale * prior + offset - target
        u = residual / c
        weights = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if np.count_nonzero(weights) < min_points:
            break
        new_scale, new_offset = _least_squares(prior, target, weights)
        done = abs(new_scale - scale) <= 1e-10 * abs(scale) and abs(new_offset - offset) <= 1e-10 * (
            abs(offset) + abs(scale)
        )
        scale, offset = new_scale, new_offset
        if done:
            break

    # 3. least squares on the inliers
    inliers = _inlier_mask(scale * prior + offset - target, target)
    if np.count_nonzero(inliers) >= min_points:
        scale, offset = _least_squares(prior, target, inliers.astype(np.float64))
        inliers = _inlier_mask(scale * prior + offset - target, target)
    count, residual = _summary(prior, target, scale, offset, inliers)
    if count < min_points:
        return Fit(scale, offset, n, count, residual, False, f"only {count} inliers of {n} points")
    if count < MIN_INLIER_FRACTION * n:
        return Fit(scale, offset, n, count, residual, False,
                   f"no majority: only {count} of {n} points agree with any fit")
    if not scale > 0:
        return Fit(scale, offset, n, count, residual, False, "fitted scale is not positive")
    return Fit(scale, offset, n, count, residual, True)


def _least_squares(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    total = float(w.sum())
    mx = float(w @ x) / total
    my = float(w @ y) / total
    dx = x - mx
    sxx = float(w @ (dx * dx))
    if sxx <= 0:
        return 0.0, my
    scale = float(w @ (dx * (y - my))) / sxx
    return scale, my - scale * mx


def official_samples(model: SparseModel, image: ModelImage,
                     depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The samples of gaussian-splatting's utils/make_depth_scale.py: prior, 1/z, span of 1/z.

    Its points: every observation with a point id in [0, largest id] (a missing point counts as
    the origin, as in its lookup table); the span of 1/z is taken over all of them. Its samples:
    those with 1/z > 0 whose position `xy * s`, s = map rows / camera height on both axes, no
    half-pixel shift, float32, lies in [0, camera size * s); the prior is `png / 65535` in
    float32, read there by bilinear cv2.remap with replicated border.
    """
    ids = image.point3D_ids
    if not image.registered or image.cam_from_world is None or model.point_ids.size == 0:
        return np.zeros(0, np.float32), np.zeros(0), 0.0
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
    return prior, inverse[valid], span


def remap_linear(values: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """cv2.remap's bilinear samples (replicated border) at float32 (x, y) positions, in order."""
    count = len(maps)
    if count == 0:
        return np.zeros(0, dtype=values.dtype)
    columns = min(count, REMAP_COLUMNS)
    rows = -(-count // columns)
    grid = np.zeros((rows * columns, 2), dtype=np.float32)
    grid[:count] = maps
    map_x, map_y = grid[:, 0].reshape(rows, columns), grid[:, 1].reshape(rows, columns)
    sampled = cv2.remap(values, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(-1)[:count]


def fit_samples(method: str, model: SparseModel, image: ModelImage, depth: np.ndarray) -> Fit:
    """Sample the prior at the image's SfM points the method's way, and fit."""
    if method == "mad":
        if max(depth.shape) >= REMAP_MAX_SIDE:
            return Fit.failed(0, f"depth map is {depth.shape[1]}x{depth.shape[0]}: cv2.remap "
                                 f"samples maps below {REMAP_MAX_SIDE} pixels a side")
        prior, target, span = official_samples(model, image, depth)
        return fit_mad(prior, target, span=span)
    xy, target = observations(model, image)
    prior = sample_bilinear(depth, xy, image.camera.width, image.camera.height) / PNG_SCALE
    return fit_robust(prior, target)


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


# ---------------------------------------------------------------- results

@dataclass
class ImageResult:
    name: str  # image name in the model
    key: str  # depth_params.json key: name without extension
    depth: str | None  # depth file relative to the depth folder, None when missing
    points: int
    inliers: int
    residual: float | None  # median relative residual of the inliers
    scale: float  # as written to depth_params.json (0 when failed)
    offset: float
    status: str  # "ok", "unreliable", "failed"
    reason: str = ""
    prior_size: list[int] | None = None  # [width, height] of the depth map
    camera_size: list[int] | None = None
    image_size: list[int] | None = None  # stored size of the frame, with --images

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["residual"] is not None and not np.isfinite(data["residual"]):
            data["residual"] = None
        return data


@dataclass
class AlignSummary:
    output: Path  # depth_params.json
    report: Path
    method: str
    results: list[ImageResult]
    median_scale: float
    model_format: str
    points3D: int
    unmatched_depths: list[str] = field(default_factory=list)  # depth files no image maps to
    seconds: float = 0.0

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def unreliable(self) -> list[ImageResult]:
        return [r for r in self.results if r.status == "unreliable"]

    @property
    def fitted(self) -> list[ImageResult]:
        return [r for r in self.results if r.status != "failed"]

    @property
    def params(self) -> dict[str, dict[str, float]]:
        return {r.key: {"scale": r.scale, "offset": r.offset} for r in self.results}


# ---------------------------------------------------------------- the command

def default_output(sparse: Path | str) -> Path:
    return Path(sparse) / PARAMS_NAME


def report_path(output: Path | str) -> Path:
    """depth_params.json -> depth_params.report.json beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".report.json")


def align(
    sparse: Path | str,
    depths: Path | str,
    *,
    images: Path | str | None = None,
    output: Path | str | None = None,
    method: str = "robust",
    allow_missing: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AlignSummary:
    """Fit every image's prior to the model's SfM points and write depth_params.json + report.

    sparse: a COLMAP model folder (SCENE/sparse/0), binary or text. depths: the folder holding
    `<image name without extension>.png` for the model's images (subfolders mirrored). images:
    optional frame folder; every registered image must be in it, and an image whose stored size
    has another aspect ratio than its camera (a rotation, a crop) fails. output: the params file
    (default SPARSE/depth_params.json); the report goes beside it as *.report.json.
    allow_missing: images without a depth file get scale 0 instead of stopping the run.

    Raises UsageError subclasses (nothing written) for a bad model, missing or mismatched depth
    files, missing frames, or a bad method; AlignWriteError when the output cannot be written.
    Images whose fit failed are written with scale 0 and listed in the summary: check
    `summary.failed`.
    """
    started = time.monotonic()
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    sparse = Path(sparse)
    depths = Path(depths)
    output = Path(output) if output is not None else default_output(sparse)
    report = report_path(output)
    if not depths.is_dir():
        raise DepthFilesError(
            f"depth folder not found: {depths}; run 'depthprior generate' first or fix the path"
        )
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise UsageError(f"image folder not found: {images_dir}")
    _check_output(output)

    model = read_model(sparse)
    if not model.images:
        raise UsageError(f"the COLMAP model in {sparse} has no images")
    _check_keys(model)
    depth_files = set(depth_pngs(depths))
    plan = _plan(model, depths, depth_files, images_dir, allow_missing)

    results = {image.name: result for image, result, _rel, _size in plan if result is not None}
    jobs = [(image, rel, size) for image, result, rel, size in plan if result is None]

    def work(job: tuple[ModelImage, str, list[int] | None]) -> ImageResult:
        image, rel, image_size = job
        return _fit_image(model, image, depths / rel, rel, image_size, method)

    count = workers if workers is not None else min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(count, thread_name_prefix="align") if count > 1 and len(jobs) > 1 else None
    try:
        for done, result in enumerate(pool.map(work, jobs) if pool else map(work, jobs), start=1):
            results[result.name] = result
            if progress:
                progress(done, len(jobs))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)

    ordered = [results[image.name] for image in model.images]
    median_scale = _mark_outlying_scales(ordered)
    keys = {image.key for image in model.images}
    unmatched = sorted(stem for stem in depth_files if stem not in keys)
    summary = AlignSummary(
        output=output,
        report=report,
        method=method,
        results=ordered,
        median_scale=median_scale,
        model_format=model.format,
        points3D=int(model.point_ids.size),
        unmatched_depths=[stem + ".png" for stem in unmatched],
    )
    summary.seconds = time.monotonic() - started
    _write(summary, sparse, depths, images_dir)
    return summary


def _check_output(output: Path) -> None:
    """Fail before the work, not after it, when the params file cannot be written there."""
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; pass a file name such as "
                         f"{output / PARAMS_NAME}")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # atomic_write_bytes creates the missing folders
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {output}: {parent} is not a writable folder; choose another -o")


def _check_keys(model: SparseModel) -> None:
    seen: dict[str, str] = {}
    for image in model.images:
        key = image.key
        if key in seen:
            raise UsageError(
                f"images {seen[key]} and {image.name} in the model share the depth file "
                f"{key}.png and the depth_params.json key {key!r}; rename one of them"
            )
        seen[key] = image.name


Plan = tuple[ModelImage, "ImageResult | None", str, "list[int] | None"]


def _plan(model: SparseModel, depths: Path, depth_files: set[str], images_dir: Path | None,
          allow_missing: bool) -> list[Plan]:
    """Per image: either a finished result (not registered, no depth file) or a job to fit."""
    registered = [image for image in model.images if image.registered]
    if not registered:
        raise UsageError(f"the COLMAP model in {model.path} has no registered images")
    missing = [image for image in registered if image.key not in depth_files]
    if len(missing) == len(registered):
        example = f"{image_key(registered[0].name)}.png"
        found = sorted(depth_files)
        seen = f"; it holds {len(found)} PNGs, e.g. {found[0]}.png" if found else "; it holds no PNGs"
        raise DepthFilesError(
            f"none of the {len(registered)} registered images has a depth map in {depths} "
            f"(looked for e.g. {example}){seen}. Pass the folder 'depthprior generate' wrote for "
            "the frames of this model"
        )
    if missing and not allow_missing:
        first = ", ".join(f"{image.key}.png" for image in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DepthFilesError(
            f"{len(missing)} of {len(registered)} registered images have no depth map in "
            f"{depths}: {first}{more}. Generate them, or pass --allow-missing to write scale 0 "
            "for those images"
        )
    sizes: dict[str, list[int]] = {}
    if images_dir is not None:
        absent = [image.name for image in registered if not (images_dir / image.name).is_file()]
        if absent:
            more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
            raise UsageError(
                f"{len(absent)} registered images of the model are not in {images_dir}: "
                f"{', '.join(absent[:3])}{more}. Pass the image folder the model was made from"
            )
        sizes = _image_sizes(images_dir, [image.name for image in registered])

    plan: list[Plan] = []
    for image in model.images:
        camera_size = [image.camera.width, image.camera.height]
        rel = image.key + ".png"
        if not image.registered:
            result = ImageResult(image.name, image.key, None, 0, 0, None, 0.0, 0.0, "failed",
                                 "not registered in the model (no pose)", camera_size=camera_size)
            plan.append((image, result, rel, None))
        elif image.key not in depth_files:
            result = ImageResult(image.name, image.key, None, 0, 0, None, 0.0, 0.0, "failed",
                                 "no depth file", camera_size=camera_size)
            plan.append((image, result, rel, None))
        else:
            plan.append((image, None, rel, sizes.get(image.name)))
    return plan


def _image_sizes(images_dir: Path, names: list[str]) -> dict[str, list[int]]:
    """Stored [width, height] of each frame, from its header (no EXIF rotation, no decoding)."""
    sizes: dict[str, list[int]] = {}
    for name in names:
        path = images_dir / name
        try:
            sizes[name] = list(stored_size(path))
        except ImageError as error:
            raise UsageError(f"cannot read the size of {path}: {error}") from None
    return sizes


def _same_aspect(a: list[int], b: list[int]) -> bool:
    """Same aspect ratio up to ASPECT_TOLERANCE: a rounded downscale passes, a rotation fails."""
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1.0) <= ASPECT_TOLERANCE


def _fit_image(model: SparseModel, image: ModelImage, path: Path, rel: str,
               image_size: list[int] | None, method: str) -> ImageResult:
    """One image's result. A frame or depth map whose aspect ratio is not its camera's fails
    `robust`; `mad` writes the official script's numbers anyway (it does not look), unreliable."""
    camera_size = [image.camera.width, image.camera.height]

    def failed(reason: str, points: int = 0, prior_size: list[int] | None = None) -> ImageResult:
        return ImageResult(image.name, image.key, rel, points, 0, None, 0.0, 0.0, "failed",
                           reason, prior_size, camera_size, image_size)

    notes = []
    if image_size is not None and not _same_aspect(image_size, camera_size):
        notes.append(f"image file is {image_size[0]}x{image_size[1]} but its camera is "
                     f"{camera_size[0]}x{camera_size[1]} (rotated or cropped?)")
    try:
        depth = read_png16(path)
    except OSError as error:
        return failed(f"cannot read the depth file: {error}")
    prior_size = [int(depth.shape[1]), int(depth.shape[0])]
    if depth.ndim != 2:
        return failed(f"depth file has {depth.shape[2]} channels: not a depth map "
                      "(single-channel uint16 PNG); is this the image folder?", prior_size=prior_size)
    if not _same_aspect(prior_size, camera_size):
        notes.append(f"depth map is {prior_size[0]}x{prior_size[1]} but the camera is "
                     f"{camera_size[0]}x{camera_size[1]} (rotated, cropped or another image?)")
    if notes and method != "mad":
        return failed(notes[0], prior_size=prior_size)
    fit = fit_samples(method, model, image, depth)
    if not fit.ok:
        return ImageResult(image.name, image.key, rel, fit.points, fit.inliers,
                           _finite(fit.residual), 0.0, 0.0, "failed", fit.reason, prior_size,
                           camera_size, image_size)
    notes += _fit_notes(fit, depth)
    return ImageResult(image.name, image.key, rel, fit.points, fit.inliers, fit.residual,
                       float(fit.scale), float(fit.offset), "unreliable" if notes else "ok",
                       "; ".join(notes), prior_size, camera_size, image_size)


def _fit_notes(fit: Fit, depth: np.ndarray) -> list[str]:
    notes = [fit.reason] if fit.reason else []
    if depth.dtype != np.uint16:
        notes.append(f"{depth.dtype} depth file, not uint16: few levels")
    if fit.inliers < LOW_INLIER_FRACTION * fit.points:
        notes.append(f"only {fit.inliers / fit.points:.0%} of the points agree with the fit")
    if fit.residual > MAX_RESIDUAL:
        notes.append(f"median residual {fit.residual:.0%}")
    return notes


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _mark_outlying_scales(results: list[ImageResult]) -> float:
    """Median of the positive scales (as the trainer computes it); mark those far from it."""
    scales = np.array([r.scale for r in results if r.status != "failed" and r.scale > 0])
    if scales.size == 0:
        return 0.0
    median = float(np.median(scales))
    low, high = SCALE_BAND
    for result in results:
        if result.status == "failed":
            continue
        ratio = result.scale / median
        if ratio < low or ratio > high:
            note = f"scale {ratio:.2g}x the scene median (the 3DGS trainer ignores this depth)"
            result.reason = f"{result.reason}; {note}" if result.reason else note
            result.status = "unreliable"
    return median


# ---------------------------------------------------------------- writing

def _write(summary: AlignSummary, sparse: Path, depths: Path, images_dir: Path | None) -> None:
    params = json.dumps(summary.params, indent=2, allow_nan=False) + "\n"
    report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "tool": {"name": "depthprior", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sparse": str(sparse),
        "depths": str(depths),
        "images": str(images_dir) if images_dir is not None else None,
        "output": str(summary.output),
        "method": summary.method,
        "convention": CONVENTIONS[summary.method],
        "model": {"format": summary.model_format, "images": len(summary.results),
                  "points3D": summary.points3D},
        "depth_manifest": _manifest_backend(depths),
        "summary": {
            "images": len(summary.results),
            "fitted": len(summary.fitted),
            "unreliable": len(summary.unreliable),
            "failed": len(summary.failed),
            "median_scale": summary.median_scale,
            "seconds": round(summary.seconds, 3),
        },
        "thresholds": {
            "min_points": MIN_POINTS,
            "min_inlier_fraction": MIN_INLIER_FRACTION,
            "low_inlier_fraction": LOW_INLIER_FRACTION,
            "max_residual": MAX_RESIDUAL,
            "scale_band": list(SCALE_BAND),
        },
        "unmatched_depths": summary.unmatched_depths,
        "per_image": {r.key: r.to_json() for r in summary.results},
    }
    try:
        text = json.dumps(report, indent=1, allow_nan=False) + "\n"
    except ValueError as error:  # a NaN slipped through: a bug, but never write a broken file
        raise AlignWriteError(f"cannot encode the alignment report: {error}") from None
    try:
        atomic_write_bytes(summary.report, text.encode("utf-8"))
        atomic_write_bytes(summary.output, params.encode("utf-8"))
    except OSError as error:
        raise AlignWriteError(
            f"cannot write {summary.output}: {error.strerror or error}; choose another -o"
        ) from None


def _manifest_backend(depths: Path) -> dict[str, Any] | None:
    """What made the depth maps, if the folder has a depthprior manifest (optional)."""
    try:
        manifest = Manifest.load(depths)
    except ManifestError as error:  # the fit does not need it: say so and go on
        log.warning("%s", error)
        return None
    return manifest.backend if manifest is not None else None
