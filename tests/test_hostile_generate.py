"""Hostile cases of generate, verify, export-onnx and the Python API (issue 20)."""

from __future__ import annotations

import json
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
    result = run_cli("generate", frames, out, *common, "--overwrite")
    assert result.returncode == 0, result.stderr
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
    result = run_cli("generate", tmp_path / "frames", tmp_path / "out", "--model", model)
    assert result.returncode == 2
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
