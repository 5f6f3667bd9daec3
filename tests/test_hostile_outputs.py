"""Hostile cases for what generate writes and trusts: names that climb out of OUT, two runs in
one folder, damaged outputs on resume, a checkpoint replaced in place, broken manifests, a
manifest that cannot be written, maps that are constant up to rounding."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE, run_cli, one_error_line
from depthprior import generate
from depthprior.priors.backends import BackendSettings, DepthMap, LocalBackend
from depthprior.errors import UsageError
from depthprior.priors.manifest import MANIFEST_NAME, Manifest, ManifestError
from depthprior.priors.store import OutputLock, encode_inverse_depth, encode_png16, read_png16
from depthprior.priors.verify import verify
from synth import build_tiny_model, make_frames, scene_rgb, write_image

pytestmark = pytest.mark.hostile

SIZE = ["--input-size", str(TEST_INPUT_SIZE)]



# ---------------------------------------------------------------- writes outside OUT

def test_backslash_names_are_ordinary_characters_and_never_leave_out(tmp_path, tiny_model):
    victim = tmp_path / "victim" / "v"
    victim.mkdir(parents=True)
    precious = victim / "precious.png"
    precious.write_bytes(b"precious")
    frames = tmp_path / "frames"
    absolute_name = str(victim / "precious.jpg").replace("/", "\\")  # \tmp\...\victim\v\precious.jpg
    climbing_name = "x\\..\\..\\..\\E.jpg"
    write_image(frames / absolute_name, scene_rgb(32, 40))
    write_image(frames / "i" / climbing_name, scene_rgb(32, 40, seed=1))
    out = tmp_path / "deep" / "a" / "out"
    result = run_cli("generate", frames, out, "--model", tiny_model, *SIZE, "--format", "both")
    assert result.returncode == 0, result.stderr
    assert precious.read_bytes() == b"precious"
    assert not (victim / "precious.npy").exists()
    assert not (tmp_path / "deep" / "E.png").exists() and not (tmp_path / "E.png").exists()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted([absolute_name[:-4] + ".png", "i/" + climbing_name[:-4] + ".png"])
    records = json.loads((out / MANIFEST_NAME).read_text())["images"]
    assert {r["stem"] for r in records.values()} == {absolute_name[:-4], "i/" + climbing_name[:-4]}


def test_a_link_inside_out_that_points_elsewhere_is_not_written_through(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames / "sub", 1)
    make_frames(frames, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    summary = generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    assert summary.done == 1 and list(summary.failed) == ["sub/frame_0000.jpg"]
    assert "outside" in summary.failed["sub/frame_0000.jpg"]
    assert summary.exit_code == 1
    assert list(elsewhere.iterdir()) == []


def test_manifest_names_that_escape_are_refused(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    out = tmp_path / "out"
    assert run_cli("generate", frames, out, "--model", tiny_model, *SIZE).returncode == 0
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["images"]["frame_0000.jpg"]["outputs"] = ["../../outside.png"]
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    for command in (["generate", frames, out, "--model", tiny_model, *SIZE], ["verify", out]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert "outside the output folder" in one_error_line(result)


# ---------------------------------------------------------------- one run per OUT

def test_a_second_run_into_a_busy_folder_is_refused_and_touches_nothing(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    out = tmp_path / "out"
    out.mkdir()
    in_flight = out / ".depthprior-tmp-999999-0"  # the running writer's temporary
    in_flight.write_bytes(b"half a png")
    with OutputLock(out):
        result = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)
        assert result.returncode == 2
        line = one_error_line(result)
        assert "in use by another depthprior run" in line and "pid" in line
        assert in_flight.exists() and not (out / MANIFEST_NAME).exists()
    result = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)
    assert result.returncode == 0, result.stderr
    assert not in_flight.exists()


# ---------------------------------------------------------------- resume checks files

def _damage(out: Path) -> dict[str, str]:
    """Five ways a finished output can be broken, one per frame; frame_0005 stays intact."""
    def png(i: int) -> Path:
        return out / f"frame_{i:04d}.png"

    png(0).write_bytes(png(0).read_bytes()[:-40])
    png(1).write_bytes(b"\x00garbage" * 100)
    png(2).write_bytes(b"")
    png(3).write_bytes(encode_png16(np.zeros((10, 12), np.uint16)))
    npy = out / "frame_0004.npy"
    npy.write_bytes(npy.read_bytes()[:-8])
    return {f"frame_{i:04d}.jpg": kind for i, kind in
            enumerate(["truncated", "not a PNG", "truncated", "12x10", "truncated"])}


def test_verify_waits_its_turn_to_draw_into_a_folder_generate_is_writing(tmp_path, tiny_model):
    """Before: verify drew its contact sheet into OUT while generate held OUT's lock."""
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    out = tmp_path / "out"
    assert generate(frames, out, model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False).done == 2
    with OutputLock(out):
        result = run_cli("verify", out)
        assert result.returncode == 2
        assert "in use by another depthprior run" in one_error_line(result)
        assert not (out / "depthprior_verify.png").exists()
        elsewhere = run_cli("verify", out, "--sheet", tmp_path / "sheet.png")  # not into OUT
        assert elsewhere.returncode == 0, elsewhere.stderr
    assert run_cli("verify", out).returncode == 0 and (out / "depthprior_verify.png").is_file()


