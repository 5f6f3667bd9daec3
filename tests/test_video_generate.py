"""generate with a temporal model: folders are sequences, one value mapping per sequence,
resume from spilled windows (also after SIGKILL), a corrupt frame fails alone, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from depthprior.errors import UsageError
from depthprior.priors.backends import BackendSettings, create_backend, settings_for
from depthprior.priors.backends.video_checkpoints import TEMPORAL_VERSION
from depthprior.priors.backends.video_depth import VideoDepthModel
from depthprior.priors.backends.video_windows import stitch
from depthprior.priors.distributed import RaySettings
from depthprior.priors.pipeline import generate
from depthprior.priors.sequences import SPILL_FOLDER, natural_key
from depthprior.priors.store import PNG_MAX, read_png16
from synth import build_tiny_video_model, scene_rgb, write_image

SIZE = (14, 21)  # frames: height, width (a 1x2-patch network input: fast)
INPUT = 14


@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    return build_tiny_video_model(tmp_path_factory.mktemp("vda"))


def frames(folder: Path, count: int, size=SIZE, ext=".jpg", first_seed: int = 0) -> list[Path]:
    return [write_image(folder / f"frame_{i}{ext}", scene_rgb(*size, seed=first_seed + i)) for i in range(count)]


def run(images, out, model, **extra):
    return generate(images, out, model=str(model), device="cpu", input_size=INPUT, progress=False, **extra)


def pngs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def expected_maps(model, paths: list[Path]) -> list[np.ndarray]:
    """The sequence's maps by the rule, straight from the network (no files): the reference for
    what generate writes."""
    from depthprior.images import decode_rgb

    video = VideoDepthModel(BackendSettings(model=str(model), device="cpu", input_size=INPUT))
    images = [decode_rgb(p) for p in paths]
    maps: dict[int, np.ndarray] = {}
    for window in stitch(len(images), lambda i: video.prepare(images[i], INPUT), video.run_window, False):
        maps.update(window.final)
    return [video.finish(maps[i], *images[i].shape[:2]).values for i in range(len(images))]


def test_folders_are_sequences_in_natural_order_with_one_mapping(video_model, tmp_path):
    a = frames(tmp_path / "in" / "a", 33)
    frames(tmp_path / "in" / "b", 1, size=(16, 20))
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.exit_code == 0 and summary.done == 34
    manifest = json.loads((tmp_path / "out" / "depthprior.json").read_text())
    records = {name: r for name, r in manifest["images"].items() if name.startswith("a/")}
    assert records["a/frame_2.jpg"]["position"] == 2 and records["a/frame_10.jpg"]["position"] == 10
    assert {r["sequence"] for r in records.values()} == {"a"}
    assert len({(r["raw_min"], r["raw_max"]) for r in records.values()}) == 1  # one mapping
    assert manifest["images"]["b/frame_0.jpg"]["sequence"] == "b"  # a one-frame sequence works
    assert manifest["identity"]["temporal"] == TEMPORAL_VERSION  # what lets records carry sequences
    expected = expected_maps(video_model, a)
    low, high = records["a/frame_0.jpg"]["raw_min"], records["a/frame_0.jpg"]["raw_max"]
    assert low == pytest.approx(min(float(m.min()) for m in expected), abs=1e-6 * high)
    for i, values in enumerate(expected):
        png = read_png16(tmp_path / "out" / "a" / f"frame_{i}.png")
        decoded = low + png.astype(np.float64) / PNG_MAX * (high - low)
        assert np.abs(decoded - values).max() <= (high - low) / PNG_MAX
    assert not (tmp_path / "out" / SPILL_FOLDER).exists()
    again = run(tmp_path / "in", tmp_path / "out", video_model)
    assert again.skipped == 34 and again.done == 0
    assert natural_key("frame_2.jpg") < natural_key("frame_10.jpg")
    # a damaged output: its sequence is redone whole, to the same bytes; the other one is kept
    before = pngs(tmp_path / "out")
    damaged = tmp_path / "out" / "a" / "frame_7.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    repaired = run(tmp_path / "in", tmp_path / "out", video_model)
    assert list(repaired.repaired) == ["a/frame_7.jpg"] and repaired.done == 33 and repaired.skipped == 1
    assert pngs(tmp_path / "out") == before


def test_a_corrupt_frame_fails_alone_and_its_neighbours_stay_consistent(video_model, tmp_path):
    paths = frames(tmp_path / "in" / "seq", 12)
    paths[5].write_bytes(b"\xff\xd8 not a jpeg")
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert list(summary.failed) == ["seq/frame_5.jpg"] and summary.done == 11
    # the same sequence with the hole filled by its previous frame: the same maps around it
    filled = frames(tmp_path / "filled" / "seq", 12)
    filled[5].write_bytes(filled[4].read_bytes())
    run(tmp_path / "filled", tmp_path / "out2", video_model)
    ours, reference = pngs(tmp_path / "out"), pngs(tmp_path / "out2")
    reference.pop("seq/frame_5.png")
    assert ours == reference


def test_frames_of_another_size_in_a_sequence_are_one_line(video_model, tmp_path):
    frames(tmp_path / "in" / "seq", 4)
    write_image(tmp_path / "in" / "seq" / "frame_2.jpg", scene_rgb(16, 21))
    with pytest.raises(UsageError, match=r"seq/frame_2\.jpg is 21x16, but the frames of sequence 'seq' are 21x14"):
        run(tmp_path / "in", tmp_path / "out", video_model)


def test_ray_and_frame_by_frame_backends_refuse_temporal_models(video_model, tmp_path):
    frames(tmp_path / "in", 2)
    with pytest.raises(UsageError, match="--ray would split"):
        run(tmp_path / "in", tmp_path / "out", video_model, ray=RaySettings())
    for backend in ("onnx", "space"):
        with pytest.raises(UsageError, match=f"--backend {backend} cannot run it"):
            settings_for(backend, model=str(video_model))
    with pytest.raises(UsageError, match="runs sequences"):  # check and bench run frames one by one
        create_backend("torch", BackendSettings(model="depth-anything/Video-Depth-Anything-Small"))


def test_metric_checkpoints_write_inverse_metres_without_stitching(tmp_path):
    model = build_tiny_video_model(tmp_path / "m", metric=True)
    frames(tmp_path / "in", 3)
    summary = run(tmp_path / "in", tmp_path / "out", model)
    assert summary.exit_code == 0 and summary.backend["model_output"] == "depth"
    records = json.loads((tmp_path / "out" / "depthprior.json").read_text())["images"].values()
    assert {r["raw_kind"] for r in records} == {"inverse_depth"}


def test_a_run_killed_mid_sequence_resumes_to_the_uninterrupted_outputs(video_model, tmp_path):
    frames(tmp_path / "in" / "seq", 50)
    whole = tmp_path / "whole"
    run(tmp_path / "in", whole, video_model)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "depthprior", "generate", str(tmp_path / "in"), str(out),
                                "--model", str(video_model), "--device", "cpu", "--input-size", str(INPUT)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    states = list((out / SPILL_FOLDER).glob("*/state.json"))
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        states = states or list((out / SPILL_FOLDER).glob("*/state.json"))
        try:
            if states and json.loads(states[0].read_text())["window"] >= 0:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-sequence"
    assert not list(out.rglob("*.png"))  # nothing final before the sequence's mapping is known
    summary = run(tmp_path / "in", out, video_model)
    assert summary.exit_code == 0 and summary.done == 50
    assert pngs(out) == pngs(whole)


@pytest.mark.parametrize("damage", [False, True])
def test_an_interrupted_sequence_resumes_and_a_damaged_spill_starts_it_again(video_model, tmp_path, monkeypatch,
                                                                             damage):
    frames(tmp_path / "in", 50)
    run(tmp_path / "in", tmp_path / "whole", video_model)
    calls = []
    original = VideoDepthModel.run_window

    def interrupted(self, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second window runs
        return original(self, inputs)

    monkeypatch.setattr(VideoDepthModel, "run_window", interrupted)
    assert run(tmp_path / "in", tmp_path / "out", video_model).interrupted
    spilled = sorted((tmp_path / "out" / SPILL_FOLDER).glob("*/pending-0-*.npy"))
    assert len(spilled) == 8
    if damage:
        spilled[3].write_bytes(b"not a map")
    windows = []
    monkeypatch.setattr(VideoDepthModel, "run_window", lambda self, inputs: windows.append(1) or original(self, inputs))
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.exit_code == 0 and summary.done == 50
    assert len(windows) == (3 if damage else 2)  # resumed at window 1, or all 3 again
    assert pngs(tmp_path / "out") == pngs(tmp_path / "whole")


@pytest.mark.hostile
def test_a_sequence_of_frames_that_cannot_be_used_fails_alone_and_the_others_are_made(video_model, tmp_path):
    """Before: three 1x5000 frames in one folder ended the whole run ("no frame of sequence 'a'
    can be read"), with nothing recorded and the good sequence b never made."""
    for i in range(3):
        write_image(tmp_path / "in" / "a" / f"frame_{i}.png", scene_rgb(1, 5000, seed=i))
    frames(tmp_path / "in" / "b", 3)
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.exit_code == 1 and summary.done == 3
    assert sorted(summary.failed) == [f"a/frame_{i}.png" for i in range(3)]
    assert all("16:1" in reason for reason in summary.failed.values()), summary.failed
    assert sorted(pngs(tmp_path / "out")) == [f"b/frame_{i}.png" for i in range(3)]


@pytest.mark.hostile
def test_a_frame_removed_from_a_finished_sequence_redoes_it_as_a_fresh_run(video_model, tmp_path):
    """Before: 'nothing to do': the old mapping and positions (with a gap) stayed."""
    paths = frames(tmp_path / "in" / "seq", 6)
    run(tmp_path / "in", tmp_path / "out", video_model)
    paths[3].unlink()
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.done == 5 and "a frame removed" in summary.repaired["seq/frame_4.jpg"]
    fresh = run(tmp_path / "in", tmp_path / "fresh", video_model)
    assert fresh.done == 5
    assert {k: v for k, v in pngs(tmp_path / "out").items() if k != "seq/frame_3.png"} == pngs(tmp_path / "fresh")
    manifest = json.loads((tmp_path / "out" / "depthprior.json").read_text())
    assert "seq/frame_3.jpg" not in manifest["images"] and manifest["images"]["seq/frame_4.jpg"]["position"] == 3
    assert run(tmp_path / "in", tmp_path / "out", video_model).skipped == 5  # and then it is done


@pytest.mark.hostile
@pytest.mark.parametrize("window", [-1, 10**30, True])
def test_a_spilled_state_with_a_window_out_of_range_starts_the_sequence_again(video_model, tmp_path, monkeypatch,
                                                                               window):
    """Before: 'resuming after window 1e30 of 2', then 'cannot read file' on every rerun."""
    frames(tmp_path / "in", 40)
    run(tmp_path / "in", tmp_path / "whole", video_model)
    original, calls = VideoDepthModel.run_window, []

    def interrupted(self, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, inputs)

    monkeypatch.setattr(VideoDepthModel, "run_window", interrupted)
    assert run(tmp_path / "in", tmp_path / "out", video_model).interrupted
    monkeypatch.setattr(VideoDepthModel, "run_window", original)
    (state,) = (tmp_path / "out" / SPILL_FOLDER).glob("*/state.json")
    state.write_text(json.dumps({**json.loads(state.read_text()), "window": window}))
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.exit_code == 0 and summary.done == 40
    assert pngs(tmp_path / "out") == pngs(tmp_path / "whole")


@pytest.mark.hostile
def test_a_record_whose_sequence_is_not_its_folder_is_refused(video_model, tmp_path):
    """A forged `sequence` (another folder's, or ../../etc) would join frames of other folders
    in one per-sequence fit: the manifest is refused in one line naming the record."""
    from depthprior.errors import FileFormatError
    from depthprior.priors.manifest import Manifest

    frames(tmp_path / "in" / "a", 2)
    frames(tmp_path / "in" / "b", 1)
    assert run(tmp_path / "in", tmp_path / "out", video_model).done == 3
    path = tmp_path / "out" / "depthprior.json"
    for forged in ("../../etc", "a", "."):
        document = json.loads(path.read_text())
        document["images"]["b/frame_0.jpg"]["sequence"] = forged
        path.write_text(json.dumps(document))
        with pytest.raises(FileFormatError, match=f"'b/frame_0.jpg' names sequence '{forged}', not its folder 'b'"):
            Manifest.load(tmp_path / "out")


@pytest.mark.hostile
def test_a_record_with_a_bool_position_a_lone_position_or_a_taken_position_is_refused(tmp_path):
    """`position: true` passed as frame 1 (a bool is an int), a position without its sequence,
    and two frames of one sequence at one position: each is one line naming the file and record."""
    from depthprior.errors import FileFormatError
    from depthprior.priors.manifest import ImageRecord, Manifest

    def record(name: str, position: int) -> ImageRecord:
        return ImageRecord(status="ok", stem=name[:-4], outputs=[name[:-4] + ".png"], width=4, height=3,
                           raw_min=0.0, raw_max=1.0, sequence="a", position=position)

    out = tmp_path / "out"
    out.mkdir()
    Manifest(root=out, identity={"temporal": TEMPORAL_VERSION},  # a temporal model's: its records have positions
             images={"a/f0.jpg": record("a/f0.jpg", 0), "a/f1.jpg": record("a/f1.jpg", 1)}).save()
    path = out / "depthprior.json"
    good = json.loads(path.read_text())
    assert Manifest.load(out).images["a/f1.jpg"].position == 1
    forged = {
        "position true": ({"position": True}, r"'a/f1.jpg' is malformed .*position"),
        "no sequence": ({"sequence": None}, r"'a/f1.jpg' is malformed .*sequence"),
        "taken position": ({"position": 0}, r"'a/f1.jpg' .*position 0 of sequence 'a'.*'a/f0.jpg'"),
    }
    for case, (change, message) in forged.items():
        document = json.loads(json.dumps(good))
        document["images"]["a/f1.jpg"].update(change)
        path.write_text(json.dumps(document))
        with pytest.raises(FileFormatError, match=message) as refused:
            Manifest.load(out)
        assert str(path) in str(refused.value) and "\n" not in str(refused.value), case


def test_a_redo_killed_after_a_frame_was_inserted_leaves_a_manifest_that_resumes(video_model, tmp_path, monkeypatch):
    """A frame inserted mid-sequence moves the later frames; a redo stopped after the new frame's
    record kept the old record of the frame it displaced at the same position, and the manifest
    was then refused as malformed instead of resumed."""
    from depthprior.priors import sequences

    (tmp_path / "in" / "seq").mkdir(parents=True)
    for name in ("f0", "f2", "f4"):
        write_image(tmp_path / "in" / "seq" / f"{name}.jpg", scene_rgb(*SIZE, seed=len(name) + int(name[1])))
    assert run(tmp_path / "in", tmp_path / "out", video_model).done == 3
    write_image(tmp_path / "in" / "seq" / "f1.jpg", scene_rgb(*SIZE, seed=9))
    original = sequences.write_outputs

    def stopped_at_f2(root, item, *args):
        if item.name == "seq/f2.jpg":
            raise KeyboardInterrupt
        return original(root, item, *args)

    monkeypatch.setattr(sequences, "write_outputs", stopped_at_f2)
    assert run(tmp_path / "in", tmp_path / "out", video_model).interrupted
    monkeypatch.setattr(sequences, "write_outputs", original)
    summary = run(tmp_path / "in", tmp_path / "out", video_model)
    assert summary.exit_code == 0 and summary.done == 4
    assert run(tmp_path / "in", tmp_path / "fresh", video_model).done == 4
    assert pngs(tmp_path / "out") == pngs(tmp_path / "fresh")
