"""Hostile cases of generate, verify, export-onnx and the Python API (issue 20)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TEST_INPUT_SIZE, run_cli
from synth import make_frames

from depthprior.priors.manifest import MANIFEST_NAME, Manifest, ManifestError

pytestmark = pytest.mark.hostile

NESTED = b"[" * 100_000


def _one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------- manifest through jsonfile

def test_a_deeply_nested_manifest_is_one_line_and_overwrite_sets_it_aside(tmp_path, tiny_model):
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 1, size=(24, 32))
    out.mkdir()
    (out / MANIFEST_NAME).write_bytes(NESTED)
    common = ["--model", tiny_model, "--input-size", TEST_INPUT_SIZE, "--no-progress"]
    for command in (["generate", frames, out, *common], ["verify", out]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        line = _one_line(result)
        assert str(out / MANIFEST_NAME) in line and "nested" in line, line
    with pytest.raises(ManifestError, match="nested"):
        Manifest.load(out)
    from depthprior import generate

    summary = generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                       progress=False, overwrite=True)
    assert summary.done == 1
    kept = list(out.glob(f"{MANIFEST_NAME}.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == NESTED
    assert Manifest.load(out).images


def test_a_manifest_folder_is_refused_as_a_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).mkdir()
    with pytest.raises(ManifestError, match="folder"):
        Manifest.load(tmp_path)


# ---------------------------------------------------------------- checkpoint identity by content

def test_the_same_checkpoint_under_another_path_resumes(tmp_path, tiny_model, monkeypatch):
    import shutil

    from depthprior import generate

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(24, 32))
    options = dict(input_size=TEST_INPUT_SIZE, progress=False)
    assert generate(frames, out, model=str(tiny_model), **options).done == 2
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    monkeypatch.chdir(tmp_path)
    for model in ("./copy", str(copy), str(tiny_model) + "/"):
        summary = generate(frames, out, model=model, **options)
        assert (summary.done, summary.skipped) == (0, 2), model


def test_a_damaged_digest_cache_only_costs_hashing_again(tmp_path, tiny_model, monkeypatch):
    from depthprior.priors.fingerprint import cache_path, folder_digest

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = folder_digest(tiny_model)
    cache_path().write_bytes(NESTED)
    assert folder_digest(tiny_model) == first
    cache_path().write_text('{"x": {"size": 1, "mtime_ns": 2}}')
    assert folder_digest(tiny_model) == first


# ---------------------------------------------------------------- model files through jsonfile

def test_a_nested_config_json_is_one_line_naming_it(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(NESTED)
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    for command in (["generate", tmp_path / "frames", tmp_path / "out"],
                    ["export-onnx", "-o", tmp_path / "model.onnx"]):
        result = run_cli(*command, "--model", model)
        assert result.returncode == 2, result.stderr
        line = _one_line(result)
        assert str(model / "config.json") in line and "nested" in line, line


def test_nested_onnx_metadata_is_one_line_naming_the_file(tmp_path):
    from depthprior.errors import UsageError
    from depthprior.priors.backends.onnx import file_architecture

    for key in ("config", "processor"):
        metadata = {"architecture_type": "glpn", "config": "{}", "processor": "{}", key: "[" * 100_000}
        with pytest.raises(UsageError, match=f"{key} recorded in .*model.onnx is nested"):
            file_architecture(metadata, tmp_path / "model.onnx")


def test_a_nested_saved_processor_config_is_one_line(tmp_path):
    from depthprior.errors import UsageError
    from depthprior.priors.backends.torch_hf import load_processor

    (tmp_path / "preprocessor_config.json").write_bytes(NESTED)
    with pytest.raises(UsageError, match="preprocessor_config.json is nested"):
        load_processor("depth_pro", str(tmp_path))


# ---------------------------------------------------------------- frame shapes

def _write_png(path: Path, height: int, width: int) -> Path:
    import cv2
    import numpy as np

    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8))
    return path


def test_a_thin_strip_fails_on_its_aspect_before_any_network_input(tmp_path, tiny_model, monkeypatch):
    from depthprior import generate
    from depthprior.priors.backends import preprocess

    frames = tmp_path / "frames"
    frames.mkdir()
    _write_png(frames / "strip.png", 1, 5000)
    _write_png(frames / "ok.png", 24, 32)
    sizes = []
    real = preprocess.network_size
    monkeypatch.setattr(preprocess, "network_size", lambda *a: sizes.append(a) or real(*a))
    summary = generate(frames, tmp_path / "out", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                       progress=False)
    assert summary.done == 1 and "16:1" in summary.failed["strip.png"]
    assert all(max(h, w) <= 16 * min(h, w) for h, w, _ in sizes)


def test_the_benchmark_sizes_frames_with_the_same_caps(tmp_path):
    from depthprior.errors import ImageError
    from depthprior.priors.bench import _one_per_size

    strip = _write_png(tmp_path / "strip.png", 1, 5000)
    with pytest.raises(ImageError, match="strip.png.*16:1"):
        _one_per_size([_write_png(tmp_path / "ok.png", 8, 8), strip], 10**8)


@pytest.mark.parametrize("architecture", ["glpn", "dpt", "zoedepth"])
def test_frames_too_small_for_the_architecture_fail_with_depthprior_s_line(tmp_path, architecture):
    from depthprior import generate
    from synth import build_tiny_checkpoint

    model = build_tiny_checkpoint(tmp_path / architecture, architecture)
    frames = tmp_path / "frames"
    frames.mkdir()
    for height, width in ((1, 1), (1, 10), (3, 3), (5, 60)):
        _write_png(frames / f"f{height}x{width}.png", height, width)
    _write_png(frames / "big.png", 64, 64)
    options = {} if architecture == "glpn" else {"input_size": 32}
    summary = generate(frames, tmp_path / "out", model=str(model), progress=False, **options)
    assert "big.png" not in summary.failed
    for name, reason in summary.failed.items():
        assert "network input" in reason and "mean must have" not in reason, (name, reason)


# ---------------------------------------------------------------- later steps checked first

def _never_generate(monkeypatch):
    import depthprior.steps

    def refuse(*args, **kwargs):
        raise AssertionError("generate ran before the later steps' inputs were checked")
    monkeypatch.setattr(depthprior.steps, "generate", refuse)


@pytest.mark.parametrize("case", ["missing", "damaged", "file", "consistency_alone", "samples",
                                  "samples_type", "masks_file", "report_folder"])
def test_later_steps_inputs_are_refused_before_the_first_image(tmp_path, monkeypatch, case):
    from depthprior import run_generate
    from depthprior.errors import UsageError

    from scenes import make_scene

    _never_generate(monkeypatch)
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 1, size=(24, 32))
    options: dict = {}
    if case == "missing":
        options = dict(align=tmp_path / "nowhere")
    elif case == "damaged":
        sparse = tmp_path / "sparse"
        sparse.mkdir()
        for stem in ("cameras", "images", "points3D"):
            (sparse / f"{stem}.bin").write_bytes(b"\x07" * 5)
        options = dict(align=sparse)
    elif case == "file":
        (tmp_path / "model.txt").write_text("x")
        options = dict(align=tmp_path / "model.txt")
    elif case == "consistency_alone":
        options = dict(consistency=True)
    elif case == "samples":
        options = dict(verify=True, num_samples=-5)
    elif case == "samples_type":
        options = dict(verify=True, num_samples="8")
    elif case == "masks_file":
        scene = make_scene(tmp_path / "scene", n_images=2, width=32, height=24, points_per_image=20)
        (tmp_path / "out_confidence").write_text("not a folder")
        options = dict(align=scene.sparse, consistency=True)
    elif case == "report_folder":
        (out / "report.html").mkdir(parents=True)
        options = dict(report=True)
    with pytest.raises(UsageError):
        run_generate(frames, out, **options)


def test_a_bad_align_model_on_the_command_line_fails_before_generating(tmp_path):
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 1, size=(24, 32))
    result = run_cli("generate", frames, out, "--model", "/nonexistent", "--align", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "nowhere" in _one_line(result)
    assert not (out / MANIFEST_NAME).exists()


@pytest.mark.parametrize("option", ["consistency", "report", "verify", "align"])
def test_generate_points_to_run_generate_for_later_steps(tmp_path, option):
    from depthprior import generate
    from depthprior.errors import UsageError

    with pytest.raises(UsageError, match="run_generate"):
        generate(tmp_path, tmp_path / "out", **{option: True})


def test_a_later_step_that_cannot_run_keeps_generate_s_summary(tmp_path, tiny_model):
    from scenes import make_scene

    scene = make_scene(tmp_path / "scene", n_images=2, width=32, height=24, points_per_image=20)
    frames = tmp_path / "frames"  # not the model's frames: the fit cannot use them
    make_frames(frames, 1, size=(24, 32))
    from depthprior import run_generate

    run = run_generate(frames, tmp_path / "out", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                       progress=False, align=scene.sparse, consistency=True)
    shown = run.format()
    assert run.exit_code == 1 and run.summary.done == 1
    assert "align: not run:" in shown and "consistency: not run:" in shown, shown


# ---------------------------------------------------------------- verify's contact sheet

@pytest.fixture
def five_generated(tmp_path, tiny_model):
    from depthprior import generate

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 5, size=(24, 32))
    generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    return out


def test_verify_all_pages_the_contact_sheet(five_generated, monkeypatch):
    import cv2

    from depthprior.priors import verify as verify_module

    out = five_generated
    (out / "depthprior_verify.png").write_bytes(b"old single sheet")
    (out / "depthprior_verify_009.png").write_bytes(b"old page")
    monkeypatch.setattr(verify_module, "SHEET_ROWS", 2)
    report = verify_module.verify(out, all=True)
    assert report.ok, report.format()
    assert [page.name for page in report.sheets] == [
        "depthprior_verify_001.png", "depthprior_verify_002.png", "depthprior_verify_003.png"]
    assert sorted(p.name for p in out.glob("depthprior_verify*")) == [p.name for p in report.sheets]
    heights = [cv2.imread(str(page)).shape[0] for page in report.sheets]
    assert max(heights) <= 2 * 230
    report = verify_module.verify(out, num_samples=1)
    assert [p.name for p in out.glob("depthprior_verify*")] == ["depthprior_verify.png"]


def test_verify_on_a_read_only_out_prints_its_verdict_and_fails(five_generated, monkeypatch, capsys):
    import errno
    import os

    from depthprior.cli import main

    real_open = open

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode and str(five_generated) in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    code = main(["verify", str(five_generated)])
    captured = capsys.readouterr()
    assert code == 1
    assert "5/5 outputs present" in captured.out and "verify: FAILED" in captured.out
    assert "read-only" in captured.out and "depthprior_verify.png" in captured.out
    assert not os.path.exists(five_generated / "depthprior_verify.png")


# ---------------------------------------------------------------- export-onnx's target

def _read_only_under(monkeypatch, folder: Path) -> None:
    import errno

    real_open = open

    def guarded(path, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax") and str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    monkeypatch.setattr("io.open", guarded)  # what pathlib writes through


def test_export_onnx_refuses_a_read_only_target_before_loading_the_model(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    import depthprior.priors.backends.torch_hf as torch_hf
    from depthprior.cli import main

    target = tmp_path / "ro"
    target.mkdir()
    _read_only_under(monkeypatch, target)
    monkeypatch.setattr(torch_hf, "load_config", lambda *a, **k: pytest.fail("model loaded first"))
    code = main(["export-onnx", "--model", str(tmp_path / "any"), "-o", str(target / "m.onnx")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and str(target) in error[0] and "not writable" in error[0]


def test_export_onnx_write_failure_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, tiny_model):
    pytest.importorskip("onnx")
    import errno
    import os

    from depthprior.cli import main

    real_replace = os.replace

    def full(source, target, *args, **kwargs):
        if str(target).endswith("m.onnx"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "m.onnx"
    code = main(["export-onnx", "--model", str(tiny_model), "-o", str(out), "--input-size",
                 str(TEST_INPUT_SIZE), "--no-verify", "--exporter", "torchscript"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and str(out) in error[-1] and "disk is full" in error[-1], error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "depthprior-tmp" in p.name]


# ---------------------------------------------------------------- first run offline

def test_an_uncached_hub_model_without_network_is_one_line_within_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    started = time.monotonic()
    result = run_cli("generate", tmp_path / "frames", tmp_path / "out", env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    line = _one_line(result)
    assert "not in the Hugging Face cache" in line and f"127.0.0.1:{port}" in line, line
    assert elapsed < 15, elapsed  # measured ~4.5 s, most of it importing torch; 30 s before


@pytest.mark.parametrize("command,spelling", [("generate", "{tmp}/nope/"), ("exclude", "a/b/c")])
def test_a_model_path_where_nothing_lies_is_one_line(tmp_path, command, spelling):
    """A path that names no folder (and is no hub id): one line saying so, exit 2; before, the
    hub client's HFValidationError traceback when the hub could not be reached."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on: the hub is unreachable
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    model = spelling.format(tmp=tmp_path)
    outputs = [tmp_path / "out"] if command == "generate" else ["-o", tmp_path / "out"]
    result = run_cli(command, tmp_path / "frames", *outputs, "--model", model, env=env, timeout=60)
    assert result.returncode == 2
    line = _one_line(result)
    assert f"cannot load model {model!r}: no such folder or file, and not a hub id" in line, line


