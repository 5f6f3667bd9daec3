"""Small real inputs for tests: random-weight Depth Anything checkpoints and image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def build_tiny_model(folder: Path, *, metric: bool = False, seed: int = 0) -> Path:
    """A random-weight Depth Anything saved with save_pretrained, loadable by path like a hub id.

    The head's last conv is rescaled (and given a positive bias) so the final ReLU does not
    clip the ~1e-7 outputs of random weights to zero: maps have real range and structure.
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=14, image_size=518, out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, reassemble_factors=[4, 2],
        neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
        depth_estimation_type="metric" if metric else "relative", max_depth=20,
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        if metric:
            # sigmoid head: keep it away from saturation, spread across 0..max_depth
            model.head.conv3.weight.mul_(1e5)
            model.head.conv3.bias.fill_(0.0)
        else:
            model.head.conv3.weight.mul_(1e5)
            model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    return folder


def scene_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB picture with structure (gradient, discs, noise)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    image = 60 + 150 * rows * np.array([1.0, 0.8, 0.6]) + 40 * np.sin(cols * 25 + seed)
    image = image + rng.normal(0, 12, (height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(image, centre, int(rng.integers(3, max(4, min(height, width) // 3))), colour, -1)
    return image


def write_image(path: Path, rgb: np.ndarray, **params: int) -> Path:
    """Write an RGB array as a real image file (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = [item for pair in params.items() for item in pair]
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    assert ok, f"could not write {path}"
    return path


def make_frames(folder: Path, count: int = 4, size: tuple[int, int] = (48, 64), ext: str = ".jpg") -> list[Path]:
    return [write_image(folder / f"frame_{i:04d}{ext}", scene_rgb(*size, seed=i)) for i in range(count)]
