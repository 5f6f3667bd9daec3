"""Hostile cases for align's files: depth_params.json and its report read through one checked
reader by every command (nested, huge, wrong types, a folder), written as a pair or not at all
under the output folder's lock, fits made for another depth folder refused, names the file
system refuses, a damaged depth manifest."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli, one_error_line
from scenes import make_scene

from depthprior.cli import main
from depthprior.errors import FileFormatError, UsageError, WriteError
from depthprior.files import localfile, outputs
from depthprior.files.outputs import OutputLock
from depthprior.priors.manifest import MANIFEST_NAME
from depthprior.scene.align import align
from depthprior.scene.depth_params import DepthParams, default_path, report_path
from depthprior.scene.priorset import PriorSet

pytestmark = pytest.mark.hostile

NESTED = "[" * 100_000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    scene = make_scene(tmp_path_factory.mktemp("align-hostile") / "scene", n_images=4,
                       width=96, height=72, points_per_image=60)
    align(scene.sparse, scene.depths)
    return scene


@pytest.fixture
def scene(base, tmp_path):
    """A private copy of the aligned scene."""
    return copy_scene(base, tmp_path / "scene")


def copy_scene(scene, root: Path):
    shutil.copytree(scene.root, root, symlinks=True)
    return dataclasses.replace(scene, root=root, sparse=root / "sparse" / "0",
                               depths=root / "depths", images=root / "images")



def main_in_process(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- reading depth_params.json

@pytest.mark.parametrize("text, problem", [
    (NESTED, "nested"),
    ('{"frame_000": {"scale": "1.5", "offset": 0}}', "needs numeric"),
    ('{"frame_000": {"scale": true, "offset": 0}}', "needs numeric"),
    ('{"frame_000": [1, 2]}', "needs numeric"),
    ('[1, 2]', "not an object"),
    ("{\"a\": {\"scale\": 1e400000", "not valid JSON"),
])
def test_a_bad_params_file_is_one_line_naming_it(scene, text, problem):
    params = default_path(scene.sparse)
    params.write_text(text)
    with pytest.raises(FileFormatError, match=problem) as caught:
        DepthParams.load(params, depth_dir=scene.depths)
    assert str(params) in str(caught.value) and "\n" not in str(caught.value)


def test_a_huge_params_file_is_refused_before_it_is_read(scene):
    params = default_path(scene.sparse)
    with open(params, "wb") as handle:
        handle.truncate(300 << 20)  # sparse: 300 MiB declared, nothing to read
    with pytest.raises(FileFormatError, match="MiB"):
        DepthParams.load(params, depth_dir=scene.depths)


def test_params_and_report_that_are_folders_are_named(scene):
    report = report_path(default_path(scene.sparse))
    report.unlink()
    report.mkdir()
    with pytest.raises(FileFormatError, match="folder") as caught:
        DepthParams.load(scene.sparse, depth_dir=scene.depths)
    assert str(report) in str(caught.value)
    params = default_path(scene.sparse)
    params.unlink()
    params.mkdir()
    with pytest.raises(FileFormatError, match="folder"):
        DepthParams.load(scene.sparse, depth_dir=scene.depths)


@pytest.mark.parametrize("text, problem", [
    (NESTED, "nested"),
    ('{"format": "depthprior-align-report", "per_image": []}', "per_image"),
    ('{"format": "depthprior-align-report", "per_image": {"a": {"status": "great"}}}', "status"),
    ('{"format": "depthprior-align-report", "per_image": {"a": {"depth_bytes": "9"}}}', "depth_bytes"),
])
def test_a_bad_report_is_one_line_naming_it(scene, text, problem):
    report = report_path(default_path(scene.sparse))
    report.write_text(text)
    with pytest.raises(FileFormatError, match=problem) as caught:
        DepthParams.load(scene.sparse, depth_dir=scene.depths)
    assert str(report) in str(caught.value)


@pytest.mark.parametrize("command", ["report", "consistency", "export"])
def test_nested_params_are_one_line_exit_2_in_every_command(scene, tmp_path, command):
    default_path(scene.sparse).write_text(NESTED)
    args = {
        "report": ("report", scene.depths, "--sparse", scene.sparse, "-o", tmp_path / "r.html"),
        "consistency": ("consistency", "--sparse", scene.sparse, "--depths", scene.depths,
                        "-o", tmp_path / "masks"),
        "export": ("export", "nerfstudio", "--sparse", scene.sparse, "--depths", scene.depths,
                   "--transforms", tmp_path / "export" / "transforms.json"),
    }[command]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "depth_params.json" in line and "nested" in line


# ---------------------------------------------------------------- writing the pair

def _disk_full_on(nth: int, monkeypatch):
    """open() of a temporary in files.outputs fails with ENOSPC from the nth on."""
    real_open = open
    calls = []

    def fake_open(path, *args, **kwargs):
        if outputs.TMP_MARK in str(path):  # a temporary of write_together
            calls.append(path)
        if len(calls) >= nth:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(localfile, "open", fake_open, raising=False)


def test_a_full_disk_leaves_both_files_as_they_were(scene, monkeypatch):
    params = default_path(scene.sparse)
    report = report_path(params)
    before = params.read_bytes(), report.read_bytes()
    cv2.imwrite(str(scene.depth_path(scene.names[0])),  # so a new fit would differ
                (cv2.imread(str(scene.depth_path(scene.names[0])), -1) // 2).astype(np.uint16))
    _disk_full_on(2, monkeypatch)  # the report's temporary is written, the params' is not
    with pytest.raises(WriteError, match="disk is full") as caught:
        align(scene.sparse, scene.depths)
    assert "depth_params" in str(caught.value)
    assert (params.read_bytes(), report.read_bytes()) == before
    assert not [p for p in scene.sparse.iterdir() if outputs.TMP_MARK in p.name]


def test_a_write_error_is_one_line_and_a_failure_exit(scene, monkeypatch, capsys):
    real_open = open

    def read_only(path, *args, **kwargs):
        if outputs.TMP_MARK in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(localfile, "open", read_only, raising=False)
    code, err = main_in_process(capsys, "align", "--sparse", scene.sparse, "--depths",
                                scene.depths, "-o", scene.root / "out" / "depth_params.json")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "read-only" in lines[0] and "depth_params" in lines[0], err


def test_a_second_align_into_the_same_folder_is_refused(scene):
    with OutputLock(scene.sparse):
        result = run_cli("align", "--sparse", scene.sparse, "--depths", scene.depths)
    assert result.returncode == 2
    assert "in use by another depthprior run" in one_error_line(result)


# ---------------------------------------------------------------- which depth folder

def test_fits_for_another_depth_folder_are_refused_everywhere(scene, tmp_path):
    other = tmp_path / "other-depths"
    shutil.copytree(scene.depths, other)
    for png in other.rglob("*.png"):  # regenerated: other maps under the same names
        cv2.imwrite(str(png), (cv2.imread(str(png), -1) // 3).astype(np.uint16))
    with pytest.raises(UsageError, match="rerun `depthprior align --sparse ") as caught:
        PriorSet(other, scene.sparse)
    assert str(caught.value).endswith(f"--depths {other}` for this folder")
    assert f"not for those in {other.resolve()} (4 of its 4 depth maps differ" in str(caught.value)
    result = run_cli("export", "nerfstudio", "--sparse", scene.sparse, "--depths", other,
                     "--transforms", tmp_path / "export" / "transforms.json")
    assert result.returncode == 2
    assert "not for those in" in one_error_line(result)


def test_fits_of_a_folder_with_none_of_the_maps_are_refused(scene, tmp_path):
    other = tmp_path / "unrelated"
    other.mkdir()
    cv2.imwrite(str(other / "elsewhere.png"), np.zeros((4, 4), np.uint16))
    with pytest.raises(UsageError, match="none of its depth maps are there"):
        DepthParams.load(scene.sparse, depth_dir=other)


def test_a_moved_depth_folder_keeps_its_fits(scene, tmp_path):
    moved = tmp_path / "moved"
    scene.depths.rename(moved)
    params = DepthParams.load(scene.sparse, depth_dir=moved)
    assert len(params.entries) == len(scene.names)


def test_params_without_a_report_are_accepted(scene, tmp_path):
    report_path(default_path(scene.sparse)).unlink()
    other = tmp_path / "other"
    shutil.copytree(scene.depths, other)
    assert len(DepthParams.load(scene.sparse, depth_dir=other).entries) == len(scene.names)


def test_a_report_beside_params_another_tool_rewrote_is_not_theirs(scene):
    params = default_path(scene.sparse)
    report = json.loads(report_path(params).read_text())
    first = scene.key(scene.names[0])
    report["per_image"][first]["status"] = "failed"  # our fit of frame 0 failed ...
    report_path(params).write_text(json.dumps(report))
    rewritten = {scene.key(n): {"scale": 1.0, "offset": 0.01} for n in scene.names}
    params.write_text(json.dumps(rewritten))  # ... then make_depth_scale.py wrote its own
    loaded = DepthParams.load(scene.sparse, depth_dir=scene.depths)
    assert first not in loaded.unreliable


# ---------------------------------------------------------------- names and manifests

def test_a_name_too_long_for_the_file_system_fails_that_image(tmp_path):
    scene = make_scene(tmp_path / "scene", n_images=4, width=96, height=72, points_per_image=60,
                       model_format="text")
    images_txt = scene.sparse / "images.txt"
    long_key = "x" * 10_000
    images_txt.write_text(images_txt.read_text().replace(scene.names[0], long_key + ".jpg"))
    result = run_cli("align", "--sparse", scene.sparse, "--depths", scene.depths, "--images",
                     scene.images, "--allow-missing", "-o", tmp_path / "p.json")
    assert result.returncode == 2
    assert "not in" in one_error_line(result)
    result = run_cli("align", "--sparse", scene.sparse, "--depths", scene.depths,
                     "--allow-missing", "-o", tmp_path / "p.json")
    assert result.returncode == 1, result.stderr
    written = json.loads((tmp_path / "p.json").read_text())
    assert written[long_key]["scale"] == -1 and len(written) == len(scene.names)


def test_a_nested_depth_manifest_is_refused_in_one_line(scene, tmp_path):
    """As every reader refuses it (before: a warning, and a fit without its sequences and prior
    sizes, exit 0)."""
    (scene.depths / MANIFEST_NAME).write_text(NESTED)
    result = run_cli("align", "--sparse", scene.sparse, "--depths", scene.depths, "-o", tmp_path / "p.json")
    assert result.returncode == 2, result.stderr
    assert "nested" in one_error_line(result) and str(scene.depths / MANIFEST_NAME) in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_a_prior_declaring_a_huge_size_fails_that_image(scene):
    path = scene.depth_path(scene.names[1])
    data = bytearray(path.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR: 20000x20000, nothing behind it
    path.write_bytes(bytes(data))
    summary = align(scene.sparse, scene.depths)
    failed = {r.name: r.reason for r in summary.failed}
    assert list(failed) == [scene.names[1]] and "20000x20000" in failed[scene.names[1]]


def test_priors_that_are_links_into_a_store_are_read_where_they_lead(scene, tmp_path):
    store = tmp_path / "annex"  # git-annex and DVC keep the files elsewhere and link them
    store.mkdir()
    for name in scene.names:
        png = scene.depth_path(name)
        target = store / f"{scene.key(name)}.blob"
        shutil.move(png, target)
        png.symlink_to(target)
    priors = PriorSet(scene.depths, scene.sparse)
    assert priors.load(scene.names[0]).aligned
    device = scene.depth_path(scene.names[1])
    device.unlink()
    device.symlink_to("/dev/zero")  # read where it leads: not a regular file, that image fails
    with pytest.raises(LookupError, match="unreadable"):
        PriorSet(scene.depths, scene.sparse).load(scene.names[1])


def test_a_prior_of_another_size_than_its_manifest_record_fails_that_image(scene):
    from depthprior.priors.manifest import ImageRecord, Manifest

    manifest = Manifest(root=scene.depths)
    for name in scene.names:
        key = scene.key(name)
        manifest.images[name] = ImageRecord(
            status="ok", stem=key, outputs=[key + ".png"], width=scene.prior_width,
            height=scene.prior_height, raw_min=0.0, raw_max=1.0, levels=60000)
    manifest.images[scene.names[2]].width = scene.prior_width + 1  # not the map it wrote
    manifest.save()
    summary = align(scene.sparse, scene.depths)
    assert [r.name for r in summary.failed] == [scene.names[2]]
    assert f"its image is {scene.prior_width + 1}x" in summary.failed[0].reason


def test_a_huge_frame_is_not_read_whole_for_its_size(scene):
    import resource
    import subprocess
    import sys

    frame = scene.image_path(scene.names[0])
    with open(frame, "r+b") as handle:
        handle.truncate(6 << 30)  # sparse: 6 GiB declared behind a real JPEG header

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "depthprior", "align", "--sparse", str(scene.sparse), "--depths",
         str(scene.depths), "--images", str(scene.images), "--brief"],
        capture_output=True, text=True, timeout=120, preexec_fn=cap_memory)
    assert result.returncode == 0, result.stderr


def test_params_handed_as_a_dict_are_checked_the_same_way():
    with pytest.raises(UsageError, match="needs numeric"):
        DepthParams.load({"a": {"scale": True, "offset": 0}})
    numpy_numbers = {"a": {"scale": np.float32(1.5), "offset": np.int64(0)}}  # from an array
    assert DepthParams.load(numpy_numbers).entries["a"] == (1.5, 0.0)


@pytest.mark.parametrize("target", ["model", "prior"])
def test_an_output_that_is_not_json_is_refused_before_it_overwrites_anything(scene, target):
    path = (scene.sparse / "cameras.bin" if target == "model"
            else scene.depth_path(scene.names[0]))
    before = path.read_bytes()
    result = run_cli("align", "--sparse", scene.sparse, "--depths", scene.depths, "-o", path)
    assert result.returncode == 2
    assert "should end in .json" in one_error_line(result)
    assert path.read_bytes() == before
