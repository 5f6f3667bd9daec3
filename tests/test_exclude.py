"""depthprior exclude: tiny random segmentation checkpoints (SegFormer, UperNet, Mask2Former) whose
output the fixture forces (a sky band, a person block), loaded by path; masks, dilation, class names,
resume and identity, bad inputs, and the CLI once as a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from segmentation import (FRAME, LABELS, build_mask2former, build_segformer, build_upernet, forced_logits,
                          forced_queries, frame)
from synth import write_image

from depthprior.cli import build_parser, main
from depthprior.errors import FileFormatError, ModelLoadError, UsageError
from depthprior.exclusion.masks import ExclusionFolder, ExclusionMissing
from depthprior.exclusion.run import exclude
from depthprior.exclusion.segmenter import SegmenterSettings

BUILDERS = {"segformer": build_segformer, "upernet": build_upernet}


@pytest.fixture(scope="session")
def seg_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segmentation")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def mask2former(tmp_path_factory) -> Path:
    return build_mask2former(tmp_path_factory.mktemp("segmentation") / "mask2former")


def settings(model: Path, input_size: int = 64) -> SegmenterSettings:
    return SegmenterSettings(model=str(model), device="cpu", input_size=input_size)


def frames(folder: Path, count: int = 2, size: tuple[int, int] = FRAME) -> tuple[np.ndarray, np.ndarray]:
    rgb, sky, person = frame(size)
    for index in range(count):
        write_image(folder / f"cam{index % 2}" / f"f{index}.png", rgb)
    return sky, person


def read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def corner_pixels(region: np.ndarray, reach: int) -> np.ndarray:
    """Pixels within `reach` (Chebyshev) of a block's corner: bilinear upsampling of one-hot
    logits from 1/4 size rounds a block's corners off there."""
    ys, xs = np.nonzero(region)
    near = np.zeros_like(region)
    for y in (ys.min(), ys.max()):
        for x in (xs.min(), xs.max()):
            near[max(0, y - reach): y + reach + 1, max(0, x - reach): x + reach + 1] = True
    return near


@pytest.mark.parametrize("architecture", sorted(BUILDERS))
def test_masks_equal_the_forced_regions_at_the_stored_size(tmp_path, seg_models, architecture):
    sky, person = frames(tmp_path / "images")
    with forced_logits():
        summary = exclude(tmp_path / "images", tmp_path / "masks", classes=["sky", "people"],
                          settings=settings(seg_models[architecture], input_size=32), workers=1)
    assert summary.exit_code == 0 and summary.done == 2
    mask = read(tmp_path / "masks" / "cam0" / "f0.png")  # subfolders mirrored
    assert mask.dtype == np.uint8 and mask.shape == FRAME and set(np.unique(mask)) == {0, 255}
    wrong = (mask == 0) != (sky | person)
    if architecture == "upernet":  # full-size logits, upsampled 2x: exact
        assert not wrong.any()
    else:  # 1/4-size logits upsampled 8x: only the person block's corners round off
        assert wrong.any() and not (wrong & ~corner_pixels(person, 3)).any()
    report = json.loads((tmp_path / "masks" / "exclude.json").read_text())
    entry = report["images"]["cam1/f1.png"]
    assert entry["fractions"]["sky"] == pytest.approx(sky.mean())
    assert entry["fractions"]["people"] == pytest.approx(person.mean(), abs=0.01)
    assert report["identity"]["classes"] == [[1], [2]] and report["classes"] == {"sky": [1], "people": [2]}
    folder = ExclusionFolder(tmp_path / "masks")
    assert folder.fraction("cam1/f1") == pytest.approx((mask == 0).mean())
    assert np.array_equal(folder.kept("cam0/f0", FRAME), mask == 255)


