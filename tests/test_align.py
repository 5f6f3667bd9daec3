"""depthprior align: per-image scale/offset of the priors against synthetic SfM scenes with known truth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import conftest
from scenes import (
    CAMERA_PARAMS_AT,
    CAMERA_SIZE_AT,
    IMAGE_CAMERA_AT,
    IMAGE_QVEC_AT,
    IMAGE_TVEC_AT,
    Scene,
    first_image_name,
    make_scene,
    patch_file,
    write_colmap_text,
)

from depthprior.scene.align import MAX_RESIDUAL, DepthFilesError, align
from depthprior.scene.depth_params import report_path
from depthprior.scene.fitting import MIN_POINTS, fit_mad, fit_robust
from depthprior.scene.sampling import sample_bilinear
from depthprior.scene.colmap import ModelError, read_model
from depthprior.images import image_key
from depthprior.errors import MissingDependencyError, UsageError

pytest.importorskip("pycolmap")


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return conftest.run_cli("align", *args)


def errors(scene: Scene, summary) -> dict[str, float]:
    """Mean relative error of each image's fitted inverse depth against the truth."""
    return {r.name: scene.inverse_depth_error(r.name, r.scale, r.offset) for r in summary.results}


@pytest.fixture(scope="module")
def corrupt10(tmp_path_factory) -> Scene:
    return make_scene(tmp_path_factory.mktemp("c10"), corrupt=0.1, subfolders=True, seed=1)


@pytest.fixture(scope="module")
def corrupt30(tmp_path_factory) -> Scene:
    return make_scene(tmp_path_factory.mktemp("c30"), corrupt=0.3, seed=2)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Scene:
    return make_scene(tmp_path_factory.mktemp("clean"), n_images=6, seed=3)


def fresh(tmp_path: Path, **options) -> Scene:
    options.setdefault("n_images", 5)
    options.setdefault("write_images", False)
    return make_scene(tmp_path / "scene", **options)


# ---------------------------------------------------------------- accuracy

@pytest.mark.parametrize("fixture", ["corrupt10", "corrupt30"])
def test_robust_fit_recovers_inverse_depth_despite_corrupted_samples(fixture, request, tmp_path):
    scene: Scene = request.getfixturevalue(fixture)
    summary = align(scene.sparse, scene.depths, output=tmp_path / "depth_params.json")
    assert not summary.failed
    errs = errors(scene, summary)
    assert max(errs.values()) < 0.01, errs
    for result in summary.results:  # the written parameters are the true affine
        assert result.scale == pytest.approx(scene.true_scale[result.name], rel=0.01)


def test_mad_recipe_is_measurably_wrong_where_robust_is_right(corrupt10, tmp_path):
    mad = align(corrupt10.sparse, corrupt10.depths, method="mad", output=tmp_path / "mad.json")
    robust = align(corrupt10.sparse, corrupt10.depths, output=tmp_path / "robust.json")
    mad_errors, robust_errors = errors(corrupt10, mad), errors(corrupt10, robust)
    assert max(mad_errors.values()) > 0.03
    assert np.mean(list(mad_errors.values())) > 10 * np.mean(list(robust_errors.values()))


def test_clean_scene_is_fitted_almost_exactly(clean, tmp_path):
    summary = align(clean.sparse, clean.depths, output=tmp_path / "p.json")
    assert max(errors(clean, summary).values()) < 1e-3
    assert all(r.status == "ok" for r in summary.results)


# ---------------------------------------------------------------- mad = the official script

def read_text_model(sparse: Path):
    """cameras, images and points3D of a COLMAP text model, the way read_write_model reads them."""
    cameras = {}
    for line in (sparse / "cameras.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split()
            cameras[int(fields[0])] = (int(fields[2]), int(fields[3]))
    lines = [l for l in (sparse / "images.txt").read_text().splitlines() if not l.startswith("#")]
    images = []
    for header, points in zip(lines[0::2], lines[1::2]):
        fields = header.split()
        values = np.array(points.split(), dtype=float).reshape(-1, 3)
        images.append({"qvec": np.array(fields[1:5], dtype=float),
                       "tvec": np.array(fields[5:8], dtype=float), "camera_id": int(fields[8]),
                       "name": fields[9], "xys": values[:, :2],
                       "point3D_ids": values[:, 2].astype(np.int64)})
    points = {}
    for line in (sparse / "points3D.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split()
            points[int(fields[0])] = np.array(fields[1:4], dtype=float)
    return cameras, images, points


def qvec2rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y]])


