"""align --per-sequence: one fit per sequence from all its frames' SfM samples."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE, run_cli
from depthprior.errors import UsageError
from depthprior.priors.backends.video_checkpoints import TEMPORAL_VERSION
from depthprior.priors.manifest import MANIFEST_NAME, ImageRecord, Manifest, ManifestError
from depthprior.priors.pipeline import generate
from depthprior.scene.align import align
from scenes import PNG_SCALE, make_scene
from synth import make_frames

#: what a temporal model's identity records (the torch backend's identity for Video Depth Anything)
TEMPORAL = {"model": "depth-anything/Video-Depth-Anything-Small", "temporal": TEMPORAL_VERSION}


def sequence_scene(tmp_path, points: int, noise: float, seed: int = 0, identity: dict | None = None):
    """A scene whose priors share one affine map of 1/z plus noise (a temporal model's
    sequence), recorded as one sequence in the depth manifest (of a temporal model's identity
    unless `identity` says otherwise)."""
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
    Manifest(root=scene.depths, identity=TEMPORAL if identity is None else identity, images=records).save()
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


@pytest.mark.hostile
def test_sequences_forged_into_a_per_frame_model_s_manifest_are_refused(tmp_path, tiny_model):
    """Before: a per-frame model's manifest whose records were given `sequence` and `position`
    by hand passed verify, and align fitted its folder as one sequence (one scale and offset for
    frames each mapped on its own). Only a temporal model's identity allows them."""
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(24, 32))
    assert generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False).done == 2
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    assert "temporal" not in data["identity"]
    for position, name in enumerate(sorted(data["images"])):
        data["images"][name].update(sequence=".", position=position)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"'frame_0000\.jpg' has a sequence and a position.*temporal") as refused:
        Manifest.load(out)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    verified = run_cli("verify", out)
    assert verified.returncode == 2 and "frame_0000.jpg" in verified.stderr, verified.stdout + verified.stderr
    assert len(verified.stderr.strip().splitlines()) == 1, verified.stderr

    # align: such a manifest is refused as every reader refuses it (before: a warning, and a fit
    # frame by frame)
    scene, _scale, _offset = sequence_scene(tmp_path / "scene", points=12, noise=0.01,
                                            identity={"model": "depth-anything/Depth-Anything-V2-Small-hf"})
    for per_sequence in (False, True):
        with pytest.raises(ManifestError, match="has a sequence and a position"):
            align(scene.sparse, scene.depths, output=tmp_path / "p.json", per_sequence=per_sequence)
    assert not (tmp_path / "p.json").exists()
