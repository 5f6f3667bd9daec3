"""Fitting a prior to SfM inverse depths: functions of two arrays -> `Fit`, nothing else.

`target ~ scale * prior + offset`, prior = png / TRAINER_SCALE (the 3DGS trainer's reading),
target = 1/z of the SfM points. Two estimators:

- `fit_mad`: the official recipe of gaussian-splatting's utils/make_depth_scale.py: match the
  median and the mean absolute deviation of both sides. What depthprior objects to is a note
  (`Fit.reason` of a fit that is ok), not a failure. Breaks when some samples are wrong (sky,
  thin stems, reflections, depth edges): the mean absolute deviation follows the outliers.
- `fit_robust`: least-median-of-squares over sampled point pairs, then Tukey-biweight IRLS and
  a least-squares polish on the inliers. Deterministic (fixed seed), tolerates up to half of
  the samples being nonsense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..priors.store import TRAINER_SCALE

MIN_POINTS = 11  # the recipe fits only with more than 10 points
MIN_PRIOR_RANGE = 16 / TRAINER_SCALE  # prior samples spanning fewer PNG levels are degenerate
MIN_TARGET_RANGE = 1e-3  # SfM inverse depths spanning less (relative to their median) too
MIN_INLIER_FRACTION = 0.5  # below this the robust fit has no majority to stand on: failed
SIGMA_FLOOR = 1e-3  # the residual scale is at least this fraction of the median 1/z
OFFICIAL_MIN_SPAN = 1e-3  # the recipe fits only samples whose 1/z spans more than this


@dataclass(frozen=True)
class Fit:
    """One image's fit of `target ~ scale * prior + offset` (prior = png / TRAINER_SCALE, target = 1/z)."""

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
