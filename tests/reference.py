"""Depth Anything's reference inference rules (`infer_image` and its DINOv2 in the
Depth-Anything-V2 repository), restated in a few lines for tests to compare against.

Network input: scale so both sides reach the input size, round each side to the nearest
multiple of 14 (up when that falls below the input size), bicubic resize of the float image
RGB/255, ImageNet mean/std, float32. Position embeddings: none on the trained 37x37 grid, else
bicubic with scale factor (grid + 0.1) / 37 per axis.
"""

from __future__ import annotations

import cv2
import numpy as np

REFERENCE_MEAN = [0.485, 0.456, 0.406]
REFERENCE_STD = [0.229, 0.224, 0.225]


def reference_side(value: float, minimum: int, multiple: int = 14) -> int:
    side = int(np.round(value / multiple) * multiple)
    return int(np.ceil(value / multiple) * multiple) if side < minimum else side


def reference_network_input(rgb: np.ndarray, input_size: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale_h, scale_w = input_size / height, input_size / width
    if scale_w > scale_h:
        scale_h = scale_w
    else:
        scale_w = scale_h
    size = (reference_side(scale_w * width, input_size), reference_side(scale_h * height, input_size))
    image = cv2.resize(rgb / 255.0, size, interpolation=cv2.INTER_CUBIC)
    image = (image - REFERENCE_MEAN) / REFERENCE_STD
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)


def reference_position_resize(grid, rows: int, cols: int):
    """Depth Anything's DINOv2 rule: none on the trained 37x37 grid, else bicubic with scale
    factor (grid + 0.1) / 37 per axis (torch then maps output to source pixels by 1 / scale)."""
    import torch

    if (rows, cols) == (37, 37):
        return grid
    scale = ((rows + 0.1) / 37, (cols + 0.1) / 37)
    return torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
