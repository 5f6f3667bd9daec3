"""export-onnx's Depth Anything family: its graph wrapper, the patches its trace runs under
(dynamic depth head, matmul position-embedding resize, no attention mask), example input and
parity shapes.

transformers' depth head turns the output size into Python ints
(`int(patch_height * patch_size)`), which bakes the example shape into a traced graph (a 518x924
input would come back 518x518); the export runs the head through an equivalent forward without
that cast. DINOv2's bicubic position-embedding resize (the reference rule, as in the torch
backend) becomes two small matmuls (ORT's cubic Resize spent ~10% of a CPU forward on it), and
the all-zero attention mask that transformers materialises under torch.export is dropped. The
exporter's parity check covers all three.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from ..errors import UsageError

log = logging.getLogger(__name__)


def _check_patch_sizes(patch: int, input_size: int, static_shape: tuple[int, int] | None) -> None:
    if input_size < patch or input_size % patch:
        raise UsageError(f"--input-size must be a positive multiple of {patch}, e.g. 518")
    if static_shape is not None and any(side < patch or side % patch for side in static_shape):
        raise UsageError(f"--static-shape sides must be multiples of {patch}, e.g. 518x784")


def _graph_module(network: Any) -> Any:
    """pixel_values -> predicted_depth as a plain module (the exporters want tensors out)."""
    import torch

    class DepthAnythingGraph(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any) -> Any:
            return self.inner(pixel_values=pixel_values).predicted_depth

    return DepthAnythingGraph(network).eval()


_HEAD_PARTS = ("conv1", "conv2", "conv3", "activation1", "activation2", "max_depth",
               "head_in_index", "patch_size")


class _dynamic_head:
    """Within the block, the depth head computes its output size from the input's symbolic
    shape instead of Python ints, so the traced graph follows the input size.

    Same operations as transformers' DepthAnythingDepthEstimationHead.forward (Prompt Depth
    Anything's head: the same without the max_depth factor). A head without the expected parts
    is left alone; the parity check then reports a fixed-shape graph.
    """

    def __init__(self, network: Any):
        self.head = getattr(network, "head", None)
        self.patched = self.head is not None and all(hasattr(self.head, part) for part in _HEAD_PARTS)
        self.scaled = type(self.head).__name__ != "PromptDepthAnythingDepthEstimationHead"

    def __enter__(self) -> None:
        if self.patched:
            self.head.forward = types.MethodType(_head_forward if self.scaled else _prompt_head_forward, self.head)
        else:
            log.warning("unfamiliar depth head: exporting it unchanged (the graph may fix the input size)")

    def __exit__(self, *exc: object) -> None:
        if self.patched:
            del self.head.forward  # back to the class's forward


def _head_forward(self: Any, hidden_states: list, patch_height: Any, patch_width: Any) -> Any:
    return (_head_values(self, hidden_states, patch_height, patch_width) * self.max_depth).squeeze(dim=1)


def _prompt_head_forward(self: Any, hidden_states: list, patch_height: Any, patch_width: Any) -> Any:
    """Prompt Depth Anything's head: no max_depth factor (the model maps its 0..1 output to
    the prompt's range itself)."""
    return _head_values(self, hidden_states, patch_height, patch_width).squeeze(dim=1)


def _head_values(self: Any, hidden_states: list, patch_height: Any, patch_width: Any) -> Any:
    from torch import nn

    hidden_states = hidden_states[self.head_in_index]
    predicted_depth = self.conv1(hidden_states)
    predicted_depth = nn.functional.interpolate(
        predicted_depth,
        (patch_height * self.patch_size, patch_width * self.patch_size),
        mode="bilinear",
        align_corners=True,
    )
    predicted_depth = self.conv2(predicted_depth)
    predicted_depth = self.activation1(predicted_depth)
    predicted_depth = self.conv3(predicted_depth)
    return self.activation2(predicted_depth)


class _matmul_position_embedding:
    """Within the block, DINOv2's bicubic position-embedding resize (37x37 grid -> the input's
    patch grid, by the reference rule of backends.torch_hf) is computed as two small matmuls
    with bicubic weight matrices.

    Same values as torch's upsample_bicubic2d with the reference scale factor (align_corners=False,
    A=-0.75, border clamp), but ONNX Runtime's cubic Resize is pathologically slow on this tensor
    (384x37x37 -> 384x37x56 took 138 ms of a 1.25 s forward on 2 cores; the matmuls take well
    under 1 ms). An embeddings module load_depth_model left alone is left alone here too.
    """

    def __init__(self, network: Any):
        from .backends.torch_hf import position_embeddings_module

        self.embeddings = position_embeddings_module(network)
        self.patched = self.embeddings is not None

    def __enter__(self) -> None:
        if self.patched:
            self.previous = vars(self.embeddings).get("interpolate_pos_encoding")
            self.embeddings.interpolate_pos_encoding = types.MethodType(_interpolate_pos_encoding, self.embeddings)

    def __exit__(self, *exc: object) -> None:
        if not self.patched:
            return
        if self.previous is None:
            del self.embeddings.interpolate_pos_encoding
        else:
            self.embeddings.interpolate_pos_encoding = self.previous


