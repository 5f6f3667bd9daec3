"""Video Depth Anything's inference rule over one sequence, as a pure function with memory
bounded by one window: frames are loaded by position when a window needs them, and each
window hands back the maps that became final.

The rule is the reference `infer_video_depth`'s:
- windows of 32 network inputs; the first holds frames 0..31, each later one the previous
  window's inputs at KEYFRAMES (frame 0, its position 12 and its last eight) followed by the
  next 22 frames; the tail is padded with copies of the last frame, ceil(count / 22) windows;
- each later window's outputs are mapped onto the earlier ones by the least-squares scale and
  shift that takes its first two outputs (keyframes: frame 0 and the previous position 12)
  onto the aligned maps of those frames (for metric models scale 1, shift 0), negatives
  clamped to zero;
- its outputs for the previous window's last eight frames crossfade linearly (weights 0..1)
  from the earlier maps to the new ones.

After window w, frames up to 22w + 23 are final; the last eight wait for the next window's
crossfade (`Window.pending`). `Resume` restarts at a later window from what was written: the
final maps of frame 0 and of the previous window's position 12, and the pending eight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

#: the reference's window, overlap, keyframes (positions in the previous window) and crossfade
WINDOW = 32
OVERLAP = 10
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
CROSSFADE = 8
STEP = WINDOW - OVERLAP
#: keyframes whose aligned maps anchor the next window's scale and shift
ANCHORS = KEYFRAMES[:OVERLAP - CROSSFADE]


@dataclass
class Window:
    """What one window settled: `final` maps by frame position (never changed again) and the
    `pending` ones (frame positions after final's) that the next window crossfades."""

    index: int
    final: list[tuple[int, np.ndarray]]
    pending: list[tuple[int, np.ndarray]] = field(default_factory=list)


@dataclass
class Resume:
    """Where to restart: the next window's index and what the windows before it left."""

    window: int
    first: np.ndarray  # the final map of frame 0
    anchor: np.ndarray  # the final map of the previous window's position 12
    pending: list[np.ndarray]  # the previous window's last eight maps, before the crossfade


def window_count(count: int) -> int:
    return max(1, -(-count // STEP))


def window_frames(window: int, count: int) -> list[int]:
    """The frame positions of a window's 32 network inputs (padding repeats the last frame)."""
    if window == 0:
        positions = list(range(WINDOW))
    else:
        previous = window_frames(window - 1, count)
        start = window * STEP
        positions = [previous[k] for k in KEYFRAMES] + list(range(start + OVERLAP, start + WINDOW))
    return [min(p, count - 1) for p in positions]


def anchor_frame(window: int) -> int:
    """The frame whose aligned map is the second scale/shift anchor for window + 1 (position 12)."""
    return window * STEP + KEYFRAMES[1]


def fit_scale_shift(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least squares target ~ scale * source + shift over all pixels, in float32 sums as the
    reference's compute_scale_and_shift (scale 1, shift 0 when the system is singular)."""
    source = source.astype(np.float32, copy=False)
    target = target.astype(np.float32, copy=False)
    a00, a01, a11 = np.sum(source * source), np.sum(source), np.float32(source.size)
    b0, b1 = np.sum(source * target), np.sum(target)
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 1.0, 0.0
    return float((a11 * b0 - a01 * b1) / det), float((-a01 * b0 + a00 * b1) / det)


def stitch(count: int, load: Callable[[int], Any], run: Callable[[list[Any]], Sequence[np.ndarray]],
           metric: bool, resume: Resume | None = None) -> Iterator[Window]:
    """The windows of a `count`-frame sequence in order. load(position) gives a frame's network
    input; run(32 inputs) the network's 32 maps. Frames past count (padding) are never yielded."""
    if count < 1:
        return
    total = window_count(count)
    start = 0 if resume is None else resume.window
    inputs: list[Any] | None = None
    if resume is not None:
        previous = window_frames(start - 1, count)
        inputs = [None] * WINDOW
        for k in KEYFRAMES:
            inputs[k] = load(previous[k])
        anchors, pending = [resume.first, resume.anchor], list(resume.pending)
    for window in range(start, total):
        positions = window_frames(window, count)
        if window == 0:
            cache: dict[int, Any] = {}
            current = [cache[p] if p in cache else cache.setdefault(p, load(p)) for p in positions]
        else:
            fresh: dict[int, Any] = {}
            current = [inputs[k] for k in KEYFRAMES] + [
                fresh[p] if p in fresh else fresh.setdefault(p, load(p)) for p in positions[OVERLAP:]]
        maps = [np.asarray(m, dtype=np.float32) for m in run(current)]
        base = window * STEP
        if window == 0:
            aligned = maps
            anchors = [aligned[k] for k in ANCHORS]
            final = [(p, aligned[p]) for p in range(WINDOW - CROSSFADE)]
            pending = aligned[WINDOW - CROSSFADE:]
        else:
            scale, shift = (1.0, 0.0) if metric else fit_scale_shift(
                np.concatenate(maps[:len(ANCHORS)]), np.concatenate(anchors))
            aligned = [None] * OVERLAP + [_affine(m, scale, shift) for m in maps[OVERLAP:]]
            post = [_affine(m, scale, shift) for m in maps[len(ANCHORS):OVERLAP]]
            faded = _crossfade(pending, post)
            final = [(base + len(ANCHORS) + i, faded[i]) for i in range(CROSSFADE)]
            final += [(base + k, aligned[k]) for k in range(OVERLAP, WINDOW - CROSSFADE)]
            pending = aligned[WINDOW - CROSSFADE:]
            anchors = [anchors[0], aligned[KEYFRAMES[1]]]
        inputs = current
        last = window == total - 1
        pending_positions = [base + WINDOW - CROSSFADE + i for i in range(CROSSFADE)]
        if last:
            final += list(zip(pending_positions, pending))
        yield Window(window, [(p, m) for p, m in final if p < count],
                     [] if last else [(p, m) for p, m in zip(pending_positions, pending)])


def _affine(values: np.ndarray, scale: float, shift: float) -> np.ndarray:
    mapped = values * np.float32(scale) + np.float32(shift)
    mapped[mapped < 0] = 0
    return mapped


def _crossfade(before: list[np.ndarray], after: list[np.ndarray]) -> list[np.ndarray]:
    """The reference's get_interpolate_frames: weights 0, 1/7, ..., 1 on the later maps."""
    steps = len(before) - 1
    weights = [i / steps for i in range(len(before))]
    return [b * (1 - w) + a * w for b, a, w in zip(before, after, weights)]
