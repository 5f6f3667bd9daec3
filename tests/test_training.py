"""depthprior.training: the loader against what generate/align write and what 3DGS does, the
losses against hand-computed values and their invariances, and DepthSupervision end to end."""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depthprior.priors import store
from depthprior.priors.manifest import MANIFEST_NAME, ImageRecord, Manifest
from depthprior.errors import UnsafePathError, UsageError
from depthprior.training import (
    DepthPriors,
    DepthSupervision,
    MissingPriorError,
    depth_weight_schedule,
    edge_aware_weight,
    l1_inverse_depth_loss,
    pearson_depth_loss,
    ssi_loss,
)


def write_priors(root: Path, maps: dict[str, np.ndarray], failed: tuple[str, ...] = ()) -> Path:
    """Exactly what generate writes: encode_inverse_depth + write_png16 + a Manifest."""
    manifest = Manifest(root=root, identity={"backend": "test"})
    for name, values in maps.items():
        stem = str(Path(name).with_suffix("").as_posix())
        encoded = store.encode_inverse_depth(values.astype(np.float32), "disparity")
        store.write_png16(root / f"{stem}.png", encoded.png)
        manifest.images[name] = ImageRecord(
            status="ok", stem=stem, width=values.shape[1], height=values.shape[0],
            raw_min=encoded.raw_min, raw_max=encoded.raw_max,
        )
    for name in failed:
        stem = str(Path(name).with_suffix("").as_posix())
        manifest.images[name] = ImageRecord(status="failed", stem=stem, error="decode error")
    manifest.save()
    return root


def ramp(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return 0.2 + 0.05 * x + 0.02 * y + 0.01 * rng.random((h, w), dtype=np.float32)


def png_of(root: Path, stem: str) -> np.ndarray:
    return cv2.imread(str(root / f"{stem}.png"), cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------- schedule

def test_schedule_matches_3dgs_expon_schedule():
    assert depth_weight_schedule(0) == pytest.approx(1.0)
    assert depth_weight_schedule(30000) == pytest.approx(0.01)
    assert depth_weight_schedule(15000) == pytest.approx(0.1)  # geometric midpoint
    assert depth_weight_schedule(7000) == pytest.approx(0.01 ** (7000 / 30000))
    assert depth_weight_schedule(60000) == pytest.approx(0.01)  # clamped after max_steps
    assert depth_weight_schedule(-1) == 0.0
    assert depth_weight_schedule(5, init=0.0, final=0.0) == 0.0
    assert depth_weight_schedule(50, init=2.0, final=0.5, max_steps=100) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        depth_weight_schedule(5, init=0.0, final=0.01)


# ---------------------------------------------------------------- losses: hand-computed values

def test_l1_is_3dgs_masked_mean_over_all_pixels():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    target = torch.ones(1, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    loss = l1_inverse_depth_loss(pred, target, mask)
    assert loss.item() == pytest.approx((0 + 0 + 2 + 3) / 4)  # masked pixel still counts in N
    loss.backward()
    assert torch.equal(pred.grad, torch.tensor([[[0.0, 0.0], [0.25, 0.25]]]))
    assert l1_inverse_depth_loss(pred, target).item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert l1_inverse_depth_loss(target, target, mask).item() == 0.0


def test_pearson_hand_computed():
    pred = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 3)
    target = torch.tensor([1.0, 2.0, 4.0]).reshape(1, 1, 3)
    # centred: p = (-1, 0, 1), t = (-4/3, -1/3, 5/3); cov = 3, var_p = 2, var_t = 14/3
    expected = 1 - 3 / math.sqrt(2 * 14 / 3)
    assert pearson_depth_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)
    assert pearson_depth_loss(-pred, target).item() == pytest.approx(2 - expected, abs=1e-6)
    # a zero weight removes a pixel: two points always correlate perfectly
    mask = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 1, 3)
    assert pearson_depth_loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_ssi_hand_computed():
    pred = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 3)
    target = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 1, 3)
    # least squares: s = 3/2, t = 4/3 - 3/2 = -1/6; residuals 1/6, 1/3, 1/6 -> mean 2/9
    assert ssi_loss(pred, target).item() == pytest.approx(2 / 9, abs=1e-6)
    # anti-correlated render: s clamps to 0, loss = mean |pred - mean(pred)| = (4/3+1/3+5/3)/3
    assert ssi_loss(pred, -target).item() == pytest.approx(10 / 9, abs=1e-6)


