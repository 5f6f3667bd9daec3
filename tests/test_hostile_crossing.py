"""Hostile cases that cross commands, found by attacking the whole product: a planted lock link,
names that are not valid UTF-8, paths the system refuses, priors changed after align."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE, run_cli, one_error_line
from depthprior.scene.align import align
from scenes import Scene, make_scene
from synth import make_frames

pytestmark = pytest.mark.hostile

SIZE = ["--input-size", str(TEST_INPUT_SIZE)]



def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, tiny_model):
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out.mkdir()
    (out / ".depthprior.lock").symlink_to(victim)
    result = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)
    assert result.returncode == 2
    assert "is a link" in one_error_line(result)
    assert victim.read_text() == "precious"


def _run_bytes(*args):
    """The CLI as a subprocess whose output may hold a name's raw bytes."""
    return subprocess.run([sys.executable, "-m", "depthprior", *map(str, args)], capture_output=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_names_that_are_not_utf8_are_drawn_and_reported(tmp_path, tiny_model):
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2)
    os.rename(frames / "frame_0001.jpg", os.fsencode(frames) + b"/bad\xff.jpg")
    generated = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)  # in this process
    assert generated.returncode == 0, generated.stderr
    verified = _run_bytes("verify", out, "--all")
    assert verified.returncode == 0, verified.stderr  # it was a segmentation fault in OpenCV
    reported = _run_bytes("report", out)
    assert reported.returncode == 0, reported.stderr  # it was a UnicodeEncodeError
    assert (out / "report.html").is_file()


def test_a_name_holding_a_newline_is_printed_escaped_on_one_line(tmp_path, tiny_model):
    """Before: a frame named "bad\\nname.jpg" split its FAILED line in two, the second half
    looking like a line of its own."""
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 1)
    os.rename(frames / "frame_0000.jpg", frames / "good\nname.jpg")
    (frames / "bad\nname.jpg").write_bytes(b"not a picture")
    generated = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)
    verified = run_cli("verify", out, "--all")
    for result, lines in ((generated, ["FAILED bad\\nname.jpg: "]), (verified, ["good\\nname.jpg"])):
        assert "name.jpg" not in result.stdout.replace("\\nname.jpg", ""), result.stdout  # no raw newline
        for line in lines:
            assert line in result.stdout, result.stdout
    refused = run_cli("verify", tmp_path / "no\nsuch")
    assert refused.returncode == 2 and "no\\nsuch" in one_error_line(refused) and "such" not in refused.stderr.replace(
        "no\\nsuch", ""), refused.stderr


@pytest.mark.parametrize("command", ["generate", "verify", "align"])
def test_a_path_the_system_refuses_is_one_line(tmp_path, tiny_model, command):
    long = tmp_path / ("y" * 300)
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    args = {"generate": ["generate", frames, long, "--model", tiny_model, *SIZE],
            "verify": ["verify", long],
            "align": ["align", "--sparse", long, "--depths", frames]}[command]
    result = run_cli(*args)
    assert result.returncode == 2
    assert "too long" in one_error_line(result).lower()


@pytest.fixture
def fitted(tmp_path) -> Scene:
    scene = make_scene(tmp_path / "scene", n_images=5, write_images=False, seed=21)
    align(scene.sparse, scene.depths)
    return scene


def test_a_prior_replaced_after_align_is_never_given_its_old_fit(fitted):
    changed = fitted.names[2]
    png = cv2.imread(str(fitted.depth_path(changed)), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(fitted.depth_path(changed)), (png // 3 + 9000).astype(np.uint16))
    result = run_cli("consistency", "--sparse", fitted.sparse, "--depths", fitted.depths,
                     "--resolution", "0.5")
    assert result.returncode == 1, result.stderr
    report = json.loads((fitted.root / "depths_confidence" / "consistency.json").read_text())
    entry = report["images"][changed]
    assert entry["status"] == "excluded" and "changed after align" in entry["reason"]
    assert all(report["images"][n]["status"] != "excluded" for n in fitted.names if n != changed)


def test_a_prior_rotated_after_align_fails_its_image_instead_of_being_stretched(fitted, tmp_path):
    rotated = fitted.names[1]
    png = cv2.imread(str(fitted.depth_path(rotated)), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(fitted.depth_path(rotated)), np.ascontiguousarray(png.T))
    data = tmp_path / "dn"
    result = run_cli("export", "dn-splatter", "--depths", fitted.depths, "--sparse", fitted.sparse,
                     "--data", data)
    assert result.returncode != 0
    assert f"{fitted.prior_height}x{fitted.prior_width}" in result.stderr + result.stdout


def test_dn_splatter_masks_after_consistency_excluded_an_image(tmp_path):
    scene = make_scene(tmp_path / "scene", n_images=5, seed=22, few_points={0: 5})
    align(scene.sparse, scene.depths)  # image 0 fails: consistency writes it no mask
    masks = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", scene.sparse, "--depths", scene.depths, "-o", masks,
                     "--resolution", "0.5")
    assert not (masks / f"{Scene.key(scene.names[0])}.png").exists(), result.stderr
    data = tmp_path / "dn"
    exported = run_cli("export", "dn-splatter", "--depths", scene.depths, "--sparse", scene.sparse,
                       "--data", data, "--masks", masks)
    assert exported.returncode == 0, exported.stderr  # it asked to rerun consistency
    drops = sorted((data / "depth_normals_mask").glob("*.jpg"))
    assert len(drops) == len(scene.names)
    first = cv2.imread(str(next(p for p in drops if Scene.key(scene.names[0]) in p.name)), -1)
    assert (first == 255).all()  # no depth to keep there


def test_export_onnx_refuses_an_input_size_generate_refuses_before_loading(tmp_path):
    result = run_cli("export-onnx", "--model", tmp_path / "no-such-model", "-o", tmp_path / "m.onnx",
                     "--input-size", "14000")
    assert result.returncode == 2
    assert "above 4096" in one_error_line(result)


def test_an_infinite_unit_scale_is_refused_by_the_parser(tmp_path):
    result = run_cli("export", "nerfstudio", "--depths", tmp_path, "--sparse", tmp_path,
                     "--transforms", tmp_path / "t.json", "--unit-scale", "inf")
    assert result.returncode == 2 and "finite number" in result.stderr
    assert "Traceback" not in result.stderr