def test_damaged_outputs_are_redone_on_resume(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 6)
    out = tmp_path / "out"
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False, format="both")
    assert generate(frames, out, **options).done == 6
    reference = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".npy")}
    expected = _damage(out)
    summary = generate(frames, out, **options)
    assert (summary.done, summary.skipped, summary.exit_code) == (5, 1, 0)
    assert set(summary.repaired) == set(expected)
    for name, kind in expected.items():
        assert kind in summary.repaired[name], (name, summary.repaired[name])
    assert "REDONE frame_0001.jpg" in summary.format()
    for name, data in reference.items():
        assert (out / name).read_bytes() == data, name


def test_a_frame_replaced_by_another_photo_is_redone_and_the_others_kept(tmp_path, tiny_model):
    """Before: "nothing to do": the old frame's prior stayed beside the new photo."""
    frames = tmp_path / "frames"
    make_frames(frames, 3)
    out = tmp_path / "out"
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    assert generate(frames, out, **options).done == 3
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    write_image(frames / "frame_0001.jpg", scene_rgb(48, 64, seed=99))  # same name, another photo
    summary = generate(frames, out, **options)
    assert (summary.done, summary.skipped) == (1, 2), summary.format()
    assert summary.repaired == {"frame_0001.jpg": "its frame changed since the prior was made"}
    assert "REDONE frame_0001.jpg: its frame changed since the prior was made" in summary.format()
    assert (out / "frame_0001.png").read_bytes() != before["frame_0001.png"]
    for name in ("frame_0000.png", "frame_0002.png"):
        assert (out / name).read_bytes() == before[name], name
    assert generate(frames, out, **options).skipped == 3  # and then it is done


def test_manifests_from_before_frame_versions_still_resume(tmp_path, tiny_model):
    frames, out, options, data = _generated(tmp_path, tiny_model)
    for record in data["images"].values():
        assert record.pop("frame_version")
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    assert generate(frames, out, **options).skipped == 2


# ---------------------------------------------------------------- model identity

def _run_on_a_local_checkpoint(tmp_path, monkeypatch):
    """(frames, out, the checkpoint folder, generate's options) after a first run, with the digest
    cache in tmp_path/cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    model = build_tiny_model(tmp_path / "mymodel", seed=3)
    out = tmp_path / "out"
    options = dict(model=str(model), input_size=TEST_INPUT_SIZE, progress=False)
    assert generate(frames, out, **options).done == 2
    return frames, out, model, options


def test_a_checkpoint_replaced_in_the_same_folder_is_not_mixed_in(tmp_path, monkeypatch):
    frames, out, model, options = _run_on_a_local_checkpoint(tmp_path, monkeypatch)
    assert (tmp_path / "cache" / "depthprior" / "file-hashes.json").is_file()
    assert generate(frames, out, **options).skipped == 2
    build_tiny_model(model, seed=4)  # another checkpoint, same folder name
    make_frames(frames / "later", 1)  # work left to do
    with pytest.raises(UsageError, match="weights"):
        generate(frames, out, **options)


def test_weights_edited_in_place_with_size_and_mtime_restored_are_another_model(tmp_path, monkeypatch):
    """Before: the digest cache trusted size and mtime, so an edit that kept both (a restored
    mtime, a copy with -p) resumed as the same model; the file's ctime and inode now key it."""
    import os
    import time

    from depthprior.priors import fingerprint

    monkeypatch.setattr(fingerprint, "SETTLED_SECONDS", 0.0)  # cache the checkpoint just built
    frames, out, model, options = _run_on_a_local_checkpoint(tmp_path, monkeypatch)
    time.sleep(0.05)  # past the file system's timestamp tick
    (weights,) = model.glob("*.safetensors")
    before = weights.stat()
    with open(weights, "r+b") as handle:  # one byte of the last tensor, in place: same size
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0x40]))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    make_frames(frames / "later", 1)  # work left to do
    with pytest.raises(UsageError, match="other settings .*weights"):
        generate(frames, out, **options)