def test_a_missing_model_into_a_finished_folder_blames_the_model_not_the_folder(tmp_path, tiny_model):
    """Before: 'OUT holds outputs made with other settings ...; pass --overwrite', which then
    failed on the model anyway."""
    from depthprior import generate
    from depthprior.errors import ModelLoadError

    make_frames(tmp_path / "frames", 1, size=(24, 32))
    generate(tmp_path / "frames", tmp_path / "out", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
             progress=False)
    with pytest.raises(ModelLoadError, match="cannot load model '/nonexistent/x': no such folder"):
        generate(tmp_path / "frames", tmp_path / "out", model="/nonexistent/x", input_size=TEST_INPUT_SIZE,
                 progress=False)


# ---------------------------------------------------------------- inputs are inputs

def test_depthprior_outputs_in_images_are_never_frames_of_another_run(tmp_path, tiny_model):
    from depthprior import generate, run_generate
    from depthprior.images import scan

    scene = tmp_path / "scene"
    make_frames(scene / "images", 2, size=(24, 32))
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    run_generate(scene / "images", scene / "old_depths", verify=True, **options)
    masks = scene / "old_depths_confidence"
    masks.mkdir()
    (masks / "frame_0000.png").write_bytes((scene / "old_depths" / "frame_0000.png").read_bytes())
    (masks / "consistency.json").write_text("{}")
    (scene / "page.html").write_text("<html></html>")
    (scene / "page_files").mkdir()
    (scene / "page_files" / "00001-photo.jpg").write_bytes((scene / "images" / "frame_0000.jpg").read_bytes())
    (scene / "depthprior_verify.png").write_bytes((scene / "old_depths" / "depthprior_verify.png").read_bytes())
    found = scan(scene)
    assert [item.name for item in found.items] == ["images/frame_0000.jpg", "images/frame_0001.jpg"]
    assert set(found.skipped) == {"old_depths/", "old_depths_confidence/", "page_files/",
                                  "depthprior_verify.png"}
    summary = generate(scene, tmp_path / "new", **options)
    assert summary.total == 2 and "IGNORED old_depths/" in summary.format()


