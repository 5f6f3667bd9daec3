"""Every supported transformers depth architecture behind --model: tiny random-weight
checkpoints (model and image processor saved with save_pretrained, loaded by path) generate maps
of the image's size in the architecture's convention, match transformers' own pipeline at the
network resolution, and what depthprior cannot run is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from depthprior import generate
from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.manifest import MANIFEST_NAME
from depthprior.priors.store import read_png16
from synth import build_tiny_checkpoint, make_frames, scene_rgb

#: (architecture, with a metric head) -> (what the map holds, raw_kind in the PNG)
CASES = {
    ("dpt", False): ("disparity", "disparity"),
    ("glpn", False): ("depth", "inverse_depth"),
    ("zoedepth", False): ("depth", "inverse_depth"),
    ("depth_pro", False): ("disparity", "disparity"),
    ("depth_pro", True): ("depth", "inverse_depth"),
    ("tipsv2_dpt", False): ("depth", "inverse_depth"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built = {}

    def get(architecture: str, metric: bool = False):
        key = (architecture, metric)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{architecture}-{'metric' if metric else 'relative'}")
            built[key] = build_tiny_checkpoint(folder, architecture, metric=metric)
        return built[key]

    return get


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    make_frames(root, count=2, size=(48, 64))
    make_frames(root / "tall", count=1, size=(70, 40))
    return root


@pytest.mark.parametrize("architecture,metric", list(CASES))
def test_each_architecture_writes_maps_in_its_convention_and_resumes(checkpoints, frames, tmp_path,
                                                                     architecture, metric):
    kind, raw_kind = CASES[architecture, metric]
    model = checkpoints(architecture, metric)
    out = tmp_path / "out"
    summary = generate(frames, out, model=str(model), device="cpu", format="both", progress=False,
                       batch_size=2)
    assert summary.exit_code == 0 and summary.done == 3, summary.format()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    backend = manifest["backend"]
    assert backend["architecture_type"] == architecture
    assert backend["units"] == ("m" if kind == "depth" else "relative")
    assert backend["model_output"] == kind
    for name, record in manifest["images"].items():
        size = (70, 40) if name.startswith("tall") else (48, 64)
        png, raw = read_png16(out / (record["stem"] + ".png")), np.load(out / (record["stem"] + ".npy"))
        assert png.shape == size and raw.shape == size, name
        assert record["raw_kind"] == raw_kind and record["npy_kind"] == kind
        if raw_kind == "inverse_depth":  # the PNG holds 1/m of the .npy's metres
            inverse = np.where(raw > 0, 1.0 / np.maximum(raw, 1e-30), 0.0)
            assert record["raw_min"] == pytest.approx(inverse.min(), rel=1e-4)
            assert record["raw_max"] == pytest.approx(inverse.max(), rel=1e-4)
        if architecture == "depth_pro" and metric:
            extras = record["extras"]
            fov = np.radians(extras["field_of_view_deg"])
            assert 0 < fov < np.pi
            assert extras["focal_px"] == pytest.approx(0.5 * size[1] / np.tan(fov / 2))
        else:
            assert record["extras"] == {}
    again = generate(frames, out, model=str(model), device="cpu", format="both", progress=False)
    assert again.done == 0 and again.skipped == 3


def _network_output(model, image, input_size=518):
    settings = BackendSettings(model=str(model), device="cpu", input_size=input_size)
    with create_backend("torch", settings) as engine:
        prepared = engine.prepare(image, "image.png")
        return prepared, engine.infer([prepared])[0].values


@pytest.mark.parametrize("architecture", ["dpt", "glpn", "zoedepth"])
def test_raw_output_matches_transformers_pipeline_at_network_resolution(checkpoints, architecture):
    from PIL import Image
    from transformers import pipeline

    model = checkpoints(architecture)
    image = scene_rgb(45, 64, seed=3)
    prepared, ours = _network_output(model, image)
    estimator = pipeline("depth-estimation", model=str(model), device="cpu")
    inputs = estimator.image_processor(Image.fromarray(image), return_tensors="pt")
    np.testing.assert_allclose(prepared.pixels, inputs["pixel_values"][0].numpy(), rtol=0, atol=1e-5)
    import torch

    with torch.inference_mode():
        theirs = estimator.model(**inputs).predicted_depth[0].numpy()
    assert ours.shape == theirs.shape
    span = float(theirs.max() - theirs.min())
    if span < 1e-5 * float(np.abs(theirs).max()):  # tiny random ZoeDepth heads give flat maps
        span = float(np.abs(theirs).max())
    assert np.abs(ours - theirs).max() <= 1e-3 * span


def _torchvision_processor(name: str, model):
    """transformers' own image processor for a checkpoint whose processor needs torchvision."""
    try:
        import torchvision  # noqa: F401 - PyPI's CUDA build fails to import beside a CPU torch
    except Exception as error:  # noqa: BLE001 - ImportError, or RuntimeError from its operators
        pytest.skip(f"transformers' {name} needs a working torchvision ({type(error).__name__})")
    import transformers

    return getattr(transformers, name).from_pretrained(str(model))


