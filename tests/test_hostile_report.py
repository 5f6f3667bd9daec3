"""Hostile cases for depthprior report: priors and masks of the wrong size or a bomb's header
(that frame fails, the page is written), nested JSON (one line, exit 2), its output folder
(lock, write errors, pictures of an earlier report), folders another tool wrote, names the file
system refuses, and generate --report with the masks it just made."""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import run_cli, one_error_line
from scenes import make_scene

from depthprior.cli import main
from depthprior.errors import WriteError
from depthprior.files import localfile, outputs
from depthprior.files.outputs import OutputLock
from depthprior.priors.manifest import MANIFEST_NAME, ImageRecord, Manifest
from depthprior.report import report
from depthprior.scene.align import align
from depthprior.scene.confidence import REPORT_NAME as CONSISTENCY_REPORT

pytestmark = pytest.mark.hostile

NESTED = "[" * 100_000


def write_manifest(scene, extra: dict[str, ImageRecord] | None = None) -> None:
    manifest = Manifest(root=scene.depths, identity={"model": "synthetic"}, inputs=str(scene.images))
    for name in scene.names:
        key = scene.key(name)
        manifest.images[name] = ImageRecord(
            status="ok", stem=key, outputs=[key + ".png"], width=scene.prior_width,
            height=scene.prior_height, raw_min=0.0, raw_max=1.0, levels=60000, precision_bits=15.9)
    manifest.images.update(extra or {})
    manifest.save()


