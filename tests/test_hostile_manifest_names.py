"""Hostile: a manifest holding what depthprior never writes (NaN), and names with control
characters in the lines that generate and align log (not only in their error lines)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TEST_INPUT_SIZE, run_cli
from scenes import make_scene
from synth import make_frames

from depthprior.priors.manifest import MANIFEST_NAME, Manifest, ManifestError

pytestmark = pytest.mark.hostile

#: a newline and terminal escapes (a colour, a window title) in one name
WEIRD = "od\n\x1b[31mX\x1b]0;t\x07"


def _raw_control(text: str) -> list[str]:
    """Lines of output holding a control character (or a name split over two lines)."""
    return [line for line in text.splitlines() if any(not c.isprintable() for c in line)
            or line.startswith("\x1b") or line.startswith("[31mX")]


def _generated(tmp_path, model):
    """Two frames generated into OUT by the CLI: frames, out, the options used, the manifest's JSON."""
    frames, out = tmp_path / "frames", tmp_path / "out"
    make_frames(frames, 2, size=(24, 32))
    common = ["--model", model, "--input-size", TEST_INPUT_SIZE, "--no-progress"]
    assert run_cli("generate", frames, out, *common).returncode == 0
    return frames, out, common, json.loads((out / MANIFEST_NAME).read_text())


def test_a_nan_in_a_manifest_is_refused_when_read_not_when_written_at_the_end(tmp_path, tiny_model):
    frames, out, common, data = _generated(tmp_path, tiny_model)
    data["images"]["frame_0000.jpg"]["raw_min"] = float("nan")  # json.dumps writes NaN
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="NaN"):
        Manifest.load(out)
    result = run_cli("generate", frames, out, *common)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--overwrite" in result.stderr and "free space" not in result.stderr, result.stderr
    data["images"]["frame_0000.jpg"]["raw_min"] = 1.0
    data["identity"]["x"] = float("inf")
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="Infinity"):
        Manifest.load(out)


def test_align_s_manifest_warning_and_generate_s_log_lines_escape_names(tmp_path, tiny_model):
    scene = make_scene(tmp_path / "scene", n_images=3, width=64, height=48, points_per_image=60)
    depths = tmp_path / WEIRD
    shutil.copytree(scene.depths, depths)
    (depths / MANIFEST_NAME).write_text("{")
    result = run_cli("align", "--sparse", scene.sparse, "--depths", depths, "--images", scene.images)
    assert "Traceback" not in result.stderr, result.stderr
    assert "the manifest" in result.stderr, result.stderr
    assert not _raw_control(result.stdout + result.stderr), result.stdout + result.stderr

    frames = tmp_path / "frames"
    make_frames(frames, 1, size=(24, 32))
    (frames / f"{WEIRD}.jpg").symlink_to(tmp_path / "nowhere")  # ignored: named in a warning
    out = tmp_path / f"out{WEIRD}"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{")  # --overwrite sets it aside: a warning names OUT
    result = run_cli("generate", frames, out, "--model", tiny_model, "--input-size", TEST_INPUT_SIZE,
                     "--no-progress", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "ignored" in result.stderr and "could not be used" in result.stderr, result.stderr
    assert not _raw_control(result.stdout + result.stderr), result.stdout + result.stderr


def test_summaries_of_verify_report_align_consistency_escape_the_folder_name(tmp_path, tiny_model):
    scene = make_scene(tmp_path / f"scene{WEIRD}", n_images=3, width=64, height=48,
                       points_per_image=60)
    out = tmp_path / f"out{WEIRD}"
    assert run_cli("generate", scene.images, out, "--model", tiny_model, "--input-size",
                   TEST_INPUT_SIZE, "--no-progress").returncode == 0
    runs = {
        "verify": ["verify", out],
        "align": ["align", "--sparse", scene.sparse, "--depths", scene.depths, "--images", scene.images],
        "consistency": ["consistency", "--sparse", scene.sparse, "--depths", scene.depths],
        "report": ["report", scene.depths, "--images", scene.images, "--sparse", scene.sparse],
    }
    for command, argv in runs.items():
        result = run_cli(*argv)
        assert "Traceback" not in result.stderr and "error:" not in result.stderr, (command, result.stderr)
        assert not _raw_control(result.stdout + result.stderr), (command, result.stdout + result.stderr)
        if command == "verify":  # the table's header names its columns (not only "status")
            header = result.stdout.splitlines()[1]
            assert header.split()[:2] == ["image", "size"] and header.endswith("status"), result.stdout


def test_an_empty_ray_address_is_refused_as_an_argument(tmp_path, cli):
    make_frames(tmp_path / "frames", 1, size=(24, 32))
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--ray=", "--ray-workers", "1")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "argument --ray" in lines[0] and "int()" not in lines[0], result.stderr


def test_a_manifest_too_large_for_memory_is_one_line_not_a_traceback(tmp_path, cli, monkeypatch):
    """A file under the size cap whose parse runs out of memory (a 200 MB list of zeros under a
    1.5 GB address-space limit did): one error line naming it, as any other malformed manifest."""
    from depthprior.files import jsonfile

    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"format": "depthprior-manifest", "x": [0, 0, 0]}')

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(jsonfile.json, "loads", exhausted)
    result = cli("verify", out)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and MANIFEST_NAME in lines[0] and "memory" in lines[0], result.stderr


def test_a_record_naming_another_frame_s_outputs_is_refused_or_redone(tmp_path, tiny_model):
    frames, out, common, good = _generated(tmp_path, tiny_model)
    forged = json.loads(json.dumps(good))
    forged["images"]["frame_0000.jpg"]["outputs"] = ["frame_0001.png"]  # not its stem's file
    (out / MANIFEST_NAME).write_text(json.dumps(forged))
    with pytest.raises(ManifestError, match="frame_0001.png"):
        Manifest.load(out)
    forged["images"]["frame_0000.jpg"]["stem"] = "frame_0001"  # as a stale record of a renamed frame
    (out / MANIFEST_NAME).write_text(json.dumps(forged))
    result = run_cli("generate", frames, out, *common)
    assert result.returncode == 0, result.stderr
    assert "REDONE frame_0000.jpg" in result.stdout + result.stderr, result.stdout + result.stderr
    record = Manifest.load(out).images["frame_0000.jpg"]
    assert record.stem == "frame_0000" and record.outputs == ["frame_0000.png"]
