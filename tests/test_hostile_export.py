"""Hostile cases of `depthprior export` (issue 20): masks that are not their prior's size or
kind, bad transforms.json, a locked folder, files of images no longer exported."""

from __future__ import annotations

import errno
import os
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from test_export import tiny_model

from depthprior.errors import WriteError
from depthprior.files.outputs import OutputLock
from depthprior.scene.export import export_dn_splatter, export_nerfstudio

pytest.importorskip("pycolmap")
pytestmark = pytest.mark.hostile

NAMES = ["a.jpg", "b.jpg", "c.jpg"]
NESTED = "[" * 100000 + "]" * 100000


@pytest.fixture
def model(tmp_path):
    depths, sparse = tiny_model(tmp_path / "scene", NAMES, points=False)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in NAMES:
        cv2.imwrite(str(masks / (Path(name).stem + ".png")), np.full((30, 40), 255, np.uint8))
    return depths, sparse, masks


def export(target: str, depths: Path, sparse: Path, *extra: object):
    return run_cli("export", target, "--depths", depths, "--sparse", sparse, *extra)


def one_line(result, *words: str) -> str:
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message
    return message


BAD_MASKS = {
    "1x1": np.full((1, 1), 255, np.uint8),
    "transposed": np.full((40, 30), 255, np.uint8),
    "uint16": np.full((30, 40), 65535, np.uint16),
    "rgb": np.full((30, 40, 3), 255, np.uint8),
}


@pytest.mark.parametrize("kind", sorted(BAD_MASKS))
@pytest.mark.parametrize("target", ["nerfstudio", "dn-splatter"])
def test_mask_not_of_its_priors_size_or_kind_refused_before_writing(model, tmp_path, kind, target):
    depths, sparse, masks = model
    cv2.imwrite(str(masks / "b.png"), BAD_MASKS[kind])
    out = tmp_path / "out"
    flag = "--transforms" if target == "nerfstudio" else "--data"
    result = export(target, depths, sparse, flag, out, "--masks", masks)
    assert result.returncode == 2, result.stdout + result.stderr
    one_line(result, "b.png")
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == []


def test_nested_or_malformed_transforms_json_is_one_line(model, tmp_path):
    depths, sparse, _masks = model
    transforms = tmp_path / "ns" / "transforms.json"
    transforms.parent.mkdir()
    for content in (NESTED, '{"frames": [{"file_path": 3}]}'):
        transforms.write_text(content)
        result = export("nerfstudio", depths, sparse, "--transforms", transforms)
        assert result.returncode == 2
        one_line(result, "transforms.json")


@pytest.mark.parametrize("field, value", [
    ("applied_transform", "x"), ("applied_transform", [[1, 0], [0, 1]]), ("ply_file_path", 3),
    ("frames.transform_matrix", [["1", 0, 0, 0]] * 4), ("frames.transform_matrix", 7),
    ("frames.depth_file_path", 5), ("frames.colmap_im_id", "1"),
])
def test_transforms_json_fields_of_the_wrong_type_are_one_line(model, tmp_path, field, value):
    """Before: an applied_transform of text was a traceback; wrong field types were kept."""
    depths, sparse, _masks = model
    export_nerfstudio(depths, sparse, tmp_path / "ns")
    transforms = tmp_path / "ns" / "transforms.json"
    meta = json.loads(transforms.read_text())
    if field.startswith("frames."):
        meta["frames"][1][field.split(".")[1]] = value
    else:
        meta[field] = value
    transforms.write_text(json.dumps(meta))
    result = export("nerfstudio", depths, sparse, "--transforms", transforms)
    assert result.returncode == 2
    one_line(result, "transforms.json", field.split(".")[-1])


def test_second_export_into_a_locked_folder_refused(model, tmp_path):
    depths, sparse, _masks = model
    out = tmp_path / "ns" / "depthprior_depth"
    out.mkdir(parents=True)
    with OutputLock(out):
        result = export("nerfstudio", depths, sparse, "--transforms", tmp_path / "ns")
    assert result.returncode == 2
    one_line(result, "in use by another depthprior run")