def test_an_output_folder_given_as_images_is_refused(tmp_path, tiny_model):
    from depthprior import generate
    from depthprior.errors import UsageError

    make_frames(tmp_path / "frames", 1, size=(24, 32))
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    generate(tmp_path / "frames", tmp_path / "out", **options)
    with pytest.raises(UsageError, match="generate output folder"):
        generate(tmp_path / "out", tmp_path / "other", **options)


def test_hidden_entries_are_listed_as_ignored(tmp_path, tiny_model):
    from depthprior import generate
    from depthprior.images import scan

    frames = tmp_path / "frames"
    make_frames(frames, 1, size=(24, 32))
    make_frames(frames / ".thumbnails", 1, size=(24, 32))
    (frames / "._frame_0000.jpg").write_bytes(b"AppleDouble")
    (frames / ".DS_Store").write_bytes(b"x")
    assert scan(frames).hidden == ["._frame_0000.jpg", ".thumbnails/"]
    summary = generate(frames, tmp_path / "out", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                       progress=False)
    assert "IGNORED 2 hidden entries" in summary.format() and "._frame_0000.jpg" in summary.format()


def test_the_output_markers_are_the_owners_names():
    from depthprior import images
    from depthprior.report.build import ASSETS_SUFFIX
    from depthprior.exclusion.masks import REPORT_NAME as EXCLUDE_REPORT
    from depthprior.scene.confidence import REPORT_NAME

    assert set(images.OUTPUT_MARKERS) == {MANIFEST_NAME, REPORT_NAME, EXCLUDE_REPORT}
    assert images.REPORT_ASSETS_SUFFIX == ASSETS_SUFFIX


