"""The window rule over a sequence (video_windows.stitch) against a direct transcription of the
reference infer_video_depth loop, with a fake network whose outputs depend on the window."""

from __future__ import annotations

import numpy as np
import pytest

from depthprior.priors.backends.video_windows import Resume, stitch, window_frames

INFER_LEN, OVERLAP, KEYFRAMES, INTERP_LEN = 32, 10, [0, 12, 24, 25, 26, 27, 28, 29, 30, 31], 8


def fake_network(calls: list):
    """Maps that depend on the frame, its place in the window and the window (so scale and
    shift between windows are not 1 and 0), like a network's relative outputs."""
    def run(inputs):
        calls.append([float(x[0, 0]) for x in inputs])
        window = len(calls)
        gain, offset = 1 + 0.3 * np.sin(window), 0.2 * np.cos(window)
        return [(x * gain + offset + 0.01 * k).astype(np.float32) for k, x in enumerate(inputs)]
    return run


def frame_input(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (rng.random((3, 4), dtype=np.float32) + i * 0.05).astype(np.float32)


def reference_rule(frames: list[np.ndarray], run, metric: bool) -> list[np.ndarray]:
    """infer_video_depth's loop, transcribed (network resolution, no resize)."""
    frame_step = INFER_LEN - OVERLAP
    org_len = len(frames)
    append = (frame_step - (org_len % frame_step)) % frame_step + (INFER_LEN - frame_step)
    frame_list = frames + [frames[-1].copy()] * append
    depth_list, pre_input = [], None
    for frame_id in range(0, org_len, frame_step):
        cur = [frame_list[frame_id + i] for i in range(INFER_LEN)]
        if pre_input is not None:
            cur[:OVERLAP] = [pre_input[k] for k in KEYFRAMES]
        depth_list += list(run(cur))
        pre_input = cur
    aligned, ref_align = [], []
    align_len = OVERLAP - INTERP_LEN
    kf_align = KEYFRAMES[:align_len]
    for frame_id in range(0, len(depth_list), INFER_LEN):
        if not aligned:
            aligned += depth_list[:INFER_LEN]
            ref_align += [depth_list[frame_id + k] for k in kf_align]
            continue
        curr = [depth_list[frame_id + i] for i in range(len(kf_align))]
        if metric:
            scale, shift = 1.0, 0.0
        else:
            p, t = np.concatenate(curr).astype(np.float32), np.concatenate(ref_align).astype(np.float32)
            m = np.ones_like(t)
            a00, a01, a11 = np.sum(m * p * p), np.sum(m * p), np.sum(m)
            b0, b1 = np.sum(m * p * t), np.sum(m * t)
            det = a00 * a11 - a01 * a01
            scale, shift = ((a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det) if det != 0 else (1, 0)
        pre = aligned[-INTERP_LEN:]
        post = [d * scale + shift for d in depth_list[frame_id + align_len:frame_id + OVERLAP]]
        for d in post:
            d[d < 0] = 0
        weights = [0.0] + [i / (INTERP_LEN - 1) for i in range(1, INTERP_LEN - 1)] + [1.0]
        aligned[-INTERP_LEN:] = [a * (1 - w) + b * w for a, b, w in zip(pre, post, weights)]
        for i in range(OVERLAP, INFER_LEN):
            new = depth_list[frame_id + i] * scale + shift
            new[new < 0] = 0
            aligned.append(new)
        ref_align = ref_align[:1]
        for k in kf_align[1:]:
            new = depth_list[frame_id + k] * scale + shift
            new[new < 0] = 0
            ref_align.append(new)
    return aligned[:org_len]


def collect(windows) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for window in windows:
        for position, values in window.final:
            assert position not in out
            out[position] = values
    return out


@pytest.mark.parametrize("count", [1, 31, 32, 33, 70])
@pytest.mark.parametrize("metric", [False, True])
def test_stitched_maps_follow_the_reference_rule(count, metric):
    frames = [frame_input(i) for i in range(count)]
    expected = reference_rule(frames, fake_network([]), metric)
    loaded: list[int] = []

    def load(i):
        loaded.append(i)
        return frames[i]

    calls: list = []
    got = collect(stitch(count, load, fake_network(calls), metric))
    assert sorted(got) == list(range(count))
    for i in range(count):
        np.testing.assert_allclose(got[i], expected[i], rtol=0, atol=1e-6)
    assert len(calls) == -(-count // 22)
    assert len(loaded) <= count + 10  # each frame read once (keyframes of padding aside)


@pytest.mark.parametrize("stop_after", [0, 1, 2])
def test_resuming_from_what_a_window_left_gives_the_same_maps(stop_after):
    count = 80
    frames = [frame_input(i) for i in range(count)]
    whole = collect(stitch(count, frames.__getitem__, fake_network([]), False))
    calls: list = []
    run = fake_network(calls)
    written: dict[int, np.ndarray] = {}
    pending: list = []
    for window in stitch(count, frames.__getitem__, run, False):
        written.update(window.final)
        pending = window.pending
        if window.index == stop_after:
            break  # killed here: the next window was in flight
    resume = Resume(window=stop_after + 1, first=written[0], anchor=written[stop_after * 22 + 12],
                    pending=[values for _, values in pending])
    for window in stitch(count, frames.__getitem__, run, False, resume):
        written.update(window.final)
    assert sorted(written) == list(range(count))
    for i in range(count):
        np.testing.assert_array_equal(written[i], whole[i])


def test_window_inputs_are_the_reference_frames():
    assert window_frames(0, 5) == [0, 1, 2, 3, 4] + [4] * 27
    assert window_frames(1, 70) == [0, 12, *range(24, 32), *range(32, 54)]
    assert window_frames(2, 70) == [0, 34, *range(46, 54), *range(54, 69), *[69] * 7]
