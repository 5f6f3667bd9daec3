"""align --per-sequence: one fit per sequence from all its frames' SfM samples."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from depthprior.errors import UsageError
from depthprior.priors.manifest import ImageRecord, Manifest
from depthprior.scene.align import align
from scenes import PNG_SCALE, make_scene


def sequence_scene(tmp_path, points: int, noise: float, seed: int = 0):
    """A scene whose priors share one affine map of 1/z plus noise (a temporal model's
    sequence), recorded as one sequence in the depth manifest."""
    scene = make_scene(tmp_path, n_images=12, width=64, height=48, points_per_image=points,
                       write_images=False, seed=seed)
    rng = np.random.default_rng(seed)
    low = min(float(v.min()) for v in scene.prior_inverse_depth.values())
    high = max(float(v.max()) for v in scene.prior_inverse_depth.values())
    a = 60000.0 / (high - low)
    b = 2000.0 - a * low
    records = {}
    for position, name in enumerate(scene.names):
        inv = scene.prior_inverse_depth[name]
        png = np.clip(np.rint(a * inv + b + rng.normal(0, noise * 60000.0, inv.shape)), 0, 65535)
        cv2.imwrite(str(scene.depth_path(name)), png.astype(np.uint16))
        key = scene.key(name)
        records[name] = ImageRecord(status="ok", stem=key, outputs=[key + ".png"], width=scene.prior_width,
                                    height=scene.prior_height, raw_min=0.0, raw_max=1.0, sequence=".",
                                    position=position)
    Manifest(root=scene.depths, images=records).save()
    return scene, PNG_SCALE / a, -b / a


def error(scene, truth_scale, truth_offset, scale, offset) -> float:
    """Mean relative error in 1/z of a fit, over every frame's pixels (noise-free prior)."""
    errors = []
    for name in scene.names:
        inv = scene.prior_inverse_depth[name]
        png = (inv - truth_offset) / truth_scale * PNG_SCALE
        errors.append(np.mean(np.abs(scale * png / PNG_SCALE + offset - inv) / inv))
    return float(np.mean(errors))


def test_per_sequence_fit_beats_per_frame_fits_with_few_points(tmp_path):
    scene, scale, offset = sequence_scene(tmp_path, points=12, noise=0.01)
    sequence = align(scene.sparse, scene.depths, output=tmp_path / "seq.json")  # the default here
    frames = align(scene.sparse, scene.depths, output=tmp_path / "frame.json", per_sequence=False)
    assert sequence.grouping == "sequence" and frames.grouping == "frame"
    assert len({(r.scale, r.offset) for r in sequence.results}) == 1  # one fit, every frame
    seq_error = error(scene, scale, offset, sequence.results[0].scale, sequence.results[0].offset)
    frame_errors = [error(scene, scale, offset, r.scale, r.offset) if not r.failed else np.inf
                    for r in frames.results]
    assert seq_error < 0.5 * np.median(frame_errors), (seq_error, np.median(frame_errors))
    report = json.loads((tmp_path / "seq.report.json").read_text())
    row = report["per_image"][scene.key(scene.names[0])]
    assert row["sequence"] == "." and row["own_fit"]["scale"] == frames.results[0].scale
    assert report["grouping"] == "sequence"


def test_a_frame_that_disagrees_with_its_sequence_is_flagged(tmp_path):
    scene, _scale, _offset = sequence_scene(tmp_path, points=40, noise=0.002, seed=1)
    odd = scene.names[5]
    png = cv2.imread(str(scene.depth_path(odd)), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(scene.depth_path(odd)), (65535 - png).astype(np.uint16))  # flipped: not the sequence's map
    summary = align(scene.sparse, scene.depths, output=tmp_path / "p.json")
    flagged = {r.name: r for r in summary.results if r.status != "ok"}
    assert list(flagged) == [odd] and "disagrees with its sequence" in flagged[odd].reason
    assert not flagged[odd].for_trainer


def test_per_sequence_is_refused_for_priors_mapped_frame_by_frame(tmp_path):
    scene = make_scene(tmp_path, n_images=4, width=48, height=36, points_per_image=40, write_images=False)
    with pytest.raises(UsageError, match="--per-sequence needs priors of a temporal model"):
        align(scene.sparse, scene.depths, per_sequence=True)
