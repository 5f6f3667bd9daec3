"""export-onnx for the depth architectures other than Depth Anything (architectures.ARCHITECTURES).

Each exported graph takes what the architecture's processor makes (`pixel_values`, and
Prompt Depth Anything's `prompt_depth`) and returns `predicted_depth` (and Depth Pro's
`field_of_view` when the checkpoint has its FoV head). The file records the architecture, its
config and its processor settings in metadata, so the onnx backend applies the same
preprocessing and convention as the torch backend. The parity check runs the architecture's
own preprocessing on pictures of three aspect ratios and compares every output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.architectures import Architecture, processor_size
from .backends.onnx import INPUT_NAME, OUTPUT_NAME
from .backends.prompt import network_prompt, prompt_size
from ..errors import UsageError

PROMPT_NAME = "prompt_depth"
FOV_NAME = "field_of_view"

#: architectures whose graph does not export cleanly (torch 2.13, transformers 5.24), and why
NOT_EXPORTABLE = {
    "dpt": "transformers' DPT resizes its ViT position embeddings with Python integers, so the "
           "exported graph keeps the example's input size and fails on other sizes",
    "zoedepth": "torch.onnx fixes the batch size inside ZoeDepth's metric-bin attractors and the "
                "export takes minutes even for a tiny model",
}
#: architectures that run at their processor's fixed size: graphs of that size, one image a run
FIXED_SIZE = ("depth_pro", "tipsv2_dpt")
#: pictures the parity check prepares (height, width): landscape 4:3, portrait, wide 16:9
CHECK_PICTURES = [(192, 256), (256, 192), (144, 256)]


@dataclass
class Signature:
    """A graph's inputs and outputs; `axes` per input: axis -> (dimension name, multiple),
    `output_axes` per output: axis -> name (both empty where the size is fixed)."""

    inputs: list[str]
    outputs: list[str]
    axes: list[dict[int, tuple[str, int]]]
    output_axes: list[dict[int, str]]


def check_exportable(model_type: str, static_shape: tuple[int, int] | None) -> None:
    """A one-line UsageError, before anything loads, for what cannot be exported."""
    if model_type in NOT_EXPORTABLE:
        raise UsageError(f"{model_type} checkpoints cannot be exported to ONNX: {NOT_EXPORTABLE[model_type]}; "
                         "run them with --backend torch")
    if static_shape is not None:
        raise UsageError(f"--static-shape applies to Depth Anything checkpoints; {model_type} graphs take the "
                         "sizes their image processor makes")


def signature(architecture: Architecture) -> Signature:
    """What the graph of `architecture` takes and returns, and which sizes vary."""
    model_type = architecture.model_type
    outputs = [OUTPUT_NAME] + ([FOV_NAME] if model_type == "depth_pro" and architecture.has_fov() else [])
    if model_type in FIXED_SIZE:  # batch 1 (torch.onnx fixes Depth Pro's batch): the backend runs one at a time
        return Signature([INPUT_NAME], outputs, [{}], [{} for _ in outputs])
    multiple = _size_multiple(architecture)
    pixels = {0: ("batch", 1), 2: ("rows", multiple), 3: ("cols", multiple)}
    depth = {0: "batch", 1: "height", 2: "width"}
    if model_type == "prompt_depth_anything":
        prompt = {0: ("batch", 1), 2: ("prompt_rows", 1), 3: ("prompt_cols", 1)}
        return Signature([INPUT_NAME, PROMPT_NAME], outputs, [pixels, prompt], [depth])
    return Signature([INPUT_NAME], outputs, [pixels], [depth])


def _size_multiple(architecture: Architecture) -> int:
    """What the network input's sides are multiples of (GLPN: size_divisor; else the patch)."""
    processor, config = architecture.processor, architecture.config
    if architecture.model_type == "glpn":
        return int(getattr(processor, "size_divisor", 32))
    return int(getattr(config, "patch_size", 14))


def check_inputs(architecture: Architecture, input_size: int) -> list[dict[str, np.ndarray]]:
    """The parity check's inputs: CHECK_PICTURES through the architecture's preprocessing, the
    first as a batch of two (one picture where the graph's batch is fixed)."""
    generator = np.random.default_rng(0)
    batches = []
    fixed = architecture.model_type in FIXED_SIZE
    for index, (height, width) in enumerate(CHECK_PICTURES[:2] if fixed else CHECK_PICTURES):
        picture = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        count = 2 if index == 0 and not fixed else 1
        prepared = architecture.prepare(picture, input_size)
        batch = {INPUT_NAME: np.stack([prepared.pixels] * count)}
        if architecture.model_type == "prompt_depth_anything":
            grid = prompt_size(height, width)
            batch[PROMPT_NAME] = np.stack([network_prompt(generator.uniform(0.5, 5.0, grid)) for _ in range(count)])
        batches.append(batch)
    return batches


def example_inputs(architecture: Architecture, input_size: int) -> tuple[np.ndarray, ...]:
    """What the exporter traces with: a batch of two of a non-square input (torch.export
    specialises sizes 1 and equal dimensions), one input at a fixed-size architecture's size."""
    if architecture.model_type in FIXED_SIZE:
        return (np.zeros((1, 3, *processor_size(architecture.processor, (1536, 1536))), dtype=np.float32),)
    multiple = _size_multiple(architecture)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 4 * multiple, 6 * multiple)).astype(np.float32)
    if architecture.model_type == "prompt_depth_anything":
        return pixels, np.random.default_rng(2).uniform(0.5, 5.0, (2, 1, 24, 32)).astype(np.float32)
    return (pixels,)


def graph_module(network: Any, outputs: list[str]) -> Any:
    """The model as a module of tensors in, tensors out (the exporters want no ModelOutput)."""
    import torch

    class DepthGraph(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any, prompt_depth: Any = None) -> Any:
            extra = {} if prompt_depth is None else {"prompt_depth": prompt_depth}
            output = self.inner(pixel_values=pixel_values, **extra)
            values = tuple(getattr(output, name) for name in outputs)
            return values if len(values) > 1 else values[0]

    return DepthGraph(network).eval()


def metadata(architecture: Architecture, processor_settings: dict[str, Any], outputs: list[str]) -> dict[str, str]:
    """What the onnx backend rebuilds the architecture from (depthprior.* keys, prefix added later)."""
    return {
        "architecture_type": architecture.model_type,
        "model_output": architecture.kind(),
        "convention": architecture.convention(),
        "config": architecture.config.to_json_string(use_diff=False),
        "processor": json.dumps(processor_settings),
        "outputs": ",".join(outputs),
    }