def _generated(tmp_path: Path, model: Path) -> tuple[Path, Path, dict, dict]:
    """Two frames generated into OUT: frames, out, the options used, the manifest's JSON."""
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    out = tmp_path / "out"
    options = dict(model=str(model), input_size=TEST_INPUT_SIZE, progress=False)
    generate(frames, out, **options)
    return frames, out, options, json.loads((out / MANIFEST_NAME).read_text())


def test_manifests_from_before_weight_digests_still_resume(tmp_path, tiny_model):
    frames, out, options, data = _generated(tmp_path, tiny_model)
    del data["identity"]["weights"]
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    make_frames(frames / "more", 1)
    summary = generate(frames, out, **options)
    assert (summary.done, summary.skipped) == (1, 2)


# ---------------------------------------------------------------- malformed manifests

def _malformed(data: dict) -> dict[str, bytes]:
    good = json.dumps(data)
    no_stem = json.loads(good)
    del next(iter(no_stem["images"].values()))["stem"]
    cases = {
        "truncated": good[: len(good) // 2],
        "images_list": json.dumps(dict(data, images=list(data["images"].values()))),
        "no_stem": json.dumps(no_stem),
        "identity_null": json.dumps(dict(data, identity=None)),
        "record_not_object": json.dumps(dict(data, images={"a.jpg": 3})),
        "not_ours": json.dumps({"hello": 1}),
        "newer_format": json.dumps(dict(data, format_version=99)),
        "format_version_text": json.dumps(dict(data, format_version="1")),
        "image_name_climbs": json.dumps(dict(data, images={"../../x.jpg": next(iter(data["images"].values()))})),
        "image_name_absolute": json.dumps(dict(data, images={"/etc/x.jpg": next(iter(data["images"].values()))})),
    }
    return {"binary": b"\xff\xfe\x00", **{k: v.encode() for k, v in cases.items()}}


def test_a_manifest_of_a_newer_depthprior_says_to_upgrade(tmp_path, tiny_model):
    frames, out, options, data = _generated(tmp_path, tiny_model)
    (out / MANIFEST_NAME).write_text(json.dumps(dict(data, format_version=99)))
    with pytest.raises(ManifestError, match="written by a newer depthprior .format_version 99; this one reads up to 1"):
        generate(frames, out, **options)


def test_every_malformed_manifest_is_refused_and_overwrite_recovers(tmp_path, tiny_model):
    frames, out, options, data = _generated(tmp_path, tiny_model)
    for case, content in _malformed(data).items():
        (out / MANIFEST_NAME).write_bytes(content)
        for command in (lambda: generate(frames, out, **options), lambda: verify(out)):
            with pytest.raises(ManifestError, match="--overwrite"):
                command()
        summary = generate(frames, out, overwrite=True, **options)
        assert summary.done == 2, case
        kept = sorted(out.glob(f"{MANIFEST_NAME}.unreadable-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == content, case
        kept[0].unlink()


def test_a_malformed_manifest_is_one_line_exit_2_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"format": "depthprior-manifest", "images": []}')
    make_frames(tmp_path / "frames", 1)
    for command in (["generate", tmp_path / "frames", out, "--model", "someone/not-downloaded"], ["verify", out]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert str(out / MANIFEST_NAME) in line and "--overwrite" in line, line


def test_a_malformed_manifest_says_what_each_command_can_do(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"format": "depthprior-manifest", "images": []}')
    make_frames(tmp_path / "frames", 1)
    generate_line = one_error_line(run_cli("generate", tmp_path / "frames", out, "--model", "someone/not-downloaded"))
    assert "pass --overwrite" in generate_line, generate_line
    for command in ("verify", "report"):  # they have no --overwrite: generate's, or the file itself
        result = run_cli(command, out)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert "pass --overwrite" not in line, line
        assert "rerun depthprior generate" in line and "--overwrite" in line and "remove" in line, line


# ---------------------------------------------------------------- manifest cannot be written

def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_manifest_that_cannot_be_written_still_ends_in_a_summary(tmp_path, tiny_model):
    import subprocess
    import sys

    frames = tmp_path / "frames"
    make_frames(frames, 12, size=(24, 32))  # maps of a few KB; the manifest outgrows the limit
    out = tmp_path / "out"
    command = [sys.executable, "-m", "depthprior", "generate", str(frames), str(out),
               "--model", str(tiny_model), *SIZE, "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_file_size(3000))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "done 12, skipped 0, failed 0 of 12" in result.stdout
    assert "cannot write" in result.stdout and "rerun the same command to resume" in result.stdout
    assert len(list(out.glob("*.png"))) == 12
    resumed = run_cli("generate", frames, out, "--model", tiny_model, *SIZE)
    assert resumed.returncode == 0, resumed.stderr
    assert len(Manifest.load(out).images) == 12


# ---------------------------------------------------------------- constant up to rounding

class _FlatBackend(LocalBackend):
    """A backend whose map is one value plus float32 rounding noise (as an ONNX graph gave)."""

    name = "flat"

    def describe(self) -> dict:
        return {"backend": self.name}

    def infer(self, batch):
        return [None for _ in batch]

    def finish(self, raw, height: int, width: int) -> DepthMap:
        values = np.full((height, width), 1.0, np.float32)
        values[::3] = np.nextafter(np.float32(1.0), np.float32(2.0))
        values[1::3] = np.nextafter(np.float32(1.0), np.float32(0.0))
        return DepthMap(values)


def test_a_map_constant_up_to_rounding_is_flagged_and_fails_verify(tmp_path):
    assert encode_inverse_depth(np.array([[1.0, 1.0 + 1.2e-7]], np.float32), "disparity").constant
    assert not encode_inverse_depth(np.array([[1.0, 1.001]], np.float32), "disparity").constant
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    engine = _FlatBackend(BackendSettings())
    summary = generate(frames, tmp_path / "out", backend=engine, progress=False)
    assert set(summary.flagged) == {"frame_0000.jpg", "frame_0001.jpg"}
    record = Manifest.load(tmp_path / "out").images["frame_0000.jpg"]
    assert record.flags == ["constant"]
    assert not read_png16(tmp_path / "out" / "frame_0000.png").any()
    result = run_cli("verify", tmp_path / "out", "--all")
    assert result.returncode == 1 and "constant" in result.stdout


# ---------------------------------------------------------------- links out of IMAGES

def test_images_behind_links_out_of_images_are_counted_and_never_uploaded_unasked(tmp_path, tiny_model):
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    elsewhere = tmp_path / "somebody_elses"
    make_frames(elsewhere, 3)
    (frames / "link").symlink_to(elsewhere, target_is_directory=True)
    local = run_cli("generate", frames, tmp_path / "out", "--model", tiny_model, *SIZE)
    assert local.returncode == 0, local.stderr
    assert "3 of 4 images lie outside" in local.stderr
    remote = ["generate", frames, tmp_path / "remote", "--backend", "space",
              "--space", "http://127.0.0.1:9", "--retries", "1", "--timeout", "2"]
    refused = run_cli(*remote)
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "3 of 4 images lie outside" in line and "--follow-outside" in line
    assert not (tmp_path / "remote" / MANIFEST_NAME).exists()
    allowed = run_cli(*remote, "--follow-outside")
    assert "--follow-outside" not in allowed.stderr and "lie outside" in allowed.stderr


def test_outputs_a_rerun_no_longer_makes_are_removed(tmp_path, tiny_model):
    """--format png, then --format npy: the PNGs stayed, named by no record, and verify, align
    and export went on reading them (and after a.jpg was replaced by a.png, a.png was a prior of
    the old photo). What a record named before its image was redone, and no record names now,
    is removed; an interrupted image's outputs are kept with its record."""
    from depthprior import generate

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 3, size=(24, 32))
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    assert generate(frames, out, **options).done == 3
    (frames / "frame_0000.jpg").unlink()
    write_image(frames / "frame_0000.png", scene_rgb(24, 32, seed=7))  # another photo, one stem
    redone = generate(frames, out, format="npy", **options)
    assert redone.done == 3 and "REMOVED 3 outputs of redone images" in redone.format()
    assert sorted(path.name for path in out.iterdir() if path.suffix in (".png", ".npy")) == [
        "frame_0000.npy", "frame_0001.npy", "frame_0002.npy"]
    again = generate(frames, out, format="both", **options)  # both: the PNGs come back
    assert again.done == 3 and len(list(out.glob("*.png"))) == len(list(out.glob("*.npy"))) == 3


def test_a_failed_record_naming_files_never_has_them_removed(tmp_path, tiny_model):
    """Found by the hostile pass: a failed record's outputs were not checked, so a hand-edited
    one naming depthprior.json (or the user's notes.png) had it removed once the image was redone."""
    from depthprior import generate

    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(24, 32))
    options = dict(model=str(tiny_model), input_size=TEST_INPUT_SIZE, progress=False)
    generate(frames, out, **options)
    (out / "notes.png").write_bytes(b"the user's")
    manifest = json.loads((out / "depthprior.json").read_text())
    manifest["images"]["frame_0001.jpg"] = {"status": "failed", "error": "x",
                                            "outputs": ["depthprior.json", "notes.png"]}
    (out / "depthprior.json").write_text(json.dumps(manifest))
    again = generate(frames, out, **options)
    assert again.done == 1 and again.removed == []
    assert (out / "notes.png").read_bytes() == b"the user's" and run_cli("verify", out).returncode == 0
