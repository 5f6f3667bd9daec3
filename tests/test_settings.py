"""Backend settings: one check per backend, the same for generate, check and bench, before any
model, file or server is touched."""

from __future__ import annotations

import pytest

from depthprior.priors.backends import BackendSettings, settings_for
from depthprior.priors.backends.space import SpaceOptions
from depthprior.priors.backends.torch_hf import TorchOptions
from depthprior.priors.bench import bench
from depthprior.priors.check import check
from depthprior.errors import UsageError
from synth import make_frames

#: loading this would fail with another error (no such folder, no hub offline)
MISSING_MODEL = "/nonexistent/model-that-would-need-a-download"


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "error:" in line]


@pytest.mark.parametrize("size", ["50", "13"])
def test_input_size_not_a_multiple_of_14_is_the_same_usage_error_for_every_command(cli, tmp_path, size):
    make_frames(tmp_path / "frames", 1)
    commands = {
        "generate": ["generate", tmp_path / "frames", tmp_path / "out"],
        "check": ["check"],
        "bench": ["bench", tmp_path / "frames"],
    }
    errors = {}
    for command, args in commands.items():
        result = cli(*args, "--model", MISSING_MODEL, "--input-size", size)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines = _error_lines(result)
        assert len(lines) == 1, (command, result.stderr)
        errors[command] = lines[0].split("error:", 1)[1]
    assert len(set(errors.values())) == 1, errors
    assert "--input-size must be a positive multiple of 14" in errors["check"] and size in errors["check"]
    assert not (tmp_path / "out").exists()


def test_an_option_of_another_backend_is_refused_on_the_command_line(cli, tmp_path):
    make_frames(tmp_path / "frames", 1)
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--model", MISSING_MODEL,
                 "--timeout", "5")
    assert result.returncode == 2, result.stderr
    assert "--timeout applies to --backend space, not torch" in _error_lines(result)[0]
    checked = cli("check", "--backend", "onnx", "--model", "x.onnx", "--compile")
    assert checked.returncode == 2, checked.stderr
    assert "--compile applies to --backend torch, not onnx" in _error_lines(checked)[0]


def test_settings_for_takes_shared_fields_and_the_backends_own_options():
    settings = settings_for("space", space=" http://127.0.0.1:9 ", timeout=5, batch_size=2)
    assert settings.batch_size == 2
    assert isinstance(settings.options, SpaceOptions)
    assert (settings.options.space, settings.options.timeout) == ("http://127.0.0.1:9", 5)
    base = BackendSettings(input_size=56)
    torch_settings = settings_for("torch", base, compile=True)
    assert torch_settings.options == TorchOptions(compile=True) and torch_settings.input_size == 56
    assert settings_for("torch", base).options == TorchOptions()


@pytest.mark.parametrize("backend,overrides,message", [
    ("torch", {"colour": "red"}, "unknown option"),
    ("torch", {"timeout": 5}, "--timeout applies to --backend space, not torch"),
    ("onnx", {"compile": True}, "--compile applies to --backend torch, not onnx"),
    ("torch", {"input_size": 50}, "multiple of 14"),
    ("onnx", {"input_size": 0}, "multiple of 14"),
    ("space", {"input_size": 520}, "multiple of 14"),
    ("torch", {"batch_size": 0}, "--batch-size"),
    ("torch", {"dtype": "fp8"}, "unknown dtype"),
    ("torch", {"device": "tpu"}, "unknown device"),
    ("onnx", {"device": "mps"}, "--backend onnx runs on"),
    ("onnx", {"revision": "main"}, "--revision applies to hub checkpoints"),
    ("space", {"timeout": 0}, "--timeout must be positive"),
    ("space", {"min_interval": -1}, "--min-interval must be 0 or more"),
    ("space", {"retries": 0}, "--retries must be at least 1"),
    ("space", {"concurrency": 0}, "--concurrency must be at least 1"),
    ("torch", {"input_size": "518"}, "--input-size must be an integer"),
    ("space", {"timeout": "5"}, "--timeout must be a finite number"),
    ("space", {"min_interval": float("nan")}, "--min-interval must be a finite number"),
    ("space", {"retries": True}, "--retries must be an integer"),
])
def test_each_backend_checks_its_settings_in_one_place(backend, overrides, message):
    with pytest.raises(UsageError, match=message):
        settings_for(backend, **overrides)


def test_options_of_another_backend_are_refused_in_settings():
    with pytest.raises(UsageError, match="SpaceOptions are not options of --backend torch"):
        settings_for("torch", BackendSettings(options=SpaceOptions()))


def test_library_check_and_bench_check_settings_before_reading_or_loading(tmp_path):
    with pytest.raises(UsageError, match="multiple of 14"):
        check(tmp_path / "no-such-image.png", settings=BackendSettings(model=MISSING_MODEL, input_size=50))
    make_frames(tmp_path / "frames", 1)
    with pytest.raises(UsageError, match="multiple of 14"):
        bench(tmp_path / "frames", settings=BackendSettings(model=MISSING_MODEL, input_size=50))
    with pytest.raises(UsageError, match="--compile applies to --backend torch, not onnx"):
        bench(tmp_path / "frames", backends=["onnx"], compile=True,
              settings=BackendSettings(model=MISSING_MODEL))


def test_hf_token_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert settings_for("space").options.hf_token == "hf_from_env"
    assert settings_for("space", hf_token="hf_given").options.hf_token == "hf_given"
    assert "hf_" not in repr(settings_for("space"))
