"""The torch backend's --compile: same maps as eager, same output identity, a clear fallback.

Compiling runs in CLI subprocesses (as users run it), each with its own TorchInductor cache
folder, so no compiled kernels from another run are reused and the pytest process stays clean;
the eager runs beside them run in the test process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE
from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.manifest import MANIFEST_NAME
from depthprior.priors.store import read_png16
from reference import reference_position_resize
from synth import build_tiny_model, make_frames


def generate(cli, frames, out, model, tmp_path, *extra, env=None):
    """A compiling run gets a process and an inductor cache of its own; an eager one runs here."""
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{out.name}")} if "--compile" in extra else {}
    return cli("generate", frames, out, "--model", model, "--input-size", TEST_INPUT_SIZE, *extra,
               env={**cache, **(env or {})}, timeout=300)


def maps(out):
    return {path.name: read_png16(path) for path in sorted(out.glob("*.png"))}


@pytest.fixture(scope="module")
def one_stage_model(tmp_path_factory):
    """The tiny model with one backbone stage: what compiles, in ~20% less time than two."""
    return build_tiny_model(tmp_path_factory.mktemp("one-stage"), stages=1)


@pytest.fixture(scope="module")
def eager_run(one_stage_model, tmp_path_factory):
    """Three same-size frames and their maps from the uncompiled model."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("eager")
    make_frames(root / "frames", count=3, size=(48, 64))
    result = generate(run_cli, root / "frames", root / "eager", one_stage_model, root)
    assert result.returncode == 0, result.stderr
    return root / "frames", root / "eager"


#: the compiling runs (~45 and ~15 CPU-s of TorchInductor) share one worker and start early
COMPILE = pytest.mark.xdist_group("compile")


@COMPILE
def test_compiled_maps_equal_eager_ones_and_resume_them(cli, one_stage_model, tmp_path, eager_run):
    frames, eager_out = eager_run
    compiled = generate(cli, frames, tmp_path / "compiled", one_stage_model, tmp_path, "--compile")
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
    again = generate(cli, frames, tmp_path / "compiled", one_stage_model, tmp_path)
    assert again.returncode == 0 and "nothing to do: all 3 images already have outputs" in again.stderr


@COMPILE
def test_failed_compile_falls_back_to_eager_with_one_warning(cli, one_stage_model, tmp_path, eager_run):
    frames, eager_out = eager_run
    broken = generate(cli, frames, tmp_path / "broken", one_stage_model, tmp_path, "--compile",
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


@pytest.mark.parametrize("rows,cols", [(37, 37), (37, 56), (53, 37), (4, 4), (4, 5)])
def test_position_embeddings_follow_the_reference_resize(tiny_model, rows, cols):
    """What DINOv2's embedding layer adds to the patch tokens of a rows x cols grid is the
    reference resize of the trained 37x37 table (transformers' own resize differs off 37x37)."""
    import torch

    settings = BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE, device="cpu")
    with create_backend("torch", settings) as engine, torch.inference_mode():
        embeddings = engine.model.backbone.embeddings
        pixels = torch.randn(1, 3, rows * 14, cols * 14, generator=torch.Generator().manual_seed(0))
        tokens = embeddings(pixels)
        plain = torch.cat((embeddings.cls_token, embeddings.patch_embeddings(pixels)), dim=1)
        table = embeddings.position_embeddings.detach()
    added = (tokens - plain)[:, 1:].reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    trained = table[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    expected = reference_position_resize(trained, rows, cols)
    assert added.shape == expected.shape
    assert torch.allclose(added, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_unfamiliar_embeddings_keep_their_own_resize_with_a_warning(tiny_model, caplog):
    """A DINOv2 whose resize takes other arguments is left as it is, and the user is told."""
    import types

    from depthprior.priors.backends.torch_hf import follow_reference_position_resize, load_depth_model

    network = load_depth_model(str(tiny_model))
    embeddings = network.backbone.embeddings

    def other_resize(self, embeddings, height, width, extra=None):
        return self.position_embeddings

    embeddings.interpolate_pos_encoding = types.MethodType(other_resize, embeddings)
    with caplog.at_level("WARNING", logger="depthprior"):
        assert follow_reference_position_resize(network) is False
    assert embeddings.interpolate_pos_encoding.__func__ is other_resize
    assert "keeping transformers' position-embedding resize" in caplog.text
