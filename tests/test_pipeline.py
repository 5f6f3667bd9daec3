from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE
from depthprior import generate
from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.backends.preprocess import PREPROCESSING_VERSION
from depthprior.errors import UsageError
from depthprior.images import decode_rgb
from depthprior.priors.manifest import Manifest
from depthprior.priors.store import decode_inverse_depth, read_png16
from synth import make_frames, scene_rgb, write_image


def _generate(images, out, model, **kw):
    kw.setdefault("input_size", TEST_INPUT_SIZE)
    return generate(images, out, model=str(model), progress=False, **kw)


def test_outputs_follow_the_contract(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 2, size=(48, 64))
    write_image(frames / "sub" / "tall.png", scene_rgb(70, 30, seed=9))
    summary = _generate(frames, tmp_path / "out", tiny_model)
    assert (summary.done, summary.failed, summary.exit_code) == (3, {}, 0)
    manifest = Manifest.load(tmp_path / "out")
    engine = create_backend("torch", BackendSettings(model=str(tiny_model), input_size=TEST_INPUT_SIZE))
    for name, stem in [("frame_0000.jpg", "frame_0000"), ("sub/tall.png", "sub/tall")]:
        png = read_png16(tmp_path / "out" / f"{stem}.png")
        image = decode_rgb(frames / name)
        assert png.dtype == np.uint16 and png.shape == image.shape[:2]
        assert png.min() == 0 and png.max() == 65535
        record = manifest.images[name]
        assert record.outputs == [f"{stem}.png"] and record.raw_kind == "disparity"
        expected = engine.predict([image])[0].values
        decoded = decode_inverse_depth(png, record.raw_min, record.raw_max)
        span = expected.max() - expected.min()
        assert np.abs(decoded - expected).max() <= 1e-4 * span + 1e-6
        assert record.levels > 256 and record.source == "model"
    assert manifest.backend["model_output"] == "disparity"
    weights = manifest.identity.pop("weights")
    assert weights.startswith("sha256:") and len(weights) == len("sha256:") + 64
    assert manifest.identity == {"backend": "torch", "model": str(tiny_model),
                                 "input_size": TEST_INPUT_SIZE, "dtype": "fp32",
                                 "preprocessing": PREPROCESSING_VERSION}


def test_batching_gives_the_same_maps(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 5, size=(40, 60))
    write_image(frames / "odd_size.jpg", scene_rgb(50, 50, seed=3))
    single = _generate(frames, tmp_path / "one", tiny_model, batch_size=1)
    batched = _generate(frames, tmp_path / "four", tiny_model, batch_size=4)
    assert single.done == batched.done == 6
    for png in (tmp_path / "one").glob("*.png"):
        a, b = read_png16(png), read_png16(tmp_path / "four" / png.name)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_resume_skips_without_loading_the_model(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 3)
    first = _generate(frames, tmp_path / "out", tiny_model)
    assert first.done == 3
    # Nothing left to do: the backend is never created, so no model is loaded.
    again = generate(frames, tmp_path / "out", model=str(tiny_model), progress=False,
                     input_size=TEST_INPUT_SIZE)
    assert (again.done, again.skipped, again.backend) == (0, 3, {})
    (tmp_path / "out" / "frame_0001.png").unlink()
    make_frames(frames, 4)
    third = _generate(frames, tmp_path / "out", tiny_model)
    assert (third.done, third.skipped) == (2, 2)


