"""Every script in benchmarks/ runs against today's library, at tiny sizes on the CPU.

Each runs as a user runs it (a subprocess, PYTHONPATH with src) on frames the test makes, and
must exit 0 and print its numbers. ray_bench is the exception: a local Ray instance alone takes
longer than all the rest together here, so its pieces are tested as functions (the Ray path of
generate that it times is guarded by tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_INPUT_SIZE
from synth import make_frames

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
NUMBER = r"\d+(\.\d+)?"


def script_environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def run_script(name: str, *args: object, timeout: float = 120) -> str:
    """The script's stdout; it must exit 0. Its main() runs in this process, as `python
    benchmarks/NAME ARGS` would run it (a process of its own would import torch once more, for
    seconds); `--help` runs below start two of them as processes, as a user does."""
    if args == ("--help",):
        result = subprocess.run([sys.executable, str(BENCHMARKS / name), "--help"], capture_output=True,
                                text=True, timeout=timeout, env=script_environment())
        assert result.returncode == 0, f"{name} exited {result.returncode}\n{result.stderr[-4000:]}"
        return result.stdout
    script = load_script(name.removesuffix(".py"))
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setattr(sys, "argv", [name, *map(str, args)])
        try:
            code = script.main() or 0
        except SystemExit as stop:
            code = stop.code or 0
    assert code == 0, f"{name} exited {code}\n{out.getvalue()}\n{err.getvalue()[-4000:]}"
    return out.getvalue()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """benchmarks/random_model.py's tiny size, built by its main() in this process (a subprocess
    would import torch once more, for seconds; the script's start is tested with --help)."""
    folder = tmp_path_factory.mktemp("bench") / "tiny"
    random_model = load_script("random_model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["random_model.py", "tiny", str(folder)])
        random_model.main()
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_frames(folder, count=2, size=(48, 64))
    return folder


def test_random_model_builds_a_checkpoint_of_the_named_size(checkpoint):
    import json

    assert "{base,large,small,tiny,video,video-base,video-large,video-tiny}" in run_script("random_model.py", "--help")
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "depth_anything"
    assert config["backbone_config"]["hidden_size"] == 32
    assert list(checkpoint.glob("*.safetensors"))


def test_gpu_bench_passes_compile_as_the_torch_backends_option(checkpoint):
    gpu_bench = load_script("gpu_bench")
    args = argparse.Namespace(device="cpu", dtype="auto", input_size=TEST_INPUT_SIZE, compile=True)
    settings = gpu_bench.backend_settings("torch", checkpoint, args, 4)
    assert settings.options.compile is True and settings.batch_size == 4
    plain = gpu_bench.backend_settings("torch", checkpoint, argparse.Namespace(**{**vars(args), "compile": False}), 1)
    assert plain.options.compile is False


def test_cpu_bench(checkpoint, photos):
    out = run_script("cpu_bench.py", photos, "--backends", "torch", "--model", checkpoint,
                     "--input-size", TEST_INPUT_SIZE, "--repeats", 1, "--rss-counts", 3)
    assert re.search(rf"^torch\s+2\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}", out, re.M), out
    assert re.search(rf"^torch x3\s+3\s", out, re.M), out


def test_models_bench_tiny_configs():
    out = run_script("models_bench.py", "--tiny", "glpn", "prompt_depth_anything", "--repeats", 1)
    assert "tiny configs, not real sizes" in out
    assert re.search(r"glpn 64x64: \d+ ms/image", out) and re.search(r"prompt_depth_anything 56x56: \d+ ms/image", out), out


#: the tests that share the module's one device check run on one xdist worker: elsewhere each
#: worker would run the check (~20 s) for itself
SHARES_THE_DEVICE_CHECK = pytest.mark.xdist_group("device_check")


@SHARES_THE_DEVICE_CHECK
def test_onnx_forward(device_check, photos, tmp_path):
    """On the export device_check made (its model and export of that model): exporting again
    would double this file's time; export_onnx itself is tested in tests/test_onnx.py."""
    pytest.importorskip("onnxruntime")
    _, _, workdir = device_check
    keep = tmp_path / "keep"
    keep.mkdir()
    shutil.copyfile(workdir / f"model_tiny_torchscript_{TEST_INPUT_SIZE}.onnx", keep / "torchscript.onnx")
    image = sorted(photos.glob("*.jpg"))[0]
    out = run_script("onnx_forward.py", image, "--model", workdir / "model_tiny", "--input-size", TEST_INPUT_SIZE,
                     "--variants", "torchscript", "--reps", 1, "--keep", keep)
    assert "reusing" in out and re.search(r"torchscript: output \(1, 56, 70\), max error", out), out
    assert re.search(rf"^torchscript\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M), out


def test_consistency_bench():
    out = run_script("consistency_bench.py", "--frames", 6, "--size", "160x120", "--resolution", 0.5)
    assert re.search(rf"6 frames, priors 160x120, .* {NUMBER} s \({NUMBER} s CPU\) \(TAE {NUMBER} -> {NUMBER}\); "
                     rf"injected pixels rejected {NUMBER}%, correct seen pixels rejected {NUMBER}%", out), out


def test_exclusion_bench(photos, capsys):
    """Its main() in this process (a subprocess would import torch and transformers again)."""
    bench = load_script("exclusion_bench")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["exclusion_bench.py", "--frames", "4", "--size", "64x48", "--photos",
                                    str(photos), "--seg-arch", "tiny", "--depth-arch", "tiny",
                                    "--seg-input-size", "64", "--input-size", str(TEST_INPUT_SIZE),
                                    "--repeats", "1"])
        bench.main()
    out = capsys.readouterr().out
    assert re.search(rf"align mad: fit error {NUMBER} -> {NUMBER} with exclusion", out), out
    assert re.search(rf"consistency: kept pixels rejected {NUMBER}% -> {NUMBER}% with exclusion", out), out
    assert re.search(rf"segmentation \(tiny, input 64, (fp32|bf16)\): {NUMBER} s/frame; depth \(tiny, input 56\): "
                     rf"{NUMBER} s/frame; ratio {NUMBER}", out), out
    assert re.search(rf"generate --exclude end to end: {NUMBER} s/frame", out), out


def test_report_bench(tmp_path):
    out = run_script("report_bench.py", "--frames", 4, "--size", "64x48", "--workdir", tmp_path / "scene")
    assert re.search(rf"report: {NUMBER} s for 4 frames, {NUMBER} MB", out), out
    assert (tmp_path / "scene" / "depths" / "report.html").is_file()


def test_ray_bench_parses_its_options():
    out = run_script("ray_bench.py", "--help")
    assert "--photos" in out and "--replicas" in out and "--size" in out


def test_ray_bench_pieces(checkpoint, photos, tmp_path):
    ray_bench = load_script("ray_bench")
    copied = ray_bench.frames(tmp_path / "copied", 3, photos)
    assert sorted(p.name for p in copied.iterdir()) == [f"frame_{i:04d}.jpg" for i in range(3)]
    (tmp_path / "none").mkdir()
    synthetic = ray_bench.frames(tmp_path / "synthetic", 2, tmp_path / "none", size=(64, 48))
    import cv2

    assert cv2.imread(str(synthetic / "frame_0001.jpg")).shape == (48, 64, 3)
    local = ray_bench.run(copied, tmp_path / "out", str(checkpoint), TEST_INPUT_SIZE)
    assert local["done"] == 3 and local["seconds"] > 0 and local["rate"] > 0
    # all frames in the first result block: no rate after start-up, and no ZeroDivisionError
    on_ray = {"seconds": 2.0, "first": 1.5, "rate": 0.0, "done": 3, "replicas": {"r1": 3}}
    lines = ray_bench.overhead_lines(local, on_ray)
    assert lines[0].startswith("local pipeline: ") and "no rate" in lines[1]
    assert re.match(r"overhead: end to end [+-]\d", lines[2]) and "throughput" not in lines[2]
    both = ray_bench.overhead_lines(local, {**on_ray, "rate": local["rate"] / 2})
    assert "throughput after start-up +100.0%" in both[2]
    assert ray_bench.scaling_line(2, {"rate": 4.0, "replicas": {"b": 1, "a": 2}}) == (
        "2 replicas: after start-up 4.00 images/s (2.00 per replica; images per replica [2, 1])")
    assert ray_bench.model_path("some/checkpoint", tmp_path) == "some/checkpoint"


def run_device_check(root: Path, **settings: str) -> tuple[subprocess.CompletedProcess, str]:
    """device_check.sh at its tiny settings (DC_TINY=1): the process and its result file."""
    result_file = root / "results" / "device_check.txt"
    result = subprocess.run(["bash", str(BENCHMARKS / "device_check.sh"), str(result_file)], capture_output=True,
                            text=True, timeout=180, cwd=root,
                            env=script_environment(DC_TINY="1", PYTHON=sys.executable, **settings))
    return result, result_file.read_text() if result_file.is_file() else ""


@pytest.fixture(scope="module")
def device_check(tmp_path_factory) -> tuple[subprocess.CompletedProcess, str, Path]:
    """One tiny device check for the module: the process, its numbers, its work folder (the
    frames, the model and its export, which test_onnx_forward reuses)."""
    root = tmp_path_factory.mktemp("device-check")
    result, numbers = run_device_check(root, DC_WORKDIR=str(root / "work"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    return result, numbers, root / "work"


@SHARES_THE_DEVICE_CHECK
def test_device_check_tiny_on_cpu(device_check):
    assert os.access(BENCHMARKS / "device_check.sh", os.X_OK)  # README: benchmarks/device_check.sh
    result, numbers, _ = device_check
    rate = rf"forward {NUMBER} img/s, end to end {NUMBER} img/s \(2 frames 64x48, input 56"
    for line in (rf"^torch cpu fp32 b1: {rate}", rf"^torch cpu fp32 b2: {rate}"):
        assert re.search(line, numbers, re.M), numbers
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        assert re.search(rf"^exported model_tiny_torchscript_56.onnx", numbers, re.M), numbers
        assert re.search(rf"^onnx cpu fp32 b2: {rate}", numbers, re.M), numbers
    except ImportError:
        providers = []
        assert "== onnx cpu: skipped, onnxruntime is not installed" in numbers
    for device, provider in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        if providers and provider not in providers:
            assert f"== onnx {device}: skipped, this onnxruntime has no {provider}" in numbers
    assert re.search(rf"^video cpu fp32: forward {NUMBER} network frames/s \({NUMBER} new frames/s .*\), end to end "
                     rf"{NUMBER} img/s \(2 frames 64x48, input 56", numbers, re.M), numbers
    assert re.search(r"device check finished in \d+ s with 0 failed step\(s\)", numbers)
    assert numbers.strip() in result.stdout.replace("\r", "")  # the same numbers on stdout


def test_device_check_says_which_steps_its_budget_left_out(tmp_path):
    result, numbers = run_device_check(tmp_path, DC_BUDGET_S="5", DC_ONNX_DEVICES="cpu")
    assert result.returncode == 1
    assert "== torch fp32: skipped, the 5 s budget is spent" in numbers
    if importlib.util.find_spec("onnxruntime"):
        assert "== onnx cpu fp32: skipped, the 5 s budget is spent" in numbers
        assert "with 3 failed step(s)" in numbers
    else:
        assert "with 2 failed step(s)" in numbers
    assert "== video (Video Depth Anything-Small) fp32: skipped, the 5 s budget is spent" in numbers



def test_reference_parity(checkpoint, photos):
    images = sorted(photos.glob("*.jpg"))
    out = run_script("reference_parity.py", *images, "--model", checkpoint, "--input-size", TEST_INPUT_SIZE,
                     "--skip-onnx", "--batch", 2, "--frame", "48x64")
    assert re.search(r"^frame_0000\.jpg\s+64x48\s+\d+x56\s+\S+e[-+]\d+\s+\S+e[-+]\d+$", out, re.M), out
    # the tiny model's maps span ~1e-3 of their value: float32 rounding alone is ~1e-4 of that range
    assert re.search(r"worst max \|backend - reference\| / range: torch \d\.\de-\d\d$", out, re.M), out
    assert "torch fp32 cpu, 2 frames of 64x48" in out
    assert re.search(r"^  frame01\.png: \d+ pixels differ \(\S+%\), at most \d+ PNG levels$", out, re.M), out


def test_video_bench_tiny(tmp_path):
    """Without --reference (tests never need the official code): depthprior's rows and peak memory."""
    out = run_script("video_bench.py", "--arch", "video-tiny", "--frames", 3, "--size", "64x48", "--input-size",
                     TEST_INPUT_SIZE, "--memory-frames", 4, "--workdir", tmp_path, timeout=240)
    assert re.search(rf"^  depthprior VDA: {NUMBER} s, \d+ ms/frame", out, re.M), out
    assert re.search(rf"^  depthprior per-frame V2 \(same weights\): {NUMBER} s", out, re.M), out
    assert re.search(r"^  peak memory, generate on 4 frames 64x48 \(tiny model\): \d+ MiB", out, re.M), out
    assert (tmp_path / "video-tiny" / "per_frame" / "config.json").is_file()


def test_resize_back():
    out = run_script("resize_back.py", "--network", "24x32", "--image", "61x83", "--case", "glpn:45x64")
    assert re.search(r"^step edge 24x32 -> 61x83: .* outside the 2x2 neighbourhood: bilinear 0 px .*, bicubic [1-9]",
                     out, re.M), out
    assert re.search(r"straight edge \(row \d+\): 50% crossing bicubic - bilinear [-+]\d", out), out
    assert re.search(r"^glpn 45x64 \(network 32x64\): pipeline vs depthprior max \S+%", out, re.M), out
