"""Hostile cases of `depthprior export` (issue 20): masks that are not their prior's size or
kind, bad transforms.json, a locked folder, files of images no longer exported."""

from __future__ import annotations

import errno
import os
import json
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
