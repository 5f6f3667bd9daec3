"""Hostile cases of the training API (issue 20): priors deleted or damaged after startup checks,
masks not of their prior's size or kind, images consistency excluded."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from test_training import ramp, write_priors

from depthprior.errors import FileFormatError
from depthprior.training import DepthPriors, DepthSupervision, MissingPriorError

pytestmark = pytest.mark.hostile

NAMES = ["a.jpg", "b.jpg"]


@pytest.fixture
def priors(tmp_path):
    root = write_priors(tmp_path / "depths", {name: ramp(12, 16, seed=i) for i, name in enumerate(NAMES)})
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in NAMES:
        cv2.imwrite(str(masks / (Path(name).stem + ".png")), np.full((12, 16), 255, np.uint8))
    return root, masks


def consistency_json(masks: Path, excluded: str) -> None:
    images = {name: {"key": Path(name).stem, "status": "checked"} for name in NAMES}
    images[excluded] = {"key": Path(excluded).stem, "status": "excluded",
                        "reason": "unreliable or failed fit: failed fit in depth_params.json"}
    (masks / "consistency.json").write_text(json.dumps({"version": 1, "images": images}))


@pytest.mark.parametrize("damage", ["deleted", "garbage", "rgb"])
def test_check_finds_a_prior_deleted_or_damaged(priors, damage):
    root, _masks = priors
    prior = root / "b.png"
    if damage == "deleted":
        prior.unlink()
    elif damage == "garbage":
        prior.write_bytes(b"\x89PNG not really")
    else:
        cv2.imwrite(str(prior), np.zeros((12, 16, 3), np.uint8))
    supervision = DepthSupervision(root, loss="pearson")
    with pytest.raises(MissingPriorError, match="b"):
        supervision.check(NAMES)


@pytest.mark.parametrize("mask", [np.full((1, 1), 255, np.uint8), np.full((16, 12), 255, np.uint8),
                                  np.full((12, 16), 65535, np.uint16), np.full((12, 16, 3), 255, np.uint8)],
                         ids=["1x1", "transposed", "uint16", "rgb"])
def test_mask_not_of_its_priors_size_or_kind_is_refused_not_stretched(priors, mask):
    root, masks = priors
    cv2.imwrite(str(masks / "b.png"), mask)
    loader = DepthPriors(root, masks=masks)
    assert loader.confidence("a.jpg", (24, 32)).shape == (1, 24, 32)
    with pytest.raises(MissingPriorError, match="b.png"):
        loader.confidence("b.jpg", (24, 32))
    with pytest.raises(MissingPriorError, match="b.png"):
        DepthSupervision(root, loss="pearson", masks=masks).check(NAMES)


def test_pearson_with_masks_skips_an_image_consistency_excluded(priors):
    root, masks = priors
    (masks / "b.png").unlink()  # consistency writes no mask for an image it excludes
    consistency_json(masks, excluded="b.jpg")
    supervision = DepthSupervision(root, loss="pearson", masks=masks)
    supervision.check(NAMES)
    render = torch.rand(1, 12, 16, requires_grad=True)
    loss = supervision("b.jpg", render, 0)
    assert loss.item() == 0.0
    assert "excluded" in supervision.last.skipped and "rerun" not in supervision.last.skipped
    assert supervision("a.jpg", render, 0).item() != 0.0


def test_nested_consistency_json_in_the_mask_folder_is_one_line(priors):
    root, masks = priors
    (masks / "consistency.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(FileFormatError, match="consistency.json") as caught:
        DepthSupervision(root, loss="pearson", masks=masks)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- verify --masks (the mask check)

@pytest.mark.parametrize("damage", ["garbage", "truncated", "1x1", "folder"])
def test_verify_fails_an_image_whose_mask_is_corrupt(priors, tmp_path, damage):
    from depthprior.images import ImageItem
    from depthprior.priors.manifest import Manifest
    from depthprior.priors.verify import check_outputs

    root, masks = priors
    mask = masks / "b.png"
    good = mask.read_bytes()
    if damage == "garbage":
        mask.write_bytes(b"not a png at all")
    elif damage == "truncated":
        mask.write_bytes(good[:40])
    elif damage == "1x1":
        cv2.imwrite(str(mask), np.full((1, 1), 255, np.uint8))
    else:
        mask.unlink()
        mask.mkdir()
    items = [ImageItem(tmp_path / name, name) for name in NAMES]
    manifest = Manifest.load(root)
    for record in manifest.images.values():
        record.outputs = [f"{record.stem}.png"]
    report = check_outputs(manifest, items, masks=masks, sheet=tmp_path / "sheet.png")
    assert not report.ok
    failed = [check for check in report.checks if check.problems]
    assert [check.name for check in failed] == ["b.jpg"]
    assert str(mask) in failed[0].problems[0]