def test_a_recorded_name_too_long_for_the_file_system_is_a_problem_not_a_traceback(five_generated):
    out = five_generated
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["images"]["frame_0000.jpg"].update(stem="y" * 10_000, outputs=["y" * 10_000 + ".png"])
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    result = run_cli("verify", out, "--images", out.parent / "gone")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be looked up" in result.stdout
    assert not Manifest.load(out).is_complete("frame_0000.jpg", "png")


def test_an_enormous_input_size_is_refused_before_the_model_loads(tmp_path):
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    result = run_cli("generate", tmp_path / "frames", tmp_path / "out", "--model", "/nonexistent",
                     "--input-size", "140000")
    assert result.returncode == 2 and "--input-size 140000" in _one_line(result)


def test_the_space_reply_check_applies_the_aspect_limit():
    import cv2
    import numpy as np

    from depthprior.priors.backends.space_faults import ImageFault
    from depthprior.priors.backends.space_output import check_declared_size

    ok, strip = cv2.imencode(".png", np.zeros((1, 5000), np.uint8))
    with pytest.raises(ImageFault, match="16:1"):
        check_declared_size(strip.tobytes(), "raw", 10**8)


def test_api_option_extremes_are_refused_or_read_as_meant(tmp_path, tiny_model):
    from depthprior import generate
    from depthprior.errors import UsageError
    from depthprior.images import normalise_extensions

    make_frames(tmp_path / "frames", 1, size=(24, 32))
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    for workers in (-3, 0, 2.5, True):
        with pytest.raises(UsageError, match="workers"):
            generate(tmp_path / "frames", tmp_path / "out", workers=workers, **options)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
    assert normalise_extensions(".tif")[-1] == ".tif" and ".t" not in normalise_extensions("tif")


