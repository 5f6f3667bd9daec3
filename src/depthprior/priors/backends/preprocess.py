"""Depth Anything's own preprocessing, shared by the local backends so they agree exactly.

The network input follows the reference `infer_image`: keep the aspect ratio, scale so both
sides reach at least the input size ("lower bound"), round each side to a multiple of 14,
bicubic resize of the float image (RGB/255, so no clipping or rounding to 8 bits), ImageNet
normalisation, CHW float32.

The map comes back to the image's size with half-pixel centres, the convention of the resize
that made the network input, so it stays registered with the image up to its borders.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Depth Anything's ViT patch size: network inputs are multiples of it
PATCH = 14
#: what prepare_rgb does, recorded in each backend's description (manifest, check)
PREPROCESSING = ("lower-bound resize to input size, multiple of 14, bicubic on float RGB/255, "
                 "ImageNet mean/std; map resized back bilinear with half-pixel centres")
#: changes whenever prepare_rgb or resize_map give other values; part of the output identity,
#: so a folder begun with other preprocessing is not resumed with this one (2: float resize as
#: the reference infer_image, reference position-embedding resize)
PREPROCESSING_VERSION = 2
#: ImageNet normalisation of RGB/255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)
#: uint8 levels -> normalised network input in one multiply-add: x / 255 / std - mean / std
_LEVEL_SCALE = (1.0 / (255.0 * STD.astype(np.float64))).astype(np.float32)
_LEVEL_SHIFT = (MEAN.astype(np.float64) / STD).astype(np.float32)


def network_size(height: int, width: int, input_size: int, multiple: int = PATCH) -> tuple[int, int]:
    """(height, width) the network sees for an image of the given size."""
    scale = max(input_size / height, input_size / width)
    return (
        _constrain(scale * height, multiple, input_size),
        _constrain(scale * width, multiple, input_size),
    )


def _constrain(value: float, multiple: int, min_value: int) -> int:
    rounded = int(round(value / multiple) * multiple)
    if rounded < min_value:
        rounded = int(math.ceil(value / multiple) * multiple)
    return rounded


def prepare_rgb(image: np.ndarray, input_size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xhxw float32, normalised, at the network size."""
    height, width = network_size(image.shape[0], image.shape[1], input_size)
    # float64: OpenCV's float32 bicubic differs from the float64 one by up to ~0.02 levels
    resized = cv2.resize(image.astype(np.float64), (width, height), interpolation=cv2.INTER_CUBIC)
    normalised = resized.astype(np.float32) * _LEVEL_SCALE - _LEVEL_SHIFT
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Network-resolution map -> the image's stored size (bilinear, half-pixel centres, float32).

    Half-pixel centres invert the bicubic resize of prepare_rgb; align_corners=True (the
    reference `infer_image`) would shift the map by up to half a network pixel at the borders.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
