"""The local backends' network input and resize back, against Depth Anything's reference rule
(restated in tests/reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthprior.priors.backends import BackendSettings, create_backend
from depthprior.priors.backends.preprocess import prepare_rgb
from reference import REFERENCE_MEAN, REFERENCE_STD, reference_network_input
from synth import scene_rgb


def hard_edges(height: int, width: int) -> np.ndarray:
    """Black/white blocks: bicubic overshoots below 0 and above 255 at every edge."""
    y, x = np.mgrid[0:height, 0:width]
    blocks = ((y // 5 + x // 7) % 2 * 255).astype(np.uint8)
    return np.stack([blocks, 255 - blocks, blocks], axis=-1)


def level_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference of two normalised network inputs, in 8-bit grey levels."""
    return float((np.abs(got - expected) * (np.array(REFERENCE_STD)[:, None, None] * 255)).max())


# odd sizes, extreme aspect ratios, upscaling, exact .5 roundings (525/14 = 37.5 -> 38,
# 539/14 = 38.5 -> 38: halves to even), a side rounded below the input size (60/14 -> 56 -> 70)
SHAPES = [(48, 64, 56), (333, 517, 518), (517, 333, 518), (97, 1001, 518), (1001, 97, 70),
          (518, 518, 518), (518, 525, 518), (518, 539, 518), (100, 150, 60), (255, 383, 364),
          (5, 7, 56), (600, 37, 56)]


@pytest.mark.parametrize("height,width,input_size", SHAPES)
def test_network_input_equals_the_reference_rule(height, width, input_size):
    for image in (scene_rgb(height, width, seed=height), hard_edges(height, width)):
        expected = reference_network_input(image, input_size)
        got = prepare_rgb(image, input_size)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert level_error(got, expected) <= 1e-3, f"{height}x{width}@{input_size}: {level_error(got, expected):.3g}"


def channel_graph(path, channel: int) -> None:
    """An ONNX 'depth model' whose map is one channel of the network input it is given."""
    import onnx
    from onnx import TensorProto, helper

    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, "H", "W"])
    depth = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, ["N", "H", "W"])
    index = helper.make_tensor("channel", TensorProto.INT64, [], [channel])
    gather = helper.make_node("Gather", ["pixel_values", "channel"], ["predicted_depth"], axis=1)
    graph = helper.make_graph([gather], "channel", [pixels], [depth], initializer=[index])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "depthprior.model_output", "disparity"
    onnx.save(model, str(path))


def smooth_scene(height: int, width: int) -> np.ndarray:
    """Sinusoids whose slope is steepest at the borders, where a misregistration shows most."""
    y, x = np.mgrid[0:height, 0:width]
    red = 127.5 + 60 * np.sin(2 * np.pi * x / (width / 2)) + 60 * np.sin(2 * np.pi * y / (height / 2))
    red = np.round(red).astype(np.uint8)
    return np.stack([red, 255 - red, red // 2], axis=-1)


@pytest.mark.parametrize("height,width", [(336, 448), (450, 260)])
def test_returned_map_is_registered_with_the_full_size_image(tmp_path, height, width):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    channel_graph(model, channel=0)
    image = smooth_scene(height, width)
    settings = BackendSettings(model=str(model), input_size=56, device="cpu")
    with create_backend("onnx", settings) as engine:
        network_h, network_w = engine.prepare(image, "image.png").shape[1:]
        returned = engine.predict([image])[0].values
    assert returned.shape == (height, width)
    red = returned * (REFERENCE_STD[0] * 255) + REFERENCE_MEAN[0] * 255
    # within half a network pixel of the border the map can only be extrapolated
    margin = math.ceil(max(height / network_h, width / network_w) / 2)
    inner = (slice(margin, height - margin), slice(margin, width - margin))
    error = np.abs(red - image[..., 0])[inner]
    assert error.max() <= 2.5, f"map off the image by {error.max():.1f} levels (a shifted resize back?)"


def test_torch_and_onnx_backends_prepare_and_resize_back_alike(tiny_model, tmp_path):
    """Both local backends give the network the reference input and bring maps back the same way."""
    pytest.importorskip("onnxruntime")
    model = tmp_path / "red.onnx"
    channel_graph(model, channel=0)
    image = scene_rgb(97, 230, seed=3)
    raw = np.random.default_rng(0).random((56, 126), dtype=np.float32)
    torch_settings = BackendSettings(model=str(tiny_model), input_size=56, device="cpu")
    onnx_settings = BackendSettings(model=str(model), input_size=56, device="cpu")
    with create_backend("torch", torch_settings) as torch_engine, create_backend("onnx", onnx_settings) as onnx_engine:
        expected = reference_network_input(image, 56)
        for engine in (torch_engine, onnx_engine):
            assert level_error(engine.prepare(image, "image.png"), expected) <= 1e-3, engine.name
        assert np.array_equal(torch_engine.finish(raw, 97, 230).values, onnx_engine.finish(raw, 97, 230).values)
