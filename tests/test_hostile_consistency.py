"""Hostile cases of `depthprior consistency` (issue 20): the files it reads (consistency.json,
depth_params.json, depthprior.json, priors, the model) and the mask folder it owns."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from scenes import inject_blobs, make_scene

from depthprior.errors import WriteError
from depthprior.files.outputs import OutputLock
from depthprior.priors.manifest import MANIFEST_NAME, ImageRecord, Manifest
from depthprior.scene.align import align
from depthprior.scene.confidence import REPORT_NAME, Settings, check_consistency

pytest.importorskip("pycolmap")
pytestmark = pytest.mark.hostile

NESTED = "[" * 100000 + "]" * 100000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Six small frames, a text model, priors with a wrong disc in some, aligned."""
    scene = make_scene(tmp_path_factory.mktemp("pristine"), n_images=6, width=48, height=36,
                       points_per_image=120, write_images=False, model_format="text", seed=3)
    inject_blobs(scene, every=2, seed=3)
    align(scene.sparse, scene.depths)
    return scene


@pytest.fixture
def scene(pristine, tmp_path):
    """A private copy of the pristine scene (root, sparse, depths)."""
    root = tmp_path / "scene"
    shutil.copytree(pristine.root, root)
    return pristine.names, root / "sparse" / "0", root / "depths"


def consistency(sparse: Path, depths: Path, *extra: object, cwd: Path | None = None):
    return run_cli("consistency", "--sparse", sparse, "--depths", depths, *extra, cwd=cwd)


def one_line(result, *words: str) -> str:
    message = result.stderr.strip()
    assert "Traceback" not in message, message
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message
    return message


# ---------------------------------------------------------------- JSON files it reads

@pytest.mark.parametrize("which, content", [
    ("consistency", NESTED), ("params", NESTED), ("manifest", NESTED),
    ("consistency", "{not json"), ("consistency", "[1, 2]"),
    ("consistency", '{"images": {"a.jpg": [1]}}'),
])
def test_bad_json_is_one_line(scene, which, content):
    _names, sparse, depths = scene
    target = {"consistency": depths.parent / "depths_confidence" / REPORT_NAME,
              "params": sparse / "depth_params.json",
              "manifest": depths / "depthprior.json"}[which]
    target.parent.mkdir(exist_ok=True)
    target.write_text(content)
    result = consistency(sparse, depths)
    assert result.returncode == 2
    one_line(result, target.name)


def test_consistency_json_that_is_a_folder(scene):
    _names, sparse, depths = scene
    (depths.parent / "depths_confidence" / REPORT_NAME).mkdir(parents=True)
    result = consistency(sparse, depths)
    assert result.returncode == 2
    one_line(result, REPORT_NAME, "folder")


# ---------------------------------------------------------------- priors

