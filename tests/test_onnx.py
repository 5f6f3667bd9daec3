"""export-onnx and the onnx backend, on tiny random-weight Depth Anything checkpoints.

One dynamo export through the CLI (the default path, ~15 s) is shared by most tests; the
metric and fixed-shape cases use the faster torchscript exporter through the library.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import TEST_INPUT_SIZE, run_cli  # noqa: E402
from depthprior import generate  # noqa: E402
from depthprior.priors.backends import BackendSettings, create_backend  # noqa: E402
from depthprior.errors import ImageError, ModelLoadError, UsageError  # noqa: E402
from depthprior.priors.backends.onnx import inspect_onnx  # noqa: E402
from depthprior.priors.manifest import Manifest  # noqa: E402
from depthprior.priors.onnx_export import ExportError, export_onnx  # noqa: E402
from depthprior.priors.store import read_png16  # noqa: E402
from reference import reference_position_resize  # noqa: E402
from synth import make_frames, scene_rgb, write_image  # noqa: E402

#: one xdist worker runs the module: `tiny_onnx` is exported once, and torch.export's and
#: onnxscript's first use in a process (seconds) is paid once
pytestmark = pytest.mark.xdist_group("onnx")

#: (height, width) of test images: landscape, portrait, wide, tall
ASPECTS = [(48, 64), (64, 48), (40, 100), (100, 40)]


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    """The relative tiny model exported by the CLI, as a user does it (dynamo exporter)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = run_cli("export-onnx", "--model", tiny_model, "-o", path, "--input-size", TEST_INPUT_SIZE,
                     timeout=300)
    assert result.returncode == 0, result.stderr
    return path, result.stdout


@pytest.fixture(scope="module")
def torch_engine(tiny_model):
    with create_backend("torch", BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE)) as engine:
        yield engine


def _onnx_engine(path, **settings):
    settings.setdefault("input_size", TEST_INPUT_SIZE)
    return create_backend("onnx", BackendSettings(model=str(path), **settings))


def _rel_error(got, expected):
    return float(np.abs(got - expected).max() / (expected.max() - expected.min()))


def test_cli_export_writes_a_verified_dynamic_graph_with_metadata(tiny_onnx, tiny_model):
    import onnx

    path, stdout = tiny_onnx
    assert "verified against PyTorch" in stdout and "-> OK" in stdout
    assert f"--backend onnx --model {path}" in stdout
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    meta = inspect_onnx(path).metadata
    assert meta["source_model"] == str(tiny_model.resolve())
    assert meta["model_output"] == "disparity" and meta["depth_estimation_type"] == "relative"
    assert meta["input_size"] == str(TEST_INPUT_SIZE) and meta["patch_size"] == "14"
    assert meta["dynamic_axes"] == "batch,height,width" and "dynamo" in meta["exporter"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left


@pytest.mark.parametrize("input_size", [TEST_INPUT_SIZE, 70])
def test_onnx_matches_torch_on_every_aspect_ratio(tiny_onnx, tiny_model, input_size):
    images = [scene_rgb(h, w, seed=i) for i, (h, w) in enumerate(ASPECTS)]
    settings = BackendSettings(model=str(tiny_model), input_size=input_size)
    with create_backend("torch", settings) as torch_engine, _onnx_engine(tiny_onnx[0], input_size=input_size) as engine:
        expected = [torch_engine.predict([image])[0] for image in images]
        got = [engine.predict([image])[0] for image in images]
        # a batch of several same-size inputs goes through the dynamic batch axis
        batched = engine.infer([engine.prepare(images[0], "0.png")] * 3)
    for image, want, have in zip(images, expected, got):
        assert have.values.shape == image.shape[:2] and have.values.dtype == np.float32
        assert have.kind == want.kind == "disparity"
        assert _rel_error(have.values, want.values) <= 1e-3
    assert len(batched) == 3 and all(np.array_equal(batched[0], b) for b in batched[1:])


def test_generate_cli_with_onnx_matches_torch_pngs(tiny_onnx, tiny_model, tmp_path):
    frames = tmp_path / "frames"
    make_frames(frames, 2, size=(48, 64))
    write_image(frames / "sub" / "tall.png", scene_rgb(100, 40, seed=7))
    torch_run = generate(frames, tmp_path / "torch", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                         progress=False)
    assert torch_run.done == 3
    result = run_cli("generate", frames, tmp_path / "onnx", "--backend", "onnx", "--model", tiny_onnx[0],
                     "--input-size", TEST_INPUT_SIZE, "--no-progress", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    for name in ("frame_0000.png", "frame_0001.png", "sub/tall.png"):
        a = read_png16(tmp_path / "torch" / name).astype(np.int64)
        b = read_png16(tmp_path / "onnx" / name).astype(np.int64)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-3 * 65535
    manifest = Manifest.load(tmp_path / "onnx")
    assert manifest.identity["backend"] == "onnx" and len(manifest.identity["onnx_sha256"]) == 64
    assert manifest.identity["model"] == str(tiny_model.resolve())
    assert manifest.backend["model_output"] == "disparity" and manifest.backend["device"] == "cpu"
    assert manifest.backend["providers"] == ["CPUExecutionProvider"]
    assert all(r.raw_kind == "disparity" for _, r in manifest.iter_ok())


def test_resume_follows_the_file_contents(tiny_onnx, tmp_path):
    frames = tmp_path / "frames"
    make_frames(frames, 2, size=(48, 64))
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx[0], model)
    kw = dict(backend="onnx", model=str(model), input_size=TEST_INPUT_SIZE, progress=False)
    assert generate(frames, tmp_path / "out", **kw).done == 2
    # the same bytes somewhere else: same outputs, nothing to redo
    moved = tmp_path / "elsewhere" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.move(model, moved)
    assert generate(frames, tmp_path / "out", **{**kw, "model": str(moved)}).skipped == 2
    # other weights under the same name: refused without --overwrite
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(moved))
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(proto, str(moved))
    with pytest.raises(UsageError, match="onnx_sha256.*--overwrite"):
        generate(frames, tmp_path / "out", **{**kw, "model": str(moved)})
    assert generate(frames, tmp_path / "out", overwrite=True, **{**kw, "model": str(moved)}).done == 2


