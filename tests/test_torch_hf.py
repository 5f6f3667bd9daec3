"""The torch backend's --compile: same maps as eager, same output identity, a clear fallback.

Compiling runs in CLI subprocesses (as users run it), each with its own TorchInductor cache
folder, so no compiled kernels from another run are reused and the pytest process stays clean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE
from depthprior.store import MANIFEST_NAME, read_png16
from synth import make_frames


def generate(cli, frames, out, model, tmp_path, *extra, env=None):
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{out.name}")}
    return cli("generate", frames, out, "--model", model, "--input-size", TEST_INPUT_SIZE, *extra,
               env={**cache, **(env or {})}, timeout=300)


def maps(out):
    return {path.name: read_png16(path) for path in sorted(out.glob("*.png"))}


@pytest.fixture(scope="module")
def eager_run(tiny_model, tmp_path_factory):
    """Three same-size frames and their maps from the uncompiled model."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("eager")
    make_frames(root / "frames", count=3, size=(48, 64))
    result = generate(run_cli, root / "frames", root / "eager", tiny_model, root)
    assert result.returncode == 0, result.stderr
    return root / "frames", root / "eager"


def test_compiled_maps_equal_eager_ones_and_resume_them(cli, tiny_model, tmp_path, eager_run):
    frames, eager_out = eager_run
    compiled = generate(cli, frames, tmp_path / "compiled", tiny_model, tmp_path, "--compile")
    assert compiled.returncode == 0, compiled.stderr
    assert "compiled=True" in compiled.stderr and "compiling the model for input 1x3x56x70" in compiled.stderr
    assert compiled.stderr.count("compiling the model") == 1  # one shape, one compile
    expected, got = maps(eager_out), maps(tmp_path / "compiled")
    assert sorted(got) == sorted(expected) and len(got) == 3
    for name in expected:
        assert np.abs(got[name].astype(int) - expected[name].astype(int)).max() <= 2, name
    manifests = [json.loads((d / MANIFEST_NAME).read_text()) for d in (eager_out, tmp_path / "compiled")]
    assert manifests[0]["identity"] == manifests[1]["identity"]
    # compiling changes nothing an output depends on: a compiled folder resumes as done uncompiled
    again = generate(cli, frames, tmp_path / "compiled", tiny_model, tmp_path)
    assert again.returncode == 0 and "nothing to do: all 3 images already have outputs" in again.stderr


def test_failed_compile_falls_back_to_eager_with_one_warning(cli, tiny_model, tmp_path, eager_run):
    frames, eager_out = eager_run
    broken = generate(cli, frames, tmp_path / "broken", tiny_model, tmp_path, "--compile",
                      env={"CXX": "/bin/false"})  # no working C++ compiler for TorchInductor
    assert broken.returncode == 0, broken.stderr
    warnings = [line for line in broken.stderr.splitlines() if "torch.compile failed" in line]
    assert len(warnings) == 1 and "running the model uncompiled" in warnings[0]
    expected, got = maps(eager_out), maps(tmp_path / "broken")
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[n], expected[n]) for n in expected)


def test_compile_is_refused_for_backends_without_it(cli, tmp_path):
    frames = tmp_path / "frames"
    make_frames(frames, count=1)
    result = cli("generate", frames, tmp_path / "out", "--backend", "space", "--space", "http://127.0.0.1:9",
                 "--compile")
    assert result.returncode == 2, result.stderr
    assert "--compile applies to --backend torch, not space" in result.stderr
    assert "Traceback" not in result.stderr and not list((tmp_path / "out").glob("*.png"))
