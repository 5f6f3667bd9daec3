"""Issue 21: what nerfstudio's and DN-Splatter's own reading code gets from the exports.

Each test re-implements the consumer's rule (nerfstudio 1.1.5's dataparsers and colmap_utils,
DN-Splatter's coolermap) and checks that it reads the truth, or that the export refuses in one
line."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from scenes import make_scene
from test_export import natsort_key, tiny_model

from depthprior.scene.export import export_dn_splatter, export_nerfstudio, export_sparsegs

pytest.importorskip("pycolmap")
pytestmark = pytest.mark.hostile


def one_line(result, *words: str) -> str:
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message
    return message


# ---------------------------------------------------------------- consumers' readers

def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """xyz and rgb of a PLY's vertices, as open3d's read_point_cloud gives them to nerfstudio
    (ascii or binary little-endian, float xyz, uchar/uint8 colours)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply"
    fmt = header[1].split()[1]
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    names = [line.split()[2] for line in header if line.startswith("property")]
    types = [line.split()[1] for line in header if line.startswith("property")]
    codes = {"float": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1"}
    if fmt == "ascii":
        rows = np.array([line.split() for line in data[end:].decode().splitlines()[:count]], float)
        table = {name: rows[:, i] for i, name in enumerate(names)}
    else:
        assert fmt == "binary_little_endian"
        table = np.frombuffer(data, dtype=[(n, codes[t]) for n, t in zip(names, types)],
                              count=count, offset=end)
    xyz = np.stack([table[a] for a in "xyz"], axis=1).astype(np.float64)
    rgb = np.stack([table[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return xyz, rgb


CAMERA_PARAMS = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8}  # COLMAP model id -> number of parameters


def read_cameras_binary(path: Path) -> dict[int, tuple[int, int, int, tuple]]:
    """nerfstudio colmap_utils.read_cameras_binary: id -> (model id, width, height, params)."""
    data = path.read_bytes()  # FileNotFoundError when there is none, as coolermap gets
    (count,), offset, cameras = struct.unpack_from("<Q", data), 8, {}
    for _ in range(count):
        camera_id, model, width, height = struct.unpack_from("<iiQQ", data, offset)
        offset += 24
        n = CAMERA_PARAMS[model]
        cameras[camera_id] = (model, width, height, struct.unpack_from(f"<{n}d", data, offset))
        offset += 8 * n
    return cameras


def read_images_binary(path: Path) -> dict[int, tuple[str, int]]:
    """nerfstudio colmap_utils.read_images_binary: id -> (name, camera id), file order."""
    data = path.read_bytes()
    (count,), offset, images = struct.unpack_from("<Q", data), 8, {}
    for _ in range(count):
        image_id, *_pose, camera_id = struct.unpack_from("<i4d3di", data, offset)
        offset += 64
        end = data.index(b"\0", offset)
        name = data[offset:end].decode()
        (points,) = struct.unpack_from("<Q", data, end + 1)
        offset = end + 9 + 24 * points
        images[image_id] = (name, camera_id)
    return images


def coolermap_frames(data: Path, colmap_path: str) -> list[tuple[str, tuple, Path]]:
    """(image name, the intrinsics coolermap gives that frame, its depth file) per frame.

    ColmapDataParser._get_all_images_and_cameras lists frames by sorted image id, each with its
    camera's intrinsics; coolermap natsorts the poses and file names, not the intrinsics, and
    pairs mono_depth/*_aligned.npy by position; colmap_to_json needs the .bin files.
    """
    recon = data / colmap_path
    cameras = read_cameras_binary(recon / "cameras.bin")
    images = read_images_binary(recon / "images.bin")
    frames = [images[i] for i in sorted(images)]
    intrinsics = [cameras[camera_id][3] for _name, camera_id in frames]
    names = sorted((name for name, _ in frames), key=lambda n: natsort_key(str(data / "images" / n)))
    depths = sorted(glob.glob(f"{data}/mono_depth/*_aligned.npy"), key=natsort_key)
    assert len(depths) == len(names), "coolermap: len(mono_depth_filenames) != len(image_filenames)"
    return [(name, k, Path(d)) for name, k, d in zip(names, intrinsics, depths)]


def printed_colmap_path(stdout: str) -> str:
    words = stdout.split("train with: ")[1].split()
    return words[words.index("--colmap-path") + 1]


# ---------------------------------------------------------------- models

def two_camera_model(root: Path, names_by_id: list[str], second: set[str],
                     binary: bool = False) -> tuple[Path, Path]:
    """tiny_model's scene (image ids in the order of names_by_id, 4 points every image sees)
    with a second camera (focal 55) for the images in `second`."""
    depths, sparse = tiny_model(root, names_by_id)
    text = (sparse / "cameras.txt").read_text() + "2 PINHOLE 40 30 55 55 20 15\n"
    (sparse / "cameras.txt").write_text(text)
    lines = (sparse / "images.txt").read_text().splitlines()
    for row, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 10 and parts[9] in second:
            parts[8] = "2"
            lines[row] = " ".join(parts)
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    if binary:
        from scenes import convert_to_binary
        convert_to_binary(sparse, root / "bin")
        (root / "bin" / "depth_params.json").write_text((sparse / "depth_params.json").read_text())
        sparse = root / "bin"
    return depths, sparse


FOCAL = {1: 40.0, 2: 55.0}


# ---------------------------------------------------------------- 1: sparse points

def test_nerfstudio_transforms_names_the_sparse_points_in_its_frame(tmp_path):
    scene = make_scene(tmp_path / "s", n_images=3, width=40, height=30, points_per_image=40,
                       write_images=False, seed=2)
    from depthprior.scene.align import align
    from depthprior.scene.colmap import read_model
    align(scene.sparse, scene.depths, workers=1)
    data = tmp_path / "ns"
    result = run_cli("export", "nerfstudio", "--depths", scene.depths, "--sparse", scene.sparse,
                     "--transforms", data)
    assert result.returncode == 0, result.stderr
    meta = json.loads((data / "transforms.json").read_text())
    # nerfstudio's Nerfstudio dataparser: data_dir / meta["ply_file_path"], points in the
    # frames' world (open3d), before its own dataparser transform
    assert meta["ply_file_path"] == "sparse_pc.ply"
    xyz, rgb = read_ply(data / meta["ply_file_path"])
    model = read_model(scene.sparse)
    applied = np.array(meta["applied_transform"])
    expected = model.point_xyz @ applied[:, :3].T + applied[:, 3]
    assert len(xyz) == len(expected) > 0
    assert np.allclose(xyz, expected, atol=1e-5) and np.array_equal(rgb, model.point_rgb)
    # the same frame as the poses: every camera centre moved by applied_transform
    for frame in meta["frames"]:
        image = next(im for im in model.images if frame["file_path"].endswith(im.name))
        centre = -image.cam_from_world[:, :3].T @ image.cam_from_world[:, 3]
        assert np.allclose(np.array(frame["transform_matrix"])[:3, 3], applied[:, :3] @ centre)


def test_nerfstudio_keeps_an_existing_ply_file_path(tmp_path):
    depths, sparse = two_camera_model(tmp_path / "s", ["a.jpg", "b.jpg"], set())
    data = tmp_path / "ns"
    export_nerfstudio(depths, sparse, data)
    meta = json.loads((data / "transforms.json").read_text())
    meta["ply_file_path"] = "mine.ply"
    (data / "transforms.json").write_text(json.dumps(meta))
    (data / "sparse_pc.ply").unlink()
    export_nerfstudio(depths, sparse, data / "transforms.json")
    assert json.loads((data / "transforms.json").read_text())["ply_file_path"] == "mine.ply"
    assert not (data / "sparse_pc.ply").exists()


# ---------------------------------------------------------------- 4 and 6: coolermap's model

@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_coolermap_reads_a_binary_model_with_each_frames_own_intrinsics(tmp_path, binary):
    # ids c=1 a=2 b=3 d=4: not name order; b and d use camera 2
    names_by_id = ["c.jpg", "a.jpg", "b.jpg", "d.jpg"]
    second = {"b.jpg", "d.jpg"}
    root = tmp_path / "scene"
    depths, sparse = two_camera_model(root, names_by_id, second, binary=binary)
    (root / "images").mkdir()
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse, "--data", root)
    assert result.returncode == 0, result.stderr
    assert "name order" in result.stdout
    frames = coolermap_frames(root, printed_colmap_path(result.stdout))
    assert [name for name, _, _ in frames] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    for name, intrinsics, depth_file in frames:
        assert intrinsics[0] == FOCAL[2 if name in second else 1], name
        expected = 2 + names_by_id.index(name) / 4
        assert np.allclose(np.load(depth_file), expected, rtol=1e-4), (name, depth_file.name)
    # the tracks follow the renumbered images: every point still seen at its own keypoint
    import pycolmap
    rebuilt = pycolmap.Reconstruction(str(root / printed_colmap_path(result.stdout)))
    for point in rebuilt.points3D.values():
        for element in point.track.elements:
            image = rebuilt.images[element.image_id]
            assert image.points2D[element.point2D_idx].point3D_id in rebuilt.points3D


def test_coolermap_uses_a_binary_model_in_name_order_as_it_is(tmp_path):
    root = tmp_path / "scene"
    depths, sparse = two_camera_model(root, ["a.jpg", "b.jpg", "c.jpg"], {"b.jpg"}, binary=True)
    summary = export_dn_splatter(depths, sparse, root)
    assert "--colmap-path bin " in summary.command and not (root / "depthprior_colmap").exists()
    frames = coolermap_frames(root, "bin")
    assert [k[0] for _, k, _ in frames] == [40.0, 55.0, 40.0]


# ---------------------------------------------------------------- 5: *_aligned names

def test_coolermap_refuses_image_names_ending_in_aligned(tmp_path):
    depths, sparse = tiny_model(tmp_path / "s", ["a.jpg", "b_aligned.jpg", "c.jpg"])
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", tmp_path / "data")
    assert result.returncode == 2
    one_line(result, "b_aligned.jpg", "*_aligned.npy")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- 2: depth units

def ramp_model(root: Path, near: float, far: float) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """tiny_model's two cameras with priors whose aligned depth ramps from near to far across
    each image; returns the exact depth each prior holds (what 3DGS would read from it)."""
    from depthprior.priors import store
    names = ["a.jpg", "b.jpg"]
    depths, sparse = tiny_model(root, names)
    peak = 1.0 / near
    truth = {}
    for name in names:
        depth = np.linspace(near, far, 40 * 30).reshape(30, 40)
        png = np.clip(np.round(65536 * (1.0 / depth) / peak), 1, 65535).astype(np.uint16)
        store.write_png16(depths / f"{Path(name).stem}.png", png)
        truth[name] = 1.0 / (peak * png / 65536.0)
    (sparse / "depth_params.json").write_text(json.dumps(
        {Path(n).stem: {"scale": peak, "offset": 0.0} for n in names}))
    return depths, sparse, truth


def nerfstudio_depth(data: Path, frame: dict, unit: float) -> np.ndarray:
    """nerfstudio get_depth_image_from_path: the uint16 PNG times depth_unit_scale_factor."""
    import cv2
    return cv2.imread(str(data / frame["depth_file_path"]), cv2.IMREAD_ANYDEPTH).astype(np.float64) * unit


def printed_unit(stdout: str) -> float:
    return float(stdout.split("train with: ")[1].split("--depth-unit-scale-factor ")[1].split()[0])


@pytest.mark.parametrize("near,far", [(0.05, 0.15), (500.0, 1500.0)], ids=["small", "large"])
def test_nerfstudio_unit_follows_the_scene_and_the_printed_command_reads_it(tmp_path, near, far):
    depths, sparse, truth = ramp_model(tmp_path / "s", near, far)
    data = tmp_path / "ns"
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", data)
    assert result.returncode == 0, result.stderr
    unit = printed_unit(result.stdout)
    meta = json.loads((data / "transforms.json").read_text())
    for frame in meta["frames"]:
        name = frame["file_path"].removeprefix("images/")
        depth = nerfstudio_depth(data, frame, unit)
        assert (depth > 0).mean() > 0.998  # at most the far 0.1% are left out
        valid = depth > 0
        relative = np.abs(depth[valid] - truth[name][valid]) / truth[name][valid]
        assert relative.max() < 1 / (2 * 256) + 1e-6 and np.median(relative) < 5e-4, name


def test_nerfstudio_refuses_a_range_16_bits_cannot_hold(tmp_path):
    depths, sparse, _truth = ramp_model(tmp_path / "s", 0.01, 100.0)
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", tmp_path / "ns")
    assert result.returncode == 2
    one_line(result, "--unit-scale", "steps")
    assert not (tmp_path / "ns").exists()
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", tmp_path / "ns", "--unit-scale", "0.002")
    assert result.returncode == 0 and "rounding" in result.stdout


def test_nerfstudio_refuses_a_unit_at_which_no_depth_fits(tmp_path):
    """Before: --unit-scale 1e-300 wrote all-invalid depth maps and exited 0."""
    depths, sparse, _truth = ramp_model(tmp_path / "s", 1.0, 3.0)
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", tmp_path / "ns", "--unit-scale", "1e-300")
    assert result.returncode == 2
    one_line(result, "--unit-scale 1e-300", "every pixel would be invalid")
    assert not (tmp_path / "ns").exists()


@pytest.mark.parametrize("parser", ["coolermap", "normal-nerfstudio"])
def test_dn_splatter_warns_when_depths_fall_under_its_floor(tmp_path, parser):
    # DN-Splatter drops depth <= 0.1 (after its depth_unit_scale_factor) and keeps the scale
    depths, sparse, _truth = ramp_model(tmp_path / "s", 0.05, 0.15)
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", tmp_path / "dn", "--parser", parser)
    assert result.returncode == 0, result.stderr
    assert "ignores depth <= 0.1" in result.stdout and "scale the COLMAP model" in result.stdout
    depths, sparse, _truth = ramp_model(tmp_path / "t", 1.0, 3.0)
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", tmp_path / "dn2", "--parser", parser)
    assert result.returncode == 0 and "ignores depth" not in result.stdout


# ---------------------------------------------------------------- 9: AGS-Mesh drop masks

def ags_mesh_confidence(data: Path, names: list[str], parser: str) -> dict[str, np.ndarray]:
    """AGS-Mesh: natsorted DATA/depth_normals_mask/*.jpg paired by position with the parser's
    images (coolermap: natsorted; normal-nerfstudio: np.argsort of the frames' Paths);
    confidence = 1 - value / 255."""
    import cv2
    if parser == "coolermap":
        images = sorted(names, key=lambda n: natsort_key(str(data / "images" / n)))
    else:
        paths = [data / "images" / n for n in names]
        images = [names[i] for i in np.argsort(np.array(paths, dtype=object))]
    files = sorted(glob.glob(f"{data}/depth_normals_mask/*.jpg"), key=natsort_key)
    assert len(files) == len(images)
    return {name: 1.0 - cv2.imread(f, cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
            for name, f in zip(images, files)}


@pytest.mark.parametrize("parser", ["coolermap", "normal-nerfstudio"])
def test_dn_splatter_masks_are_written_as_ags_mesh_reads_them(tmp_path, parser):
    import cv2
    names = ["f10.jpg", "f2.jpg", "f1.jpg"]
    depths, sparse = tiny_model(tmp_path / "s", names)
    masks = tmp_path / "masks"
    masks.mkdir()
    confidence = {}
    for i, name in enumerate(names):
        mask = np.full((30, 40), 255, np.uint8)
        mask[:, : 10 * (i + 1)] = 0  # rejected: a band whose width tells the images apart
        mask[20:, 30:] = 200  # trusted, less than fully
        cv2.imwrite(str(masks / (Path(name).stem + ".png")), mask)
        confidence[name] = mask / 255.0
    data = tmp_path / "data"
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", data, "--parser", parser, "--masks", masks)
    assert result.returncode == 0, result.stderr
    read = ags_mesh_confidence(data, names, parser)
    for name in names:
        assert np.abs(read[name] - confidence[name]).max() < 4 / 255, name  # JPEG at quality 100
    (data / "depth_normals_mask" / "zz.jpg").write_bytes(b"x")
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", data, "--parser", parser, "--masks", masks)
    assert result.returncode == 2
    one_line(result, "zz.jpg")


# ---------------------------------------------------------------- 8: SparseGS

def sparsegs_depth(scene: Path, name: str) -> np.ndarray:
    """SparseGS readColmapCameras: image_name = basename(name).split('.')[0], then
    np.load(dirname(SCENE/images)/depths/<image_name>.npy)."""
    import os
    image_path = os.path.join(scene / "images", os.path.basename(name))
    image_name = os.path.basename(image_path).split(".")[0]
    return np.load(os.path.join(os.path.dirname(scene / "images"), "depths", image_name + ".npy"))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """SparseGS's pearson_depth_loss core: correlation of the standardised maps."""
    a = (a - a.mean()) / (a.std() + 1e-6)
    b = (b - b.mean()) / (b.std() + 1e-6)
    return float((a * b).mean())


def test_sparsegs_reads_each_images_own_depth(tmp_path):
    names = ["cam0/f.1.jpg", "cam1/g.jpg", "h.png"]
    root = tmp_path / "scene"
    depths, sparse = tiny_model(tmp_path / "t", names)
    result = run_cli("export", "sparsegs", "--depths", depths, "--sparse", sparse, "--scene", root)
    assert result.returncode == 0, result.stderr
    assert f"train with: python train.py -s {root}" in result.stdout
    for i, name in enumerate(names):
        depth = sparsegs_depth(root, name)
        assert depth.shape == (30, 40) and depth.dtype == np.float32
        assert np.allclose(depth, 2 + i / 4, rtol=1e-4), name


def test_sparsegs_depth_correlates_with_z_depth(tmp_path):
    depths, sparse, truth = ramp_model(tmp_path / "s", 1.0, 3.0)
    root = tmp_path / "scene"
    export_sparsegs(depths, sparse, root)
    for name, depth in truth.items():
        assert pearson(sparsegs_depth(root, name), depth) > 0.9999


@pytest.mark.parametrize("names", [["a/x.jpg", "b/x.jpg"], ["x.jpg", "x.png"], ["x.1.jpg", "x.2.jpg"]],
                         ids=["folders", "extensions", "dots"])
def test_sparsegs_refuses_names_that_meet_in_its_flat_folders(tmp_path, names):
    depths, sparse = tiny_model(tmp_path / "s", names)
    result = run_cli("export", "sparsegs", "--depths", depths, "--sparse", sparse,
                     "--scene", tmp_path / "scene")
    assert result.returncode == 2
    one_line(result, names[0], names[1])
    assert not (tmp_path / "scene").exists()


def test_sparsegs_refuses_to_write_into_the_priors(tmp_path):
    depths, sparse = tiny_model(tmp_path / "scene", ["a.jpg"])  # priors at SCENE/depths
    result = run_cli("export", "sparsegs", "--depths", depths, "--sparse", sparse,
                     "--scene", tmp_path / "scene")
    assert result.returncode == 2
    one_line(result, "prior folder")


# ---------------------------------------------------------------- 3: nerfstudio's colmap parser

def colmap_parser_depth_files(data: Path, depths_path: str, names: list[str], factor: int) -> list[Path]:
    """nerfstudio ColmapDataParser: frame depth = data / depths_path / name with suffix .png;
    at downscale N, _setup_downscale_factor's get_fname: <depths_path>_N / the same relative part."""
    parent = data / depths_path
    files = [(parent / name).with_suffix(".png") for name in names]
    if factor > 1:
        files = [parent.parent / f"{parent.name}_{factor}" / f.relative_to(parent) for f in files]
    return files


def test_nerfstudio_colmap_parser_finds_depth_at_every_downscale(tmp_path):
    import cv2
    names = ["cam0/a.jpg", "cam1/b.jpg"]
    data = tmp_path / "scene"
    depths, sparse = tiny_model(data, names)  # the 3DGS priors at DATA/depths
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", data, "--downscales", "2")
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if "colmap --data" in l)
    words = line.split()
    depths_path = words[words.index("--depths-path") + 1]
    unit = float(words[words.index("--depth-unit-scale-factor") + 1])
    assert words[words.index("--colmap-path") + 1] == "sparse"
    for factor, size in ((1, (30, 40)), (2, (15, 20))):
        for i, path in enumerate(colmap_parser_depth_files(data, depths_path, names, factor)):
            depth = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
            assert depth is not None and depth.shape == size, path
            assert np.allclose(depth * unit, 2 + i / 4, rtol=2e-3), path
    # DATA/depths holds inverse depth / 65536: read as depth it would be nonsense, so it is named
    assert "never pass --depths-path depths" in result.stdout


# ---------------------------------------------------------------- 7: pooling for depths_N

def test_downscaled_depth_is_unbiased_on_a_noisy_prior_and_never_blends(tmp_path):
    from depthprior.scene.export import min_pool_valid, pool_valid
    rng = np.random.default_rng(0)
    truth = np.full((64, 64), 3000.0)  # 3 units in mm steps
    truth[:, 32:] = 1500.0  # a nearer surface: an edge at column 32
    noisy = 1.0 / ((1.0 / truth) * (1.0 + 0.02 * rng.standard_normal(truth.shape)))
    png = np.rint(noisy).astype(np.uint16)
    png[rng.random(png.shape) < 0.1] = 0  # holes
    ours, nearest = pool_valid(png, (16, 16)), min_pool_valid(png, (16, 16))
    small_truth = truth[::4, ::4]
    bias = np.mean(ours / small_truth - 1)
    assert abs(bias) < 0.002 < abs(np.mean(nearest / small_truth - 1))  # min-pooling: ~ -3%
    assert np.abs(ours / small_truth - 1).max() < 0.1  # every pixel on its own surface
    half = np.array([[3000, 1500], [3000, 1500]], np.uint16)  # two surfaces, two pixels each
    most = np.array([[3000, 3000], [3000, 1500]], np.uint16)
    assert pool_valid(half, (1, 1))[0, 0] == 1500 and pool_valid(most, (1, 1))[0, 0] == 3000


def test_normal_nerfstudio_refuses_a_scene_without_points(tmp_path):
    depths, sparse = tiny_model(tmp_path / "s", ["a.jpg", "b.jpg"], points=False)
    result = run_cli("export", "dn-splatter", "--depths", depths, "--sparse", sparse,
                     "--data", tmp_path / "dn", "--parser", "normal-nerfstudio")
    assert result.returncode == 2
    one_line(result, "3D points")
    assert not (tmp_path / "dn").exists()
    result = run_cli("export", "nerfstudio", "--depths", depths, "--sparse", sparse,
                     "--transforms", tmp_path / "ns")
    assert result.returncode == 0 and "random points" in result.stdout
