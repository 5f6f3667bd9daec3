"""The map comes back to the image's size bilinear on half-pixel centres (preprocess.resize_map,
which LocalBackend.finish applies to every architecture): registered with the image as the
resize that made the network input, and never a value outside the 2x2 network pixels around
it. transformers.pipeline's bicubic overshoots at a depth edge, which in a prior means depths
nearer than the foreground or farther than the background (benchmarks/resize_back.py
measures it)."""

from __future__ import annotations

import numpy as np
import pytest

from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.backends.architectures import Prediction
from depthprior.priors.backends.local import crop_frame
from depthprior.priors.backends.preprocess import resize_map
from synth import build_tiny_checkpoint, scene_rgb


def source_positions(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel centres: target pixel i samples source position (i + 0.5) * source / target
    - 0.5, clamped to the border; (lower index, upper index, weight of the upper)."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    lower = np.floor(position).astype(int)
    return lower, np.minimum(lower + 1, source - 1), position - lower


def half_pixel_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    top, bottom, down = source_positions(values.shape[0], height)
    left, right, across = source_positions(values.shape[1], width)
    values = values.astype(np.float64)
    upper = values[top][:, left] * (1 - across) + values[top][:, right] * across
    lower = values[bottom][:, left] * (1 - across) + values[bottom][:, right] * across
    return upper * (1 - down)[:, None] + lower * down[:, None]


def neighbourhood_range(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per target pixel, the min and max of the 2x2 source pixels it lies between."""
    rows, cols = source_positions(values.shape[0], height)[:2], source_positions(values.shape[1], width)[:2]
    corners = np.stack([values[np.ix_(r, c)] for r in rows for c in cols])
    return corners.min(axis=0), corners.max(axis=0)


def step_map(height: int, width: int, near: float = 1.0, far: float = 0.1) -> np.ndarray:
    """A disc and a square of `near` on `far`, edges at sub-pixel places."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = (rows - 0.37 * height) ** 2 + (cols - 0.31 * width) ** 2 < (0.21 * height) ** 2
    square = (np.abs(rows - 0.62 * height) < 0.17 * height) & (np.abs(cols - 0.71 * width) < 0.13 * width)
    return np.where(disc | square, near, far).astype(np.float32)


def outside_neighbourhood(resized: np.ndarray, source: np.ndarray) -> int:
    low, high = neighbourhood_range(source, *resized.shape)
    tolerance = 1e-6 * float(source.max() - source.min())
    return int(np.count_nonzero((resized > high + tolerance) | (resized < low - tolerance)))


def pipeline_bicubic(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' post_process_depth_estimation resize (what the pipeline returns)."""
    import torch

    tensor = torch.from_numpy(values)[None, None]
    return torch.nn.functional.interpolate(tensor, size=(height, width), mode="bicubic",
                                           align_corners=False)[0, 0].numpy()


@pytest.mark.parametrize("source,target", [((7, 9), (20, 31)), ((20, 31), (7, 9)), ((37, 56), (45, 64)),
                                           ((48, 64), (48, 97))])
def test_resize_back_is_bilinear_on_half_pixel_centres(source, target):
    values = np.random.default_rng(0).normal(size=source).astype(np.float32)
    got = resize_map(values, *target)
    assert got.shape == target and got.dtype == np.float32
    expected = half_pixel_bilinear(values, *target)
    assert np.abs(got - expected).max() <= 1e-5 * float(values.max() - values.min())


@pytest.mark.parametrize("source,target", [((24, 32), (61, 83)), ((61, 83), (24, 32))])
def test_resize_back_never_leaves_its_2x2_neighbourhood_at_a_step_edge(source, target):
    """Each value lies within the 2x2 network pixels around it; the pipeline's bicubic of the
    same map does not (the edge is one that rings)."""
    edges = step_map(*source)
    assert outside_neighbourhood(resize_map(edges, *target), edges) == 0
    assert outside_neighbourhood(pipeline_bicubic(edges, *target), edges) > 0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {name: build_tiny_checkpoint(tmp_path_factory.mktemp(name), name) for name in ("dpt", "glpn")}


@pytest.mark.parametrize("architecture,size", [("dpt", (45, 64)), ("dpt", (150, 150)), ("glpn", (45, 64))])
def test_dpt_and_glpn_maps_come_back_bilinear_without_overshoot(checkpoints, architecture, size):
    """Through the torch backend: padding cut (DPT at 45x64: 48x64 in 64x64), then half-pixel
    bilinear of the network map (here a step edge in the network output's place) to the image's size."""
    model = checkpoints[architecture]
    with create_backend("torch", BackendSettings(model=str(model), device="cpu", dtype="fp32")) as engine:
        raw = engine.infer([engine.prepare(scene_rgb(*size, seed=3), "image.png")])[0]
        step = Prediction(step_map(*raw.values.shape, near=8.0, far=2.0), raw.frame, dict(raw.extras))
        got = engine.finish(step, *size).values
    network = crop_frame(step.values, step.frame)
    assert got.shape == size
    assert np.abs(got - half_pixel_bilinear(network, *size)).max() <= 1e-5 * 6.0
    assert outside_neighbourhood(got, network) == 0
