"""depthprior export nerfstudio / dn-splatter, checked against the synthetic scene's true depth."""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest

from depthprior.priors import store
from depthprior.priors.manifest import ImageRecord, Manifest
from depthprior.scene.align import align
from depthprior.errors import UsageError
from depthprior.scene.export import coolermap_stems, export_dn_splatter, export_nerfstudio
from conftest import run_cli
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
    return run_cli("export", *args)


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
        # nerfstudio: png * depth_unit_scale_factor (the printed command passes the unit)
        unit = meta["depth_unit_scale_factor"]
        assert f"--depth-unit-scale-factor {unit:g}" in summary.command
        depth_mm = read16(transforms.parent / frame["depth_file_path"]) * unit * 1000.0
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
    export_nerfstudio(scene.depths, scene.sparse, tmp_path / "mm.json", out=tmp_path / "mm",
                      unit_scale=1e-3)
    summary = export_nerfstudio(scene.depths, scene.sparse, tmp_path / "cm.json",
                                out=tmp_path / "cm", unit_scale=0.01)
    mm = read16(tmp_path / "mm" / f"{scene.key(name)}.png").astype(float)
    cm = read16(tmp_path / "cm" / f"{scene.key(name)}.png").astype(float)
    assert np.abs(cm - mm / 10).max() <= 0.51
    assert json.loads((tmp_path / "cm.json").read_text())["depth_unit_scale_factor"] == 0.01
    assert "--depth-unit-scale-factor 0.01" in summary.command
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
    stem = coolermap_stems(scene.names)[scene.names[2]]
    assert not np.load(tmp_path / "dn" / "mono_depth" / f"{stem}_aligned.npy").any()


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
        unit = json.loads(transforms.read_text())["depth_unit_scale_factor"]
        depth = read16(transforms.parent / frame["depth_file_path"]).astype(float) * unit
        assert depth.shape == (36, 48)  # the camera's size, from a half-size prior
        relative = np.abs(depth - true_depth(scene, name)) * scene.inverse_depth[name]
        assert np.median(relative) < 0.01


# ---------------------------------------------------------------- DN-Splatter

def test_dn_splatter_layout_units_and_alignment(scene, tmp_path):
    # a manifest as generate writes it for a metric model: raw values are 1/metres
    depths = tmp_path / "depths"
    shutil.copytree(scene.depths, depths)
    manifest = Manifest(root=depths)
    for name in scene.names:
        a = 65536.0 / scene.true_scale[name]  # png = a * inv + b
        b = -scene.true_offset[name] * a
        manifest.images[name] = ImageRecord(status="ok", stem=scene.key(name), raw_kind="inverse_depth",
                                            raw_min=-b / a, raw_max=(65535 - b) / a)
    manifest.save()
    (tmp_path / "data" / "images").mkdir(parents=True)
    summary = export_dn_splatter(depths, scene.sparse, tmp_path / "data")
    assert summary.images == len(scene.names) and not summary.notes
    folder = tmp_path / "data" / "mono_depth"
    stems = coolermap_stems(scene.names)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{stems[n]}.npy" for n in scene.names] + [f"{stems[n]}_aligned.npy" for n in scene.names])
    for name in scene.names:
        truth = true_depth(scene, name)
        aligned = np.load(folder / f"{stems[name]}_aligned.npy")
        assert aligned.shape == (60, 80, 1) and aligned.dtype == np.float32
        relative = np.abs(aligned[..., 0] - truth) / truth
        assert np.median(relative) < 2e-3 and relative.max() < 2e-2  # SfM units, aligned
        mono = np.load(folder / f"{stems[name]}.npy")
        assert mono.shape == (60, 80, 1) and mono.dtype == np.float32
        assert np.median(np.abs(mono[..., 0] - 1000 * truth) / (1000 * truth)) < 2e-3  # "mm"


@pytest.mark.hostile
def test_dn_splatter_refuses_stale_aligned_files(scene, tmp_path):
    folder = tmp_path / "mono_depth"
    folder.mkdir()
    np.save(folder / "old_frame_aligned.npy", np.zeros((2, 2, 1), np.float32))
    result = cli("dn-splatter", "--depths", scene.depths, "--sparse", scene.sparse, "--data", tmp_path)
    assert result.returncode == 2 and "old_frame_aligned.npy" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["old_frame_aligned.npy"]