def test_mask2former_queries_give_transformers_semantic_map(tmp_path, mask2former):
    """Per-query classes and masks combine as transformers' post_process_semantic_segmentation
    does (no-object dropped, a doubtful query outweighed); masks at 1/4 of the 128-pixel input
    are the frame's size halved, and upsampled 2x the regions come back exactly."""
    from transformers import Mask2FormerImageProcessorPil

    sky, person = frames(tmp_path / "images", count=1)
    seen: list = []
    with forced_queries(seen):
        summary = exclude(tmp_path / "images", tmp_path / "masks", classes=["sky", "person"],
                          settings=settings(mask2former, input_size=128), workers=1)
    assert summary.exit_code == 0 and summary.done == 1, summary.failed
    mask = read(tmp_path / "masks" / "cam0" / "f0.png")
    assert mask.shape == FRAME and np.array_equal(mask == 0, sky | person)
    assert len(seen) == 1 and seen[0].masks_queries_logits.shape[-2:] == (FRAME[0] // 2, FRAME[1] // 2)
    labels = Mask2FormerImageProcessorPil.from_pretrained(mask2former).post_process_semantic_segmentation(
        seen[0], target_sizes=[FRAME])[0].numpy()
    assert set(np.unique(labels)) == {0, 1, 2} and len(LABELS) == 4  # car (3), no object (4) never win
    assert np.array_equal(mask == 0, np.isin(labels, [1, 2]))
    report = json.loads((tmp_path / "masks" / "exclude.json").read_text())
    assert report["classes"] == {"sky": [1], "person": [2]} and report["identity"]["classes"] == [[1], [2]]


def test_dilate_grows_the_exclusion_by_the_requested_pixels(tmp_path, seg_models):
    sky, person = frames(tmp_path / "images", count=1)
    with forced_logits():
        exclude(tmp_path / "images", tmp_path / "masks", classes=["person"], dilate=3,
                settings=settings(seg_models["upernet"]), workers=1)
    excluded = read(tmp_path / "masks" / "cam0" / "f0.png") == 0
    ys, xs = np.nonzero(person)
    grid_y, grid_x = np.mgrid[: FRAME[0], : FRAME[1]]
    distance = np.sqrt((grid_y[..., None] - ys) ** 2 + (grid_x[..., None] - xs) ** 2).min(-1)
    assert np.array_equal(excluded, distance <= 3)
    assert not (excluded & sky).any()  # only the class asked for


def test_an_unknown_class_is_refused_listing_the_models_classes(tmp_path, seg_models):
    frames(tmp_path / "images", count=1)
    with pytest.raises(UsageError) as caught:
        exclude(tmp_path / "images", tmp_path / "masks", classes=["sky", "tree"],
                settings=settings(seg_models["segformer"]))
    message = str(caught.value)
    assert "\n" not in message and "'tree'" in message
    assert "wall, sky, person;individual;someone, car" in message
    assert not (tmp_path / "masks").exists()  # refused before the folder is made


def test_a_checkpoint_that_is_not_a_segmentation_model_is_refused(tmp_path, tiny_model):
    frames(tmp_path / "images", count=1)
    with pytest.raises(ModelLoadError) as caught:
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(tiny_model))
    assert "\n" not in str(caught.value) and "depth_anything" in str(caught.value)
    assert "segformer" in str(caught.value)


def test_resume_keeps_intact_masks_and_redoes_changed_ones(tmp_path, seg_models):
    frames(tmp_path / "images", count=3)
    model = settings(seg_models["segformer"])
    first = exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    assert first.done == 3
    again = exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    assert (again.done, again.skipped, again.load_seconds) == (0, 3, 0.0)
    (tmp_path / "masks" / "cam0" / "f0.png").write_bytes(b"damaged")
    write_image(tmp_path / "images" / "cam1" / "f1.png", frame()[0][:, ::-1])  # a changed frame
    stamp = os.stat(tmp_path / "images" / "cam1" / "f1.png")
    os.utime(tmp_path / "images" / "cam1" / "f1.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    (tmp_path / "images" / "cam0" / "f2.png").unlink()  # a frame gone: its mask goes too
    third = exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    assert (third.done, third.skipped) == (2, 0)
    assert not (tmp_path / "masks" / "cam0" / "f2.png").exists()
    names = json.loads((tmp_path / "masks" / "exclude.json").read_text())["images"]
    assert sorted(names) == ["cam0/f0.png", "cam1/f1.png"]


def test_other_model_or_classes_are_refused_without_overwrite(tmp_path, seg_models):
    frames(tmp_path / "images", count=1)
    exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]))
    for change in ({"classes": ["sky", "car"]}, {"settings": settings(seg_models["upernet"])},
                   {"dilate": 2}):
        options = {"settings": settings(seg_models["segformer"]), **change}
        with pytest.raises(UsageError, match="other settings.*--overwrite"):
            exclude(tmp_path / "images", tmp_path / "masks", **options)
    done = exclude(tmp_path / "images", tmp_path / "masks", classes=["car"], overwrite=True,
                   settings=settings(seg_models["upernet"]))
    assert done.done == 1
    assert json.loads((tmp_path / "masks" / "exclude.json").read_text())["identity"]["classes"] == [[3]]


