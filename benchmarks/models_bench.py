"""Forward time per image of each depth architecture at its default config and input size,
with random weights (no download is possible here; every layer has the real size, so the
timings are the real model's; the maps mean nothing).

    python benchmarks/models_bench.py dpt glpn --repeats 2

A tiny test checkpoint says nothing about speed: use this instead.
"""

from __future__ import annotations

import argparse
import time

#: architecture -> (config class name, input height, width at the default checkpoint's size)
DEFAULTS = {
    "dpt": ("DPTConfig", 384, 384),  # Intel/dpt-large: ViT-L/16, 384x384
    "glpn": ("GLPNConfig", 480, 640),  # vinvino02/glpn-nyu: the image's own size (NYU 480x640)
    "zoedepth": ("ZoeDepthConfig", 384, 512),  # Intel/zoedepth-nyu-kitti: BEiT-L, 384x512
    "depth_pro": ("DepthProConfig", 1536, 1536),  # apple/DepthPro-hf: three DINOv2 ViT-L/16 at 384, FoV head
    "prompt_depth_anything": ("PromptDepthAnythingConfig", 384, 384),  # ViT-S (vits-hf) at the processor's default
    "tipsv2_dpt": ("Tipsv2DptConfig", 448, 448),  # google/tipsv2-b14-dpt: ViT-B/14, fixed 448x448
}
#: config settings of the real checkpoints where transformers' defaults differ
OVERRIDES = {
    "depth_pro": lambda: dict(use_fov_model=True, **{
        key: dict(model_type="dinov2", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, patch_size=16, image_size=384)
        for key in ("image_model_config", "patch_model_config", "fov_model_config")}),
}
#: extra network inputs: Prompt Depth Anything's prompt at its LiDAR resolution
EXTRA_INPUTS = {"prompt_depth_anything": lambda torch: {"prompt_depth": torch.rand(1, 1, 192, 256) + 0.5}}


def forward_ms(architecture: str, repeats: int) -> float:
    import torch
    import transformers
    from transformers import AutoModelForDepthEstimation

    config_name, height, width = DEFAULTS[architecture]
    config = getattr(transformers, config_name)(**OVERRIDES.get(architecture, dict)())
    model = AutoModelForDepthEstimation.from_config(config).eval()
    inputs = {"pixel_values": torch.randn(1, 3, height, width),
              **EXTRA_INPUTS.get(architecture, lambda _: {})(torch)}
    with torch.inference_mode():
        model(**inputs)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(**inputs)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="*", default=list(DEFAULTS))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    for architecture in args.architectures:
        _, height, width = DEFAULTS[architecture]
        print(f"{architecture:>10} {height}x{width}: {forward_ms(architecture, args.repeats):.0f} ms/image", flush=True)


if __name__ == "__main__":
    main()