def opencv4_remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """OpenCV 4's cv2.remap(INTER_LINEAR, BORDER_REPLICATE) of float maps, one sample at a time:
    the position goes to fixed point with 5 fractional bits (cvRound(x * 32): nearest, ties to
    even, in float32), the integer part picks the 2x2 neighbours (clamped to the image), the five
    bits the bilinear weights k / 32."""
    rows, cols = image.shape
    out = np.empty(len(map_x), np.float32)
    for index, (x, y) in enumerate(zip(map_x.astype(np.float32), map_y.astype(np.float32))):
        fixed_x, fixed_y = round(float(x * np.float32(32))), round(float(y * np.float32(32)))
        x0, y0 = fixed_x // 32, fixed_y // 32
        wx, wy = (fixed_x % 32) / 32, (fixed_y % 32) / 32
        pick = lambda r, c: float(image[min(max(r, 0), rows - 1), min(max(c, 0), cols - 1)])  # noqa: E731
        out[index] = ((pick(y0, x0) * (1 - wx) + pick(y0, x0 + 1) * wx) * (1 - wy)
                      + (pick(y0 + 1, x0) * (1 - wx) + pick(y0 + 1, x0 + 1) * wx) * wy)
    return out


def test_mad_samples_as_opencv_4_whatever_opencv_is_installed():
    from depthprior.scene.sampling import remap_linear

    rng = np.random.default_rng(3)
    image = rng.random((37, 53), dtype=np.float32)
    positions = np.concatenate([
        rng.uniform(-2, 55, (400, 2)),
        np.array([[0.015625, 0.046875], [1 / 64, 3 / 64], [52.99, 36.99], [0.5, 0.5], [-0.2, 40.0]]),
    ]).astype(np.float32)
    ours = remap_linear(image, positions)
    expected = opencv4_remap(image, positions[:, 0], positions[:, 1])
    assert np.abs(ours - expected).max() < 1e-6
    if cv2.__version__.startswith("4."):  # the rule is OpenCV 4's own: there, equal to it
        column = lambda values: values.reshape(-1, 1)  # noqa: E731
        theirs = cv2.remap(image, column(positions[:, 0]), column(positions[:, 1]),
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[..., 0]
        assert np.abs(ours - theirs).max() < 1e-6


def official_depth_params(sparse: Path, depths: Path) -> dict[str, dict[str, float]]:
    """gaussian-splatting's utils/make_depth_scale.py, step by step, on a text model.

    Points: observation ids in [0, largest id] looked up in a zero-filled table. Gate: more than
    10 valid samples and 1/z of ALL those points spanning more than 1e-3. Samples: 1/z > 0 and
    xy * s inside [0, camera size * s), s = map rows / camera height for both axes, float32, no
    half-pixel shift; prior = png / 65535 (float32), bilinear cv2.remap, replicated border,
    as OpenCV 4 computes it (`opencv4_remap`). Under OpenCV 4 the 1-D maps came back as an N x 1
    column; that shape is written out here (under OpenCV 5 they come back as one row and the
    script's [..., 0] keeps one sample).
    """
    cameras, images, points = read_text_model(sparse)
    table = np.zeros([max(points) + 1, 3])
    for point_id, xyz in points.items():
        table[point_id] = xyz
    out = {}
    for image in images:
        width, height = cameras[image["camera_id"]]
        ids = image["point3D_ids"]
        mask = (ids >= 0) & (ids < len(table))
        pts = table[ids[mask]] if mask.any() else np.array([0, 0, 0])
        pts = np.dot(pts, qvec2rotmat(image["qvec"]).T) + image["tvec"]
        inv_colmap = 1.0 / pts[..., 2]
        stem = image["name"][: -(len(image["name"].split(".")[-1]) + 1)]
        mono_map = cv2.imread(str(depths / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        mono_map = mono_map.astype(np.float32) / (2**16 - 1)
        s = mono_map.shape[0] / height
        maps = (image["xys"][mask] * s).astype(np.float32)
        valid = ((maps[..., 0] >= 0) * (maps[..., 1] >= 0) * (maps[..., 0] < width * s)
                 * (maps[..., 1] < height * s) * (inv_colmap > 0))
        if valid.sum() > 10 and (inv_colmap.max() - inv_colmap.min()) > 1e-3:
            maps, inv_colmap = maps[valid, :], inv_colmap[valid]
            mono = opencv4_remap(mono_map, maps[..., 0], maps[..., 1])
            t_colmap = np.median(inv_colmap)
            s_colmap = np.mean(np.abs(inv_colmap - t_colmap))
            t_mono = np.median(mono)
            s_mono = np.mean(np.abs(mono - t_mono))
            scale = s_colmap / s_mono
            offset = t_colmap - t_mono * scale
        else:
            scale = offset = 0
        out[stem] = {"scale": float(scale), "offset": float(offset)}
    return out


OFFICIAL_SCENES = {
    "clean": dict(n_images=5, seed=11),
    "30% corrupted, subfolders, .jpeg": dict(corrupt=0.3, subfolders=True, image_ext=".jpeg",
                                              seed=12),
    "prior 0.37x (59x44), 10% corrupted": dict(prior_scale=0.37, corrupt=0.1, seed=13),
    "prior 0.5x by 0.52x, noisy pixels": dict(prior_scale=(0.5, 0.52), pixel_noise=0.7, seed=14),
    "prior 2x, 20% corrupted": dict(prior_scale=2.0, corrupt=0.2, seed=15),
    "non-square prior 0.5x by 0.8x": dict(prior_scale=(0.5, 0.8), seed=16),
    "wide 240x90 camera, few points": dict(width=240, height=90, few_points={0: 11, 1: 12, 2: 40},
                                           corrupt=0.1, seed=17),
}


@pytest.mark.parametrize("case", list(OFFICIAL_SCENES))
def test_mad_writes_the_official_scripts_numbers(case, tmp_path):
    options = {"n_images": 4, "points_per_image": 120, **OFFICIAL_SCENES[case]}
    scene = make_scene(tmp_path / "scene", model_format="text", write_images=False, **options)
    official = official_depth_params(scene.sparse, scene.depths)
    summary = align(scene.sparse, scene.depths, method="mad", workers=1)
    written = json.loads((scene.sparse / "depth_params.json").read_text())
    assert written.keys() == official.keys()
    by_key = {r.key: r for r in summary.results}
    for key, expected in official.items():
        fit = by_key[key]
        # every fit's numbers are the script's, in the report; the trainer's file carries them
        # unless align knows the fit is wrong or it failed: then -1, which 3DGS skips
        assert fit.scale == pytest.approx(expected["scale"], rel=1e-6), key
        assert fit.offset == pytest.approx(expected["offset"], rel=1e-6, abs=1e-12), key
        if fit.for_trainer and not fit.failed:
            assert written[key] == {"scale": fit.scale, "offset": fit.offset}, key
        else:
            assert written[key] == {"scale": -1.0, "offset": 0.0}, key
    assert any(r.scale > 0 for r in summary.results)
    if case == "non-square prior 0.5x by 0.8x":  # the script does not look; depthprior notes it
        assert all(r.status == "unreliable" and "depth map is 80x96" in r.reason
                   for r in summary.results)


def test_mad_follows_the_official_gates(tmp_path):
    scene = fresh(tmp_path, few_points={0: 10, 1: 11}, model_format="text")
    official = official_depth_params(scene.sparse, scene.depths)
    summary = align(scene.sparse, scene.depths, method="mad")
    by_name = {r.name: r for r in summary.results}
    ten, eleven = by_name[scene.names[0]], by_name[scene.names[1]]
    assert ten.status == "failed" and "only 10 usable SfM points" in ten.reason
    assert official[Scene.key(scene.names[0])] == {"scale": 0.0, "offset": 0.0}
    assert eleven.scale == pytest.approx(official[Scene.key(scene.names[1])]["scale"], rel=1e-6)
    assert eleven.scale > 0


# ---------------------------------------------------------------- model formats, names, sizes

def test_text_and_binary_models_give_the_same_fit(tmp_path):
    text = make_scene(tmp_path / "t", n_images=4, model_format="text", seed=5, write_images=False)
    binary = make_scene(tmp_path / "b", n_images=4, model_format="binary", seed=5, write_images=False)
    assert (text.sparse / "images.txt").is_file() and not (text.sparse / "images.bin").exists()
    assert (binary.sparse / "images.bin").is_file()
    a = align(text.sparse, text.depths)
    b = align(binary.sparse, binary.depths)
    assert a.model_format == "text" and b.model_format == "binary"
    pa = json.loads((text.sparse / "depth_params.json").read_text())
    pb = json.loads((binary.sparse / "depth_params.json").read_text())
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key]["scale"] == pytest.approx(pb[key]["scale"], rel=1e-12)
        assert pa[key]["offset"] == pytest.approx(pb[key]["offset"], rel=1e-12, abs=1e-15)


def test_model_reader_matches_the_scene(corrupt10):
    model = read_model(corrupt10.sparse)
    assert [image.name for image in model.images] == sorted(corrupt10.names)
    for image in model.images:
        xy, ids = corrupt10.observations[image.name]
        np.testing.assert_array_equal(image.point3D_ids, ids)  # keypoints without a 3D point dropped
        np.testing.assert_array_equal(image.xy, xy)
        np.testing.assert_allclose(image.cam_from_world, corrupt10.cam_from_world[image.name], atol=1e-12)
        assert image.registered and (image.camera.width, image.camera.height) == (160, 120)


def test_depth_params_file_is_what_the_3dgs_trainer_reads(corrupt10, tmp_path):
    output = tmp_path / "depth_params.json"
    align(corrupt10.sparse, corrupt10.depths, output=output)
    params = json.loads(output.read_text())
    # the trainer: key = name[:-len(ext) - 1]; med_scale = median of the positive scales
    for name in corrupt10.names:
        n_remove = len(name.split(".")[-1]) + 1
        entry = params[name[:-n_remove]]
        assert set(entry) == {"scale", "offset"}
        assert isinstance(entry["scale"], float) and isinstance(entry["offset"], float)
    assert len(params) == len(corrupt10.names)
    assert any("/" in key for key in params)  # subfolders kept in the key
    report = json.loads(report_path(output).read_text())
    assert report["format"] == "depthprior-align-report"
    assert set(report["per_image"]) == set(params)


def test_subfolder_names_map_to_mirrored_depth_files(corrupt10):
    for name in corrupt10.names:
        assert name.startswith(("cam0/", "cam1/"))
        assert image_key(name) == name.rsplit(".", 1)[0]
        assert corrupt10.depth_path(name).is_file()


@pytest.mark.parametrize("prior_scale", [0.5, (0.25, 0.26)])
def test_downscaled_priors(prior_scale, tmp_path):
    scene = fresh(tmp_path, prior_scale=prior_scale, corrupt=0.1, seed=7)
    assert (scene.prior_width, scene.prior_height) != (scene.width, scene.height)
    summary = align(scene.sparse, scene.depths)
    assert not summary.failed
    assert max(errors(scene, summary).values()) < 0.01
    assert summary.results[0].prior_size == [scene.prior_width, scene.prior_height]


def test_bilinear_sampling_scales_both_axes():
    rows, cols = np.mgrid[0:30, 0:40]
    depth = (7 * cols + 1000 * rows).astype(np.uint16)  # affine in the pixel centres
    xy = np.array([[0.5, 0.5], [10.0, 20.0], [79.5, 89.5], [33.3, 47.7]])
    # camera 80 x 90 -> map 40 x 30: x halves, y divides by 3
    values = sample_bilinear(depth, xy, 80, 90)
    u = np.clip(xy[:, 0] * 0.5 - 0.5, 0, 39)
    v = np.clip(xy[:, 1] / 3 - 0.5, 0, 29)
    np.testing.assert_allclose(values, 7 * u + 1000 * v, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- per-image failures

def test_too_few_points_gives_scale_zero_and_is_listed(tmp_path):
    scene = fresh(tmp_path, few_points={1: 5})
    summary = align(scene.sparse, scene.depths)
    starved = scene.names[1]
    [failed] = summary.failed
    assert failed.name == starved and failed.points == 5
    assert "5 usable SfM points" in failed.reason
    params = json.loads((scene.sparse / "depth_params.json").read_text())
    assert params[Scene.key(starved)] == {"scale": -1.0, "offset": 0.0}
    assert all(params[Scene.key(n)]["scale"] > 0 for n in scene.names if n != starved)


def test_depth_instead_of_inverse_depth_fails_the_image(tmp_path):
    scene = fresh(tmp_path)
    name = scene.names[0]
    cv2.imwrite(str(scene.depth_path(name)), (65535 - scene.prior[name]).astype(np.uint16))
    summary = align(scene.sparse, scene.depths)
    [failed] = summary.failed
    assert failed.name == name and "depth instead of inverse depth" in failed.reason


def test_rotated_depth_map_fails_the_image(tmp_path):
    scene = fresh(tmp_path)
    name = scene.names[2]
    cv2.imwrite(str(scene.depth_path(name)), np.ascontiguousarray(scene.prior[name].T))
    summary = align(scene.sparse, scene.depths)
    [failed] = summary.failed
    assert failed.name == name and "rotated" in failed.reason


def test_outlying_scale_is_marked_unreliable_but_written(tmp_path):
    scene = fresh(tmp_path, n_images=6)
    name = scene.names[3]
    # a prior spanning only 1/8 of the PNG range: its fitted scale is 8x the others'
    squeezed = (scene.prior[name].astype(np.float64) / 8 + 1000).astype(np.uint16)
    cv2.imwrite(str(scene.depth_path(name)), squeezed)
    summary = align(scene.sparse, scene.depths)
    result = next(r for r in summary.results if r.name == name)
    assert result.status == "unreliable" and "scene median" in result.reason
    assert result.scale > 5 * summary.median_scale
    assert not summary.failed


# ---------------------------------------------------------------- whole-run errors: nothing written

def assert_nothing_written(scene: Scene) -> None:
    leftovers = [p.name for p in scene.sparse.iterdir() if p.name.startswith("depth_params")]
    assert leftovers == []


def test_missing_depth_file_is_an_error_unless_allowed(tmp_path):
    scene = fresh(tmp_path)
    missing = scene.names[2]
    scene.depth_path(missing).unlink()
    with pytest.raises(DepthFilesError, match=r"1 of 5 registered images have no depth map.*--allow-missing"):
        align(scene.sparse, scene.depths)
    assert_nothing_written(scene)
    summary = align(scene.sparse, scene.depths, allow_missing=True)
    [failed] = summary.failed
    assert failed.name == missing and failed.reason.startswith("no depth file: a blank placeholder")
    assert failed.depth is None
    params = json.loads((scene.sparse / "depth_params.json").read_text())
    assert params[Scene.key(missing)] == {"scale": -1.0, "offset": 0.0}


def test_depth_folder_that_matches_no_image(tmp_path):
    scene = fresh(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "unrelated.png"), np.zeros((4, 4), np.uint16))
    with pytest.raises(DepthFilesError, match="none of the 5 registered images.*unrelated.png"):
        align(scene.sparse, other)
    with pytest.raises(DepthFilesError, match="depth folder not found"):
        align(scene.sparse, tmp_path / "nowhere")
    assert_nothing_written(scene)


def test_unmatched_depth_files_are_reported(tmp_path):
    scene = fresh(tmp_path)
    cv2.imwrite(str(scene.depths / "not_registered.png"), np.zeros((120, 160), np.uint16))
    summary = align(scene.sparse, scene.depths)
    assert summary.unmatched_depths == ["not_registered.png"]
    assert not summary.failed


def test_not_a_model(tmp_path):
    scene = fresh(tmp_path)
    with pytest.raises(ModelError, match=r"not a COLMAP model.*did you mean .*sparse/0"):
        align(scene.sparse.parent, scene.depths)
    with pytest.raises(ModelError, match="not found"):
        align(tmp_path / "missing", scene.depths)
    broken = tmp_path / "broken"
    shutil.copytree(scene.sparse, broken)
    (broken / "images.bin").write_bytes(b"\x07" * 100)
    with pytest.raises(ModelError, match=r"images\.bin declares .* truncated"):
        align(broken, scene.depths)
    assert not (broken / "depth_params.json").exists()
    assert_nothing_written(scene)


def test_missing_pycolmap_names_the_extra(tmp_path, monkeypatch):
    scene = fresh(tmp_path)
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap -> ImportError
    with pytest.raises(MissingDependencyError, match=r"depthprior\[colmap\]"):
        align(scene.sparse, scene.depths)


def test_shared_keys_in_the_model_are_an_error(tmp_path):
    scene = fresh(tmp_path, n_images=2)
    model = tmp_path / "clash"
    names = ["a.jpg", "a.png"]
    poses = {new: scene.cam_from_world[old] for new, old in zip(names, scene.names)}
    keypoints = {new: scene.observations[old] for new, old in zip(names, scene.names)}
    write_colmap_text(model, scene.K, scene.width, scene.height, names, poses, keypoints,
                      scene.point_ids, scene.point_xyz)
    with pytest.raises(UsageError, match="a.jpg and a.png .* share"):
        align(model, scene.depths)


def test_bad_method_and_output(tmp_path):
    with pytest.raises(UsageError, match="unknown method"):
        align("x", "y", method="ransac")
    scene = fresh(tmp_path)
    with pytest.raises(UsageError, match="is a folder"):
        align(scene.sparse, scene.depths, output=tmp_path)
    nested = tmp_path / "new" / "folder" / "params.json"
    align(scene.sparse, scene.depths, output=nested)
    assert nested.is_file() and report_path(nested).is_file()


def test_images_folder_is_validated(tmp_path):
    scene = fresh(tmp_path, write_images=True)
    ok = align(scene.sparse, scene.depths, images=scene.images)
    assert ok.results[0].image_size == [scene.width, scene.height] and not ok.failed
    # a frame stored rotated (e.g. by an EXIF-aware tool) no longer matches its camera
    rotated = scene.names[1]
    frame = cv2.imread(str(scene.image_path(rotated)))
    cv2.imwrite(str(scene.image_path(rotated)), cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE))
    summary = align(scene.sparse, scene.depths, images=scene.images)
    [failed] = summary.failed
    assert failed.name == rotated and "rotated" in failed.reason
    scene.image_path(scene.names[0]).unlink()
    for written in scene.sparse.glob("depth_params*"):
        written.unlink()
    with pytest.raises(UsageError, match="registered images of the model are not in"):
        align(scene.sparse, scene.depths, images=scene.images)
    assert_nothing_written(scene)


# ---------------------------------------------------------------- damaged models: refused on reading

def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _replace_line(path: Path, index: int, edit) -> None:
    """Apply edit to the index-th data line (comments skipped) of a text model file."""
    lines = path.read_text().splitlines()
    data = [i for i, line in enumerate(lines) if not line.startswith("#")]
    lines[data[index]] = edit(lines[data[index]])
    path.write_text("\n".join(lines) + "\n")


def _text_pose(line: str, position: int, value: str) -> str:
    fields = line.split(" ")
    fields[position] = value
    return " ".join(fields)


# name -> (model format, damage(sparse), words the one-line error must hold besides the file)
DAMAGE = {
    "cameras.bin truncated to 32 of 64 bytes": (
        "binary", lambda s: _truncate(s / "cameras.bin", 32), ["cameras.bin", "truncated", "camera 1"]),
    "cameras.bin with bytes after its last record": (
        "binary", lambda s: (s / "cameras.bin").write_bytes((s / "cameras.bin").read_bytes() + b"\0" * 8),
        ["cameras.bin", "after its last record"]),
    "camera width 0": (
        "binary", lambda s: patch_file(s / "cameras.bin", CAMERA_SIZE_AT, "Q", 0),
        ["cameras.bin", "camera 1", "0x120", "empty"]),
    "camera of 200000x150000": (
        "binary", lambda s: patch_file(s / "cameras.bin", CAMERA_SIZE_AT, "QQ", 200000, 150000),
        ["cameras.bin", "camera 1", "200000x150000", "pixel cap"]),
    "focal length 0": (
        "binary", lambda s: patch_file(s / "cameras.bin", CAMERA_PARAMS_AT, "d", 0.0),
        ["cameras.bin", "camera 1", "focal length"]),
    "NaN principal point": (
        "binary", lambda s: patch_file(s / "cameras.bin", CAMERA_PARAMS_AT + 16, "d", float("nan")),
        ["cameras.bin", "camera 1", "not all finite"]),
    "NaN translation": (
        "binary", lambda s: patch_file(s / "images.bin", IMAGE_TVEC_AT, "d", float("nan")),
        ["images.bin", "FIRST", "translation"]),
    "zero quaternion": (
        "binary", lambda s: patch_file(s / "images.bin", IMAGE_QVEC_AT, "4d", 0.0, 0.0, 0.0, 0.0),
        ["images.bin", "FIRST", "quaternion"]),
    "image of a camera that does not exist": (
        "binary", lambda s: patch_file(s / "images.bin", IMAGE_CAMERA_AT, "I", 7),
        ["images.bin", "FIRST", "camera 7"]),
    "images.bin truncated": (
        "binary", lambda s: _truncate(s / "images.bin", len((s / "images.bin").read_bytes()) - 10),
        ["images.bin", "truncated"]),
    "points3D.bin truncated": (
        "binary", lambda s: _truncate(s / "points3D.bin", len((s / "points3D.bin").read_bytes()) - 10),
        ["points3D.bin", "truncated"]),
    "cameras.txt line short of a parameter": (
        "text", lambda s: _replace_line(s / "cameras.txt", 0, lambda l: l.rsplit(" ", 1)[0]),
        ["cameras.txt", "PINHOLE needs 4 parameters"]),
    "cameras.txt width 0": (
        "text", lambda s: _replace_line(s / "cameras.txt", 0, lambda l: _text_pose(l, 2, "0")),
        ["cameras.txt", "camera 1", "empty"]),
    "images.txt NaN translation": (
        "text", lambda s: _replace_line(s / "images.txt", 0, lambda l: _text_pose(l, 5, "nan")),
        ["images.txt", "FIRST", "translation"]),
    "images.txt image of a camera that does not exist": (
        "text", lambda s: _replace_line(s / "images.txt", 0, lambda l: _text_pose(l, 8, "3")),
        ["images.txt", "FIRST", "camera 3"]),
    "points3D.txt infinite point": (
        "text", lambda s: _replace_line(s / "points3D.txt", 0, lambda l: _text_pose(l, 1, "inf")),
        ["points3D.txt", "point3D 1", "not finite"]),
}


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> dict[str, Scene]:
    """One small scene per model format, aligned, to copy and damage."""
    root = tmp_path_factory.mktemp("intact")
    scenes = {}
    for fmt in ("binary", "text"):
        scene = make_scene(root / fmt, n_images=3, width=160, height=120, points_per_image=60,
                           model_format=fmt, write_images=False, seed=7)
        align(scene.sparse, scene.depths, workers=1)
        scenes[fmt] = scene
    return scenes


def damaged_copy(scene: Scene, damage, tmp_path: Path) -> Path:
    sparse = tmp_path / "sparse"
    shutil.copytree(scene.sparse, sparse)
    for written in sparse.glob("depth_params*"):
        written.unlink()
    damage(sparse)
    return sparse


def expected_words(words: list[str], scene: Scene, sparse: Path) -> list[str]:
    first = scene.names[0]
    return [repr(first) if word == "FIRST" else word for word in words]


def assert_one_line_refusal(result: subprocess.CompletedProcess, command: str,
                            words: list[str]) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"depthprior {command}: error: "), lines
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.hostile
def test_align_refuses_a_damaged_model_naming_file_and_record(case, intact, tmp_path):
    fmt, damage, words = DAMAGE[case]
    scene = intact[fmt]
    sparse = damaged_copy(scene, damage, tmp_path)
    result = run_cli("--sparse", sparse, "--depths", scene.depths)
    assert_one_line_refusal(result, "align", expected_words(words, scene, sparse))
    assert not any(p.name.startswith("depth_params") for p in sparse.iterdir())
    with pytest.raises(ModelError):
        read_model(sparse)


