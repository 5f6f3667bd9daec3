"""Prompt Depth Anything behind --model with --prompt-sparse: a tiny random-weight checkpoint
(model and image processor saved with save_pretrained, loaded by path) prompted with the depth
of the SfM points of a synthetic scene (tests/scenes.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.backends.torch_hf import TorchOptions
from depthprior.priors.manifest import MANIFEST_NAME
from depthprior.priors.store import read_png16
from scenes import make_scene
from synth import build_tiny_checkpoint, scene_rgb, write_image

SCALE = 2.5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("prompt-da"), "prompt_depth_anything")


@pytest.fixture(scope="module")
def metric_model(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("prompt-da-metric"), "prompt_depth_anything",
                                 metric=True, seed=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), n_images=3, seed=3)


@pytest.fixture(scope="module")
def scaled_sparse(scene, tmp_path_factory):
    """The same scene with every point and camera centre SCALE times further from the origin."""
    import pycolmap

    reconstruction = pycolmap.Reconstruction(str(scene.sparse))
    reconstruction.transform(pycolmap.Sim3d(SCALE, pycolmap.Rotation3d(), np.zeros(3)))
    folder = tmp_path_factory.mktemp("scaled")
    reconstruction.write(str(folder))
    return folder


def _generate(cli, model, images, out, sparse, *extra):
    return cli("generate", images, out, "--model", model, "--device", "cpu", "--format", "both",
               "--prompt-sparse", sparse, "--no-progress", *extra)


def _raw(out, name="frame_000"):
    return np.load(out / f"{name}.npy")


def test_generate_writes_metric_maps_of_the_image_size_as_inverse_depth(model, scene, tmp_path, cli):
    out = tmp_path / "out"
    result = _generate(cli, model, scene.images, out, scene.sparse, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["backend"]["architecture_type"] == "prompt_depth_anything"
    assert manifest["backend"]["model_output"] == "depth"
    assert manifest["identity"]["prompt_sparse"].startswith("sha256:")
    assert len(manifest["images"]) == 3
    for record in manifest["images"].values():
        png, raw = read_png16(out / (record["stem"] + ".png")), np.load(out / (record["stem"] + ".npy"))
        assert png.shape == raw.shape == (scene.height, scene.width)
        assert record["raw_kind"] == "inverse_depth" and record["npy_kind"] == "depth"
        assert record["raw_min"] == pytest.approx(1.0 / raw.max(), rel=1e-4)
        assert record["raw_max"] == pytest.approx(1.0 / raw.min(), rel=1e-4)


def test_the_map_follows_the_prompt(metric_model, scene, scaled_sparse, tmp_path, cli):
    """The network normalises the prompt per image and maps its output back to the prompt's
    range: the same scene SCALE times larger gives SCALE times the depth, and another scene's
    points give another map."""
    maps = {}
    other = make_scene(tmp_path / "other", n_images=3, seed=9, write_images=False)
    for label, sparse in (("scene", scene.sparse), ("scaled", scaled_sparse), ("other", other.sparse)):
        result = _generate(cli, metric_model, scene.images, tmp_path / label, sparse)
        assert result.returncode == 0, result.stderr
        maps[label] = _raw(tmp_path / label)
    np.testing.assert_allclose(maps["scaled"], SCALE * maps["scene"], rtol=1e-4)
    assert np.abs(maps["other"] - maps["scene"]).max() > 0.05 * np.ptp(maps["scene"])


def test_metric_head_stays_within_the_depth_of_the_image_sfm_points(metric_model, scene, tmp_path):
    from depthprior.scene.colmap import read_model
    from depthprior.scene.sampling import observations

    sparse = read_model(scene.sparse)
    image = next(image for image in sparse.images if image.name == "frame_001.jpg")
    depth = 1.0 / observations(sparse, image)[1]
    settings = BackendSettings(model=str(metric_model), device="cpu", options=TorchOptions(prompt_sparse=str(scene.sparse)))
    with create_backend("torch", settings) as engine:
        rgb = scene_rgb(scene.height, scene.width, seed=1)
        values = engine.predict([rgb], ["frame_001.jpg"])[0].values
    assert depth.min() - 1e-4 <= values.min() and values.max() <= depth.max() + 1e-4


def test_without_a_prompt_it_is_refused_in_one_line_before_loading(model, scene, tmp_path, cli):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(model / "config.json", config_only / "config.json")
    for target in (model, config_only):
        result = cli("generate", scene.images, tmp_path / "out", "--model", target, "--device", "cpu")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "pass --prompt-sparse SCENE/sparse/0" in lines[0], result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_a_prompt_for_another_architecture_is_refused_in_one_line(tmp_path, scene, cli):
    dpt = build_tiny_checkpoint(tmp_path / "dpt", "dpt")
    result = cli("generate", scene.images, tmp_path / "out", "--model", dpt, "--prompt-sparse", scene.sparse)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--prompt-sparse applies to Prompt Depth Anything" in lines[0], result.stderr


def test_a_prompt_folder_that_is_not_a_colmap_model_is_refused_in_one_line(model, scene, tmp_path, cli):
    result = _generate(cli, model, scene.images, tmp_path / "out", scene.root)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a COLMAP model" in lines[0], result.stderr


def test_an_image_the_model_does_not_hold_fails_alone(model, scene, tmp_path, cli):
    images = tmp_path / "images"
    shutil.copytree(scene.images, images)
    write_image(images / "extra.jpg", scene_rgb(scene.height, scene.width, seed=7))
    out = tmp_path / "out"
    result = _generate(cli, model, images, out, scene.sparse)
    assert result.returncode == 1, result.stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["images"]["extra.jpg"]["status"] == "failed"
    assert "extra.jpg is not an image of the COLMAP model" in manifest["images"]["extra.jpg"]["error"]
    assert sum(record["status"] == "ok" for record in manifest["images"].values()) == 3
    assert "FAILED extra.jpg: extra.jpg is not an image of the COLMAP model" in result.stdout + result.stderr


def test_resume_never_mixes_maps_of_another_prompt(model, scene, scaled_sparse, tmp_path, cli):
    out = tmp_path / "out"
    assert _generate(cli, model, scene.images, out, scene.sparse).returncode == 0
    again = _generate(cli, model, scene.images, out, scene.sparse)
    assert again.returncode == 0 and "skipped 3" in again.stdout + again.stderr
    other = _generate(cli, model, scene.images, out, scaled_sparse)
    assert other.returncode == 2 and "outputs made with other settings" in other.stderr, other.stderr
    assert "prompt_sparse" in other.stderr


def test_network_input_matches_the_model_own_processor(model, scene):
    """Image and prompt as PromptDepthAnythingImageProcessor makes them from the same picture and
    the same prompt given in millimetres (its prompt_scale_to_meter)."""
    from PIL import Image
    from transformers import PromptDepthAnythingImageProcessorPil

    from depthprior.priors.backends.prompt import prompt_size

    settings = BackendSettings(model=str(model), device="cpu", options=TorchOptions(prompt_sparse=str(scene.sparse)))
    rgb = scene_rgb(scene.height, scene.width, seed=2)
    with create_backend("torch", settings) as engine:
        prepared = engine.prepare(rgb, "frame_002.jpg")
        ours = engine.infer([prepared])[0].values
    processor = PromptDepthAnythingImageProcessorPil.from_pretrained(model)
    theirs = processor(images=Image.fromarray(rgb), prompt_depth=prepared.prompt[0] * 1000.0, return_tensors="pt")
    span = float(np.ptp(theirs["pixel_values"].numpy()))
    assert prepared.pixels.shape == theirs["pixel_values"].shape[1:]
    assert np.abs(prepared.pixels - theirs["pixel_values"][0].numpy()).max() <= 1e-3 * span
    assert prepared.prompt.shape == theirs["prompt_depth"].shape[1:] == (1, *prompt_size(scene.height, scene.width))
    np.testing.assert_allclose(prepared.prompt, theirs["prompt_depth"][0].numpy(), rtol=1e-5)
    import torch

    from transformers import AutoModelForDepthEstimation

    network = AutoModelForDepthEstimation.from_pretrained(model).eval()
    with torch.inference_mode():
        reference = network(**theirs).predicted_depth[0].numpy()
    assert np.abs(ours - reference).max() <= 1e-3 * float(np.ptp(reference))


def test_prompt_grid_keeps_the_nearest_point_per_cell_and_fills_holes_from_the_nearest(scene):
    from depthprior.priors.backends.prompt import PROMPT_LONG_SIDE, SparsePrompts, fill_nearest, prompt_size
    from depthprior.scene.sampling import observations

    prompts = SparsePrompts.read(scene.sparse, 10**8)
    depth = prompts.depth("frame_000.jpg", scene.height, scene.width)
    assert depth.shape == prompt_size(scene.height, scene.width) == (scene.height, scene.width)
    xy, inverse = observations(prompts.model, prompts.image("frame_000.jpg"))
    cells = np.floor(xy).astype(int)
    for (col, row), value in zip(cells[:20], 1.0 / inverse[:20]):
        in_cell = (cells[:, 0] == col) & (cells[:, 1] == row)
        assert depth[row, col] == pytest.approx((1.0 / inverse[in_cell]).min(), rel=1e-6)
    assert depth.min() >= (1.0 / inverse).min() - 1e-6 and depth.max() <= (1.0 / inverse).max() + 1e-6
    assert prompt_size(1440, 1920) == (192, PROMPT_LONG_SIDE)
    grid = np.zeros((3, 4))
    grid[0, 0], grid[2, 3] = 1.0, 5.0
    np.testing.assert_array_equal(fill_nearest(grid), [[1, 1, 1, 5], [1, 1, 5, 5], [1, 5, 5, 5]])