def test_other_settings_are_refused_unless_overwrite(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    _generate(frames, tmp_path / "out", tiny_model)
    with pytest.raises(UsageError, match=r"input_size: 56 there, 70 now.*--overwrite"):
        _generate(frames, tmp_path / "out", tiny_model, input_size=70)
    redone = _generate(frames, tmp_path / "out", tiny_model, input_size=70, overwrite=True)
    assert redone.done == 2
    assert Manifest.load(tmp_path / "out").identity["input_size"] == 70


def test_bad_files_fail_alone(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    (frames / "empty.jpg").write_bytes(b"")
    (frames / "text.png").write_text("not a png")
    good = (frames / "frame_0000.jpg").read_bytes()
    (frames / "truncated.jpg").write_bytes(good[: len(good) // 2])
    summary = _generate(frames, tmp_path / "out", tiny_model, batch_size=3)
    assert summary.done == 2 and summary.exit_code == 1
    assert set(summary.failed) == {"empty.jpg", "text.png", "truncated.jpg"}
    assert "empty" in summary.failed["empty.jpg"]
    manifest = Manifest.load(tmp_path / "out")
    assert manifest.images["truncated.jpg"].status == "failed"
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["frame_0000.png", "frame_0001.png"]


def test_npy_and_metric_models(tmp_path, tiny_metric_model):
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    summary = _generate(frames, tmp_path / "out", tiny_metric_model, format="both")
    assert summary.done == 1
    depth = np.load(tmp_path / "out" / "frame_0000.npy")
    png = read_png16(tmp_path / "out" / "frame_0000.png")
    record = Manifest.load(tmp_path / "out").images["frame_0000.jpg"]
    assert record.raw_kind == "inverse_depth" and record.npy_kind == "depth"
    assert depth.dtype == np.float32 and depth.shape == png.shape and depth.min() > 0
    inverse = decode_inverse_depth(png, record.raw_min, record.raw_max)
    assert np.allclose(inverse, 1.0 / depth, atol=(record.raw_max - record.raw_min) / 65535)
    assert png.flat[np.argmin(depth)] == 65535  # nearest point is brightest


def test_output_inside_input_is_not_read_back(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    _generate(frames, frames / "depth", tiny_model)
    again = _generate(frames, frames / "depth", tiny_model)
    assert (again.total, again.skipped) == (2, 2)
    with pytest.raises(UsageError, match="is the input folder"):
        _generate(frames, frames, tiny_model)


def test_unknown_option_and_bad_input_size(tmp_path, tiny_model):
    make_frames(tmp_path / "f", 1)
    with pytest.raises(UsageError, match="unknown option"):
        _generate(tmp_path / "f", tmp_path / "o", tiny_model, colour="red")
    with pytest.raises(UsageError, match="multiple of 14"):
        _generate(tmp_path / "f", tmp_path / "o", tiny_model, input_size=50)


def test_manifest_is_valid_json_with_every_image(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 3)
    _generate(frames, tmp_path / "out", tiny_model)
    data = json.loads((tmp_path / "out" / "depthprior.json").read_text())
    assert sorted(data["images"]) == ["frame_0000.jpg", "frame_0001.jpg", "frame_0002.jpg"]
    assert data["tool"]["name"] == "depthprior" and data["backend"]["device"] == "cpu"
    assert data["inputs"] == str(frames.resolve())


def test_a_folder_begun_with_earlier_preprocessing_is_not_resumed(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    out = tmp_path / "out"
    _generate(frames, out, tiny_model)
    path = out / "depthprior.json"
    data = json.loads(path.read_text())
    del data["identity"]["preprocessing"]  # as written before the reference preprocessing
    path.write_text(json.dumps(data))
    make_frames(frames / "more", 1)
    with pytest.raises(UsageError, match="preprocessing: None there, 2 now"):
        _generate(frames, out, tiny_model)


# ---------------------------------------------------------------- steps chained one level up

def _listings_of(folder, monkeypatch) -> list:
    """Every os.scandir of `folder` from now on (discovery lists the input root once per walk)."""
    import os

    listed, original, target = [], os.scandir, folder.resolve()

    def scandir(path=".", *args):
        if not isinstance(path, int) and os.path.realpath(path) == str(target):
            listed.append(path)
        return original(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    return listed


def _manifest_reads(monkeypatch) -> list:
    reads, original = [], Manifest.load
    monkeypatch.setattr(Manifest, "load", lambda root, **options: reads.append(root) or original(root, **options))
    return reads


def test_generate_then_verify_reads_the_folder_and_the_manifest_once(tmp_path, tiny_model,
                                                                      monkeypatch, capsys):
    from depthprior.cli import main

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 3)
    listed, reads = _listings_of(frames, monkeypatch), _manifest_reads(monkeypatch)
    code = main(["generate", str(frames), str(out), "--model", str(tiny_model),
                 "--input-size", str(TEST_INPUT_SIZE), "--no-progress", "--verify"])
    printed = capsys.readouterr().out
    assert code == 0 and "done 3, skipped 0" in printed and "3/3 outputs present" in printed
    assert "verify: OK" in printed
    # verify checks the image list and the manifest generate holds: one walk, one read (resume)
    assert (len(listed), len(reads)) == (1, 1)


def test_generate_takes_a_scan_and_leaves_it_as_it_was(tmp_path, tiny_model, monkeypatch):
    from depthprior.images import scan

    frames = tmp_path / "frames"
    make_frames(frames, 2)
    make_frames(frames / "out", 1)  # inside the output folder: not an input of this run
    found = scan(frames)
    names = [item.name for item in found.items]
    listed = _listings_of(frames, monkeypatch)
    summary = _generate(found, frames / "out", tiny_model)
    assert (summary.total, summary.done, summary.exit_code) == (2, 2, 0)
    assert summary.images == frames and [item.name for item in summary.items] == names[:2]
    assert [item.name for item in found.items] == names == ["frame_0000.jpg", "frame_0001.jpg",
                                                           "out/frame_0000.jpg"]
    assert listed == []


@pytest.mark.parametrize("option", [{"verify": True}, {"align": "scene/sparse/0"}, {"num_samples": 2}])
def test_generate_refuses_next_step_options_and_names_the_chain(tmp_path, tiny_model, option):
    make_frames(tmp_path / "frames", 1)
    with pytest.raises(UsageError, match=rf"no {next(iter(option))}: call depthprior\.steps\.run_generate"):
        _generate(tmp_path / "frames", tmp_path / "out", tiny_model, **option)
    assert not (tmp_path / "out").exists()


def test_chained_exit_code_and_output_combine_each_steps_own(tmp_path):
    from depthprior.priors.pipeline import Summary
    from depthprior.steps import GenerateRun
    from depthprior.priors.verify import VerifyReport

    summary = Summary(out=tmp_path, total=1, done=1)
    good, bad = VerifyReport(out=tmp_path, expected=1, present=1), VerifyReport(out=tmp_path, expected=1)
    bad.missing.append("a.jpg: no output")
    assert GenerateRun(summary).exit_code == 0
    assert GenerateRun(summary, verify=good).exit_code == 0
    assert GenerateRun(summary, verify=bad).exit_code == 1
    assert GenerateRun(summary, verify=bad).format() == summary.format() + "\n" + bad.format()
    summary.interrupted = True
    assert GenerateRun(summary, verify=good).exit_code == 130
    summary.interrupted, summary.failed = False, {"b.jpg": "unreadable"}
    assert (summary.exit_code, GenerateRun(summary, verify=good).exit_code) == (1, 1)


def test_verify_lists_twenty_missing_outputs_and_counts_the_rest(tmp_path):
    from depthprior.images import ImageItem
    from depthprior.priors.verify import check_outputs

    items = [ImageItem(tmp_path / f"f{i:02d}.jpg", f"f{i:02d}.jpg") for i in range(23)]
    report = check_outputs(Manifest(root=tmp_path), items)
    lines = report.format().splitlines()
    assert [line for line in lines if line.startswith("MISSING")][-1] == "MISSING f19.jpg: no output"
    assert sum(line.startswith("MISSING") for line in lines) == 20
    assert "... and 3 more missing" in lines and lines[-1] == "verify: FAILED"