def test_the_dtype_the_network_runs_in_is_part_of_the_identity(tmp_path, seg_models, monkeypatch):
    """auto runs the network in bf16 on a CPU that multiplies bf16 natively, fp32 on one that
    does not; masks made in one dtype are another identity for the other, and a folder made
    before the dtype was recorded resumes."""
    from depthprior.exclusion import segmenter

    frames(tmp_path / "images", count=1)
    model = settings(seg_models["segformer"])
    monkeypatch.setattr(segmenter, "native_bf16", lambda: True)
    assert [segmenter.segmentation_dtype(dtype, "cpu") for dtype in ("auto", "fp32", "bf16")] == [
        "bf16", "fp32", "bf16"]
    assert segmenter.segmentation_dtype("auto", "cuda") == "fp16"
    assert exclude(tmp_path / "images", tmp_path / "masks", settings=model).done == 1
    report = tmp_path / "masks" / "exclude.json"
    assert json.loads(report.read_text())["identity"]["dtype"] == "bf16"
    monkeypatch.setattr(segmenter, "native_bf16", lambda: False)
    assert segmenter.segmentation_dtype("auto", "cpu") == "fp32"
    with pytest.raises(UsageError, match="dtype: 'bf16' there, 'fp32' now.*--overwrite"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=model)
    document = json.loads(report.read_text())
    del document["identity"]["dtype"]
    report.write_text(json.dumps(document))
    (tmp_path / "images" / "cam1").mkdir()  # one frame more, made in fp32 beside one of unknown dtype
    (tmp_path / "images" / "cam1" / "f1.png").write_bytes((tmp_path / "images" / "cam0" / "f0.png").read_bytes())
    assert exclude(tmp_path / "images", tmp_path / "masks", settings=model).skipped == 1
    assert "dtype" not in json.loads(report.read_text())["identity"]  # not claimed for the earlier mask
    monkeypatch.setattr(segmenter, "native_bf16", lambda: True)
    assert exclude(tmp_path / "images", tmp_path / "masks", settings=model).skipped == 2
    exclude(tmp_path / "images", tmp_path / "masks", settings=model, overwrite=True)
    assert json.loads(report.read_text())["identity"]["dtype"] == "bf16"


def test_the_same_checkpoint_under_another_path_resumes(tmp_path, seg_models):
    """A local checkpoint is known by its weights: a trailing slash, a relative spelling or an
    identical copy resumes; other weights at the same path are another model."""
    import shutil

    frames(tmp_path / "images", count=1)
    model = seg_models["segformer"]
    exclude(tmp_path / "images", tmp_path / "masks", settings=settings(model))
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    for spelling in (f"{model}/", f"{model}/../{model.name}", str(copy)):
        assert exclude(tmp_path / "images", tmp_path / "masks", settings=settings(Path(spelling))).skipped == 1
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"sky"', '"sky "'))
    with pytest.raises(UsageError, match="weights: .* there, .* now"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(copy))


@pytest.mark.hostile
def test_bad_frames_fail_alone_and_a_bad_report_is_one_line(tmp_path, seg_models):
    frames(tmp_path / "images", count=1)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    write_image(tmp_path / "images" / "strip.png", np.zeros((2, 80, 3), np.uint8))  # 40:1
    huge = tmp_path / "images" / "huge.png"
    write_image(huge, np.zeros((8, 8, 3), np.uint8))
    data = bytearray(huge.read_bytes())
    data[16:24] = (30000).to_bytes(4, "big") * 2  # declares 30000x30000 (CRC aside)
    huge.write_bytes(bytes(data))
    summary = exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]),
                      max_pixels=10_000_000)
    assert summary.exit_code == 1 and summary.done == 1
    assert sorted(summary.failed) == ["corrupt.png", "huge.png", "strip.png"]
    assert "max-pixels" in summary.failed["huge.png"] and "16:1" in summary.failed["strip.png"]
    assert all("\n" not in reason for reason in summary.failed.values())
    (tmp_path / "masks" / "exclude.json").write_text('{"images": {"a.png": []}}')
    with pytest.raises(FileFormatError, match="exclude.json is malformed"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]))
    with pytest.raises(FileFormatError):
        ExclusionFolder(tmp_path / "masks")