@pytest.mark.parametrize("architecture,processor", [("depth_pro", "DepthProImageProcessor"),
                                                    ("tipsv2_dpt", "Tipsv2DptImageProcessor")])
def test_network_input_matches_the_torchvision_processor(checkpoints, architecture, processor):
    """Depth Pro and TIPSv2 DPT: depthprior makes their processor's input without torchvision;
    equal to it within 1e-3 of its range on a landscape and a portrait picture."""
    from PIL import Image

    model = checkpoints(architecture)
    theirs_processor = _torchvision_processor(processor, model)
    for height, width in ((45, 64), (300, 170)):
        image = scene_rgb(height, width, seed=height)
        prepared, _ = _network_output(model, image)
        theirs = theirs_processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"][0].numpy()
        assert prepared.shape == theirs.shape
        assert np.abs(prepared.pixels - theirs).max() <= 1e-3 * float(theirs.max() - theirs.min())


def test_dpt_padding_is_cut_before_the_map_is_resized_back(checkpoints):
    """The DPT processor pads to multiples of 64 around the image; the map shows the image only."""
    model = checkpoints("dpt")
    prepared, _ = _network_output(model, scene_rgb(45, 64, seed=3))
    frame = prepared.frame
    assert frame is not None and prepared.shape[1:] == frame.outer
    assert (frame.height, frame.width) == (48, 64) and frame.outer == (64, 64)
    assert (frame.top, frame.left) == (8, 0)
    assert np.all(prepared.pixels[:, :frame.top] == 0)


def test_input_size_changes_the_network_size_where_the_model_allows_it(checkpoints):
    prepared, raw = _network_output(checkpoints("dpt"), scene_rgb(48, 64), input_size=128)
    assert prepared.shape[1:] == (128, 128) and prepared.frame.height == 96  # aspect kept, padded to 64


def test_fixed_size_model_refuses_input_size_in_one_line_before_loading(checkpoints, frames, tmp_path, cli):
    model = checkpoints("depth_pro")
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((model / "config.json").read_text())
    for target in (model, tmp_path / "no-weights"):  # the rule is known from config.json alone
        result = cli("generate", frames, tmp_path / "out", "--model", target, "--input-size", "384")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--input-size does not apply to depth_pro" in lines[0], result.stderr
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_classification_checkpoint_is_refused_in_one_line(checkpoints, frames, tmp_path, cli):
    model = checkpoints("vit")
    result = cli("generate", frames, tmp_path / "out", "--model", model)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'vit' checkpoint, not a depth-estimation model" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model_type,reason", [("chmv2", "canopy height")])
def test_depth_architectures_depthprior_cannot_run_are_refused_with_the_reason(tmp_path, frames, cli,
                                                                               model_type, reason):
    model = tmp_path / model_type
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": model_type}))
    result = cli("generate", frames, tmp_path / "out", "--model", model)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "choose one of" in lines[0], result.stderr


def test_check_prints_architecture_convention_and_preprocessing(checkpoints, cli):
    result = cli("check", "--model", checkpoints("depth_pro", True), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for expected in ("architecture_type: depth_pro", "convention: metric depth (m)",
                     "preprocessing: DepthProImageProcessor", "bilinear to fixed 128x128"):
        assert expected in result.stdout, result.stdout


def test_check_says_in_one_line_when_the_model_fails_on_the_picture(checkpoints, cli):
    """transformers' ViT DPT needs a square patch grid; the tiny one's processor keeps the
    aspect ratio, so check's 640x480 picture makes the model raise: one line, not a traceback."""
    result = cli("check", "--model", checkpoints("dpt"), "--device", "cpu")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the model failed on the built-in synthetic image (640x480)" in lines[0]
    assert "Traceback" not in result.stderr