def test_verify_refuses_a_sample_count_below_one(five_generated):
    from depthprior.errors import UsageError
    from depthprior.priors.verify import verify

    for count in (-5, 0, 1.5):
        with pytest.raises(UsageError, match="num-samples"):
            verify(five_generated, num_samples=count)


def test_verify_refuses_a_sheet_where_it_would_be_read_as_data(five_generated):
    from depthprior.errors import UsageError
    from depthprior.priors.verify import verify

    out = five_generated
    for sheet in (out.parent / "frames" / "sheet.png", out / "sub" / "sheet.png", out / "sheet.png"):
        with pytest.raises(UsageError, match="--sheet"):
            verify(out, sheet=sheet)
        assert not sheet.exists()
    assert verify(out, sheet=out / "depthprior_mine.png").sheet == out / "depthprior_mine.png"
    assert verify(out, sheet=out.parent / "elsewhere.png").ok
    # IMAGES given elsewhere (a copy): the frames the priors were made from are still protected
    copy = out.parent / "copy"
    shutil.copytree(out.parent / "frames", copy)
    photo = out.parent / "frames" / sorted(p.name for p in copy.iterdir())[0]
    before = photo.read_bytes()
    with pytest.raises(UsageError, match="inside the image folder"):
        verify(out, images=copy, sheet=photo)
    assert photo.read_bytes() == before