def test_metric_model_torchscript_export_with_external_data(tiny_metric_model, tmp_path):
    path = tmp_path / "metric.onnx"
    result = export_onnx(str(tiny_metric_model), path, input_size=TEST_INPUT_SIZE, exporter="torchscript",
                         external_data=True)
    assert result.verified and result.max_rel_error <= 1e-3 and len(result.checks) == 3
    assert result.external_data == tmp_path / "metric.onnx.data" and result.external_data.stat().st_size > 10_000
    assert path.stat().st_size < result.external_data.stat().st_size  # the graph alone
    assert result.metadata["depthprior.model_output"] == "depth"
    assert "external data" in result.format()
    images = [scene_rgb(h, w, seed=i) for i, (h, w) in enumerate(ASPECTS[:2])]
    settings = BackendSettings(model=str(tiny_metric_model), input_size=TEST_INPUT_SIZE)
    with create_backend("torch", settings) as torch_engine, _onnx_engine(path) as engine:
        assert engine.describe()["model_output"] == "depth"
        for image in images:
            want, have = torch_engine.predict([image])[0], engine.predict([image])[0]
            assert have.kind == want.kind == "depth"
            assert _rel_error(have.values, want.values) <= 1e-3
    # the weights file is part of the identity and must stay beside the graph
    (tmp_path / "metric.onnx.data").rename(tmp_path / "gone.data")
    with pytest.raises(ModelLoadError, match="keep the .data file"):
        _onnx_engine(path)


def test_fixed_shape_graph_runs_its_size_and_names_the_fix_for_others(tiny_model, tmp_path):
    path = tmp_path / "static.onnx"
    result = export_onnx(str(tiny_model), path, input_size=TEST_INPUT_SIZE, exporter="torchscript",
                         static_shape=(56, 70))
    assert result.verified and not result.dynamic and "fixed 56x70" in result.format()
    frames = tmp_path / "frames"
    write_image(frames / "landscape.png", scene_rgb(48, 64))  # network input 56x70
    write_image(frames / "portrait.png", scene_rgb(64, 48))  # network input 70x56
    summary = generate(frames, tmp_path / "out", backend="onnx", model=str(path), input_size=TEST_INPUT_SIZE,
                       progress=False, batch_size=2)
    assert summary.done == 1 and list(summary.failed) == ["portrait.png"]
    assert "fixed-shape" in summary.failed["portrait.png"] and "export-onnx" in summary.failed["portrait.png"]
    with _onnx_engine(path) as engine, pytest.raises(ImageError, match="56x70"):
        engine.infer([engine.prepare(scene_rgb(64, 48), "0.png")])


