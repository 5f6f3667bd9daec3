"""Exclusion masks folded into align and consistency, on a synthetic scene with truth
(tests/scenes.py): a "sky" band (prior 0, as Depth Anything predicts the sky, with SfM points of
the room behind it as outliers) and a "moving" disc in every frame (its prior off by 30-60%, a
different place per frame, so inconsistent across views, with SfM outliers on it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from scenes import inject_blobs, make_scene

from depthprior.cli import main
from depthprior.files.jsonfile import encode_json
from depthprior.scene.align import align
from depthprior.scene.confidence import check_consistency


def write_exclusion(folder: Path, masks: dict[str, np.ndarray], key) -> Path:
    """A mask folder as depthprior exclude writes it: key.png (0 excluded, 255 kept) and exclude.json."""
    entries = {}
    for name, excluded in masks.items():
        target = folder / f"{key(name)}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), np.where(excluded, 0, 255).astype(np.uint8))
        entries[name] = {"key": key(name), "status": "ok", "size": list(excluded.shape),
                         "fractions": {"sky": float(excluded[: excluded.shape[0] // 4].mean() / 4),
                                       "total": float(excluded.mean())}}
    (folder / "exclude.json").write_bytes(encode_json({"version": 1, "identity": {"model": "test"},
                                                       "images": entries}))
    return folder


@pytest.fixture(scope="module")
def sky_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("sky-scene")
    scene = make_scene(root, n_images=8, width=96, height=72, points_per_image=150,
                       write_images=False, seed=3, subfolders=True)
    moving = inject_blobs(scene, every=1, seed=3, error=(0.3, 0.6))
    rows, cols = scene.prior_height, scene.prior_width
    sky = np.zeros((rows, cols), bool)
    sky[: rows // 4] = True
    for name in scene.names:
        png = scene.written_prior[name].copy()
        png[sky] = 0  # zero disparity: after the fit, a wall at 1/offset
        cv2.imwrite(str(scene.depth_path(name)), png)
    excluded = {name: sky | moving[name] for name in scene.names}
    folder = write_exclusion(root / "exclude", excluded, scene.key)
    return scene, excluded, folder


def mean_error(scene, summary) -> float:
    return float(np.mean([scene.inverse_depth_error(r.name, r.scale, r.offset) for r in summary.results]))


def test_align_leaves_out_the_samples_on_excluded_pixels(sky_scene, tmp_path):
    scene, excluded, folder = sky_scene
    for method in ("mad", "robust"):
        plain = align(scene.sparse, scene.depths, method=method, output=tmp_path / f"{method}.json")
        masked = align(scene.sparse, scene.depths, method=method, exclude=folder,
                       output=tmp_path / f"{method}-excluded.json")
        assert all(r.status == "ok" for r in masked.results)
        for result in masked.results:  # the samples whose pixel is excluded, counted per image
            xy, _ids = scene.observations[result.name]
            assert result.excluded == int(excluded[result.name][xy[:, 1].astype(int), xy[:, 0].astype(int)].sum())
            assert plain.results[masked.results.index(result)].excluded is None
        if method == "mad":  # the official estimator takes every sample: the sky drags it off
            assert mean_error(scene, plain) > 0.05 and mean_error(scene, masked) < mean_error(scene, plain) / 5
        else:  # the robust fit already rejects these outliers; leaving them out keeps it exact
            assert mean_error(scene, masked) < 1e-3
    report = json.loads((tmp_path / "robust-excluded.report.json").read_text())
    assert report["exclude"] == str(folder)
    assert "SfM samples on excluded pixels left out" in masked.format()


def test_consistency_rejects_excluded_pixels_which_are_no_evidence(sky_scene, tmp_path):
    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    plain = check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "plain")
    masked = check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "masked",
                               exclude=folder)
    assert not plain.failed and not masked.failed
    wrongly_rejected = {"plain": [], "masked": []}
    for name in scene.names:
        key = scene.key(name)
        with_exclusion = cv2.imread(str(tmp_path / "masked" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        without = cv2.imread(str(tmp_path / "plain" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        assert (with_exclusion[excluded[name]] == 0).all()  # sky and the moving disc: 0
        assert not (without[excluded[name]] == 0).all()  # the sky is unseen without exclusion
        wrongly_rejected["plain"].append((without[~excluded[name]] < 128).mean())
        wrongly_rejected["masked"].append((with_exclusion[~excluded[name]] < 128).mean())
    # excluded pixels as witnesses no longer contradict the right pixels of the other views
    assert np.mean(wrongly_rejected["masked"]) < np.mean(wrongly_rejected["plain"]) / 2
    document = json.loads((tmp_path / "masked" / "consistency.json").read_text())
    assert document["mask"]["excluded"] == 0
    entry = document["images"][scene.names[0]]
    assert entry["excluded"] == pytest.approx(excluded[scene.names[0]].mean())
    again = check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "masked",
                              exclude=folder)
    assert {r.status for r in again.images} == {"skipped"}
    assert again.images[0].excluded == pytest.approx(entry["excluded"])
    changed = tmp_path / "changed"  # another exclusion mask for one image: it is checked again
    shutil.copytree(folder, changed)
    first = scene.key(scene.names[0])
    cv2.imwrite(str(changed / f"{first}.png"), np.full(excluded[scene.names[0]].shape, 255, np.uint8))
    redone = check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "masked",
                               exclude=changed)
    statuses = {r.name: r.status for r in redone.images}
    assert statuses[scene.names[0]] == "checked" and redone.images[0].excluded == 0.0
    assert "skipped" in statuses.values()  # images that neither see it nor are it are kept


@pytest.mark.hostile
def test_a_missing_or_other_aspect_mask_fails_its_image_alone(sky_scene, tmp_path):
    scene, excluded, _folder = sky_scene
    masks = dict(excluded)
    first, second = scene.names[0], scene.names[1]
    del masks[first]
    masks[second] = np.zeros((scene.prior_height, scene.prior_height), bool)  # square: another image
    folder = write_exclusion(tmp_path / "exclude", masks, scene.key)
    summary = align(scene.sparse, scene.depths, exclude=folder, output=tmp_path / "params.json")
    failed = {r.name: r.reason for r in summary.failed}
    assert sorted(failed) == sorted([first, second])
    assert "no exclusion mask" in failed[first] and "another aspect ratio" in failed[second]
    assert all("\n" not in reason for reason in failed.values())
    # no exclude.json: refused before anything is written (exit 2, one line)
    (folder / "exclude.json").unlink()
    assert main(["align", "--sparse", str(scene.sparse), "--depths", str(scene.depths), "--exclude",
                 str(folder), "-o", str(tmp_path / "other.json")]) == 2
    assert not (tmp_path / "other.json").exists()


def test_training_and_export_multiply_several_mask_folders(sky_scene, tmp_path):
    import torch

    from depthprior.scene.export import export_nerfstudio
    from depthprior.training import DepthSupervision

    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "confidence")
    supervision = DepthSupervision(scene.depths, lambda_depth=1.0, loss="l1", params=params,
                                   masks=[tmp_path / "confidence", folder])
    name = scene.names[1]
    confidence = cv2.imread(str(tmp_path / "confidence" / f"{scene.key(name)}.png"), cv2.IMREAD_UNCHANGED)
    weights = supervision.priors.confidence(name)[0].numpy()
    assert np.allclose(weights, confidence / 255.0 * ~excluded[name])  # the weights multiply
    rendered = torch.rand(1, scene.prior_height, scene.prior_width, requires_grad=True)
    supervision(name, rendered, 0).backward()
    gradient = rendered.grad[0].numpy()
    assert (gradient[excluded[name]] == 0).all()  # no pull towards the sky's wall or the mover
    assert (gradient[~excluded[name] & (confidence > 0)] != 0).all()
    summary = export_nerfstudio(scene.depths, scene.sparse, tmp_path / "ns", params=params,
                                masks=[tmp_path / "confidence", folder])
    depth = cv2.imread(str(summary.out / f"{scene.key(name)}.png"), cv2.IMREAD_UNCHANGED)
    assert (depth[excluded[name]] == 0).all() and (depth[~excluded[name] & (confidence >= 128)] > 0).all()


def test_export_masks_take_several_folders():
    from depthprior.cli import build_parser

    args = build_parser().parse_args(["export", "dn-splatter", "--depths", "d", "--sparse", "s",
                                      "--data", "x", "--masks", "a", "b", "--masks", "c"])
    assert args.masks == ["a", "b", "c"]


def test_verify_and_report_show_the_exclusion_and_its_fraction(tmp_path, tiny_model):
    from conftest import TEST_INPUT_SIZE
    from synth import make_frames

    from depthprior.priors.pipeline import generate
    from depthprior.priors.verify import verify
    from depthprior.report import report

    make_frames(tmp_path / "images", count=2, size=(48, 64))
    generate(tmp_path / "images", tmp_path / "depths", model=str(tiny_model), input_size=TEST_INPUT_SIZE,
             progress=False)
    excluded = np.zeros((48, 64), bool)
    excluded[:12] = True
    folder = write_exclusion(tmp_path / "exclude", {f"frame_{i:04d}.jpg": excluded for i in range(2)},
                             lambda name: name.rsplit(".", 1)[0])
    checked = verify(tmp_path / "depths", masks=[folder], all=True)
    assert checked.ok and [check.excluded for check in checked.checks] == [0.25, 0.25]
    assert "excl." in checked.format() and "25.0%" in checked.format()
    summary = report(tmp_path / "depths", exclude=folder)
    page = summary.path.read_text()
    assert page.count('alt="excluded"') == 2 and page.count("<tr><th>excluded</th><td>25%</td></tr>") == 2
    assert len(list(summary.assets.glob("*-exclude.jpg"))) == 2


@pytest.mark.hostile
def test_an_rgb_16_bit_or_truncated_exclusion_mask_fails_its_image_naming_exclude(sky_scene, tmp_path):
    """Each bad mask fails its image alone, in one line naming the file and the command that
    writes exclusion masks (not consistency's); the other images are aligned."""
    scene, excluded, _folder = sky_scene
    folder = write_exclusion(tmp_path / "exclude", excluded, scene.key)
    path = {name: folder / f"{scene.key(name)}.png" for name in scene.names}
    shape = (scene.prior_height, scene.prior_width)
    rgb, sixteen, truncated = scene.names[:3]
    cv2.imwrite(str(path[rgb]), np.zeros((*shape, 3), np.uint8))
    cv2.imwrite(str(path[sixteen]), np.zeros(shape, np.uint16))
    path[truncated].write_bytes(path[truncated].read_bytes()[:40])
    summary = align(scene.sparse, scene.depths, exclude=folder, output=tmp_path / "params.json")
    failed = {r.name: r.reason for r in summary.failed}
    assert sorted(failed) == sorted([rgb, sixteen, truncated])
    for name, reason in failed.items():
        assert "\n" not in reason and str(path[name]) in reason
        assert "depthprior exclude" in reason and "consistency" not in reason, reason
    assert "3 channel(s)" in failed[rgb] and "16 bits" in failed[sixteen] and "damaged" in failed[truncated]


@pytest.mark.hostile
def test_an_all_excluded_frame_fails_its_fit_saying_the_mask_left_too_few_points(sky_scene, tmp_path):
    scene, excluded, _folder = sky_scene
    masks = dict(excluded)
    blank = scene.names[0]
    masks[blank] = np.ones_like(excluded[blank])  # an all-zero mask: every pixel excluded
    folder = write_exclusion(tmp_path / "exclude", masks, scene.key)
    for method in ("mad", "robust"):
        summary = align(scene.sparse, scene.depths, method=method, exclude=folder,
                        output=tmp_path / f"{method}.json")
        failed = {r.name: r for r in summary.failed}
        assert sorted(failed) == [blank]  # the others are fitted
        reason = failed[blank].reason
        assert "\n" not in reason and f"{failed[blank].excluded} on pixels the exclusion mask excludes" in reason


@pytest.mark.hostile
def test_consistency_into_its_own_exclusion_folder_is_refused_before_writing(sky_scene, tmp_path):
    """consistency -o X --exclude X would write confidence masks over the exclusion masks it
    reads (same names): refused in one line, the exclusion folder untouched."""
    from depthprior.errors import UsageError

    scene, excluded, _folder = sky_scene
    folder = write_exclusion(tmp_path / "exclude", excluded, scene.key)
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    for output in (folder, folder / "cam0" / ".."):
        with pytest.raises(UsageError, match="exclusion mask folder") as caught:
            check_consistency(scene.sparse, scene.depths, params=params, output=output, exclude=folder)
        assert "\n" not in str(caught.value)
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_a_mask_folder_of_other_images_is_refused_before_anything_is_written(sky_scene, tmp_path, capsys):
    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    output = tmp_path / "confidence"
    check_consistency(scene.sparse, scene.depths, params=params, output=output, exclude=folder)
    before = {path: path.read_bytes() for path in output.rglob('*') if path.is_file()}
    wrong = write_exclusion(tmp_path / "wrong", {f"other_{i}.jpg": mask for i, mask in
                                                 enumerate(excluded.values())}, lambda n: n[:-4])
    capsys.readouterr()
    assert main(["consistency", "--sparse", str(scene.sparse), "--depths", str(scene.depths), "--params",
                 str(params), "-o", str(output), "--exclude", str(wrong)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{wrong} has no exclusion mask for any image of" in error
    assert "depthprior exclude" in error
    assert {path: path.read_bytes() for path in output.rglob('*') if path.is_file()} == before


@pytest.mark.hostile
def test_a_missing_exclusion_mask_keeps_the_images_earlier_confidence_mask(sky_scene, tmp_path):
    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    output = tmp_path / "confidence"
    check_consistency(scene.sparse, scene.depths, params=params, output=output, exclude=folder)
    first = scene.names[0]
    earlier = (output / f"{scene.key(first)}.png").read_bytes()
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / f"{scene.key(first)}.png").unlink()
    summary = check_consistency(scene.sparse, scene.depths, params=params, output=output, exclude=partial)
    assert [r.name for r in summary.failed] == [first]
    assert (output / f"{scene.key(first)}.png").read_bytes() == earlier


@pytest.mark.hostile
def test_align_refuses_a_mask_folder_of_other_images_and_keeps_its_params(sky_scene, tmp_path, capsys):
    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    params_before = params.read_bytes()
    wrong = write_exclusion(tmp_path / "wrong", {f"other_{i}.jpg": mask for i, mask in
                                                 enumerate(excluded.values())}, lambda n: n[:-4])
    capsys.readouterr()
    assert main(["align", "--sparse", str(scene.sparse), "--depths", str(scene.depths), "--exclude",
                 str(wrong), "-o", str(params)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{wrong} has no exclusion mask for any image of" in error
    assert params.read_bytes() == params_before


@pytest.mark.hostile
def test_a_render_of_another_size_and_aspect_gets_the_exclusion_as_the_prior_does(sky_scene, tmp_path):
    import torch

    from depthprior.training import DepthSupervision

    scene, excluded, folder = sky_scene
    params = tmp_path / "params.json"
    align(scene.sparse, scene.depths, exclude=folder, output=params)
    check_consistency(scene.sparse, scene.depths, params=params, output=tmp_path / "confidence")
    name = scene.names[1]
    size = (60, 72)  # another aspect than the 72x96 prior: the prior is stretched (bilinear), so are the masks
    kept = cv2.resize((~excluded[name]).astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    confidence = cv2.imread(str(tmp_path / "confidence" / f"{scene.key(name)}.png"), cv2.IMREAD_UNCHANGED)
    confidence = cv2.resize(confidence.astype(np.float32) / 255, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    for masks, expected in (([folder], kept), ([tmp_path / "confidence"], confidence),
                            ([tmp_path / "confidence", folder], confidence * kept)):
        supervision = DepthSupervision(scene.depths, lambda_depth=1.0, loss="l1", params=params, masks=masks)
        prior = supervision.priors.inverse_depth(name, size)
        weights = supervision.priors.confidence(name, size)[0].numpy()
        assert weights.shape == tuple(prior.shape[1:]) == size
        assert np.allclose(weights, expected, atol=1e-6)
        rendered = torch.rand(1, *size, requires_grad=True)
        supervision(name, rendered, 0).backward()
        assert torch.isfinite(rendered.grad).all()