def _interpolate_pos_encoding(self: Any, embeddings: Any, height: Any, width: Any) -> Any:
    import torch

    from .backends.torch_hf import position_grid

    position = self.position_embeddings  # 1 x (1 + side^2) x dim, a fixed-size parameter
    side, dim, patch_height, patch_width = position_grid(self)
    grid = position[:, 1:].reshape(side, side, dim).permute(2, 0, 1).to(torch.float32)  # dim x side x side
    row_steps = torch.arange(height // patch_height, dtype=torch.float32)
    col_steps = torch.arange(width // patch_width, dtype=torch.float32)
    offset = _position_offset(torch, row_steps, col_steps, side)
    rows = _bicubic_matrix(torch, row_steps, side, offset)  # new_h x side
    cols = _bicubic_matrix(torch, col_steps, side, offset)  # new_w x side
    resized = torch.matmul(torch.matmul(rows, grid), cols.transpose(0, 1))  # dim x new_h x new_w
    resized = resized.to(position.dtype).permute(1, 2, 0).reshape(1, -1, dim)
    return torch.cat((position[:, :1], resized), dim=1)


def _position_offset(torch: Any, row_steps: Any, col_steps: Any, side: int) -> Any:
    """The reference rule's grid offset as a graph value: 0 on the trained side x side grid
    (embeddings used as they are), POSITION_OFFSET on any other grid."""
    from .backends.torch_hf import POSITION_OFFSET

    rows = torch.ones_like(row_steps).sum()
    cols = torch.ones_like(col_steps).sum()
    trained = (rows == float(side)) & (cols == float(side))
    return torch.where(trained, torch.zeros_like(rows), torch.full_like(rows, POSITION_OFFSET))


def _bicubic_matrix(torch: Any, steps: Any, in_size: int, offset: Any = 0.0) -> Any:
    """(len(steps) x in_size) weights of torch's 1-D bicubic resize, align_corners=False, with
    scale_factor (len(steps) + offset) / in_size; steps = arange(len(steps)) as float32."""
    a = -0.75
    count = torch.ones_like(steps).sum()
    src = (steps + 0.5) * (float(in_size) / (count + offset)) - 0.5
    base = torch.floor(src)
    t = src - base
    near, far = t, 1.0 - t
    weights = [
        ((a * (near + 1.0) - 5.0 * a) * (near + 1.0) + 8.0 * a) * (near + 1.0) - 4.0 * a,
        ((a + 2.0) * near - (a + 3.0)) * near * near + 1.0,
        ((a + 2.0) * far - (a + 3.0)) * far * far + 1.0,
        ((a * (far + 1.0) - 5.0 * a) * (far + 1.0) + 8.0 * a) * (far + 1.0) - 4.0 * a,
    ]
    columns = torch.arange(in_size, dtype=torch.float32)
    matrix = torch.zeros_like(src)[:, None] * columns[None, :]
    for tap_offset, weight in zip((-1.0, 0.0, 1.0, 2.0), weights):
        tap = torch.clamp(base + tap_offset, 0.0, float(in_size - 1))
        matrix = matrix + (tap[:, None] == columns[None, :]).to(torch.float32) * weight[:, None]
    return matrix


class _no_attention_mask:
    """DINOv2 attends from every patch to every patch, but under torch.export transformers
    materialises an all-zero bidirectional mask and adds it to every attention matrix (one
    extra pass over batch x heads x tokens^2 per layer). Within the block the mask is None,
    as in eager inference; the parity check confirms the values."""

    def __enter__(self) -> None:
        try:
            from transformers.models.dinov2 import modeling_dinov2 as module
        except ImportError:
            module = None
        self.module = module if hasattr(module, "create_bidirectional_mask") else None
        if self.module is not None:
            self.original = self.module.create_bidirectional_mask
            self.module.create_bidirectional_mask = _no_mask

    def __exit__(self, *exc: object) -> None:
        if self.module is not None:
            self.module.create_bidirectional_mask = self.original


def _no_mask(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    return attention_mask


def _example_input(torch: Any, input_size: int, patch: int, static_shape: tuple[int, int] | None) -> Any:
    # batch 2 and height != width: torch.export specialises sizes 0/1 and equal dimensions
    height, width = static_shape or (input_size, input_size + 2 * patch)
    return torch.randn(2, 3, height, width)


def _verify_shapes(input_size: int, patch: int, static_shape: tuple[int, int] | None) -> list[tuple[int, int, int]]:
    """Square, landscape 16:9 and portrait 7:10 at input_size (batch 2 for one of them)."""
    if static_shape:
        return [(1, *static_shape), (2, *static_shape)]

    def side(value: float) -> int:
        return max(patch, int(round(value / patch)) * patch)

    return [
        (1, input_size, input_size),
        (2, input_size, side(input_size * 16 / 9)),
        (1, side(input_size * 10 / 7), input_size),
    ]