def test_model_path_errors_say_to_export_first(tmp_path, tiny_model, tiny_onnx):
    for model in (str(tiny_model), "depth-anything/Depth-Anything-V2-Small-hf"):
        with pytest.raises(UsageError, match="needs --model to be a .onnx file.*depthprior export-onnx"):
            _onnx_engine(model)
    with pytest.raises(UsageError, match="no such file.*export-onnx"):
        _onnx_engine(tmp_path / "missing.onnx")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UsageError, match="not a file"):
        _onnx_engine(tmp_path / "folder.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        _onnx_engine(tmp_path / "junk.onnx")
    with pytest.raises(UsageError, match="auto, cpu, cuda"):
        _onnx_engine(tiny_onnx[0], device="mps")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(UsageError, match="no CUDA provider.*onnxruntime-gpu"):
            _onnx_engine(tiny_onnx[0], device="cuda")
    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(UsageError, match="no TensorRT provider"):
            _onnx_engine(tiny_onnx[0], device="tensorrt")
    with pytest.raises(UsageError, match="--revision"):
        _onnx_engine(tiny_onnx[0], revision="main")
    with pytest.raises(UsageError, match="--backend torch for --dtype fp16"):
        _onnx_engine(tiny_onnx[0], dtype="fp16")
    # before any work, from the command line: one line, exit code 2
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    result = run_cli("generate", frames, tmp_path / "out", "--backend", "onnx", "--model", tiny_model)
    assert result.returncode == 2 and "depthprior export-onnx" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_refuses_bad_outputs_and_keeps_the_old_file_on_failure(tiny_model, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="folder"):
        export_onnx(str(tiny_model), tmp_path, input_size=TEST_INPUT_SIZE)
    with pytest.raises(UsageError, match=".onnx"):
        export_onnx(str(tiny_model), tmp_path / "model.bin", input_size=TEST_INPUT_SIZE)
    with pytest.raises(UsageError, match="multiple of 14"):
        export_onnx(str(tiny_model), tmp_path / "model.onnx", input_size=50, exporter="torchscript")
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    import depthprior.priors.onnx_export as module

    def wrong(network, path, shapes):
        return [module.ParityCheck(1, h, w, 1.0, 0.5, True) for _, h, w in shapes]

    monkeypatch.setattr(module, "verify_parity", wrong)
    with pytest.raises(ExportError, match="does not match the PyTorch model"):
        export_onnx(str(tiny_model), target, input_size=TEST_INPUT_SIZE, exporter="torchscript")
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_check_command_runs_the_onnx_backend(tiny_onnx):
    from depthprior.priors.check import check

    report = check(backend="onnx", settings=BackendSettings(model=str(tiny_onnx[0]), input_size=TEST_INPUT_SIZE))
    assert report.ok and report.kind == "disparity" and report.backend["backend"] == "onnx"
    assert json.loads(json.dumps(report.backend))["graph_input"] == "dynamic"


def test_no_torch_import_for_onnx_inference(tiny_onnx, tmp_path):
    """Inference with an exported file needs onnxruntime only: torch is not even imported."""
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    code = (
        "import sys; from depthprior import generate; "
        f"s = generate({str(frames)!r}, {str(tmp_path / 'out')!r}, backend='onnx', model={str(tiny_onnx[0])!r}, "
        f"input_size={TEST_INPUT_SIZE}, progress=False); "
        "assert s.done == 1, s.failed; assert 'torch' not in sys.modules, 'torch imported'"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def position_module(dim: int = 16):
    """An embeddings module as DINOv2 has it: a 1 + 37x37 position table and a patch size."""
    import torch

    module = torch.nn.Module()
    table = torch.randn(1, 1 + 37 * 37, dim, generator=torch.Generator().manual_seed(0))
    module.position_embeddings = torch.nn.Parameter(table)
    module.patch_embeddings = torch.nn.Module()
    module.patch_embeddings.patch_size = (14, 14)
    return module


def as_grid(table, rows: int, cols: int):
    return table[:, 1:].reshape(1, rows, cols, -1).permute(0, 3, 1, 2)


#: patch grids: the trained one, one side trained, square but not trained, portrait, tiny, large
GRIDS = [(37, 37), (37, 56), (53, 37), (4, 4), (4, 5), (74, 100)]


@pytest.mark.parametrize("rows,cols", GRIDS)
def test_position_embedding_matmuls_follow_the_reference_rule(rows, cols):
    """The export computes the position-embedding resize as matmuls (ONNX Runtime's cubic
    Resize is slow); the result equals torch's bicubic with the reference scale factor."""
    import torch

    from depthprior.priors.onnx_depth_anything import _interpolate_pos_encoding

    module = position_module()
    with torch.no_grad():
        got = _interpolate_pos_encoding(module, None, rows * 14, cols * 14)
        expected = reference_position_resize(as_grid(module.position_embeddings.detach(), 37, 37), rows, cols)
    assert torch.equal(got[:, :1], module.position_embeddings[:, :1])
    got = as_grid(got, rows, cols)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_exported_position_embedding_resize_follows_the_reference_rule(exporter, tmp_path):
    """The ONNX graph, exported once with dynamic height and width, resizes by the reference
    rule at every grid, the trained 37x37 one (no resize) included."""
    import onnx
    import onnxruntime
    import torch

    from depthprior.priors.onnx_depth_anything import _interpolate_pos_encoding
    from depthprior.priors.onnx_export import DEFAULT_OPSET, OUTPUT_NAME, _export

    class PositionResize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = position_module()

        def forward(self, pixel_values):
            height, width = pixel_values.shape[2], pixel_values.shape[3]
            return _interpolate_pos_encoding(self.embeddings, None, height, width)

    wrapper = PositionResize().eval()
    proto = _export(torch, onnx, wrapper, torch.zeros(2, 3, 56, 84), exporter, DEFAULT_OPSET[exporter],
                    None, tmp_path)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    grid = as_grid(wrapper.embeddings.position_embeddings.detach(), 37, 37)
    for rows, cols in GRIDS:
        pixels = np.zeros((1, 3, rows * 14, cols * 14), dtype=np.float32)
        got = as_grid(torch.from_numpy(session.run([OUTPUT_NAME], {"pixel_values": pixels})[0]), rows, cols)
        expected = reference_position_resize(grid, rows, cols)
        assert got.shape == expected.shape, (rows, cols)
        assert torch.allclose(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max())), (rows, cols)


# ------------------------------------------------------- the other depth architectures

#: (architecture, metric head): exported through the CLI, run through the onnx backend
EXPORTED = [("glpn", False), ("depth_pro", True), ("prompt_depth_anything", False), ("tipsv2_dpt", False)]
#: the tiny checkpoint exported for an architecture where it is not synth's default one
EXPORTED_BUILDS = {"glpn": "glpn_two_stages"}


@pytest.fixture(scope="module")
def prompt_scene(tmp_path_factory):
    from scenes import make_scene

    return make_scene(tmp_path_factory.mktemp("scene"), n_images=2, seed=3)


@pytest.mark.parametrize("architecture,metric", EXPORTED)
def test_other_architectures_export_and_generate_as_torch_does(architecture, metric, prompt_scene, tmp_path):
    """The graph passes the parity check, records the architecture, and the onnx backend applies
    its preprocessing and convention: PNGs, raw values and per-image extras equal torch's."""
    from synth import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "checkpoint", EXPORTED_BUILDS.get(architecture, architecture),
                                       metric=metric)
    path = tmp_path / f"{architecture}.onnx"
    result = run_cli("export-onnx", "--model", checkpoint, "-o", path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "-> OK" in result.stdout and ("field_of_view" in result.stdout) == (architecture == "depth_pro")
    meta = inspect_onnx(path).metadata
    assert meta["architecture_type"] == architecture and meta["model_output"] == "depth"
    if architecture == "prompt_depth_anything":
        frames, extra = prompt_scene.images, {"prompt_sparse": str(prompt_scene.sparse)}
    else:
        frames, extra = tmp_path / "frames", {}
        make_frames(frames, 2, size=(48, 64))
        write_image(frames / "tall.png", scene_rgb(70, 40, seed=5))
    runs = {backend: generate(frames, tmp_path / backend, backend=backend, format="both", progress=False,
                              batch_size=2, model=str(checkpoint if backend == "torch" else path), **extra)
            for backend in ("torch", "onnx")}
    assert runs["onnx"].exit_code == 0 and runs["onnx"].done == runs["torch"].done >= 2, runs["onnx"].format()
    torch_manifest, onnx_manifest = Manifest.load(tmp_path / "torch"), Manifest.load(tmp_path / "onnx")
    assert onnx_manifest.backend["architecture_type"] == architecture
    assert onnx_manifest.backend["convention"] == torch_manifest.backend["convention"]
    assert onnx_manifest.backend["preprocessing"] == torch_manifest.backend["preprocessing"]
    torch_records = dict(torch_manifest.iter_ok())
    for name, record in onnx_manifest.iter_ok():
        expected = torch_records[name]
        assert record.raw_kind == expected.raw_kind == "inverse_depth"
        png = read_png16(tmp_path / "onnx" / (record.stem + ".png")).astype(np.int64)
        want = read_png16(tmp_path / "torch" / (expected.stem + ".png")).astype(np.int64)
        raw = np.load(tmp_path / "onnx" / (record.stem + ".npy"))
        want_raw = np.load(tmp_path / "torch" / (expected.stem + ".npy"))
        assert _rel_error(raw, want_raw) <= 1e-3, name
        assert png.shape == want.shape and np.abs(png - want).max() <= 1e-3 * 65535, name
        assert record.extras.keys() == expected.extras.keys()
        for key, value in expected.extras.items():  # Depth Pro: field of view and focal length
            assert record.extras[key] == pytest.approx(value, rel=1e-4), (name, key)
    assert ("focal_px" in record.extras) == (architecture == "depth_pro")
    if architecture in REFUSED_RUNS:  # the file's architecture rules apply before anything runs
        arguments, message = REFUSED_RUNS[architecture]
        result = run_cli("generate", frames, tmp_path / "refused", "--backend", "onnx", "--model", path, *arguments)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


#: what the onnx backend refuses for a file of the architecture, as torch does: (arguments, message)
REFUSED_RUNS = {
    "prompt_depth_anything": ((), "pass --prompt-sparse SCENE/sparse/0"),
    "depth_pro": (("--input-size", "384"), "--input-size does not apply to depth_pro"),
}


@pytest.mark.parametrize("architecture,reason", [("dpt", "position embeddings"), ("zoedepth", "batch size")])
def test_architectures_that_do_not_export_are_refused_in_one_line_before_loading(architecture, reason, tmp_path):
    from synth import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "full", architecture)
    config_only = tmp_path / "config-only"  # no weights: the refusal comes before loading them
    config_only.mkdir()
    shutil.copy(checkpoint / "config.json", config_only / "config.json")
    for model in (config_only,):  # the line comes from config.json alone, before any weights
        result = run_cli("export-onnx", "--model", model, "-o", tmp_path / "model.onnx")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{architecture} checkpoints cannot be exported to ONNX" in lines[0], result.stderr
        assert reason in lines[0] and "--backend torch" in lines[0]
    assert not (tmp_path / "model.onnx").exists()


def test_export_checks_input_size_before_loading_the_model(tiny_model, tmp_path):
    from synth import build_tiny_checkpoint

    depth_pro = build_tiny_checkpoint(tmp_path / "depth_pro", "depth_pro")
    for source, size, message in ((tiny_model, "50", "multiple of 14"),
                                  (depth_pro, "384", "--input-size does not apply to depth_pro")):
        config_only = tmp_path / f"config-{source.name}"
        config_only.mkdir()
        shutil.copy(source / "config.json", config_only / "config.json")
        result = run_cli("export-onnx", "--model", config_only, "-o", tmp_path / "model.onnx",
                         "--input-size", size)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.hostile
def test_a_video_depth_anything_checkpoint_is_refused_as_a_temporal_model(tmp_path):
    """Before: "... config file at '...pth' is not a valid JSON file"."""
    from synth import build_tiny_video_model

    model = build_tiny_video_model(tmp_path / "vda")
    result = run_cli("export-onnx", "--model", model, "-o", tmp_path / "model.onnx")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Video Depth Anything checkpoint" in lines[0] and "frame-by-frame" in lines[0]
    assert not (tmp_path / "model.onnx").exists()
