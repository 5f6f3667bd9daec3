"""Small real inputs for tests: random-weight Depth Anything checkpoints and image files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def build_tiny_model(folder: Path, *, metric: bool = False, seed: int = 0, stages: int = 2) -> Path:
    """A random-weight Depth Anything saved with save_pretrained, loadable by path like a hub id.

    The head's last conv is rescaled (and given a positive bias) so the final ReLU does not
    clip the ~1e-7 outputs of random weights to zero: maps have real range and structure.
    stages: backbone layers, each feeding the neck (1 or 2; one compiles in ~20% less time).
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=stages, num_attention_heads=2, intermediate_size=64,
        patch_size=14, image_size=518, out_features=["stage1", "stage2"][:stages],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, reassemble_factors=[4, 2][:stages],
        neck_hidden_sizes=[8, 16][:stages], fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
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


# ---------------------------------------------------------------- other depth architectures

def _dinov2(**overrides):
    from transformers import Dinov2Config

    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    patch_size=14, image_size=518, out_features=["stage1", "stage2"],
                    reshape_hidden_states=False)
    return Dinov2Config(**{**settings, **overrides})


def _tiny_dpt(metric: bool):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil as DPTImageProcessor

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16, head_hidden_size=8)
    processor = DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=True,
                                  ensure_multiple_of=16, do_pad=True, size_divisor=64)
    return DPTForDepthEstimation(config), processor, ("head.head.4", 1e6)


def _tiny_glpn(metric: bool):
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessorPil as GLPNImageProcessor

    config = GLPNConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                        hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 2, 2],
                        decoder_hidden_size=16, max_depth=10, head_in_index=-1)
    # a head scale that keeps the sigmoid unsaturated: depths ~6-9 m, not down to 1e-6 m, where
    # 1/depth (the PNG) would magnify any rounding a thousandfold
    return GLPNForDepthEstimation(config), GLPNImageProcessor(size_divisor=32), ("head.head.2", 30)


def _tiny_glpn_two_stages(metric: bool):
    """GLPN with two encoder stages, one with sequence reduction and one without: the same
    modules as _tiny_glpn's four stages, for half the ONNX export time (~15 CPU-s less)."""
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessorPil

    config = GLPNConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 1], patch_sizes=[7, 3], strides=[4, 2],
                        hidden_sizes=[8, 16], num_attention_heads=[1, 1], decoder_hidden_size=16, max_depth=10,
                        head_in_index=-1)
    return GLPNForDepthEstimation(config), GLPNImageProcessorPil(size_divisor=32), ("head.head.2", 30)


def _tiny_zoedepth(metric: bool):
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation, ZoeDepthImageProcessorPil as ZoeDepthImageProcessor

    backbone = _dinov2(out_features=["stage1", "stage2", "stage3", "stage4"], num_hidden_layers=4)
    config = ZoeDepthConfig(backbone_config=backbone, backbone_hidden_size=32, hidden_size=32,
                            neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
                            reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1,
                            bottleneck_features=16, num_attractors=[4, 4, 4, 4],
                            bin_embedding_dim=8, num_relative_features=8,
                            bin_configurations=[{"n_bins": 8, "min_depth": 1e-3, "max_depth": 10.0,
                                                 "name": "nyu"}])
    processor = ZoeDepthImageProcessor(size={"height": 56, "width": 70}, ensure_multiple_of=14)
    return ZoeDepthForDepthEstimation(config), processor, None


def _tiny_depth_pro(metric: bool):
    from transformers import DepthProConfig, DepthProForDepthEstimation

    vit = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, patch_size=8, image_size=32)
    config = DepthProConfig(fusion_hidden_size=16, patch_size=32, intermediate_hook_ids=[1, 0],
                            intermediate_feature_dims=[16, 16], scaled_images_ratios=[0.25, 0.5, 1],
                            scaled_images_overlap_ratios=[0.0, 0.5, 0.25],
                            scaled_images_feature_dims=[16, 16, 16], merge_padding_value=1,
                            use_fov_model=metric, num_fov_head_layers=1,
                            image_model_config=dict(vit), patch_model_config=dict(vit),
                            fov_model_config=dict(vit))
    # DepthProImageProcessor needs torchvision: its saved settings, written as save_pretrained would
    processor = {"image_processor_type": "DepthProImageProcessor", "size": {"height": 128, "width": 128},
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255,
                 "do_resize": True, "do_rescale": True, "do_normalize": True, "resample": 2}
    model = DepthProForDepthEstimation(config, use_fov_model=metric)
    if metric:  # random weights estimate ~0 degrees: centre the field of view near 60
        import torch

        with torch.no_grad():
            [*_, last] = (module for module in model.fov_model.head.modules() if getattr(module, "bias", None) is not None)
            last.bias.fill_(60.0)
    return model, processor, ("head.layers.4", 1e-3)