def test_files_of_images_no_longer_exported_are_removed(model, tmp_path):
    depths, sparse, _masks = model
    export_nerfstudio(depths, sparse, tmp_path / "ns", downscales=(2,))
    export_dn_splatter(depths, sparse, tmp_path / "dn")
    images = sparse / "images.txt"
    lines = images.read_text().splitlines()
    images.write_text("\n".join(line for line in lines if not line.endswith(" c.jpg")) + "\n")
    export_nerfstudio(depths, sparse, tmp_path / "ns2", downscales=(2,))  # a fresh transforms.json
    (tmp_path / "ns" / "transforms.json").unlink()
    export_nerfstudio(depths, sparse, tmp_path / "ns", downscales=(2,))
    assert sorted(p.name for p in (tmp_path / "ns" / "depthprior_depth").glob("*.png")) == ["a.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "ns" / "depths_2").glob("*.png")) == ["a.png", "b.png"]
    export_dn_splatter(depths, sparse, tmp_path / "dn")  # refused the stale files before
    assert len(list((tmp_path / "dn" / "mono_depth").glob("*_aligned.npy"))) == 2


def test_files_another_tool_left_are_never_removed(model, tmp_path):
    depths, sparse, _masks = model
    out = tmp_path / "ns" / "depthprior_depth"
    out.mkdir(parents=True)
    (out / "theirs.png").write_bytes(b"not ours")
    export_nerfstudio(depths, sparse, tmp_path / "ns")
    export_nerfstudio(depths, sparse, tmp_path / "ns")
    assert (out / "theirs.png").read_bytes() == b"not ours"


def test_write_error_names_the_file_and_keeps_finished(model, tmp_path, monkeypatch):
    depths, sparse, _masks = model
    real = os.replace
    done = []

    def replace(source, target, *args, **kwargs):
        if str(target).endswith(".png") and len(done) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        done.append(target)
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError) as caught:
        export_nerfstudio(depths, sparse, tmp_path / "ns")
    assert "c.png" in str(caught.value) and "disk is full" in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "ns" / "depthprior_depth").glob("*.png")) == ["a.png", "b.png"]
    assert not (tmp_path / "ns" / "transforms.json").exists()


@pytest.mark.parametrize("where", ["depths", "masks", "depths/sub"])
def test_export_into_the_priors_or_masks_refused(model, tmp_path, where):
    depths, sparse, masks = model
    out = {"depths": depths, "masks": masks, "depths/sub": depths / "sub"}[where]
    before = (depths / "a.png").read_bytes()
    result = export("nerfstudio", depths, sparse, "--transforms", tmp_path / "ns", "--out", out,
                    "--masks", masks)
    assert result.returncode == 2
    one_line(result, "overlap")
    assert (depths / "a.png").read_bytes() == before


#: a newline, a terminal escape (a window title; DN-Splatter's glob refuses "["), a quote and a
#: backslash in one name
WEIRD = "od\n\x1b]0;t\x07X'\\"


def _argv(command: str) -> list[bytes]:
    """The words bash reads from a printed command line."""
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], capture_output=True, check=True).stdout
    return words.split(b"\0")[:-1]


def test_every_line_export_prints_is_one_line_with_names_escaped(tmp_path):
    """Before: export's summary printed paths raw, so a folder named with a newline split its
    lines in two and a terminal escape reached the terminal; the printed training command kept
    a raw newline inside its quotes. Now every line is one line, names escaped as every other
    command prints them (errors.one_line), and the command is still what the shell runs."""
    depths, sparse = tiny_model(tmp_path / f"scene{WEIRD}", NAMES)
    runs = {
        "nerfstudio": (tmp_path / f"ns{WEIRD}", ["nerfstudio", "--transforms", tmp_path / f"ns{WEIRD}",
                                                  "--downscales", "2"]),
        "coolermap": (tmp_path / f"dn{WEIRD}", ["dn-splatter", "--data", tmp_path / f"dn{WEIRD}"]),
        "normal-nerfstudio": (tmp_path / f"nn{WEIRD}", ["dn-splatter", "--data", tmp_path / f"nn{WEIRD}",
                                                        "--parser", "normal-nerfstudio"]),
        "sparsegs": (tmp_path / f"sg{WEIRD}", ["sparsegs", "--scene", tmp_path / f"sg{WEIRD}"]),
    }
    for case, (folder, (target, *extra)) in runs.items():
        result = export(target, depths, sparse, *extra)
        assert result.returncode == 0, (case, result.stderr)
        lines = result.stdout.splitlines()
        assert lines and not [line for line in lines if not line.isprintable() or line.startswith("]0;t")], \
            (case, result.stdout)
        assert "od\\n\\x1b]0;t\\x07X" in lines[0], (case, lines[0])  # the folder, escaped on the first line
        command = next(line for line in lines if line.startswith("train with: ")).removeprefix("train with: ")
        argv = _argv(command)
        data = os.fsencode(folder)
        assert data in argv, (case, command, argv)  # the shell reads the folder's own name back


def test_a_printed_command_never_passes_a_folder_as_an_option(tmp_path):
    """A relative folder whose name begins with '-' is printed as ./-name: printed bare, the
    trainers' argument parsers took it for an option ('-s -dash/sg': 'expected one argument')."""
    depths, sparse = tiny_model(tmp_path / "-dash", NAMES)
    runs = {"sparsegs": ["sparsegs", "--scene", "./-dash/sg"],
            "coolermap": ["dn-splatter", "--data", "./-dash/dn"],
            "nerfstudio": ["nerfstudio", "--transforms", "./-dash/ns"]}
    for case, (target, *extra) in runs.items():
        result = run_cli("export", target, "--depths", depths, "--sparse", sparse, *extra, cwd=tmp_path)
        assert result.returncode == 0, (case, result.stderr)
        command = next(line for line in result.stdout.splitlines() if line.startswith("train with: "))
        words = _argv(command.removeprefix("train with: "))
        paths = [word for word in words if b"dash" in word]
        assert paths and all(not word.startswith(b"-") for word in paths), (case, command)