@pytest.mark.parametrize("case", ["cameras.bin truncated to 32 of 64 bytes", "camera width 0",
                                  "camera of 200000x150000", "NaN translation",
                                  "images.txt NaN translation"])
@pytest.mark.hostile
def test_export_refuses_a_damaged_model(case, intact, tmp_path):
    fmt, damage, words = DAMAGE[case]
    scene = intact[fmt]
    sparse = damaged_copy(scene, damage, tmp_path)
    shutil.copy(scene.sparse / "depth_params.json", sparse)
    out = tmp_path / "ns"
    result = subprocess.run(
        [sys.executable, "-m", "depthprior", "export", "nerfstudio", "--depths", str(scene.depths),
         "--sparse", str(sparse), "--transforms", str(out)],
        capture_output=True, text=True, timeout=120)
    assert_one_line_refusal(result, "export", expected_words(words, scene, sparse))
    assert not out.exists() or not any(out.rglob("*"))


def test_first_image_in_images_bin_is_the_first_name(intact):
    # the damage table relies on it: pycolmap writes images by id, and ids follow scene.names
    assert first_image_name(intact["binary"].sparse / "images.bin") == intact["binary"].names[0]


# ---------------------------------------------------------------- fitting functions

def line_with_outliers(n=2000, fraction=0.4, seed=0):
    rng = np.random.default_rng(seed)
    prior = rng.uniform(0.05, 0.95, n)
    target = 0.8 * prior + 0.1 + rng.normal(0, 1e-4, n)
    bad = rng.random(n) < fraction
    prior[bad] = rng.uniform(0.0, 1.0, bad.sum())  # the prior is wrong there (sky, edges, ...)
    return prior, target


