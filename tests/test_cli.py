"""The CLI as users run it: subprocesses, exit codes, one-line errors, kills.

Most tests run the CLI in the test process (conftest.run_cli); the ones here that prove what only
a process of its own shows (exit codes as the shell sees them, signals, kills) start one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import TEST_INPUT_SIZE
from depthprior import generate
from depthprior.priors.store import TMP_MARK, read_png16
from synth import make_frames

SIZE = ["--input-size", str(TEST_INPUT_SIZE)]
MISSING_MODEL = "/nonexistent/model-that-would-need-a-download"


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_generate_then_verify(tmp_path, tiny_model, cli):
    make_frames(tmp_path / "frames" / "cam0", 2)
    make_frames(tmp_path / "frames" / "cam1", 1, ext=".png")
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--model", tiny_model, *SIZE,
                 "--verify", "--num-samples", "2", subprocess_only=True)
    assert result.returncode == 0, result.stderr
    assert "done 3, skipped 0, failed 0 of 3 images" in result.stdout
    assert "verify: OK" in result.stdout
    assert "model=" + str(tiny_model) in result.stderr  # effective settings logged once
    assert (tmp_path / "out" / "cam1" / "frame_0000.png").is_file()
    sheet = tmp_path / "out" / "depthprior_verify.png"
    assert sheet.is_file() and cv2.imread(str(sheet)).ndim == 3  # an RGB picture, not a prior

    again = cli("verify", tmp_path / "out", "--all")
    assert again.returncode == 0 and again.stdout.count(" ok") >= 3
    (tmp_path / "out" / "cam0" / "frame_0001.png").unlink()
    broken = cli("verify", tmp_path / "out", "--all")
    assert broken.returncode == 1 and "frame_0001.png missing" in broken.stdout


def _command_names() -> list[str]:
    from depthprior.cli import build_parser

    parser = build_parser()
    (commands,) = [action for action in parser._actions if action.choices and action.dest == "command"]
    return list(commands.choices)


@pytest.mark.parametrize("command", _command_names())
def test_every_command_parses_its_arguments_in_a_process_of_its_own(command, cli):
    """Each command as the shell runs it (a bad command line is one line, exit 2), its --help in
    this process (a process each would add ~0.5 CPU-s per command and prove nothing more)."""
    shown = cli(command, "--help")
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: depthprior {command}"), shown.stderr
    refused = cli(command, "--no-such-option", subprocess_only=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = _one_error_line(refused)  # argparse names the command, or the option it did not know
    assert line.startswith("depthprior") and (command in line or "--no-such-option" in line), line


def test_usage_errors_exit_2_before_loading_a_model(tmp_path, cli):
    make_frames(tmp_path / "frames", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "clash").mkdir()
    make_frames(tmp_path / "clash", 1, ext=".jpg")
    make_frames(tmp_path / "clash", 1, ext=".png")
    (tmp_path / "afile").write_text("x")
    cases = {
        "input folder not found": [tmp_path / "nope", tmp_path / "o1"],
        "no images found": [tmp_path / "empty", tmp_path / "o2"],
        "name collision": [tmp_path / "clash", tmp_path / "o3"],
        "not writable": [tmp_path / "frames", tmp_path / "afile" / "out"],
    }
    for expected, paths in cases.items():
        result = cli("generate", *paths, "--model", MISSING_MODEL)
        assert result.returncode == 2, (expected, result.stderr)
        assert expected in _one_error_line(result)
        assert "Traceback" not in result.stderr


def test_name_collisions_name_the_first_pairs_and_count_the_rest(tmp_path, cli):
    for stem in "abcd":
        for ext in (".jpg", ".png"):
            (tmp_path / "clash" / f"{stem}{ext}").parent.mkdir(exist_ok=True)
            (tmp_path / "clash" / f"{stem}{ext}").write_bytes(b"x")
    result = cli("generate", tmp_path / "clash", tmp_path / "out", "--model", MISSING_MODEL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("name collision: a.jpg and a.png would write the same output (so would "
            "'b.jpg and b.png', 'c.jpg and c.png' and 1 more); rename or move one of them"
            ) in _one_error_line(result)


def test_model_that_cannot_be_loaded(tmp_path, cli):
    make_frames(tmp_path / "frames", 1)
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--model", MISSING_MODEL)
    assert result.returncode == 2
    assert "cannot load model" in _one_error_line(result)


def test_bad_file_exit_1_and_listed(tmp_path, tiny_model, cli):
    make_frames(tmp_path / "frames", 2)
    (tmp_path / "frames" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--model", tiny_model, *SIZE)
    assert result.returncode == 1
    assert "done 2, skipped 0, failed 1" in result.stdout
    assert "FAILED broken.jpg:" in result.stdout


def test_check_reports_the_model(tiny_model, cli):
    result = cli("check", "--model", tiny_model, *SIZE)
    assert result.returncode == 0, result.stderr
    for expected in ("built-in synthetic image", "model_output: disparity", "device: cpu",
                     "float32", "check: OK"):
        assert expected in result.stdout
    bad = cli("check", "--model", MISSING_MODEL)
    assert bad.returncode == 2 and "cannot load model" in bad.stderr


def _start(tmp_path, tiny_model, frames, out):
    return subprocess.Popen(
        [sys.executable, "-m", "depthprior", "generate", frames, out, "--model", tiny_model,
         *SIZE, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=_as_a_foreground_job,
    )


def _as_a_foreground_job() -> None:
    """SIGINT at its default, as for a command typed in a terminal: a suite started in the
    background (`... &`) ignores SIGINT, children inherit that, and Ctrl-C is then rightly
    ignored by the run too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_outputs(out, count, process, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and len(list(out.glob("*.png"))) >= count:
            return
        time.sleep(0.01)


def test_sigkill_leaves_complete_files_and_resume_matches(tmp_path, tiny_model, cli):
    frames = tmp_path / "frames"
    make_frames(frames, 40, size=(240, 320))
    out = tmp_path / "killed"
    process = _start(tmp_path, tiny_model, frames, out)
    _wait_for_outputs(out, 3, process)
    process.kill()
    process.wait()
    written = list(out.glob("*.png"))
    assert 0 < len(written) < 40, "the kill should land in the middle of the run"
    for png in written:  # every file that exists is complete
        assert read_png16(png).shape == (240, 320)
    resumed = cli("generate", frames, out, "--model", tiny_model, *SIZE)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in out.iterdir() if TMP_MARK in p.name]
    reference = generate(frames, tmp_path / "reference", model=str(tiny_model),
                         input_size=TEST_INPUT_SIZE, progress=False)
    assert reference.done == 40
    for png in (tmp_path / "reference").glob("*.png"):
        assert np.array_equal(read_png16(png), read_png16(out / png.name)), png.name
    images = json.loads((out / "depthprior.json").read_text())["images"]
    assert len(images) == 40 and all(r["status"] == "ok" for r in images.values())


