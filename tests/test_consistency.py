"""depthprior consistency: confidence masks from the SfM poses, on synthetic scenes with known truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from scenes import Scene, cast_pixels, inject_blobs, make_scene

from depthprior.scene import consistency
from depthprior.scene.align import align
from depthprior.scene.colmap import read_model
from depthprior.scene.confidence import REPORT_NAME, camera_grid
from depthprior.scene.consistency import View

pytest.importorskip("pycolmap")

RESOLUTION = "0.5"


def mask_of(folder: Path, scene: Scene, name: str) -> np.ndarray:
    mask = cv2.imread(str(folder / (scene.key(name) + ".png")), cv2.IMREAD_UNCHANGED)
    assert mask is not None, name
    return mask


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """24 frames on a ring, subfolders, a wrong disc in every third prior; aligned and checked."""
    scene = make_scene(tmp_path_factory.mktemp("blobs"), n_images=24, subfolders=True,
                       write_images=False, seed=4)
    wrong = inject_blobs(scene, seed=4)
    align(scene.sparse, scene.depths)
    result = run_cli("consistency", "--sparse", scene.sparse, "--depths", scene.depths,
                     "--resolution", RESOLUTION)
    assert result.returncode == 0, result.stderr
    return scene, wrong, scene.root / "depths_confidence", result


def test_injected_regions_rejected_and_correct_pixels_kept(blobs):
    scene, wrong, out, _ = blobs
    injected = rejected = correct_seen = correct_rejected = 0
    for name in scene.names:
        mask = mask_of(out, scene, name)
        bad = wrong[name]
        injected += bad.sum()
        rejected += (bad & (mask < 128)).sum()
        seen = mask != consistency.UNSEEN
        correct_seen += (~bad & seen).sum()
        correct_rejected += (~bad & (mask < 128)).sum()
    assert injected > 0 and correct_seen > 0
    assert rejected / injected >= 0.9
    assert correct_rejected / correct_seen <= 0.05


def test_tae_lower_after_masking(blobs):
    _, _, out, _ = blobs
    scene = json.loads((out / REPORT_NAME).read_text())["scene"]
    assert scene["tae_after"] < scene["tae_before"]


def test_masks_mirror_subfolders_at_prior_size(blobs):
    scene, _, out, result = blobs
    for name in scene.names:
        mask = mask_of(out, scene, name)
        assert name.startswith(("cam0/", "cam1/"))
        assert mask.dtype == np.uint8 and mask.shape == (scene.prior_height, scene.prior_width)
    report = json.loads((out / REPORT_NAME).read_text())["images"]
    assert set(report) == set(scene.names)
    entry = report[scene.names[0]]
    assert len(entry["witnesses"]) == 4 and entry["status"] == "checked"
    assert 0 < entry["rejected"] < entry["checked"] <= 1
    assert "TAE" in result.stdout


def view_from_truth(scene: Scene, name: str, grid: tuple[int, int]) -> View:
    camera = read_model(scene.sparse).images[0].camera
    rays, to_grid = camera_grid(camera, grid)
    from scenes import render_inverse_depth

    inverse = render_inverse_depth(scene.cam_from_world[name], scene.K, scene.width,
                                   scene.height, grid[1], grid[0])[0].astype(np.float32)
    return View(inverse, rays, scene.cam_from_world[name], to_grid)


def test_occluded_points_are_no_evidence_against_a_correct_pixel(tmp_path):
    """True depths everywhere: the wall behind the sphere/cube, hidden from the witness, is
    never contradicted by it (a plain depth comparison would reject it)."""
    scene = make_scene(tmp_path, n_images=8, write_images=False, seed=5)
    grid = (60, 80)
    subject = view_from_truth(scene, scene.names[0], grid)
    witness = view_from_truth(scene, scene.names[1], grid)
    votes = consistency.witness_votes(subject, witness, 0.05)
    # independent truth: cast from the witness to each subject point; occluded if hit nearer
    points, flat = consistency.backproject(subject)
    pose = scene.cam_from_world[scene.names[1]]
    camera = points @ pose[:, :3].T + pose[:, 3]
    xy = camera[:, :2] / camera[:, 2:] * [scene.K[0, 0], scene.K[1, 1]] + scene.K[:2, 2]
    inside = (camera[:, 2] > 0) & (xy[:, 0] > 1) & (xy[:, 1] > 1)
    inside &= (xy[:, 0] < scene.width - 1) & (xy[:, 1] < scene.height - 1)
    hit = cast_pixels(pose, scene.K, xy[inside])[0]
    occluded = np.zeros(subject.inverse_depth.size, dtype=bool)
    occluded[flat[inside][hit < camera[inside, 2] * 0.9]] = True
    assert occluded.sum() > 50
    assert not votes.contradict.reshape(-1)[occluded].any()
    assert votes.agree.sum() > 0.3 * subject.inverse_depth.size
    assert votes.contradict.mean() < 0.01


def test_confidence_values():
    agree = np.array([0, 2, 1, 1, 0, 3])
    contradict = np.array([0, 0, 1, 2, 1, 1])
    assert consistency.confidence(agree, contradict).tolist() == [128, 255, 128, 0, 0, 191]


@pytest.fixture
def small(tmp_path) -> Scene:
    scene = make_scene(tmp_path / "scene", n_images=8, write_images=False, seed=6)
    align(scene.sparse, scene.depths)
    return scene


def test_failed_and_unreliable_fits_take_no_part(small, tmp_path):
    params_path = small.sparse / "depth_params.json"
    params = json.loads(params_path.read_text())
    failed, outlier = small.key(small.names[2]), small.key(small.names[5])
    params[failed] = {"scale": 0.0, "offset": 0.0}
    params[outlier]["scale"] *= 50
    params_path.write_text(json.dumps(params))
    out = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", small.sparse, "--depths", small.depths, "-o", out,
                     "--resolution", RESOLUTION)
    assert result.returncode == 1, result.stderr
    report = json.loads((out / REPORT_NAME).read_text())["images"]
    for name in (small.names[2], small.names[5]):
        assert report[name]["status"] == "excluded"
        assert not (out / (small.key(name) + ".png")).exists()
    for name, entry in report.items():
        assert small.names[2] not in entry["witnesses"] and small.names[5] not in entry["witnesses"]
    assert report[small.names[0]]["status"] == "checked"


def test_rerun_skips_unchanged_images_and_redoes_changed_ones(small, tmp_path):
    out = tmp_path / "masks"
    args = ("consistency", "--sparse", small.sparse, "--depths", small.depths, "-o", out,
            "--resolution", RESOLUTION)
    assert run_cli(*args).returncode == 0
    first = json.loads((out / REPORT_NAME).read_text())["images"]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    second = json.loads((out / REPORT_NAME).read_text())["images"]
    assert {e["status"] for e in second.values()} == {"skipped"}
    assert all(second[n]["rejected"] == first[n]["rejected"] for n in first)
    changed = small.names[3]
    png = cv2.imread(str(small.depth_path(changed)), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(small.depth_path(changed)), (png // 2).astype(np.uint16))
    stale = run_cli(*args)  # its fit was made for the old map: never applied to the new one
    assert stale.returncode == 1, stale.stderr  # one image not checked
    assert "changed after align" in json.loads((out / REPORT_NAME).read_text())["images"][changed]["reason"]
    assert run_cli("align", "--sparse", small.sparse, "--depths", small.depths).returncode == 0
    assert run_cli(*args).returncode == 0
    third = json.loads((out / REPORT_NAME).read_text())["images"]
    redone = {n for n, e in third.items() if e["status"] == "checked"}
    assert changed in redone
    assert redone == {changed} | {n for n, e in third.items() if changed in e["witnesses"]}
    assert len(redone) < len(third)


def test_threads_write_the_same_bytes_as_one(blobs, tmp_path):
    scene = blobs[0]
    outputs = {}
    for workers in ("1", "3"):
        out = tmp_path / workers
        result = run_cli("consistency", "--sparse", scene.sparse, "--depths", scene.depths,
                         "-o", out, "--resolution", RESOLUTION, "--workers", workers)
        assert result.returncode == 0, result.stderr
        outputs[workers] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
                            if p.is_file() and p.name != ".depthprior.lock"}
    assert len(outputs["1"]) == len(scene.names) + 1
    assert outputs["1"] == outputs["3"]


@pytest.mark.hostile
@pytest.mark.parametrize("damage", ["garbage", "8-bit", "fifo"])
def test_unreadable_prior_fails_that_image_only(small, tmp_path, damage):
    broken = small.names[4]
    path = small.depth_path(broken)
    if damage == "garbage":
        path.write_bytes(b"not a png at all")
    elif damage == "fifo":  # reading it would block until a writer comes
        path.unlink()
        os.mkfifo(path)
    else:
        cv2.imwrite(str(path), np.full((small.prior_height, small.prior_width), 7, np.uint8))
    out = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", small.sparse, "--depths", small.depths, "-o", out,
                     "--resolution", RESOLUTION)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / REPORT_NAME).read_text())["images"]
    assert report[broken]["status"] == "failed" and path.name in report[broken]["reason"]
    assert path.name in result.stdout
    assert not (out / (small.key(broken) + ".png")).exists()
    others = [n for n in small.names if n != broken]
    assert all(report[n]["status"] == "checked" for n in others)
    assert all(broken not in report[n]["witnesses"] for n in others)
    assert all((out / (small.key(n) + ".png")).is_file() for n in others)


@pytest.mark.parametrize("extra, words", [
    (("--threshold", "0"), "--threshold"),
    (("--resolution", "2"), "--resolution"),
    (("--params", "nowhere.json"), "depth params not found"),
    (("-o", "DEPTHS/masks"), "inside the depth folder"),
])
def test_bad_inputs_one_line_exit_2(small, extra, words):
    extra = tuple(str(small.depths) + a[len("DEPTHS"):] if a.startswith("DEPTHS") else a
                  for a in extra)
    result = run_cli("consistency", "--sparse", small.sparse, "--depths", small.depths, *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_unsafe_image_name_refused_before_writing(small, tmp_path):
    """A model image named '../x' would put its mask outside the mask folder."""
    from scenes import write_colmap_text

    model = read_model(small.sparse)
    text = tmp_path / "text"
    names = ["../" + small.names[0], *small.names[1:]]
    poses = {new: small.cam_from_world[old] for new, old in zip(names, small.names)}
    keypoints = {new: small.observations[old] for new, old in zip(names, small.names)}
    write_colmap_text(text, small.K, small.width, small.height, names, poses, keypoints,
                      model.point_ids, model.point_xyz)
    params = json.loads((small.sparse / "depth_params.json").read_text())
    params["../" + small.key(small.names[0])] = params.pop(small.key(small.names[0]))
    (text / "depth_params.json").write_text(json.dumps(params))
    out = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", text, "--depths", small.depths, "-o", out)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "outside" in result.stderr
    assert not any(out.rglob("*.png")) and not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- generate --consistency

def test_generate_align_consistency_writes_masks(tmp_path, tiny_model, cli):
    """Random-weight priors cannot be checked (exit 1, one line saying why); the scene's true
    priors in their place (generate resumes over them) are checked, exit 0."""
    from conftest import TEST_INPUT_SIZE

    scene = make_scene(tmp_path / "scene", n_images=6, seed=6)
    out = tmp_path / "depths"
    args = ("generate", scene.images, out, "--model", tiny_model, "--input-size",
            str(TEST_INPUT_SIZE), "--no-progress", "--align", scene.sparse, "--consistency")
    random = cli(*args)
    assert random.returncode == 1, random.stderr
    assert "consistency: not run: no image" in random.stdout and "Traceback" not in random.stderr
    for name in scene.names:
        (out / (scene.key(name) + ".png")).write_bytes(scene.depth_path(name).read_bytes())
    true = cli(*args)
    assert true.returncode == 0, true.stdout + true.stderr
    assert "skipped 6" in true.stdout and "TAE" in true.stdout
    masks = tmp_path / "depths_confidence"
    report = json.loads((masks / REPORT_NAME).read_text())["images"]
    assert sorted(report) == sorted(scene.names)
    assert all(entry["status"] == "checked" for entry in report.values())
    assert all(mask_of(masks, scene, name).shape == (scene.prior_height, scene.prior_width)
               for name in scene.names)


def test_generate_consistency_without_align_refused(tmp_path, cli):
    out = tmp_path / "depths"
    result = cli("generate", tmp_path, out, "--consistency")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--align" in lines[0] and not out.exists()


# ---------------------------------------------------------------- use of the masks

def test_loss_ignores_rejected_pixels(small, tmp_path):
    torch = pytest.importorskip("torch")
    from depthprior.scene.priorset import MissingPriorError
    from depthprior.training import DepthSupervision

    masks = tmp_path / "masks"
    name = small.names[0]
    mask = np.full((small.prior_height, small.prior_width), 255, np.uint8)
    mask[:, : small.prior_width // 2] = 0
    (masks).mkdir()
    cv2.imwrite(str(masks / (small.key(name) + ".png")), mask)
    supervision = DepthSupervision(small.depths, lambda_depth=1.0, loss="l1",
                                   params=small.sparse / "depth_params.json", masks=masks)
    rendered = torch.rand(1, small.prior_height, small.prior_width, requires_grad=True)
    supervision(name, rendered, 0).backward()
    grad = rendered.grad[0]
    assert torch.all(grad[:, : small.prior_width // 2] == 0)
    assert torch.all(grad[:, small.prior_width // 2 :] != 0)
    with pytest.raises(MissingPriorError, match=small.key(small.names[1])):
        supervision(small.names[1], rendered.detach(), 0)
    with pytest.raises(MissingPriorError, match=small.key(small.names[1])):
        supervision.check(small.names[:2])


@pytest.mark.parametrize("target", ["nerfstudio", "dn-splatter"])
def test_exports_write_no_depth_where_rejected(small, tmp_path, target):
    masks = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", small.sparse, "--depths", small.depths, "-o", masks,
                     "--resolution", RESOLUTION)
    assert result.returncode == 0, result.stderr
    name = small.names[0]
    mask = np.full((small.prior_height, small.prior_width), 255, np.uint8)
    mask[: small.prior_height // 2] = 0  # the top half rejected
    cv2.imwrite(str(masks / (small.key(name) + ".png")), mask)
    if target == "nerfstudio":
        args = ("--transforms", tmp_path / "ns")
    else:
        args = ("--data", tmp_path / "dn")
    result = run_cli("export", target, "--depths", small.depths, "--sparse", small.sparse,
                     "--masks", masks, *args)
    assert result.returncode == 0, result.stderr
    if target == "nerfstudio":
        depth = cv2.imread(str(tmp_path / "ns" / "depthprior_depth" / (small.key(name) + ".png")),
                           cv2.IMREAD_UNCHANGED)
    else:
        depth = np.load(sorted((tmp_path / "dn" / "mono_depth").glob("*_aligned.npy"))[0])[..., 0]
    half = small.height // 2
    assert np.all(depth[: half - 1] == 0)
    assert np.all(depth[half + 1 :] > 0)
    (masks / (small.key(small.names[1]) + ".png")).unlink()
    result = run_cli("export", target, "--depths", small.depths, "--sparse", small.sparse,
                     "--masks", masks, args[0], str(args[1]) + "2")
    assert result.returncode == 2 and small.names[1] in result.stderr


def test_verify_shows_the_mask_beside_the_map(tmp_path, tiny_model, cli):
    from conftest import TEST_INPUT_SIZE
    from synth import make_frames

    make_frames(tmp_path / "frames", 2, size=(60, 80))
    out = tmp_path / "out"
    assert cli("generate", tmp_path / "frames", out, "--model", tiny_model, "--input-size",
               str(TEST_INPUT_SIZE), "--no-progress").returncode == 0
    masks = tmp_path / "masks"
    masks.mkdir()
    pngs = sorted(out.glob("*.png"))
    half = np.zeros((60, 80), np.uint8)
    half[:, 40:] = 255
    cv2.imwrite(str(masks / pngs[0].name), half)
    plain = cli("verify", out, "--sheet", tmp_path / "plain.png")
    masked = cli("verify", out, "--sheet", tmp_path / "masked.png", "--masks", masks)
    assert plain.returncode == 0 and masked.returncode == 0, masked.stdout + masked.stderr
    assert f"no confidence mask {masks / pngs[1].name}" in masked.stdout
    sheet = cv2.imread(str(tmp_path / "masked.png"))
    panel = cv2.imread(str(tmp_path / "plain.png")).shape[1] // 2  # image, map
    assert sheet.shape[1] == 3 * panel
    row = sheet[22 + 10:22 + 190, 2 * panel:]  # first row under its label: the mask
    assert (row[:, :panel // 2 - 2] == 0).all() and (row[:, panel // 2 + 2:] == 255).all()
    second = sheet[226 + 22 + 10:226 + 22 + 190, 2 * panel:]
    assert (second == 0).all()  # no mask: a blank panel
    wrong = cv2.resize(half, (40, 30))
    cv2.imwrite(str(masks / pngs[1].name), wrong)
    bad = cli("verify", out, "--masks", masks)
    assert bad.returncode == 1 and "is 40x30, its depth prior is 80x60" in bad.stdout
    missing = cli("verify", out, "--masks", tmp_path / "nowhere")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def reference_mask(subject: View, witnesses: list[View], threshold: float) -> np.ndarray:
    """The documented rule, pixel by pixel: each witness votes agree / contradict / nothing."""
    agree = np.zeros(subject.inverse_depth.size, int)
    contradict = np.zeros_like(agree)
    for witness in witnesses:
        agreeing, against = set(), set()
        for pixel, inverse, corners in landings(subject, witness):
            if np.min(np.abs(corners / inverse - 1.0)) <= threshold:
                agreeing.add(pixel)
            elif inverse * (1.0 - threshold) > corners.max():
                against.add(pixel)
        cols = subject.shape[1]
        for _, inverse, corners, (x, y) in landings(witness, subject, with_xy=True):
            if inverse * (1.0 - threshold) > corners.max():
                against.add(int(np.floor(y)) * cols + int(np.floor(x)))
        for pixel in agreeing - against:
            agree[pixel] += 1
        for pixel in against:
            contradict[pixel] += 1
    mask = np.full(agree.shape, 128, np.uint8)
    for pixel, (a, c) in enumerate(zip(agree, contradict)):
        if a + c:
            mask[pixel] = 0 if c > a else round(255 * a / (a + c))
    return mask.reshape(subject.shape)


def landings(source: View, target: View, with_xy: bool = False):
    """Source pixels with a depth, moved through the world into the target in front of its
    camera, with the target's 2x2 surface around the landing point (all four with a depth)."""
    inverse = source.inverse_depth.reshape(-1).astype(np.float64)
    rays = source.rays.reshape(-1, 2).astype(np.float64)
    rows, cols = target.shape
    surface = target.inverse_depth.astype(np.float64)
    for pixel in np.flatnonzero(np.isfinite(inverse) & (inverse > 0)):
        z = 1.0 / inverse[pixel]
        camera = np.array([rays[pixel, 0] * z, rays[pixel, 1] * z, z])
        pose = source.cam_from_world
        world = pose[:, :3].T @ (camera - pose[:, 3])
        seen = target.cam_from_world[:, :3] @ world + target.cam_from_world[:, 3]
        if seen[2] <= 1e-9:
            continue
        x, y = target.to_grid(seen[None])[0]
        u, v = x - 0.5, y - 0.5
        if not (0 <= u <= cols - 1 and 0 <= v <= rows - 1):
            continue
        j, i = min(int(u), cols - 2), min(int(v), rows - 2)
        corners = surface[i:i + 2, j:j + 2].reshape(-1)
        if np.all(np.isfinite(corners) & (corners > 0)):
            landing = (pixel, 1.0 / seen[2], corners)
            yield (*landing, (x, y)) if with_xy else landing