def write_manifest(names: list[str], depths: Path) -> None:
    manifest = Manifest(root=depths, identity={"backend": "test"})
    for name in names:
        stem = str(Path(name).with_suffix(""))
        png = cv2.imread(str(depths / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        manifest.images[name] = ImageRecord(status="ok", stem=stem, outputs=[f"{stem}.png"],
                                            width=png.shape[1], height=png.shape[0],
                                            raw_min=0.0, raw_max=1.0)
    manifest.save()


def test_prior_not_of_its_recorded_size_fails_that_image(scene):
    names, sparse, depths = scene
    write_manifest(names, depths)
    other = depths / (Path(names[1]).stem + ".png")
    png = cv2.imread(str(other), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(other), cv2.resize(png, (png.shape[1] * 2, png.shape[0] * 2)))
    result = consistency(sparse, depths)
    assert result.returncode == 1, result.stderr
    report = json.loads((depths.parent / "depths_confidence" / REPORT_NAME).read_text())
    entry = report["images"][names[1]]
    assert entry["status"] == "failed" and "96x72" in entry["reason"]
    assert not (depths.parent / "depths_confidence" / (Path(names[1]).stem + ".png")).exists()
    assert report["images"][names[0]]["status"] == "checked"


# ---------------------------------------------------------------- the model

def test_masks_are_never_written_among_the_frames(scene):
    """Before: -o IMAGES wrote <key>.png masks among the frames (over a PNG frame of that key)."""
    names, sparse, depths = scene
    frames = depths.parent / "frames"
    frames.mkdir()
    (frames / "frame_000.png").write_bytes(b"the photo")
    write_manifest(names, depths)
    manifest = json.loads((depths / MANIFEST_NAME).read_text())
    (depths / MANIFEST_NAME).write_text(json.dumps(dict(manifest, inputs=str(frames))))
    for output in (frames, frames / "masks"):
        result = consistency(sparse, depths, "-o", output)
        assert result.returncode == 2
        one_line(result, "inside the image folder", str(frames))
    assert sorted(p.name for p in frames.iterdir()) == ["frame_000.png"]
    assert (frames / "frame_000.png").read_bytes() == b"the photo"


def rename_in_model(sparse: Path, old: str, new: str) -> None:
    images = sparse / "images.txt"
    images.write_text(images.read_text().replace(f" {old}\n", f" {new}\n"))


@pytest.mark.parametrize("second", ["frame_000.png", "frame_000.jpg"])
def test_two_images_of_one_key_refused_as_align_refuses(scene, second):
    names, sparse, depths = scene
    rename_in_model(sparse, names[1], second)
    result = consistency(sparse, depths)
    assert result.returncode == 2
    one_line(result, "frame_000", "rename one of them")
    assert not (depths.parent / "depths_confidence").exists()


@pytest.mark.parametrize("model", ["SPHERICAL 48 36 20 24 18", "EQUIRECTANGULAR 48 36 48 36"])
def test_unsupported_camera_model_named_as_unsupported(scene, model):
    _names, sparse, depths = scene
    cameras = sparse / "cameras.txt"
    lines = [line for line in cameras.read_text().splitlines() if line.startswith("#")]
    cameras.write_text("\n".join(lines + [f"1 {model}"]) + "\n")
    result = consistency(sparse, depths)
    assert result.returncode == 2
    message = one_line(result, model.split()[0], "support")
    assert "damaged" not in message


# ---------------------------------------------------------------- where the masks go

def test_depths_dot_and_dot_dot(scene):
    names, sparse, depths = scene
    result = consistency(sparse.resolve(), ".", cwd=depths)
    assert result.returncode == 0, result.stderr
    masks = depths.parent / "depths_confidence"
    assert (masks / REPORT_NAME).is_file() and (masks / (Path(names[0]).stem + ".png")).is_file()
    shutil.rmtree(masks)
    (depths / "sub").mkdir()
    result = consistency(sparse.resolve(), "..", cwd=depths / "sub")
    assert result.returncode == 0, result.stderr
    assert (masks / REPORT_NAME).is_file()
    assert not (depths / "sub" / "depths_confidence").exists()


def test_second_run_into_a_locked_folder_refused(scene):
    _names, sparse, depths = scene
    masks = depths.parent / "masks"
    masks.mkdir()
    with OutputLock(masks):
        result = consistency(sparse, depths, "-o", masks)
    assert result.returncode == 2
    one_line(result, "in use by another depthprior run")
    assert not (masks / REPORT_NAME).exists()


def test_mask_of_an_image_now_excluded_is_removed(scene):
    names, sparse, depths = scene
    masks = depths.parent / "depths_confidence"
    assert consistency(sparse, depths).returncode == 0
    gone = masks / (Path(names[2]).stem + ".png")
    assert gone.is_file()
    params = json.loads((sparse / "depth_params.json").read_text())
    params[Path(names[2]).stem]["scale"] = -1.0  # a failed fit: excluded from now on
    (sparse / "depth_params.json").write_text(json.dumps(params))
    result = consistency(sparse, depths)
    assert result.returncode == 1
    assert not gone.exists()
    report = json.loads((masks / REPORT_NAME).read_text())
    assert report["images"][names[2]]["status"] == "excluded"
    assert all((masks / (Path(n).stem + ".png")).is_file() for n in names if n != names[2])


def mask_bytes(masks: Path, names: list[str]) -> dict[str, bytes]:
    return {n: (masks / (Path(n).stem + ".png")).read_bytes() for n in names}


def test_run_stopped_midway_never_mixes_settings(scene, monkeypatch):
    names, sparse, depths = scene
    fresh = depths.parent / "fresh"
    check_consistency(sparse, depths, output=fresh, settings=Settings(threshold=0.02), workers=1)
    masks = depths.parent / "mixed"
    check_consistency(sparse, depths, output=masks, settings=Settings(threshold=0.02), workers=1)
    other = depths.parent / "other"
    check_consistency(sparse, depths, output=other, settings=Settings(threshold=0.5), workers=1)
    assert mask_bytes(fresh, names) != mask_bytes(other, names)

    import depthprior.scene.confidence as confidence

    real = confidence.encode_plane
    written = []

    def stop_after_two(mask):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(1)
        return real(mask)

    monkeypatch.setattr(confidence, "encode_plane", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        check_consistency(sparse, depths, output=masks, settings=Settings(threshold=0.5), workers=1)
    monkeypatch.setattr(confidence, "encode_plane", real)
    check_consistency(sparse, depths, output=masks, settings=Settings(threshold=0.02), workers=1)
    assert mask_bytes(masks, names) == mask_bytes(fresh, names)


# ---------------------------------------------------------------- write errors

def failing_replace(code: int, after: int):
    real = os.replace
    calls = []

    def replace(source, target, *args, **kwargs):
        if str(target).endswith(".png"):
            calls.append(target)
            if len(calls) > after:
                raise OSError(code, os.strerror(code), str(target))
        return real(source, target, *args, **kwargs)

    return replace


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_or_read_only_is_one_line_keeping_finished_masks(scene, monkeypatch, code):
    names, sparse, depths = scene
    masks = depths.parent / "masks"
    monkeypatch.setattr(os, "replace", failing_replace(code, after=2))
    with pytest.raises(WriteError) as caught:
        check_consistency(sparse, depths, output=masks, workers=1)
    message = str(caught.value)
    assert "\n" not in message and ".png" in message and os.strerror(code) in message
    assert len(list(masks.glob("*.png"))) == 2


def test_permission_denied_fails_that_image(scene, monkeypatch):
    names, sparse, depths = scene
    masks = depths.parent / "masks"
    monkeypatch.setattr(os, "replace", failing_replace(errno.EACCES, after=len(names) - 1))
    summary = check_consistency(sparse, depths, output=masks, workers=1)
    assert [r.name for r in summary.failed] == [names[-1]]
    assert "permission denied" in summary.failed[0].reason
    report = json.loads((masks / REPORT_NAME).read_text())
    assert report["images"][names[-1]]["status"] == "failed"


def test_name_too_long_fails_that_image_only(scene):
    names, sparse, depths = scene
    long_name = "x" * 10000 + ".jpg"
    rename_in_model(sparse, names[0], long_name)
    manifest = Manifest(root=depths, identity={"backend": "test"})
    for name in names:
        stem = str(Path(name).with_suffix(""))
        png = cv2.imread(str(depths / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        manifest.images[long_name if name == names[0] else name] = ImageRecord(
            status="ok", stem=stem, outputs=[f"{stem}.png"], width=png.shape[1],
            height=png.shape[0], raw_min=0.0, raw_max=1.0)
    manifest.save()
    params = json.loads((sparse / "depth_params.json").read_text())
    params["x" * 10000] = params[Path(names[0]).stem]
    (sparse / "depth_params.json").write_text(json.dumps(params))
    result = consistency(sparse, depths)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((depths.parent / "depths_confidence" / REPORT_NAME).read_text())
    assert report["images"][long_name]["status"] == "failed"
    assert "too long" in report["images"][long_name]["reason"]
    assert report["images"][names[1]]["status"] == "checked"


def test_generate_into_dot_with_consistency(tmp_path, tiny_model):
    from conftest import TEST_INPUT_SIZE

    scene = make_scene(tmp_path / "scene", n_images=4, width=48, height=36, points_per_image=80,
                       seed=5)
    out = tmp_path / "depths"
    out.mkdir()
    result = run_cli("generate", scene.images.resolve(), ".", "--model", tiny_model,
                     "--input-size", str(TEST_INPUT_SIZE), "--no-progress",
                     "--align", scene.sparse.resolve(), "--consistency", cwd=out)
    assert "Traceback" not in result.stderr, result.stderr
    assert "consistency:" in result.stdout, result.stdout
    assert not (out / "depths_confidence").exists()