def test_fit_robust_tolerates_many_outliers_and_is_deterministic():
    prior, target = line_with_outliers()
    fit = fit_robust(prior, target)
    assert fit.ok
    assert fit.scale == pytest.approx(0.8, rel=1e-3) and fit.offset == pytest.approx(0.1, abs=1e-3)
    assert 0.55 * len(prior) < fit.inliers < 0.7 * len(prior)
    assert fit_robust(prior, target) == fit
    assert abs(fit_mad(prior, target).scale - 0.8) > 0.02  # the recipe follows the outliers


def test_fit_failures():
    prior, target = line_with_outliers(fraction=0.0)
    assert not fit_robust(prior[: MIN_POINTS - 1], target[: MIN_POINTS - 1]).ok
    assert fit_robust(prior[:MIN_POINTS], target[:MIN_POINTS]).ok
    flat = fit_robust(np.full(100, 0.5), target[:100])
    assert not flat.ok and "constant" in flat.reason and flat.scale == 0
    falling = fit_mad(1 - prior, target)  # the recipe writes its number; depthprior notes it
    assert falling.ok and falling.scale > 0 and "inverse depth" in falling.reason
    assert not fit_mad(prior[:MIN_POINTS - 1], target[:MIN_POINTS - 1]).ok
    flat_mad = fit_mad(np.full(100, 0.5), target[:100])
    assert not flat_mad.ok and "divides by zero" in flat_mad.reason
    at_the_camera = target[:100].copy()
    at_the_camera[0] = np.inf  # 1/z of a point at depth 0: the script computes with it
    infinite = fit_mad(prior[:100], at_the_camera)
    assert not infinite.ok and "no finite" in infinite.reason
    noise = fit_robust(*line_with_outliers(fraction=0.9, seed=4))
    assert not noise.ok or noise.residual > MAX_RESIDUAL  # failed, or flagged by align


