"""What the official 3DGS trainer (and hierarchical-3DGS, same rule) does with depth_params.json
and the depth PNGs, re-implemented from its readColmapSceneInfo, loadCam and Camera, run on
what `depthprior align` writes: it must never train on a fit depthprior knows is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthprior.scene.align import align
from scenes import Scene, make_scene


def trainer_depth(sparse: Path, depths: Path, key: str, size: tuple[int, int]) -> tuple[bool, np.ndarray]:
    """(depth_reliable, the inverse depth it trains on) for one camera, as 3DGS computes them."""
    params = json.loads((sparse / "depth_params.json").read_text())
    scales = np.array([params[k]["scale"] for k in params])
    median = np.median(scales[scales > 0]) if (scales > 0).sum() else 0
    entry = params.get(key)  # readColmapCameras: a missing key prints a line, then None
    if entry is not None:
        entry = {**entry, "med_scale": median}
    mono = cv2.imread(str(depths / f"{key}.png"), -1)
    if mono is None:  # loadCam: cv2.imread(...).astype(...) raises on a missing file
        raise AttributeError(f"3DGS's loadCam stops: no {key}.png")
    invdepth = cv2.resize(mono.astype(np.float32) / float(2**16), size)
    invdepth[invdepth < 0] = 0
    reliable = True
    if entry is not None:
        if entry["scale"] < 0.2 * entry["med_scale"] or entry["scale"] > 5 * entry["med_scale"]:
            reliable = False
        if entry["scale"] > 0:
            invdepth = invdepth * entry["scale"] + entry["offset"]
    return reliable, invdepth


def _trained_on(scene: Scene) -> dict[str, bool]:
    return {name: trainer_depth(scene.sparse, scene.depths, Scene.key(name),
                                (scene.width, scene.height))[0] for name in scene.names}


def test_when_every_fit_fails_the_trainer_skips_every_image(tmp_path):
    scene = make_scene(tmp_path / "s", n_images=4, write_images=False,
                       few_points={0: 5, 1: 6, 2: 7, 3: 8})
    summary = align(scene.sparse, scene.depths)
    assert len(summary.failed) == 4
    assert not any(_trained_on(scene).values())  # scale 0 beside a median of 0 was "reliable"


def test_a_fit_align_knows_is_wrong_never_reaches_the_trainer(tmp_path):
    scene = make_scene(tmp_path / "s", n_images=5, write_images=False, seed=3)
    wrong = scene.names[1]
    flipped = scene.written_prior[wrong][:, ::-1]  # a mirrored prior: the points disagree
    cv2.imwrite(str(scene.depth_path(wrong)), np.ascontiguousarray(flipped))
    summary = align(scene.sparse, scene.depths)
    by_name = {r.name: r for r in summary.results}
    assert by_name[wrong].status in ("unreliable", "failed"), by_name[wrong]
    trained = _trained_on(scene)
    assert trained[wrong] is False
    assert all(trained[n] for n in scene.names if n != wrong)
    report = json.loads((scene.sparse / "depth_params.report.json").read_text())["per_image"]
    assert report[Scene.key(wrong)]["for_trainer"] is False


def test_a_precision_warning_alone_still_reaches_the_trainer(tmp_path):
    """Another tool's 8-bit priors: few levels, a fair fit; 3DGS may train on them."""
    scene = make_scene(tmp_path / "s", n_images=4, write_images=False, seed=4)
    for name in scene.names:
        cv2.imwrite(str(scene.depth_path(name)), (scene.written_prior[name] >> 8).astype(np.uint8))
    summary = align(scene.sparse, scene.depths)
    for result in summary.results:
        assert result.status == "unreliable" and "few levels" in result.reason, result
        assert result.for_trainer
    coarse = scene.names[2]
    reliable, invdepth = trainer_depth(scene.sparse, scene.depths, Scene.key(coarse),
                                       (scene.prior_width, scene.prior_height))
    truth = scene.prior_inverse_depth[coarse]
    assert reliable and np.median(np.abs(invdepth - truth) / truth) < 0.02


def test_allow_missing_leaves_the_trainer_a_camera_it_can_load_and_skips(tmp_path):
    scene = make_scene(tmp_path / "s", n_images=4, write_images=False, seed=5)
    missing = scene.names[3]
    scene.depth_path(missing).unlink()
    align(scene.sparse, scene.depths, allow_missing=True)
    reliable, invdepth = trainer_depth(scene.sparse, scene.depths, Scene.key(missing),
                                       (scene.width, scene.height))
    assert not reliable and invdepth.shape == (scene.height, scene.width)
    assert all(_trained_on(scene)[n] for n in scene.names if n != missing)