def test_masks_match_a_pixel_by_pixel_reference(tmp_path):
    """The vectorised votes give the masks of the rule applied one pixel at a time (wrong
    blobs, occlusion and the image border included), at the prior's size."""
    scene = make_scene(tmp_path / "scene", n_images=8, write_images=False, seed=7)
    inject_blobs(scene, seed=7)
    align(scene.sparse, scene.depths)
    out = tmp_path / "masks"
    result = run_cli("consistency", "--sparse", scene.sparse, "--depths", scene.depths,
                     "-o", out, "--resolution", "0.25")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / REPORT_NAME).read_text())["images"]
    views = reference_views(scene, 0.25)
    rejected = 0
    for name in scene.names:
        expected = reference_mask(views[name], [views[w] for w in report[name]["witnesses"]], 0.05)
        full = cv2.resize(expected, (scene.prior_width, scene.prior_height),
                          interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(mask_of(out, scene, name), full, err_msg=name)
        rejected += int((expected == 0).sum())
    assert rejected > 20


def reference_views(scene: Scene, resolution: float) -> dict[str, View]:
    """Each prior as the trainer reads it (aligned), bilinear to the check's grid."""
    from depthprior.scene.priorset import PriorSet

    priors = PriorSet(scene.depths, scene.sparse / "depth_params.json")
    camera = read_model(scene.sparse).images[0].camera
    views = {}
    for name in scene.names:
        full = priors.load(name).inverse_depth
        grid = (round(full.shape[0] * resolution), round(full.shape[1] * resolution))
        inverse = cv2.resize(full, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR)
        rays, to_grid = camera_grid(camera, grid)
        views[name] = View(inverse, rays, scene.cam_from_world[name], to_grid)
    return views


def test_witnesses_share_the_most_points_ties_by_name(small):
    """covisible against counting shared point ids pair by pair."""
    from depthprior.scene.confidence import covisible

    model = read_model(small.sparse)
    images = model.images[1:]  # not every image of the model takes part
    points = {image.name: set(image.point3D_ids[image.point3D_ids >= 0].tolist()) for image in images}
    for count in (1, 3, len(images)):
        chosen = covisible(model, images, count)
        for image in images:
            shared = {other.name: len(points[image.name] & points[other.name])
                      for other in images if other is not image}
            expected = sorted((n for n, k in shared.items() if k), key=lambda n: (-shared[n], n))
            assert [w.name for w in chosen[image.name]] == expected[:count]