# ---------------------------------------------------------------- the command line

def test_cli_writes_table_and_file(corrupt10, tmp_path):
    output = tmp_path / "out" / "params.json"
    result = run_cli("--sparse", corrupt10.sparse, "--depths", corrupt10.depths,
                     "--images", corrupt10.images, "-o", output)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["image", "points", "inliers", "resid", "scale", "offset", "status"]
    assert sum(line.startswith(("cam0/", "cam1/")) for line in lines) == len(corrupt10.names)
    assert f"wrote {output}" in result.stdout
    assert json.loads(output.read_text()).keys() == {Scene.key(n) for n in corrupt10.names}
    assert (tmp_path / "out" / "params.report.json").is_file()


def test_cli_exit_codes(tmp_path):
    scene = fresh(tmp_path, few_points={0: 3})
    result = run_cli("--sparse", scene.sparse, "--depths", scene.depths, "--brief", "--method", "mad")
    assert result.returncode == 1
    assert "failed: only 3 usable SfM points" in result.stdout
    assert len([l for l in result.stdout.splitlines() if l.startswith("frame_")]) == 1  # --brief
    (scene.sparse / "depth_params.json").unlink()
    report_path(scene.sparse / "depth_params.json").unlink()
    scene.depth_path(scene.names[1]).unlink()
    result = run_cli("--sparse", scene.sparse, "--depths", scene.depths)
    assert result.returncode == 2
    assert result.stderr.startswith("depthprior align: error: 1 of 5 registered images")
    assert len(result.stderr.strip().splitlines()) == 1
    assert_nothing_written(scene)
    result = run_cli("--sparse", tmp_path, "--depths", scene.depths)
    assert result.returncode == 2 and "not a COLMAP model" in result.stderr