def test_edge_aware_weight_hand_computed():
    image = torch.zeros(3, 2, 3)
    image[:, :, 2] = 1.0
    weight = edge_aware_weight(image, gamma=2.0)
    assert weight.shape == (1, 2, 3)
    e = math.exp(-2.0)
    assert torch.allclose(weight, torch.tensor([[[1.0, e, e], [1.0, e, e]]]))
    assert torch.equal(edge_aware_weight(torch.full((3, 4, 4), 0.3)), torch.ones(1, 4, 4))
    assert edge_aware_weight(torch.rand(2, 3, 5, 6)).shape == (2, 1, 5, 6)


# ---------------------------------------------------------------- losses: zero, invariance, grads

@pytest.mark.parametrize("loss", [l1_inverse_depth_loss, pearson_depth_loss, ssi_loss])
def test_losses_are_zero_for_a_perfect_prediction(loss):
    target = torch.rand(1, 9, 11) + 0.1
    mask = (torch.rand(1, 9, 11) > 0.3).float()
    assert loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(target.clone(), target, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_pearson_is_affine_invariant_on_both_sides():
    torch.manual_seed(0)
    pred, target = torch.rand(1, 8, 10), torch.rand(1, 8, 10)
    mask = (torch.rand(1, 8, 10) > 0.2).float()
    base = pearson_depth_loss(pred, target, mask).item()
    assert 0.5 < base < 1.5  # unrelated maps: no correlation
    for a, b in [(3.0, -1.0), (0.01, 5.0), (250.0, 0.0)]:
        assert pearson_depth_loss(a * pred + b, target, mask).item() == pytest.approx(base, abs=1e-5)
        assert pearson_depth_loss(pred, a * target + b, mask).item() == pytest.approx(base, abs=1e-5)
    assert pearson_depth_loss(2 * target + 1, target, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_ssi_is_invariant_to_the_priors_scale_and_shift():
    torch.manual_seed(1)
    pred, target = torch.rand(1, 8, 10), torch.rand(1, 8, 10)
    base = ssi_loss(pred, target).item()
    assert base > 0.05
    for a, b in [(3.0, -1.0), (0.01, 5.0), (250.0, 0.0)]:
        assert ssi_loss(pred, a * target + b).item() == pytest.approx(base, rel=1e-4)
    # an affinely related prior explains the render exactly
    assert ssi_loss(0.5 * target + 2, target).item() == pytest.approx(0.0, abs=1e-6)
    # measured in the render's units: scaling the render scales the loss
    assert ssi_loss(4 * pred, target).item() == pytest.approx(4 * base, rel=1e-4)


def test_batched_losses_average_per_image():
    torch.manual_seed(2)
    pred, target = torch.rand(3, 1, 6, 7), torch.rand(3, 1, 6, 7)
    for loss in (pearson_depth_loss, ssi_loss):
        per_image = [loss(pred[i], target[i]).item() for i in range(3)]
        assert loss(pred, target).item() == pytest.approx(sum(per_image) / 3, rel=1e-5)


@pytest.mark.parametrize("loss", [l1_inverse_depth_loss, pearson_depth_loss, ssi_loss])
def test_gradients_flow_and_match_finite_differences(loss):
    torch.manual_seed(3)
    pred = (torch.rand(1, 4, 5, dtype=torch.float64) + 0.5).requires_grad_()
    target = torch.rand(1, 4, 5, dtype=torch.float64) + 0.1
    mask = torch.ones(1, 4, 5, dtype=torch.float64)
    mask[0, 0, 0] = 0.0
    value = loss(pred, target, mask)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    assert pred.grad[0, 0, 0] == 0 or loss is not l1_inverse_depth_loss
    assert torch.autograd.gradcheck(lambda p: loss(p, target, mask), (pred.detach().requires_grad_(),))


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        l1_inverse_depth_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


# ---------------------------------------------------------------- loader: generate round trip

def test_loader_reads_what_generate_writes(tmp_path):
    maps = {"cam0/a.jpg": ramp(seed=1), "cam0/b.jpg": ramp(seed=2), "c.png": ramp(seed=3)}
    root = write_priors(tmp_path / "depths", maps)
    priors = DepthPriors(root)
    assert priors.names == ["c", "cam0/a", "cam0/b"]
    png = png_of(root, "cam0/a")
    expected = png.astype(np.float32) / 65536
    if os.sep == "/":
        assert "cam0\\a.jpg" not in priors  # on POSIX a backslash is part of the file name
    for name in ("cam0/a.jpg", "cam0/a", "a", "a.jpg", f"cam0{os.sep}a.jpg", "./cam0/a.jpg"):
        got = priors.inverse_depth(name)
        assert got.shape == (1, 12, 16) and got.dtype == torch.float32
        assert np.array_equal(got[0].numpy(), expected), name
    # min-max normalised per image: the near end is 65535 / 65536
    assert got.max().item() == pytest.approx(65535 / 65536)
    # inverse depth: the brighter pixel is the nearer one (larger raw value)
    raw = maps["cam0/a.jpg"]
    i, j = np.unravel_index(raw.argmax(), raw.shape)
    assert png[i, j] == 65535
    prior = priors.get("a")
    assert prior.reliable and not prior.aligned and prior.stem == "cam0/a"


def test_loader_resizes_like_3dgs(tmp_path):
    root = write_priors(tmp_path / "d", {"f.jpg": ramp(20, 30)})
    priors = DepthPriors(root)
    for size in [(10, 15), (40, 60), (7, 31)]:
        got = priors.inverse_depth("f.jpg", size=size)
        invdepth = cv2.imread(str(root / "f.png"), -1).astype(np.float32) / float(2**16)
        reference = cv2.resize(invdepth, (size[1], size[0]))  # 3DGS: cv2.resize(map, (w, h))
        assert got.shape == (1, *size)
        assert np.array_equal(got[0].numpy(), reference)


def test_missing_priors_are_reported_by_name(tmp_path):
    root = write_priors(tmp_path / "d", {"a.jpg": ramp(), "b.jpg": ramp()}, failed=("bad.jpg",))
    priors = DepthPriors(root)
    with pytest.raises(MissingPriorError, match="'zzz.jpg'"):
        priors.get("zzz.jpg")
    with pytest.raises(MissingPriorError, match="generate failed"):
        priors.get("bad.jpg")  # in the manifest, but failed
    assert priors.missing(["a.jpg", "x", "b", "y.png"]) == ["x", "y.png"]
    with pytest.raises(MissingPriorError, match=r"2 image\(s\): 'x', 'y.png'"):
        priors.check(["a", "x", "y.png"])
    (root / "b.png").unlink()  # listed as ok, file gone
    with pytest.raises(MissingPriorError, match="b.png"):
        priors.get("b")
    assert "x" not in priors and "a.jpg" in priors


def test_ambiguous_bare_names_are_not_guessed(tmp_path):
    root = write_priors(tmp_path / "d", {"cam0/f.jpg": ramp(), "cam1/f.jpg": ramp()})
    priors = DepthPriors(root)
    assert priors.missing(["f", "f.jpg"]) == ["f", "f.jpg"]
    assert priors.missing(["cam1/f.jpg", "cam0/f"]) == []


def test_loader_without_manifest_scans_pngs(tmp_path):
    root = tmp_path / "d"
    store.write_png16(root / "sub" / "x.png", np.full((4, 5), 32768, np.uint16))
    (root / "notes.txt").write_text("not a prior")
    priors = DepthPriors(root)
    assert priors.names == ["sub/x"]
    assert priors.inverse_depth("sub/x.jpg").unique().tolist() == [0.5]


# ---------------------------------------------------------------- loader: depth_params

PARAMS = {
    "a": {"scale": 2.0, "offset": 0.1},
    "b": {"scale": 1.0, "offset": -0.05},
    "c": {"scale": 3.0, "offset": 0.0},
    "d": {"scale": 0.0, "offset": 0.0},  # failed fit
    "e": {"scale": 20.0, "offset": 0.0},  # > 5x median
    "f": {"scale": 0.3, "offset": 0.0},  # < 0.2x median (2.0)
}


def reference_3dgs(png: np.ndarray, params: dict, key: str, size=None):
    """The official trainer's steps, written out: dataset_readers median, Camera reliability."""
    scales = np.array([params[k]["scale"] for k in params])
    med = np.median(scales[scales > 0]) if (scales > 0).sum() else 0
    inv = png.astype(np.float32) / float(2**16)
    if size is not None:
        inv = cv2.resize(inv, (size[1], size[0]))
    inv[inv < 0] = 0
    p = params[key]
    reliable = not (p["scale"] < 0.2 * med or p["scale"] > 5 * med)
    if p["scale"] > 0:
        inv = inv * p["scale"] + p["offset"]
    return inv, reliable


def test_params_apply_scale_offset_and_reliability_like_3dgs(tmp_path):
    names = {f"{k}.jpg": ramp(seed=i) for i, k in enumerate("abcdefg")}
    root = write_priors(tmp_path / "depths", names)
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    (sparse / "depth_params.json").write_text(json.dumps(PARAMS))
    for params in (sparse / "depth_params.json", sparse, PARAMS):
        priors = DepthPriors(root, params)
        for key in "abcdef":
            for size in (None, (6, 8)):
                prior = priors.get(f"{key}.jpg", size=size)
                inv, reliable = reference_3dgs(png_of(root, key), PARAMS, key, size)
                assert np.array_equal(prior.inverse_depth[0].numpy(), inv), key
                assert prior.reliable == reliable, key
                assert prior.aligned == (PARAMS[key]["scale"] > 0)
        assert set(priors.unreliable) == {"d", "e", "f", "g"}
        assert "failed fit" in priors.unreliable["d"]
        assert "median" in priors.unreliable["e"]
        assert priors.unreliable["g"] == "no entry in depth_params.json"  # 3DGS would use it raw


def test_all_failed_fits_are_unreliable(tmp_path):
    root = write_priors(tmp_path / "d", {"a.jpg": ramp()})
    priors = DepthPriors(root, {"a": {"scale": 0.0, "offset": 0.0}})
    assert not priors.reliable("a")  # 3DGS: median 0, keeps it, unaligned


def test_bad_params_file_is_one_clear_error(tmp_path):
    root = write_priors(tmp_path / "d", {"a.jpg": ramp()})
    bad = tmp_path / "depth_params.json"
    bad.write_text('{"a": {"scale": "x"}}')
    with pytest.raises(UsageError, match="'a' needs numeric 'scale' and 'offset'"):
        DepthPriors(root, bad)
    with pytest.raises(UsageError, match="depthprior align"):
        DepthPriors(root, tmp_path / "nowhere" / "depth_params.json")


# ---------------------------------------------------------------- loader: hostile depth_params

# stem -> depth_params.json text of its entry, and a word its unreliable reason must hold
UNUSABLE = {
    "huge_offset": ('{"scale": 1.0, "offset": -1e308}', "overflow"),
    "nan_scale": ('{"scale": NaN, "offset": 0.1}', "not a finite number"),
    "inf_offset": ('{"scale": 1.0, "offset": 1e400}', "not a finite number"),
    "absurd_scale": ('{"scale": 1e300, "offset": 0.0}', "overflow"),
    "vanishing_scale": ('{"scale": 1e-30, "offset": 0.5}', "constant"),
    "all_negative": ('{"scale": 1.0, "offset": -5.0}', "negative"),
}


@pytest.mark.hostile
def test_unusable_params_are_reported_and_never_applied(tmp_path):
    names = {f"{k}.jpg": ramp(seed=i) for i, k in enumerate(["good", *UNUSABLE])}
    root = write_priors(tmp_path / "depths", names)
    entries = ", ".join(f'"{stem}": {entry}' for stem, (entry, _) in UNUSABLE.items())
    params = tmp_path / "depth_params.json"
    params.write_text('{"good": {"scale": 2.0, "offset": 0.1}, ' + entries + "}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid value) anywhere
        priors = DepthPriors(root, params)
        assert set(priors.unreliable) == set(UNUSABLE)
        for stem, (_entry, word) in UNUSABLE.items():
            prior = priors.get(stem, size=(6, 8))
            assert not prior.reliable and word in prior.reason, (stem, prior.reason)
            assert not prior.aligned
            raw = cv2.resize(png_of(root, stem).astype(np.float32) / 2**16, (8, 6))
            assert np.array_equal(prior.inverse_depth[0].numpy(), raw)  # never zeros
        good = priors.get("good")
        assert good.reliable and good.aligned
        assert priors.params.median_scale == 1.0  # as 3DGS: median of the positive scales


@pytest.mark.parametrize("key", ["../x", "/etc/x", "a/../../x", "sub/../../x"])
@pytest.mark.hostile
def test_params_keys_outside_the_depth_folder_are_refused(key, tmp_path):
    root = write_priors(tmp_path / "depths", {"a.jpg": ramp()})
    params = tmp_path / "depth_params.json"
    params.write_text(json.dumps({"a": {"scale": 1.0, "offset": 0.0},
                                  key: {"scale": 1.0, "offset": 0.0}}))
    for source in (params, json.loads(params.read_text())):
        with pytest.raises(UnsafePathError, match=re.escape(repr(key))):
            DepthPriors(root, source)


@pytest.mark.hostile
def test_manifest_stems_outside_the_depth_folder_are_refused(tmp_path):
    root = write_priors(tmp_path / "depths", {"a.jpg": ramp()})
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    for name, stem in (("evil.jpg", "../evil"), ("../../evil.jpg", None), ("x.jpg", "/etc/x")):
        record = {**manifest["images"]["a.jpg"], "stem": stem}
        if stem is None:
            del record["stem"]
        broken = {**manifest, "images": {**manifest["images"], name: record}}
        (root / MANIFEST_NAME).write_text(json.dumps(broken))
        with pytest.raises(UsageError, match=re.escape(repr(name))):
            DepthPriors(root)


def test_a_backslash_is_an_ordinary_name_character(tmp_path):
    root = write_priors(tmp_path / "depths", {"a\\b.jpg": ramp()})
    priors = DepthPriors(root, {"a\\b": {"scale": 1.0, "offset": 0.0}})
    assert priors.names == ["a\\b"] and priors.reliable("a\\b.jpg")
    assert (root / "a\\b.png").is_file()


# ---------------------------------------------------------------- DepthSupervision

@pytest.fixture
def scene(tmp_path):
    names = {f"{k}.jpg": ramp(seed=i) for i, k in enumerate("abcdefg")}
    root = write_priors(tmp_path / "depths", names)
    params = tmp_path / "depth_params.json"
    params.write_text(json.dumps(PARAMS))
    return root, params


def test_supervision_l1_equals_3dgs_depth_term(scene):
    root, params = scene
    sup = DepthSupervision(root, lambda_depth=1.0, loss="l1", params=params, max_steps=100)
    render = torch.rand(1, 6, 8, requires_grad=True)
    loss = sup("a.jpg", render, iteration=50)
    inv, _ = reference_3dgs(png_of(root, "a"), PARAMS, "a", (6, 8))
    pure = torch.abs(render - torch.from_numpy(inv)[None]).mean()  # mask of ones
    weight = math.exp(math.log(1.0) * 0.5 + math.log(0.01) * 0.5)
    assert loss.item() == pytest.approx(weight * pure.item(), rel=1e-6)
    loss.backward()
    assert render.grad.abs().sum() > 0
    assert sup.last.name == "a" and sup.last.skipped is None
    assert sup.last.value.item() == pytest.approx(pure.item(), rel=1e-6)


def test_supervision_lambda_and_schedule(scene):
    root, params = scene
    sup = DepthSupervision(root, lambda_depth=0.1, loss="l1", params=params)
    assert sup.weight(0) == pytest.approx(0.1)
    assert sup.weight(30000) == pytest.approx(0.001)
    render = torch.rand(12, 16)
    a = sup("b", render, 0).item()
    b = sup("b", render, 30000).item()
    assert a == pytest.approx(100 * b, rel=1e-5)


def test_supervision_skips_unreliable_images_with_a_zero_loss(scene):
    root, params = scene
    sup = DepthSupervision(root, loss="l1", params=params)
    render = torch.rand(1, 12, 16, requires_grad=True)
    for name in ("d.jpg", "e", "g.jpg"):
        loss = sup(name, render, 10)
        assert loss.item() == 0.0 and not loss.requires_grad
        assert sup.last.skipped
    with pytest.raises(MissingPriorError, match="'nope.jpg'"):
        sup("nope.jpg", render, 10)
    with pytest.raises(MissingPriorError, match="'nope'"):
        sup.check(["a.jpg", "nope"])


def test_supervision_rendered_depth_is_converted(scene):
    root, params = scene
    inv = torch.rand(1, 12, 16) + 0.5
    for loss in ("l1", "pearson", "ssi"):
        s_inv = DepthSupervision(root, loss=loss, params=params)
        s_depth = DepthSupervision(root, loss=loss, params=params, rendered="depth")
        a = s_inv("c", inv, 100).item()
        b = s_depth("c", 1.0 / inv, 100).item()
        assert a == pytest.approx(b, rel=1e-5), loss
    # pixels with no depth (0) are masked, not turned into infinities
    depth = 1.0 / inv
    depth[0, :3] = 0
    s_depth = DepthSupervision(root, loss="ssi", params=params, rendered="depth")
    value = s_depth("c", depth.requires_grad_(), 100)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(depth.grad).all() and (depth.grad[0, :3] == 0).all()


def test_supervision_perfect_render_gives_zero(scene):
    root, params = scene
    priors = DepthPriors(root, params)
    for loss in ("l1", "pearson", "ssi"):
        sup = DepthSupervision(root, loss=loss, params=params)
        render = priors.inverse_depth("a", size=(12, 16)).clone()
        assert sup("a.jpg", render, 0).item() == pytest.approx(0.0, abs=1e-6)
    sup = DepthSupervision(root, loss="pearson")  # unaligned priors, invariant loss
    assert sup("a", 7 * priors.inverse_depth("a") + 3, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_supervision_edge_weight_and_mask(scene):
    root, params = scene
    sup = DepthSupervision(root, loss="l1", params=params, lambda_depth=1.0, edge_gamma=5.0,
                           weight_final=1.0)
    render = torch.rand(1, 12, 16)
    image = torch.rand(3, 12, 16)
    with pytest.raises(ValueError, match="image="):
        sup("a", render, 0)
    mask = torch.ones(1, 12, 16)
    mask[:, :6] = 0
    got = sup("a", render, 0, image=image, mask=mask).item()
    target = DepthPriors(root, params).inverse_depth("a")
    expected = l1_inverse_depth_loss(render, target, mask * edge_aware_weight(image, 5.0)).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_supervision_argument_errors(scene):
    root, params = scene
    with pytest.raises(UsageError, match="depthprior align"):
        DepthSupervision(root, loss="l1")  # L1 needs aligned priors
    with pytest.raises(UsageError, match="unknown depth loss"):
        DepthSupervision(root, loss="l2", params=params)
    with pytest.raises(UsageError, match="rendered"):
        DepthSupervision(root, loss="ssi", rendered="disparity")
    with pytest.raises(UsageError, match="not found"):
        DepthSupervision(root.parent / "missing", loss="ssi")


def test_tiny_training_loop_converges(scene):
    """A 'scene' of one free inverse-depth map, optimised against the prior with each loss."""
    root, params = scene
    target = DepthPriors(root, params).inverse_depth("a", size=(12, 16))
    for loss in ("l1", "ssi", "pearson"):
        torch.manual_seed(0)
        sup = DepthSupervision(root, loss=loss, params=params, lambda_depth=1.0, max_steps=120)
        render = (torch.rand(1, 12, 16) * 0.1 + target.mean()).requires_grad_()
        opt = torch.optim.Adam([render], lr=0.02)
        first = None
        for iteration in range(120):
            opt.zero_grad()
            value = sup("a.jpg", render, iteration)
            value.backward()
            opt.step()
            first = first if first is not None else sup.last.value.item()
        assert sup.last.value.item() < 0.2 * first, loss


# ---------------------------------------------------------------- round trip through align

def test_loader_round_trips_align_and_honours_its_report(tmp_path):
    from depthprior.scene.align import align
    from depthprior.scene.depth_params import report_path
    from scenes import make_scene

    scene = make_scene(tmp_path / "scene", n_images=5, width=64, height=48, points_per_image=120,
                       write_images=False, prior_scale=0.5, few_points={1: 5}, seed=7)
    summary = align(scene.sparse, scene.depths, workers=1)
    failed = scene.key(scene.names[1])
    assert [r.key for r in summary.failed] == [failed]
    flagged = scene.key(scene.names[2])
    report = json.loads(report_path(summary.output).read_text())
    table = next(v for v in report.values() if isinstance(v, dict) and flagged in v)
    assert table[failed]["status"] == "failed"
    table[flagged]["status"] = "unreliable"  # as align marks a poor fit
    table[flagged]["reason"] = "few inliers"
    table[flagged]["for_trainer"] = False  # a fit align knows is wrong
    report_path(summary.output).write_text(json.dumps(report))

    priors = DepthPriors(scene.depths, scene.sparse)
    assert priors.unreliable.keys() == {failed, flagged}
    assert "align report: unreliable: few inliers" in priors.unreliable[flagged]
    sup = DepthSupervision(scene.depths, loss="l1", params=summary.output, lambda_depth=1.0)
    for name in scene.names:
        truth = torch.from_numpy(scene.inverse_depth[name]).float()[None]  # a perfect render
        prior = priors.get(name, size=(48, 64))
        loss = sup(name, truth, 0)
        if scene.key(name) in (failed, flagged):
            assert not prior.reliable and loss.item() == 0.0 and sup.last.skipped
            continue
        assert prior.reliable and prior.aligned
        relative = ((prior.inverse_depth - truth).abs() / truth)[0]
        assert relative.median().item() < 5e-3  # 1/z of the scene, from a half-size prior
        assert loss.item() < 0.03 * truth.mean().item()  # mean: edges of the upsampled prior


def test_params_read_only_their_own_report(tmp_path):
    """A params file is judged by <its stem>.report.json, never by another file's report."""
    from depthprior.scene.align import align
    from scenes import make_scene

    scene = make_scene(tmp_path / "scene", n_images=5, width=64, height=48, points_per_image=120,
                       write_images=False, few_points={1: 5}, seed=7)
    summary = align(scene.sparse, scene.depths, workers=1)
    failed = scene.key(scene.names[1])
    assert [r.key for r in summary.failed] == [failed]
    assert DepthPriors(scene.depths, summary.output).unreliable.keys() == {failed}

    # the user's own params beside align's: every image fitted, no report of its own
    mine = json.loads(summary.output.read_text())
    mine[failed] = mine[scene.key(scene.names[0])]
    custom = scene.sparse / "custom.json"
    custom.write_text(json.dumps(mine))
    priors = DepthPriors(scene.depths, custom)
    assert priors.unreliable == {}
    assert priors.get(scene.names[1]).reliable


def test_a_torch_prior_is_the_numpy_prior_as_a_tensor(tmp_path):
    from depthprior.scene.priorset import PriorArray

    root = write_priors(tmp_path / "depths", {"a.jpg": ramp()})
    priors = DepthPriors(root, {"a": {"scale": 2.0, "offset": 0.1}})
    array, prior = priors.load("a", (6, 8)), priors.get("a", size=(6, 8))
    assert isinstance(prior, PriorArray)
    assert np.array_equal(prior.inverse_depth[0].numpy(), array.inverse_depth)
    rest = ("stem", "reliable", "reason", "scale", "offset", "aligned")
    assert [getattr(prior, f) for f in rest] == [getattr(array, f) for f in rest]