def write_mask(scene, masks: Path, name: str, shape: tuple[int, int] | None = None) -> None:
    height, width = shape or (scene.prior_height, scene.prior_width)
    mask = np.full((height, width), 255, np.uint8)
    mask[:, : max(1, width // 4)] = 0
    masks.mkdir(exist_ok=True)
    cv2.imwrite(str(masks / (scene.key(name) + ".png")), mask)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    scene = make_scene(tmp_path_factory.mktemp("report-hostile") / "scene", n_images=4,
                       width=96, height=72, points_per_image=60)
    write_manifest(scene)
    align(scene.sparse, scene.depths)
    return scene


@pytest.fixture
def scene(base, tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(base.root, root, symlinks=True)
    copy = dataclasses.replace(base, root=root, sparse=root / "sparse" / "0",
                               depths=root / "depths", images=root / "images")
    write_manifest(copy)  # its manifest names the copy's frames
    return copy



def pictures(summary, kind: str) -> list[str]:
    return sorted(p.name for p in summary.assets.iterdir() if p.name.endswith(f"-{kind}.jpg"))


def temporaries_fail(monkeypatch, code: int, after: int = 0) -> None:
    """open() of a temporary in files.outputs fails with `code` after `after` good ones."""
    real_open = open
    seen = []

    def fake_open(path, *args, **kwargs):
        if outputs.TMP_MARK in str(path):
            seen.append(path)
            if len(seen) > after:
                raise OSError(code, "simulated", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(localfile, "open", fake_open, raising=False)


# ---------------------------------------------------------------- priors and masks

def test_a_prior_declaring_a_huge_size_fails_that_frame_only(scene):
    path = scene.depth_path(scene.names[1])
    data = bytearray(path.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR says 20000x20000
    path.write_bytes(bytes(data))
    summary = report(scene.depths, sparse=scene.sparse)
    assert summary.path.is_file()
    assert len(pictures(summary, "prior")) == len(scene.names) - 1
    assert any("20000x20000" in note for note in summary.notes)


@pytest.mark.parametrize("shape", [(1, 1), "transposed"])
def test_a_mask_of_another_size_is_never_stretched(scene, tmp_path, shape):
    masks = tmp_path / "masks"
    write_mask(scene, masks, scene.names[0])
    bad = (scene.prior_width, scene.prior_height) if shape == "transposed" else shape
    write_mask(scene, masks, scene.names[1], bad)
    summary = report(scene.depths, masks=masks)
    assert pictures(summary, "mask") == ["00000-mask.jpg"]
    note = [n for n in summary.notes if scene.names[1] in n]
    assert note and "mask" in note[0] and f"{bad[1]}x{bad[0]}" in note[0]


def test_a_16_bit_or_colour_mask_fails_that_frame(scene, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    shape = (scene.prior_height, scene.prior_width)
    cv2.imwrite(str(masks / (scene.key(scene.names[0]) + ".png")), np.full(shape, 60000, np.uint16))
    cv2.imwrite(str(masks / (scene.key(scene.names[1]) + ".png")), np.zeros((*shape, 3), np.uint8))
    summary = report(scene.depths, masks=masks)
    assert pictures(summary, "mask") == []
    assert sum("mask not shown" in note for note in summary.notes) == 2


# ---------------------------------------------------------------- JSON

@pytest.mark.parametrize("where", ["manifest", "consistency", "consistency folder"])
def test_nested_or_folder_json_is_one_line_exit_2(scene, tmp_path, where):
    masks = tmp_path / "masks"
    write_mask(scene, masks, scene.names[0])
    if where == "manifest":
        (scene.depths / MANIFEST_NAME).write_text(NESTED)
        named = MANIFEST_NAME
    elif where == "consistency":
        (masks / CONSISTENCY_REPORT).write_text(NESTED)
        named = CONSISTENCY_REPORT
    else:
        (masks / CONSISTENCY_REPORT).mkdir()
        named = CONSISTENCY_REPORT
    result = run_cli("report", scene.depths, "--masks", masks)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert named in line and ("nested" in line or "folder" in line)


# ---------------------------------------------------------------- the output folder

def test_a_second_report_into_the_same_folder_is_refused(scene):
    with OutputLock(scene.depths):
        result = run_cli("report", scene.depths)
    assert result.returncode == 2
    assert "in use by another depthprior run" in one_error_line(result)


def test_a_write_error_is_one_line_naming_the_file(scene, monkeypatch, capsys):
    temporaries_fail(monkeypatch, errno.ENOSPC)
    code = main(["report", str(scene.depths)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "disk is full" in err[0] and "report_files" in err[0]


def test_a_failed_rerun_keeps_the_earlier_page_whole(scene, tmp_path, monkeypatch):
    masks = tmp_path / "masks"
    write_mask(scene, masks, scene.names[0])
    first = report(scene.depths, sparse=scene.sparse, masks=masks)
    html = first.path.read_text()
    temporaries_fail(monkeypatch, errno.ENOSPC, after=3)  # a few pictures, then the disk is full
    with pytest.raises(WriteError):
        report(scene.depths, sparse=scene.sparse)
    assert first.path.read_text() == html
    for src in re.findall(r'src="(report_files/[^"]+)"', html):
        assert (first.path.parent / src).is_file(), src


def test_pictures_a_rerun_no_longer_makes_are_removed_and_nothing_else(scene, tmp_path):
    masks = tmp_path / "masks"
    write_mask(scene, masks, scene.names[0])
    first = report(scene.depths, masks=masks)
    assert pictures(first, "mask")
    keep = first.assets / "notes.txt"
    keep.write_text("mine")
    second = report(scene.depths)
    assert pictures(second, "mask") == [] and keep.read_text() == "mine"


# ---------------------------------------------------------------- folders and names

def test_a_folder_another_tool_wrote_is_reported_from_its_pngs(scene):
    (scene.depths / MANIFEST_NAME).unlink()
    result = run_cli("report", scene.depths, "--images", scene.images, "--sparse", scene.sparse)
    assert result.returncode == 0, result.stderr
    html = (scene.depths / "report.html").read_text()
    assets = sorted(p.name for p in (scene.depths / "report_files").iterdir())
    assert sum(n.endswith("-prior.jpg") for n in assets) == len(scene.names)
    assert sum(n.endswith("-photo.jpg") for n in assets) == len(scene.names)
    assert sum(n.endswith("-fit.jpg") for n in assets) == len(scene.names)
    assert scene.names[0] in html


def test_a_link_back_up_lists_each_prior_once(scene):
    (scene.depths / MANIFEST_NAME).unlink()
    (scene.depths / "again").symlink_to(".")
    summary = report(scene.depths)
    assert summary.frames == len(scene.names)


def test_a_folder_with_no_priors_at_all_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("report", tmp_path / "empty")
    assert result.returncode == 2
    assert "holds no depth priors" in one_error_line(result)


def test_a_manifest_key_too_long_for_the_file_system_fails_that_frame(scene):
    long_name = "y" * 10_000 + ".jpg"
    record = ImageRecord(status="ok", stem="y" * 10_000, outputs=["y" * 10_000 + ".png"],
                         width=scene.prior_width, height=scene.prior_height, raw_min=0.0,
                         raw_max=1.0, levels=60000, precision_bits=15.9)
    write_manifest(scene, {long_name: record})
    summary = report(scene.depths)
    assert summary.frames == len(scene.names) + 1
    assert len(pictures(summary, "prior")) == len(scene.names)
    assert any("too long" in note for note in summary.notes)


def test_generate_report_shows_the_masks_consistency_just_made(scene, monkeypatch):
    from depthprior import steps

    def fake_generate(images, out, **options):  # the priors are the scene's
        return SimpleNamespace(interrupted=False, out=Path(out), images=Path(images), exclusion=None)

    monkeypatch.setattr(steps, "generate", fake_generate)
    run = steps.run_generate(scene.images, scene.depths, align=scene.sparse, consistency=True,
                             report=True)
    assert run.consistency is not None and run.consistency_error is None
    made = sorted(p.name for p in run.consistency.output.glob("*.png"))
    assert made
    shown = pictures(run.report, "mask")
    assert len(shown) == len(made)