@pytest.mark.hostile
def test_a_fifo_among_the_frames_is_refused_without_blocking(tmp_path):
    import os

    scene = make_scene(tmp_path / "scene", n_images=3, seed=2)
    frame = sorted(p for p in scene.images.rglob("*") if p.is_file())[0]
    frame.unlink()
    os.mkfifo(frame)  # opening a FIFO for reading blocks until a writer comes
    command = [sys.executable, "-m", "depthprior", "align", "--sparse", str(scene.sparse),
               "--depths", str(scene.depths), "--images", str(scene.images)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert frame.name in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- one owner per format



def literals(path: Path) -> list[str]:
    """The string and number literals of a module's code, `2 ** 16` as one; docstrings and
    comments are not code, and a message that mentions a name does not define it."""
    import io
    import tokenize

    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT)]
    found = []
    for i, token in enumerate(tokens):
        if token.type == tokenize.STRING:
            found.append(token.string.strip("'\""))
        elif token.type == tokenize.NUMBER:
            power = [t.string for t in tokens[i:i + 5]]
            if power[1:2] != ["**"]:
                found.append(token.string)
            elif power[3:4] == ["-"]:
                found.append("".join(power))
            else:
                found.append("".join(power[:3]))
    return found


def test_shared_formats_and_the_png_scale_are_defined_once():
    """depth_params.json, its report and the PNG scale: one module of the package names each."""
    import depthprior

    src = Path(depthprior.__file__).parent
    expected = {  # literal -> the modules that hold it
        "depth_params.json": ["scene/depth_params.py"],
        "depthprior-align-report": ["scene/depth_params.py"],
        ".report.json": ["scene/depth_params.py"],
        "per_image": ["scene/depth_params.py"],
        "65535": ["priors/store.py"],  # store.PNG_MAX
        "65536.0": ["priors/store.py"],  # store.TRAINER_SCALE
        "65536": [],
        "2**16": [],
        "2**16-1": [],
    }
    found: dict[str, list[str]] = {value: [] for value in expected}
    for path in sorted(src.rglob("*.py")):
        module = path.relative_to(src).as_posix()
        for value in literals(path):
            if value in found:
                found[value].append(module)
    assert found == expected


@pytest.mark.hostile
def test_a_fifo_named_like_a_prior_fails_that_image_without_blocking(tmp_path):
    import os

    scene = make_scene(tmp_path / "scene", n_images=4, seed=3)
    prior = sorted(scene.depths.rglob("*.png"))[0]
    prior.unlink()
    os.mkfifo(prior)  # reading a FIFO blocks until a writer comes
    command = [sys.executable, "-m", "depthprior", "align", "--sparse", str(scene.sparse),
               "--depths", str(scene.depths)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stdout.splitlines() if prior.stem in line]
    assert failed and "FIFO" in failed[0], result.stdout