@pytest.fixture(scope="module")
def many_small_frames(tmp_path_factory) -> Path:
    """3000 small frames, enough that a run cannot finish between the poll and the signal on a
    busy machine (300 were done within a scheduler's pause under load); runs only read them.
    Eight pictures, each written to many names: encoding 3000 distinct ones costs seconds."""
    folder = tmp_path_factory.mktemp("many-small")
    pictures = [path.read_bytes() for path in make_frames(tmp_path_factory.mktemp("pictures"), 8)]
    for index in range(3000):
        (folder / f"frame_{index:04d}.jpg").write_bytes(pictures[index % len(pictures)])
    return folder


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path, tiny_model, many_small_frames):
    """Also when the parent had SIGINT blocked (inherited by the child: a library in this very
    pytest process did that, and the run then finished with exit 0, deaf to Ctrl-C). The run
    unblocks it first, and is then as a run from a shell that never blocked it: one run covers both."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        _interrupt_a_run(tmp_path, tiny_model, many_small_frames)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _interrupt_a_run(tmp_path, tiny_model, frames):
    out = tmp_path / "out"
    process = _start(tmp_path, tiny_model, frames, out)
    _wait_for_outputs(out, 2, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted" in stdout and "rerun the same command to resume" in stdout
    images = json.loads((out / "depthprior.json").read_text())["images"]
    assert 0 < len(images) < 3000
    for name, record in images.items():
        assert read_png16(out / record["outputs"][0]).shape == (48, 64), name


def test_generate_with_align_writes_depth_params(tmp_path, tiny_model, cli):
    from scenes import make_scene

    scene = make_scene(tmp_path / "scene", n_images=3, subfolders=True)
    out = tmp_path / "depths"
    result = cli("generate", scene.images, out, "--model", tiny_model, *SIZE,
                 "--align", scene.sparse)
    params = json.loads((scene.sparse / "depth_params.json").read_text())
    stems = [p.relative_to(scene.images).with_suffix("").as_posix() for p in scene.images.rglob("*.jpg")]
    assert len(stems) == 3 and any("/" in stem for stem in stems)
    assert sorted(params) == sorted(stems)
    assert all(set(entry) == {"scale", "offset"} for entry in params.values())
    # random-weight priors do not follow the scene: any failed fit makes the exit code 1
    report = json.loads((scene.sparse / "depth_params.report.json").read_text())
    failed = [row for row in report["per_image"].values() if row["status"] == "failed"]
    assert all(params[row["key"]]["scale"] == -1 for row in failed)  # skipped by the trainer
    assert result.returncode == (1 if failed else 0), result.stderr
    assert "done 3" in result.stdout


def test_seed_scripts_with_the_local_backend(tmp_path, tiny_model, monkeypatch):
    """The original scripts' arguments over the package's local backend: their main() in this
    process (tests/test_space.py starts both as processes from a checkout, as users do)."""
    import importlib.util

    from conftest import run_main_in_process

    scripts = Path(__file__).resolve().parent.parent / "preprocessing"
    monkeypatch.syspath_prepend(str(scripts))  # as `python preprocessing/NAME.py` has it

    def script(name: str):
        spec = importlib.util.spec_from_file_location(f"seed_{name}", scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main

    make_frames(tmp_path / "frames", 2)
    generated = run_main_in_process(script("generate_depth"), tmp_path / "frames", tmp_path / "out",
                                    "--verify", "--num_samples", "1", "--model", tiny_model, *SIZE)
    assert generated.returncode == 0, generated.stderr
    assert "verify: OK" in generated.stdout and "1 checked" in generated.stdout
    assert read_png16(tmp_path / "out" / "frame_0001.png").dtype == np.uint16
    checked = run_main_in_process(script("test_depth_api"), "--backend", "torch", "--model", tiny_model, *SIZE)
    assert checked.returncode == 0 and "check: OK" in checked.stdout, checked.stderr