def tiny_model(root: Path, names: list[str], width: int = 40, height: int = 30,
               points: bool = True) -> tuple[Path, Path]:
    """A model of `names` whose priors are constant maps, image i at depth 2 + i/4 exactly
    (and, with points, 4 3D points every image sees)."""
    K = np.array([[40.0, 0, width / 2], [0, 40, height / 2], [0, 0, 1]])
    poses = {n: look_at(np.array([3.0, i, 1.0]), np.zeros(3)) for i, n in enumerate(names)}
    count = 4 if points else 0  # nerfstudio's sparse_pc.ply, DN-Splatter's seed points
    keypoints = {n: (np.full((count, 2), 10.0) + np.arange(count)[:, None], np.arange(count))
                 for n in names}
    write_colmap_text(root / "sparse", K, width, height, names, poses, keypoints, np.arange(count),
                      np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])[:count])
    params = {}
    for i, name in enumerate(names):
        key = re.sub(r"\.[^./]*$", "", name)
        store.write_png16(root / "depths" / f"{key}.png",
                          np.full((height, width), 65536 / (2 + i / 4), np.float64).round().astype(np.uint16))
        params[key] = {"scale": 1.0, "offset": 0.0}
    (root / "sparse" / "depth_params.json").write_text(json.dumps(params))
    return root / "depths", root / "sparse"


def natsort_key(text: str) -> tuple:
    """natsort's default order (ns.INT, NFD-normalised input): runs of digits compare as
    integers, the rest as text."""
    text = unicodedata.normalize("NFD", text)
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def coolermap_pairs(data: Path, names: list[str]) -> list[tuple[str, Path]]:
    """What DN-Splatter's coolermap does: natsort the image paths and the globbed depth files
    separately, pair them by position."""
    images = sorted((data / "images" / name for name in names), key=lambda p: natsort_key(str(p)))
    depths = sorted(glob.glob(f"{data}/mono_depth/*_aligned.npy"), key=natsort_key)
    assert len(depths) == len(images)
    return [(image.relative_to(data / "images").as_posix(), Path(depth))
            for image, depth in zip(images, depths)]