@pytest.mark.hostile
def test_a_wrong_size_mask_is_redone_and_refused_by_consumers(tmp_path, seg_models):
    frames(tmp_path / "images", count=1)
    model = settings(seg_models["segformer"])
    exclude(tmp_path / "images", tmp_path / "masks", settings=model)
    cv2.imwrite(str(tmp_path / "masks" / "cam0" / "f0.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ExclusionMissing, match="10x10"):
        ExclusionFolder(tmp_path / "masks").kept("cam0/f0", FRAME)
    assert exclude(tmp_path / "images", tmp_path / "masks", settings=model).done == 1
    assert read(tmp_path / "masks" / "cam0" / "f0.png").shape == FRAME


def test_cli_exclude(tmp_path, seg_models, cli, capsys):
    frames(tmp_path / "images", count=1)
    result = cli("exclude", tmp_path / "images", "--model", seg_models["upernet"], "--classes",
                 "sky,person", "--seg-input-size", "32", "--dilate", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "images_exclude" / "cam0" / "f0.png").is_file()
    assert "done 1, skipped 0, failed 0 of 1" in result.stdout
    # the refusals in this process (main as the subprocess runs it): exit 2, one line
    assert main(["exclude", str(tmp_path / "images"), "--model", str(seg_models["upernet"]),
                 "--classes", "tree"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("depthprior exclude: error:") and "\n" not in error and "it knows: wall, sky" in error
    with pytest.raises(SystemExit) as parsed:
        build_parser().parse_args(["exclude", str(tmp_path), "--dilate", "-1"])
    assert parsed.value.code == 2


def test_generate_exclude_segments_the_frames_it_reads_once(tmp_path, seg_models, tiny_model, monkeypatch):
    from conftest import TEST_INPUT_SIZE

    from depthprior.exclusion import run as exclusion_run
    from depthprior.exclusion.run import ExcludeJob
    from depthprior.priors import frames as frame_reading
    from depthprior.steps import run_generate

    sky, person = frames(tmp_path / "images", count=3)
    decoded = []
    for module in (frame_reading, exclusion_run):
        original = module.decode_rgb
        monkeypatch.setattr(module, "decode_rgb", lambda path, *a, _o=original, **k: decoded.append(path) or _o(path, *a, **k))
    job = ExcludeJob(("sky", "person"), settings(seg_models["upernet"], input_size=32))
    out = tmp_path / "depths"
    with forced_logits():
        result = run_generate(tmp_path / "images", out, model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                              progress=False, device="cpu", exclude=job)
    assert result.exit_code == 0, result.format()
    assert len(decoded) == 3  # one read per frame for both models
    masks = tmp_path / "depths_exclude"
    assert result.summary.exclusion.output == masks and result.summary.exclusion.done == 3
    assert np.array_equal(read(masks / "cam0" / "f2.png") == 0, sky | person)
    assert "exclusion masks: done 3" in result.format()
    (masks / "cam1" / "f1.png").unlink()  # priors all done: only that frame is read again
    decoded.clear()
    with forced_logits():
        again = run_generate(tmp_path / "images", out, model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                             progress=False, device="cpu", exclude=job)
    assert (again.summary.skipped, again.summary.exclusion.done, again.summary.exclusion.skipped) == (3, 1, 2)
    assert [Path(path).name for path in decoded] == ["f1.png"]
    with pytest.raises(UsageError, match="other settings"):
        run_generate(tmp_path / "images", out, model=str(tiny_model), input_size=TEST_INPUT_SIZE,
                     progress=False, device="cpu", exclude=ExcludeJob(("car",), job.settings))
    from depthprior.priors.distributed import RaySettings

    with pytest.raises(UsageError, match="without --ray"):
        run_generate(tmp_path / "images", tmp_path / "ray-depths", model=str(tiny_model), progress=False,
                     exclude=job, ray=RaySettings())
    assert not (tmp_path / "ray-depths_exclude").exists()
    args = build_parser().parse_args(["generate", "i", "o", "--exclude", "--exclude-model", "m", "--dilate", "2"])
    assert (args.exclude, args.seg_model, args.dilate) == ("sky,person", "m", 2)


@pytest.mark.parametrize("size", [(50, 77), (7, 5), (16, 24), (1, 90), (113, 2)])
def test_group_map_is_the_argmax_of_the_resized_label_scores(size, monkeypatch):
    """The blend of only the pixels whose four cells disagree equals transformers' resize of
    every label's score plane and argmax (up-, down- and same-size; a label in two groups
    answers for the first)."""
    import torch

    from depthprior.exclusion import segmenter

    monkeypatch.setattr(segmenter, "BLEND_BUDGET", 4096)  # several bands and chunks
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(150, 16, 24, generator=generator)
    scores[:, :8, :12] += torch.arange(150.0)[:, None, None] * 0.01  # a smooth corner too
    lookup = segmenter._group_lookup(150, [[3, 7, 149], [7, 20]], torch)
    found = segmenter._group_map(scores, *size, lookup, torch)
    resized = torch.nn.functional.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
    assert torch.equal(found, lookup[resized.argmax(0)]) and lookup[7] == 1 and lookup[20] == 2


@pytest.mark.parametrize("labels,groups", [(150, [[2], [12]]), (3, [[0], [1, 2]]), (2, [[1]]), (1, [[0]])])
def test_group_map_of_smooth_regions_is_the_argmax_of_the_resized_label_scores(labels, groups):
    """Scores shaped like a trained model's (regions where one label leads, edges between
    them, noise) and groups that cover every label or none of some: the quads whose group is
    decided without blending and the edge pixels blended give the resize's argmax."""
    import torch

    from depthprior.exclusion import segmenter

    generator = torch.Generator().manual_seed(labels)
    rows, cols = 24, 37
    coarse = torch.randn(1, labels, 4, 5, generator=generator) * 6
    scores = torch.nn.functional.interpolate(coarse, size=(rows, cols), mode="bilinear")[0]
    scores += 0.3 * torch.randn(labels, rows, cols, generator=generator)
    lookup = segmenter._group_lookup(labels, groups, torch)
    for size in [(131, 203), (24, 37), (17, 29)]:
        found = segmenter._group_map(scores, *size, lookup, torch)
        resized = torch.nn.functional.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
        assert torch.equal(found, lookup[resized.argmax(0)]), size
    quads = segmenter._quad_groups(scores, lookup, torch)
    assert 0 < (quads == segmenter.MIXED).float().mean() < 0.5 or labels == 1  # most quads decided at once


@pytest.mark.hostile
@pytest.mark.parametrize("where", ["images", "images/cam0/..", "parent"])
def test_an_output_folder_holding_the_images_is_refused_saying_so(tmp_path, seg_models, capsys, where):
    """-o IMAGES (or a folder above it) would write f0.png masks over the frames: refused in one
    line that says so and what to pass instead; no frame is touched."""
    frames(tmp_path / "images", count=2)
    before = (tmp_path / "images" / "cam0" / "f0.png").read_bytes()
    output = tmp_path if where == "parent" else tmp_path / where
    assert main(["exclude", str(tmp_path / "images"), "-o", str(output), "--model",
                 str(seg_models["segformer"])]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "holds the images" in error and "images_exclude" in error, error
    assert (tmp_path / "images" / "cam0" / "f0.png").read_bytes() == before


@pytest.mark.hostile
def test_a_folder_named_exclude_json_is_refused_before_any_frame_is_segmented(tmp_path, seg_models):
    """It read as 'no report yet': every frame was segmented and written, then the report could
    not be, and the run ended in 'cannot write' with masks no consumer accepts."""
    frames(tmp_path / "images", count=1)
    (tmp_path / "masks" / "exclude.json").mkdir(parents=True)
    with pytest.raises(FileFormatError, match="exclude.json is a folder, not a file") as caught:
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]))
    assert "\n" not in str(caught.value) and "depthprior exclude" in str(caught.value)
    assert not (tmp_path / "masks" / "cam0").exists()  # nothing segmented
    with pytest.raises(FileFormatError, match="is a folder"):
        ExclusionFolder(tmp_path / "masks")


@pytest.mark.hostile
@pytest.mark.parametrize("report", ["consistency.json", "depthprior.json"])
def test_an_output_folder_of_another_command_is_refused_untouched(tmp_path, seg_models, report):
    """-o a consistency mask folder or a generate depth folder: its key.png files (confidence
    masks, depth priors) have the masks' names and were overwritten. Refused in one line."""
    frames(tmp_path / "images", count=1)
    other = tmp_path / "other"
    (other / "cam0").mkdir(parents=True)
    (other / "cam0" / "f0.png").write_bytes(b"not ours")
    (other / report).write_text("{}")
    with pytest.raises(UsageError, match=f"holds {report}") as caught:
        exclude(tmp_path / "images", other, settings=settings(seg_models["segformer"]))
    assert "\n" not in str(caught.value) and "another -o" in str(caught.value)
    assert (other / "cam0" / "f0.png").read_bytes() == b"not ours" and not (other / "exclude.json").exists()


@pytest.mark.hostile
@pytest.mark.parametrize("value", ["3", 2.5, True, float("nan")])
def test_a_dilate_or_input_size_that_is_not_an_integer_is_one_line_from_the_api(tmp_path, seg_models, value):
    frames(tmp_path / "images", count=1)
    with pytest.raises(UsageError, match="--dilate must be an integer"):
        exclude(tmp_path / "images", tmp_path / "masks", dilate=value, settings=settings(seg_models["segformer"]))
    with pytest.raises(UsageError, match="--seg-input-size must be an integer"):
        SegmenterSettings(model=str(seg_models["segformer"]), input_size=value).check()
    assert not (tmp_path / "masks").exists()


@pytest.mark.hostile
def test_a_forged_key_in_exclude_json_is_malformed_and_never_deletes_a_user_file(tmp_path, seg_models, capsys):
    frames(tmp_path / "images", count=2)
    model = settings(seg_models["segformer"])
    exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    report = tmp_path / "masks" / "exclude.json"
    document = json.loads(report.read_text())
    document["images"]["gone.png"] = {**document["images"]["cam0/f0.png"], "key": "userfile"}
    report.write_text(json.dumps(document))
    user = tmp_path / "masks" / "userfile.png"
    user.write_bytes(b"the user's own file")
    with pytest.raises(FileFormatError, match="exclude.json is malformed") as raised:
        exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    assert raised.value.exit_code == 2 and "\n" not in str(raised.value) and "--overwrite" in str(raised.value)
    assert user.read_bytes() == b"the user's own file"
    with pytest.raises(FileFormatError):
        ExclusionFolder(tmp_path / "masks")
    # --overwrite starts afresh, and removes nothing it did not record writing
    summary = exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1, overwrite=True)
    assert summary.exit_code == 0 and summary.done == 2
    assert user.read_bytes() == b"the user's own file"
    # a failed entry (no mask written) of an image gone: its key's file is not this command's
    document = json.loads(report.read_text())
    document["images"]["userfile.png"] = {"key": "userfile", "status": "failed", "reason": "x"}
    report.write_text(json.dumps(document))
    exclude(tmp_path / "images", tmp_path / "masks", settings=model, workers=1)
    assert user.read_bytes() == b"the user's own file"


@pytest.mark.hostile
def test_synonyms_are_one_class_and_the_identity_is_their_label_ids(tmp_path, seg_models):
    sky, person = frames(tmp_path / "images")
    model = settings(seg_models["upernet"], input_size=32)
    with forced_logits():
        summary = exclude(tmp_path / "images", tmp_path / "masks", classes=["pedestrian", "human", "sky"],
                          settings=model, workers=1)
    fractions = summary.fractions["cam1/f1.png"]
    assert sorted(fractions) == ["pedestrian", "sky", "total"]  # human is pedestrian: one column
    assert fractions["pedestrian"] == pytest.approx(person.mean())
    assert "human" not in summary.format() and "pedestrian" in summary.format()  # not cut to 9
    with forced_logits():  # people then person: the same label ids, so the same masks: resumed
        again = exclude(tmp_path / "images", tmp_path / "masks", classes=["sky", "person"], settings=model,
                        workers=1)
    assert (again.done, again.skipped) == (0, 2)
    assert sorted(again.fractions["cam1/f1.png"]) == ["person", "sky", "total"]
    assert again.fractions["cam1/f1.png"]["person"] == pytest.approx(person.mean())
    assert json.loads((tmp_path / "masks" / "exclude.json").read_text())["identity"]["classes"] == [[1], [2]]


@pytest.mark.hostile
def test_a_huge_seg_input_size_is_refused_in_one_line_before_anything_is_made(tmp_path, seg_models, capsys):
    from depthprior.exclusion.segmenter import MAX_INPUT_SIZE

    frames(tmp_path / "images", count=1)
    with pytest.raises(UsageError, match=f"--seg-input-size 99999 is 100000 .* outside 32 to {MAX_INPUT_SIZE}"):
        SegmenterSettings(model=str(seg_models["segformer"]), input_size=99999).check()
    capsys.readouterr()
    assert main(["exclude", str(tmp_path / "images"), "-o", str(tmp_path / "masks"), "--model",
                 str(seg_models["segformer"]), "--seg-input-size", "99999"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--seg-input-size" in error
    assert not (tmp_path / "masks").exists()


@pytest.mark.hostile
def test_generate_refuses_bad_exclusion_options_before_making_out(tmp_path, seg_models, tiny_model, capsys):
    frames(tmp_path / "images", count=1)
    base = ["generate", str(tmp_path / "images"), "--model", str(tiny_model), "--device", "cpu",
            "--exclude-model", str(seg_models["segformer"])]
    cases = [(["--exclude", "bogus"], "has no class 'bogus'"), (["--exclude", ""], "--exclude is empty"),
             (["--exclude", "--exclude-model", str(tiny_model)], "semantic-segmentation"),
             (["--exclude", "--seg-input-size", "99999"], "--seg-input-size")]
    for index, (extra, message) in enumerate(cases):
        out = tmp_path / f"out{index}"
        capsys.readouterr()
        assert main([*base, str(out), *extra]) == 2, extra
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error and "--classes" not in error, error
        assert not out.exists() and not (tmp_path / f"out{index}_exclude").exists()


@pytest.mark.hostile
def test_a_dilate_above_its_bound_is_refused_in_one_line_before_anything_is_made(tmp_path, seg_models, tiny_model,
                                                                                 capsys):
    """Before: `--dilate 99999999` was accepted and every frame with one excluded pixel was
    excluded whole, in silence (generate --exclude and exclude alike)."""
    from depthprior.exclusion.masks import MAX_DILATE
    from depthprior.exclusion.run import ExcludeJob, check_options

    frames(tmp_path / "images", count=1)
    model = settings(seg_models["segformer"])
    check_options(ExcludeJob(settings=model, dilate=MAX_DILATE))  # the bound itself is allowed
    for value in (MAX_DILATE + 1, 99999999):
        message = f"--dilate must be 0 to {MAX_DILATE} pixels, not {value}"
        with pytest.raises(UsageError, match=message):
            exclude(tmp_path / "images", tmp_path / "masks", dilate=value, settings=model)
        with pytest.raises(UsageError, match=message):
            check_options(ExcludeJob(settings=model, dilate=value))
        for argv in (["exclude", str(tmp_path / "images"), "-o", str(tmp_path / "masks"), "--model",
                      str(seg_models["segformer"]), "--dilate", str(value)],
                     ["generate", str(tmp_path / "images"), str(tmp_path / "out"), "--model", str(tiny_model),
                      "--device", "cpu", "--exclude", "--exclude-model", str(seg_models["segformer"]),
                      "--dilate", str(value)]):
            capsys.readouterr()
            assert main(argv) == 2, argv
            error = capsys.readouterr().err.strip()
            assert len(error.splitlines()) == 1 and message in error, error
    assert not any((tmp_path / name).exists() for name in ("masks", "out", "out_exclude"))


@pytest.mark.hostile
def test_the_seg_input_size_bounds_hold_for_the_rounded_size(seg_models):
    """Before: the bounds were checked before rounding to the nearest multiple of 32: 2049 (the
    network is given 2048) was refused as "above 2048", and 16 to 31 (given 32) as "at least 32"."""
    from depthprior.exclusion.segmenter import MAX_INPUT_SIZE, used_input_size

    for size in (16, 31, 32, MAX_INPUT_SIZE, MAX_INPUT_SIZE + 1, MAX_INPUT_SIZE + 15):
        SegmenterSettings(model=str(seg_models["segformer"]), input_size=size).check()
        assert 32 <= used_input_size(size) <= MAX_INPUT_SIZE
    for size, used in ((15, 0), (MAX_INPUT_SIZE + 16, MAX_INPUT_SIZE + 32)):
        with pytest.raises(UsageError, match=f"--seg-input-size {size} is {used} to the nearest multiple of 32, "
                                             f"outside 32 to {MAX_INPUT_SIZE}: give 16 to {MAX_INPUT_SIZE + 15}"):
            SegmenterSettings(model=str(seg_models["segformer"]), input_size=size).check()


def test_a_16_bit_exclusion_mask_says_to_rerun_depthprior_exclude(tmp_path):
    from depthprior.exclusion.masks import ExclusionFolder, ExclusionMissing

    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((8, 8), np.uint16))
    (tmp_path / "masks" / "exclude.json").write_text(json.dumps(
        {"version": 1, "identity": {}, "images": {"a.jpg": {"key": "a", "status": "ok", "size": [8, 8]}}}))
    with pytest.raises(ExclusionMissing) as raised:
        ExclusionFolder(tmp_path / "masks").kept("a", (8, 8))
    assert "depthprior exclude" in str(raised.value) and "consistency" not in str(raised.value)


@pytest.mark.hostile
def test_frames_of_other_extensions_are_read_with_ext(tmp_path, seg_models):
    """The 'no images' line says to add extensions with --ext: exclude takes it, as generate and
    verify do (before: 'unrecognized arguments: --ext', and .tif frames could not be masked)."""
    rgb = frame()[0]
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f0.tif"), rgb[:, :, ::-1])
    with pytest.raises(UsageError, match="no images found.*--ext"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]))
    done = exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]),
                   extensions=["tif"])
    assert done.done == 1 and read(tmp_path / "masks" / "f0.png").shape == rgb.shape[:2]
    assert build_parser().parse_args(["exclude", "i", "--ext", ".tif", "--ext", "webp"]).ext == [".tif", "webp"]


