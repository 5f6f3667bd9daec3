"""Random-weight Depth Anything checkpoints with the real architectures, for timing offline.

    python benchmarks/random_model.py small /tmp/da-v2-small-random
    python benchmarks/random_model.py video /tmp/vda-small-random   # .pth + per_frame/ (same DA-V2 weights)

`tiny` is no real size: the benchmarks' smoke tests (tests/test_benchmarks.py) run on it.

Weights are random (no download is possible here), so the maps mean nothing, but every layer
has the size of the real checkpoint, so the timings are the real model's. The head's last conv
is rescaled so the final ReLU does not clip the maps to zero (a blank map would make PNG
encoding unrealistically cheap).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Depth-Anything-V2-{Small,Base,Large}-hf: DINOv2 backbone + DPT head
ARCHITECTURES = {
    "small": dict(hidden=384, layers=12, heads=6, neck=[48, 96, 192, 384], fusion=64),
    "base": dict(hidden=768, layers=12, heads=12, neck=[96, 192, 384, 768], fusion=128),
    "large": dict(hidden=1024, layers=24, heads=16, neck=[256, 512, 1024, 1024], fusion=256),
    # not a real size: for the benchmarks' smoke tests, which check that a script runs
    "tiny": dict(hidden=32, layers=4, heads=2, neck=[8, 16, 32, 32], fusion=16),
}


#: Video Depth Anything: the official vits/vitb/vitl sizes (depthprior's own network, saved as the
#: official .pth state dict), and a tiny one for smoke tests
VIDEO_ARCHITECTURES = {
    "video": dict(embed_dim=384, depth=12, mlp_dim=1536, out_channels=(48, 96, 192, 384), features=64),
    "video-base": dict(embed_dim=768, depth=12, mlp_dim=3072, out_channels=(96, 192, 384, 768), features=128),
    "video-large": dict(embed_dim=1024, depth=24, mlp_dim=4096, out_channels=(256, 512, 1024, 1024), features=256),
    "video-tiny": dict(embed_dim=64, depth=4, mlp_dim=128, out_channels=(16, 32, 32, 32), features=32),
}


def build_video(arch: str, folder: Path, seed: int = 0) -> Path:
    """folder/video_depth_anything_<size>.pth (random weights, temporal modules included: their
    output projections random too, so the temporal attention is not skipped numerically) and
    folder/per_frame/, a Depth Anything V2 checkpoint with the same encoder and head weights."""
    import torch

    from depthprior.priors.backends.video_network import VideoConfig, build_network, to_official

    torch.manual_seed(seed)
    config = VideoConfig(patch=14, grid=37, head_features=32, frames=32, temporal_blocks=1,
                         **VIDEO_ARCHITECTURES[arch])
    network = build_network(config)
    with torch.no_grad():
        network.depth.head.conv3.weight.mul_(1e3)
        network.depth.head.conv3.bias.fill_(1.0)
        for module in network.motion_modules:
            torch.nn.init.normal_(module.temporal_transformer.proj_out.weight, std=0.02)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"video_depth_anything_{arch}.pth"
    torch.save(to_official(network.state_dict(), config), path)
    network.depth.save_pretrained(folder / "per_frame")
    return path


def build(arch: str, folder: Path, seed: int = 0) -> Path:
    if arch in VIDEO_ARCHITECTURES:
        return build_video(arch, folder, seed)
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    step = spec["layers"] // 4
    backbone = Dinov2Config(
        hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], intermediate_size=4 * spec["hidden"], patch_size=14,
        image_size=518, layerscale_value=1.0, use_swiglu_ffn=False,
        out_features=[f"stage{step * i}" for i in range(1, 5)], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=spec["hidden"],
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=spec["neck"],
        fusion_hidden_size=spec["fusion"], head_hidden_size=32, head_in_index=-1, patch_size=14,
        depth_estimation_type="relative",
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        model.head.conv3.weight.mul_(1e3)
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", choices=sorted([*ARCHITECTURES, *VIDEO_ARCHITECTURES]))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(build(args.arch, args.folder))


if __name__ == "__main__":
    main()