def test_export_onnx_refuses_a_name_too_long_before_loading(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    import depthprior.priors.backends.torch_hf as torch_hf
    from depthprior.cli import main

    monkeypatch.setattr(torch_hf, "load_config", lambda *a, **k: pytest.fail("model loaded first"))
    code = main(["export-onnx", "--model", "x", "-o", str(tmp_path / ("m" * 250 + ".onnx"))])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "too long" in error[0]


def test_a_cached_hub_model_without_network_loads_at_once(tmp_path, tiny_model):
    import shutil
    import socket
    import time

    snapshot = tmp_path / "hf" / "hub" / "models--someone--tiny-depth" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    started = time.monotonic()
    result = run_cli("generate", tmp_path / "frames", tmp_path / "out", "--model", "someone/tiny-depth",
                     "--input-size", TEST_INPUT_SIZE, "--no-progress", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "using the cached copy" in result.stderr and "Retrying" not in result.stderr
    assert "Could not reach" not in result.stderr  # the hub client's own warnings, one per file
    assert time.monotonic() - started < 30  # ~5 s; the hub client's retries alone took 30 s


def test_a_frame_replaced_by_one_of_another_extension_leaves_one_record_for_its_output(tmp_path, tiny_model):
    """a.jpg replaced by a.png (same stem, same output a.png). Before: a.jpg's record lingered
    beside a.png's, both naming a.png; verify passed; and when a.jpg came back, its lingering
    record was trusted for a PNG made from a.png (skipped, not redone)."""
    from depthprior.priors.pipeline import generate
    from depthprior.priors.verify import verify
    from synth import scene_rgb, write_image

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(24, 32))
    old_jpg = (frames / "frame_0000.jpg").read_bytes()

    def run():
        return generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)

    assert run().done == 2
    (frames / "frame_0000.jpg").unlink()
    write_image(frames / "frame_0000.png", scene_rgb(24, 32, seed=7))
    assert run().done == 1
    records = json.loads((out / MANIFEST_NAME).read_text())["images"]
    assert sorted(records) == ["frame_0000.png", "frame_0001.jpg"]  # one owner of frame_0000.png
    assert verify(out).ok

    (frames / "frame_0000.png").unlink()  # the first frame back: made again, not trusted
    (frames / "frame_0000.jpg").write_bytes(old_jpg)
    again = run()
    assert (again.done, again.skipped) == (1, 1)
    assert sorted(json.loads((out / MANIFEST_NAME).read_text())["images"]) == ["frame_0000.jpg", "frame_0001.jpg"]

    # a folder an earlier depthprior left with both records: readers refuse it in one line, and
    # generate resumes it, keeping the current frame's record and redoing that frame
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["images"]["frame_0000.png"] = dict(data["images"]["frame_0000.jpg"])
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="two records for the output 'frame_0000': 'frame_0000.jpg' "
                                            "and 'frame_0000.png'.*rerun depthprior generate"):
        Manifest.load(out)
    line = _one_line(run_cli("verify", out))
    assert str(out / MANIFEST_NAME) in line and "rerun depthprior generate" in line, line
    resumed = run()
    assert (resumed.done, resumed.skipped) == (1, 1)
    assert "frame_0000.png" in resumed.repaired["frame_0000.jpg"], resumed.repaired
    assert sorted(Manifest.load(out).images) == ["frame_0000.jpg", "frame_0001.jpg"]
    assert verify(out).ok
