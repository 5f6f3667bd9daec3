"""depthprior export nerfstudio / dn-splatter, checked against the synthetic scene's true depth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthprior import store
from depthprior.align import align
from depthprior.errors import UsageError
from depthprior.export import export_dn_splatter, export_nerfstudio
from scenes import look_at, make_scene, write_colmap_text


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-scene")
    scene = make_scene(root, n_images=6, width=80, height=60, points_per_image=150,
                       write_images=False, seed=3)
    summary = align(scene.sparse, scene.depths, workers=1)
    assert not summary.failed
    return scene


def true_depth(scene, name):
    return 1.0 / scene.inverse_depth[name]


def read16(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint16 and image.ndim == 2, path
    return image


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "depthprior", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- nerfstudio

def test_nerfstudio_new_transforms_holds_true_depth_in_mm(scene, tmp_path):
    transforms = tmp_path / "ns" / "transforms.json"
    summary = export_nerfstudio(scene.depths, scene.sparse, transforms)
    assert summary.images == len(scene.names) and not summary.invalid and not summary.out_of_range
    meta = json.loads(transforms.read_text())
    assert len(meta["frames"]) == len(scene.names)
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (80, 60)
    assert meta["fl_x"] == pytest.approx(scene.K[0, 0]) and meta["cy"] == pytest.approx(scene.K[1, 2])
    for frame in meta["frames"]:
        name = frame["file_path"].removeprefix("images/")
        assert name in scene.names
        depth_mm = read16(transforms.parent / frame["depth_file_path"]).astype(np.float64)
        assert depth_mm.shape == (scene.height, scene.width)
        truth_mm = 1000.0 * true_depth(scene, name)
        assert (depth_mm > 0).all()
        relative = np.abs(depth_mm - truth_mm) / truth_mm
        assert np.median(relative) < 2e-3 and np.percentile(relative, 99) < 1e-2, name
        assert frame["depth_file_path"] == f"depthprior_depth/{scene.key(name)}.png"


def test_nerfstudio_poses_follow_its_colmap_convention(scene, tmp_path):
    transforms = tmp_path / "transforms.json"
    export_nerfstudio(scene.depths, scene.sparse, transforms)
    meta = json.loads(transforms.read_text())
    applied = np.array(meta["applied_transform"])
    for frame in meta["frames"]:
        name = frame["file_path"].removeprefix("images/")
        c2w = np.array(frame["transform_matrix"])
        pose = scene.cam_from_world[name]
        # position: the COLMAP camera centre, moved by applied_transform
        assert np.allclose(c2w[:3, 3], applied[:, :3] @ scene.camera_centre(name) + applied[:, 3])
        # OpenGL camera: looks down -z, y up; COLMAP: looks down +z, y down
        forward, down = pose[2, :3], pose[1, :3]
        assert np.allclose(-c2w[:3, 2], applied[:, :3] @ forward)
        assert np.allclose(-c2w[:3, 1], applied[:, :3] @ down)
        assert np.allclose(c2w[3], [0, 0, 0, 1])


def test_nerfstudio_updates_an_existing_transforms_in_place(scene, tmp_path):
    made = tmp_path / "made.json"
    export_nerfstudio(scene.depths, scene.sparse, made, out=tmp_path / "reference")
    meta = json.loads(made.read_text())
    frames = list(reversed(meta["frames"]))
    for frame in frames:  # as another tool would write them: other paths, no ids, extra keys
        frame.pop("colmap_im_id")
        frame.pop("depth_file_path")
        frame["file_path"] = "./images/" + frame["file_path"].removeprefix("images/")
        frame["custom"] = 1
    existing = tmp_path / "data" / "transforms.json"
    existing.parent.mkdir()
    existing.write_text(json.dumps({"frames": frames, "aabb_scale": 16}))
    export_nerfstudio(scene.depths, scene.sparse, existing)
    updated = json.loads(existing.read_text())
    assert updated["aabb_scale"] == 16 and len(updated["frames"]) == len(frames)
    for frame in updated["frames"]:
        assert frame["custom"] == 1
        key = scene.key(frame["file_path"].removeprefix("./images/"))
        assert frame["depth_file_path"] == f"depthprior_depth/{key}.png"
        ours = read16(existing.parent / frame["depth_file_path"])
        assert np.array_equal(ours, read16(tmp_path / "reference" / f"{key}.png"))


def test_nerfstudio_refuses_poses_at_another_scale(scene, tmp_path):
    transforms = tmp_path / "transforms.json"
    export_nerfstudio(scene.depths, scene.sparse, transforms, out=tmp_path / "first")
    meta = json.loads(transforms.read_text())
    for frame in meta["frames"]:
        matrix = np.array(frame["transform_matrix"])
        matrix[:3, 3] *= 2.0  # e.g. ns-process-data run again, or a rescaled scene
        frame["transform_matrix"] = matrix.tolist()
    transforms.write_text(json.dumps(meta))
    before = transforms.read_text()
    with pytest.raises(UsageError, match=r"at 2x the scale"):
        export_nerfstudio(scene.depths, scene.sparse, transforms, out=tmp_path / "second")
    assert transforms.read_text() == before and not (tmp_path / "second").exists()


def test_nerfstudio_unit_scale_and_out_of_range(scene, tmp_path):
    name = scene.names[0]
    export_nerfstudio(scene.depths, scene.sparse, tmp_path / "mm.json", out=tmp_path / "mm")
    summary = export_nerfstudio(scene.depths, scene.sparse, tmp_path / "cm.json",
                                out=tmp_path / "cm", unit_scale=0.01)
    mm = read16(tmp_path / "mm" / f"{scene.key(name)}.png").astype(float)
    cm = read16(tmp_path / "cm" / f"{scene.key(name)}.png").astype(float)
    assert np.abs(cm - mm / 10).max() <= 0.51
    assert json.loads((tmp_path / "cm.json").read_text())["depth_unit_scale_factor"] == 0.01
    assert any("depth-unit-scale-factor 0.01" in note for note in summary.notes)
    # 1e-4 units per step: depths beyond 6.5535 units do not fit and are left invalid
    summary = export_nerfstudio(scene.depths, scene.sparse, tmp_path / "fine.json",
                                out=tmp_path / "fine", unit_scale=1e-4)
    fine = read16(tmp_path / "fine" / f"{scene.key(name)}.png")
    far = true_depth(scene, name) > 6.56
    assert far.any() and (fine[far] == 0).all() and (fine[~far & (true_depth(scene, name) < 6.5)] > 0).all()
    assert summary.out_of_range >= int(far.sum())
    assert "larger --unit-scale" in summary.format()


def test_unreliable_fits_are_written_all_invalid(scene, tmp_path):
    params = json.loads((scene.sparse / "depth_params.json").read_text())
    bad = scene.key(scene.names[2])
    params[bad] = {"scale": 0.0, "offset": 0.0}
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    summary = export_nerfstudio(scene.depths, scene.sparse, tmp_path / "t.json", params=path)
    assert list(summary.invalid) == [bad] and "failed fit" in summary.invalid[bad]
    assert not read16(tmp_path / "depthprior_depth" / f"{bad}.png").any()
    assert read16(tmp_path / "depthprior_depth" / f"{scene.key(scene.names[1])}.png").all()
    dn = export_dn_splatter(scene.depths, scene.sparse, tmp_path / "dn", params=path)
    assert list(dn.invalid) == [bad]
    assert not np.load(tmp_path / "dn" / "mono_depth" / f"{bad}_aligned.npy").any()


def test_missing_params_and_priors_fail_before_writing(scene, tmp_path):
    with pytest.raises(UsageError, match="run `depthprior align"):
        export_nerfstudio(scene.depths, scene.sparse, tmp_path / "t.json",
                          params=tmp_path / "none.json")
    depths = tmp_path / "depths"
    shutil.copytree(scene.depths, depths)
    gone = scene.names[4]
    (depths / f"{scene.key(gone)}.png").unlink()
    with pytest.raises(UsageError, match=scene.key(gone)):
        export_nerfstudio(depths, scene.sparse, tmp_path / "t.json")
    with pytest.raises(UsageError, match=scene.key(gone)):
        export_dn_splatter(depths, scene.sparse, tmp_path / "dn")
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "depthprior_depth").exists()
    assert not (tmp_path / "dn").exists()


def test_nerfstudio_nested_names(tmp_path):
    scene = make_scene(tmp_path / "s", n_images=4, width=48, height=36, points_per_image=120,
                       subfolders=True, write_images=False, prior_scale=0.5, seed=5)
    align(scene.sparse, scene.depths, workers=1)
    transforms = tmp_path / "s" / "transforms.json"
    export_nerfstudio(scene.depths, scene.sparse, transforms)
    for frame in json.loads(transforms.read_text())["frames"]:
        name = frame["file_path"].removeprefix("images/")
        assert name.startswith(("cam0/", "cam1/"))
        assert frame["depth_file_path"] == f"depthprior_depth/{scene.key(name)}.png"
        depth = read16(transforms.parent / frame["depth_file_path"]).astype(float) / 1000
        assert depth.shape == (36, 48)  # the camera's size, from a half-size prior
        relative = np.abs(depth - true_depth(scene, name)) * scene.inverse_depth[name]
        assert np.median(relative) < 0.01


# ---------------------------------------------------------------- DN-Splatter

def test_dn_splatter_layout_units_and_alignment(scene, tmp_path):
    # a manifest as generate writes it for a metric model: raw values are 1/metres
    depths = tmp_path / "depths"
    shutil.copytree(scene.depths, depths)
    manifest = store.Manifest(root=depths)
    for name in scene.names:
        a = 65536.0 / scene.true_scale[name]  # png = a * inv + b
        b = -scene.true_offset[name] * a
        manifest.images[name] = {"status": "ok", "stem": scene.key(name), "raw_kind": "inverse_depth",
                                 "raw_min": -b / a, "raw_max": (65535 - b) / a}
    manifest.save()
    summary = export_dn_splatter(depths, scene.sparse, tmp_path / "data")
    assert summary.images == len(scene.names) and not summary.notes
    folder = tmp_path / "data" / "mono_depth"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{scene.key(n)}.npy" for n in scene.names] + [f"{scene.key(n)}_aligned.npy" for n in scene.names])
    for name in scene.names:
        truth = true_depth(scene, name)
        aligned = np.load(folder / f"{scene.key(name)}_aligned.npy")
        assert aligned.shape == (60, 80, 1) and aligned.dtype == np.float32
        relative = np.abs(aligned[..., 0] - truth) / truth
        assert np.median(relative) < 2e-3 and relative.max() < 2e-2  # SfM units, aligned
        mono = np.load(folder / f"{scene.key(name)}.npy")
        assert mono.shape == (60, 80, 1) and mono.dtype == np.float32
        assert np.median(np.abs(mono[..., 0] - 1000 * truth) / (1000 * truth)) < 2e-3  # "mm"


def test_dn_splatter_warns_about_stale_files(scene, tmp_path):
    folder = tmp_path / "mono_depth"
    folder.mkdir()
    np.save(folder / "old_frame_aligned.npy", np.zeros((2, 2, 1), np.float32))
    summary = export_dn_splatter(scene.depths, scene.sparse, tmp_path)
    assert "old_frame_aligned.npy" in summary.format()


def test_dn_splatter_refuses_repeated_file_names(tmp_path):
    K = np.array([[40.0, 0, 20], [0, 40, 15], [0, 0, 1]])
    names = ["a/x.jpg", "b/x.jpg"]
    poses = {n: look_at(np.array([3.0, i, 1.0]), np.zeros(3)) for i, n in enumerate(names)}
    keypoints = {n: (np.zeros((0, 2)), np.zeros(0, dtype=np.int64)) for n in names}
    write_colmap_text(tmp_path / "sparse", K, 40, 30, names, poses, keypoints,
                      np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    for name in names:
        store.write_png16(tmp_path / "depths" / name.replace(".jpg", ".png"), np.ones((30, 40), np.uint16))
    (tmp_path / "sparse" / "depth_params.json").write_text(
        json.dumps({"a/x": {"scale": 1.0, "offset": 0.1}, "b/x": {"scale": 1.0, "offset": 0.1}}))
    with pytest.raises(UsageError, match="'x': a/x.jpg, b/x.jpg"):
        export_dn_splatter(tmp_path / "depths", tmp_path / "sparse", tmp_path / "data")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- CLI

def test_cli_exports(scene, tmp_path):
    result = cli("nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--transforms", tmp_path / "ns")
    assert result.returncode == 0, result.stderr
    assert f"{len(scene.names)} image(s)" in result.stdout
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    assert all((tmp_path / "ns" / f["depth_file_path"]).is_file() for f in meta["frames"])
    result = cli("dn-splatter", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--data", tmp_path / "dn")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "dn" / "mono_depth").glob("*_aligned.npy"))) == len(scene.names)


def test_cli_errors_are_one_line(scene, tmp_path):
    result = cli("nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--transforms", tmp_path / "t.json", "--params", tmp_path / "missing.json")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthprior export: error: no missing.json")
    assert "depthprior align" in lines[0]
    result = cli("dn-splatter", "--depths", tmp_path / "nowhere", "--sparse", scene.sparse,
                 "--data", tmp_path)
    assert result.returncode == 2 and "depth folder not found" in result.stderr
    result = cli("nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--transforms", tmp_path / "t.json", "--unit-scale", "0")
    assert result.returncode == 2 and "must be > 0" in result.stderr