def _tiny_prompt_depth_anything(metric: bool):
    from transformers import (PromptDepthAnythingConfig, PromptDepthAnythingForDepthEstimation,
                              PromptDepthAnythingImageProcessorPil)

    config = PromptDepthAnythingConfig(
        backbone_config=_dinov2(), reassemble_hidden_size=32, reassemble_factors=[4, 2],
        neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
        depth_estimation_type="metric" if metric else "relative", max_depth=1)
    processor = PromptDepthAnythingImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                                                     ensure_multiple_of=14)
    return PromptDepthAnythingForDepthEstimation(config), processor, ("head.conv3", 1e5)


def _tiny_tipsv2_dpt(metric: bool):
    from transformers import AutoModelForDepthEstimation, Tipsv2DptConfig

    backbone = dict(model_type="tipsv2_vision_model", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                    image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                    reshape_hidden_states=False)
    config = Tipsv2DptConfig(backbone_config=backbone, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
                             num_depth_bins=16)
    # Tipsv2DptImageProcessor needs torchvision: its saved settings, written as save_pretrained would
    processor = {"image_processor_type": "Tipsv2DptImageProcessor", "size": {"height": 56, "width": 56},
                 "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False,
                 "resample": 2}
    return AutoModelForDepthEstimation.from_config(config), processor, None


def _tiny_classifier(metric: bool):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16)
    return ViTForImageClassification(config), None, None


TINY_BUILDERS = {
    "dpt": _tiny_dpt,
    "glpn": _tiny_glpn,
    "glpn_two_stages": _tiny_glpn_two_stages,  # a glpn checkpoint: tests/test_onnx.py exports it
    "zoedepth": _tiny_zoedepth,
    "depth_pro": _tiny_depth_pro,
    "prompt_depth_anything": _tiny_prompt_depth_anything,
    "tipsv2_dpt": _tiny_tipsv2_dpt,
    "vit": _tiny_classifier,  # not a depth model: refused
}


def build_tiny_checkpoint(folder: Path, architecture: str, *, metric: bool = False, seed: int = 0) -> Path:
    """A random-weight checkpoint of `architecture` with its image processor, saved with
    save_pretrained (model and processor), loadable by path like a hub id."""
    import torch

    torch.manual_seed(seed)
    model, processor, last_layer = TINY_BUILDERS[architecture](metric)
    model.eval()
    if last_layer is not None:
        name, factor = last_layer
        with torch.no_grad():  # random weights give near-constant maps: spread them
            layer = model.get_submodule(name)
            layer.weight.mul_(factor)
            layer.bias.fill_(1.0)
    model.save_pretrained(folder)
    if isinstance(processor, dict):
        (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    elif processor is not None:
        processor.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- Video Depth Anything

def tiny_video_config(frames: int = 32):
    """The sizes of a tiny Video Depth Anything: 4 encoder layers 64 wide (one head), temporal
    widths multiples of 32 (the GroupNorm's groups)."""
    from depthprior.priors.backends.video_network import VideoConfig

    return VideoConfig(embed_dim=64, depth=4, mlp_dim=128, patch=14, grid=37, out_channels=(16, 32, 32, 32),
                       features=32, head_features=8, frames=frames, temporal_blocks=1)


def build_tiny_video_network(*, temporal: bool = True, seed: int = 0):
    """A random-weight tiny network; temporal=False keeps the temporal output projections at
    zero (untrained: the network is Depth Anything frame by frame). The head's last conv is
    rescaled so the final ReLU leaves real range (as build_tiny_model)."""
    import torch

    from depthprior.priors.backends.video_network import build_network

    torch.manual_seed(seed)
    network = build_network(tiny_video_config())
    with torch.no_grad():
        network.depth.head.conv3.weight.mul_(1e5)
        network.depth.head.conv3.bias.fill_(1.0)
        if temporal:
            for module in network.motion_modules:
                out = module.temporal_transformer.proj_out
                torch.nn.init.normal_(out.weight, std=0.5)
                torch.nn.init.normal_(out.bias, std=0.1)
    return network.eval()


def save_official(network, path: Path) -> Path:
    """The network's weights as an official .pth state dict (the official key layout)."""
    import torch

    from depthprior.priors.backends.video_network import to_official

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_official(network.state_dict(), network.config), path)
    return path


def build_tiny_video_model(folder: Path, *, temporal: bool = True, metric: bool = False, seed: int = 0) -> Path:
    name = "metric_video_depth_anything_tiny.pth" if metric else "video_depth_anything_tiny.pth"
    return save_official(build_tiny_video_network(temporal=temporal, seed=seed), folder / name)