LAYOUTS = {
    "subfolders": [f"cam{i % 2}/frame_{i:03d}.jpg" for i in range(12)],
    "prefix stems": ["frame.jpg", "frame_1.jpg", "frame_2.jpg", "frame_10.jpg", "Frame_3.jpg",
                     "a/x.jpg", "b/x.jpg", "x1.jpg", "x01b.jpg", "9.jpg", ".hidden.jpg", "é2.jpg"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_dn_splatter_coolermap_pairs_every_image_with_its_own_depth(tmp_path, layout):
    names = LAYOUTS[layout]
    depths, sparse = tiny_model(tmp_path, names)
    data = tmp_path / "data"
    export_dn_splatter(depths, sparse, data)
    pairs = coolermap_pairs(data, names)
    assert sorted(name for name, _ in pairs) == sorted(names)
    for name, depth_file in pairs:
        expected = 2 + names.index(name) / 4
        depth = np.load(depth_file)
        assert depth.shape == (30, 40, 1)
        assert np.allclose(depth, expected, rtol=1e-4), (name, depth_file.name)


def test_dn_splatter_refuses_names_it_sorts_as_equal(tmp_path):
    depths, sparse = tiny_model(tmp_path, ["f1.jpg", "f01.jpg", "g.jpg"])
    with pytest.raises(UsageError, match="'f01.jpg' and 'f1.jpg'|'f1.jpg' and 'f01.jpg'"):
        export_dn_splatter(depths, sparse, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_dn_splatter_prints_the_command_that_reads_it(tmp_path):
    data = tmp_path / "scene"
    depths, sparse = tiny_model(data, ["a.jpg", "b.jpg"])
    (data / "images").mkdir()
    result = cli("dn-splatter", "--depths", depths, "--sparse", sparse, "--data", data)
    assert result.returncode == 0, result.stderr
    # coolermap opens DATA/COLMAP_PATH/cameras.bin (a text model is written as binary for it)
    # and reads mono_depth with depth_unit_scale_factor 1
    assert (f"train with: ns-train dn-splatter --pipeline.model.use-depth-loss True coolermap "
            f"--data {data} --colmap-path depthprior_colmap --depth-unit-scale-factor 1") in result.stdout
    assert (data / "depthprior_colmap" / "cameras.bin").is_file()


def test_dn_splatter_normal_nerfstudio_reads_millimetres(tmp_path):
    data = tmp_path / "scene"
    depths, sparse = tiny_model(data, ["a.jpg", "b.jpg"])
    result = cli("dn-splatter", "--depths", depths, "--sparse", sparse, "--data", data,
                 "--parser", "normal-nerfstudio")
    assert result.returncode == 0, result.stderr
    unit = float(result.stdout.split("--depth-unit-scale-factor ")[1].split()[0])
    assert ("normal-nerfstudio --data " + str(data) + f" --depth-unit-scale-factor {unit:g}") in result.stdout
    # normal-nerfstudio reads depth_file_path (not mono_depth) times depth_unit_scale_factor
    meta = json.loads((data / "transforms.json").read_text())
    for i, frame in enumerate(sorted(meta["frames"], key=lambda f: f["file_path"])):
        depth = read16(data / frame["depth_file_path"]).astype(float) * unit
        assert np.allclose(depth, 2 + i / 4, atol=1e-3)


# ---------------------------------------------------------------- nerfstudio, downscaled

def nerfstudio_depth_file(data: Path, frame: dict, factor: int) -> Path:
    """Where nerfstudio's dataparser opens a frame's depth when it trains at 1/factor size."""
    path = Path(frame["depth_file_path"])
    return data / f"depths_{factor}" / path.name if factor > 1 else data / path


def test_nerfstudio_writes_depths_for_every_downscale(scene, tmp_path):
    data = tmp_path / "ns"
    (data / "images_2").mkdir(parents=True)
    for name in scene.names:  # as ns-process-data writes them: iw/2 x ih/2
        cv2.imwrite(str(data / "images_2" / Path(name).name), np.zeros((30, 40, 3), np.uint8))
    result = cli("nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--transforms", data, "--downscales", "4")
    assert result.returncode == 0, result.stderr
    meta = json.loads((data / "transforms.json").read_text())
    for frame in meta["frames"]:
        full = read16(nerfstudio_depth_file(data, frame, 1))
        for factor, size in ((2, (30, 40)), (4, (15, 20))):
            small = read16(nerfstudio_depth_file(data, frame, factor))
            assert small.shape == size
            blocks = full.reshape(size[0], factor, size[1], factor).transpose(0, 2, 1, 3)
            blocks = blocks.reshape(*size, -1).astype(float)
            # each pixel is the median of its block's valid depths, the nearer middle one
            # where they belong to two surfaces: never a blend across an edge
            for (r, c), value in np.ndenumerate(small):
                valid = np.sort(blocks[r, c][blocks[r, c] > 0])
                lower, upper = valid[(len(valid) - 1) // 2], valid[len(valid) // 2]
                expected = np.rint((lower + upper) / 2) if upper <= lower * 1.05 else lower
                assert value == expected, (r, c)


def test_nerfstudio_downscale_refuses_repeated_file_names(tmp_path):
    depths, sparse = tiny_model(tmp_path, ["a/x.jpg", "b/x.jpg"])
    with pytest.raises(UsageError, match="'x.png'"):
        export_nerfstudio(depths, sparse, tmp_path / "ns", downscales=(2,))
    assert not (tmp_path / "ns").exists()


@pytest.mark.hostile
def test_exports_write_only_inside_their_folders(tmp_path):
    depths, sparse = tiny_model(tmp_path / "s", ["\\tmp\\x\\v\\precious.jpg", "ok.jpg"])
    export_nerfstudio(depths, sparse, tmp_path / "ns")
    assert (tmp_path / "ns" / "depthprior_depth" / "\\tmp\\x\\v\\precious.png").is_file()
    export_dn_splatter(depths, sparse, tmp_path / "dn")
    assert len(list((tmp_path / "dn" / "mono_depth").glob("[!.]*"))) == 4
    depths, sparse = tiny_model(tmp_path / "t", ["../../escape.jpg", "ok.jpg"])
    escaped = tmp_path / "escape.png"  # the prior, where the name points
    before = escaped.read_bytes()
    for export, out in ((export_nerfstudio, "ns"), (export_dn_splatter, "dn")):
        with pytest.raises(UsageError):
            export(depths, sparse, tmp_path / "t" / out)
        assert escaped.read_bytes() == before and not (tmp_path / "t" / out).exists()


@pytest.mark.hostile
def test_nerfstudio_refuses_non_finite_numbers(scene, tmp_path):
    transforms = tmp_path / "transforms.json"
    export_nerfstudio(scene.depths, scene.sparse, transforms, out=tmp_path / "first")
    meta = json.loads(transforms.read_text())
    meta["frames"][3]["transform_matrix"][0][1] = float("nan")
    transforms.write_text(json.dumps(meta))
    before = transforms.read_text()
    result = cli("nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                 "--transforms", transforms)
    assert result.returncode == 2
    assert "frame 3" in result.stderr and meta["frames"][3]["file_path"] in result.stderr
    assert transforms.read_text() == before


@pytest.mark.hostile
def test_exports_refuse_cameras_above_the_pixel_cap(scene, tmp_path):
    for target, folder in (("nerfstudio", "--transforms"), ("dn-splatter", "--data")):
        result = cli(target, "--depths", scene.depths, "--sparse", scene.sparse,
                     folder, tmp_path / target, "--max-pixels", "4000")
        assert result.returncode == 2 and "above the --max-pixels cap" in result.stderr, result.stderr
        assert not (tmp_path / target).exists()


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
    assert result.returncode == 2 and "must be a finite number > 0" in result.stderr