@pytest.mark.hostile
@pytest.mark.parametrize("ext", ["", ".", "*.tif", ".t/f"])
def test_an_ext_that_is_no_extension_is_one_line(tmp_path, seg_models, ext):
    """Before: accepted in silence, so a typo like --ext '*.tif' skipped every .tif frame."""
    frames(tmp_path / "images", count=1)
    with pytest.raises(UsageError, match=r"--ext .* is not a file extension: give one like \.tif"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"]),
                extensions=[ext])
    assert not (tmp_path / "masks").exists()


@pytest.mark.hostile
def test_a_small_seg_input_size_has_one_bound_and_a_rounded_one_is_recorded_as_used(tmp_path, seg_models, capsys):
    """Before: 0 said "at least 1" (argparse); 33, used as 32, was recorded as 33, so a rerun
    with 32 was refused as other settings."""
    frames(tmp_path / "images")
    for size in ("0", "15"):
        capsys.readouterr()
        assert main(["exclude", str(tmp_path / "images"), "-o", str(tmp_path / "masks"), "--model",
                     str(seg_models["segformer"]), "--seg-input-size", size]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"--seg-input-size {size} is 0 to the nearest multiple of 32, " \
            "outside 32 to 2048: give 16 to 2063" in error, error
    first = exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"], 33),
                    workers=1)
    assert first.done == 2
    assert json.loads((tmp_path / "masks" / "exclude.json").read_text())["identity"]["input_size"] == 32
    again = exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"], 32),
                    workers=1)
    assert (again.done, again.skipped) == (0, 2)
    # a folder of an earlier version recorded 33 as given: its masks came from another rule
    report = tmp_path / "masks" / "exclude.json"
    data = json.loads(report.read_text())
    data["identity"]["input_size"] = 33
    report.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="other settings"):
        exclude(tmp_path / "images", tmp_path / "masks", settings=settings(seg_models["segformer"], 33), workers=1)


@pytest.mark.hostile
def test_generate_refuses_exclusion_options_without_exclude(tmp_path, seg_models, tiny_model, capsys):
    """Before: --dilate, --seg-input-size, --exclude-model and --seg-revision were ignored in
    silence without --exclude, as if no masks were asked for because of a typo."""
    frames(tmp_path / "images", count=1)
    base = ["generate", str(tmp_path / "images"), str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu"]
    cases = [(["--dilate", "2"], "--dilate applies with --exclude"),
             (["--dilate", "0"], "--dilate applies with --exclude"),
             (["--seg-input-size", "64"], "--seg-input-size applies with --exclude"),
             (["--exclude-model", str(seg_models["segformer"]), "--seg-revision", "main"],
              "--exclude-model, --seg-revision apply with --exclude")]
    for extra, message in cases:
        capsys.readouterr()
        assert main([*base, *extra]) == 2, extra
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error, error
        assert not (tmp_path / "out").exists()
