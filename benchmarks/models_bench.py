"""Forward time per image of each depth architecture at its default config and input size,
with random weights (no download is possible here; every layer has the real size, so the
timings are the real model's; the maps mean nothing).

    python benchmarks/models_bench.py dpt glpn --repeats 2

A tiny test checkpoint says nothing about speed: use this instead. --tiny runs the tests' tiny
configs (tests/synth.py) at small inputs instead: a check that the script runs, no timing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
#: --tiny: input height, width of each architecture's tiny test config (tests/synth.py)
TINY_SIZES = {"dpt": (64, 64), "glpn": (64, 64), "zoedepth": (56, 70), "depth_pro": (128, 128),
              "prompt_depth_anything": (56, 56), "tipsv2_dpt": (56, 56)}


def real_size(architecture: str) -> tuple[object, int, int]:
    """A random-weight model at the default checkpoint's size, and its input height and width."""
    import transformers
    from transformers import AutoModelForDepthEstimation

    config_name, height, width = DEFAULTS[architecture]
    config = getattr(transformers, config_name)(**OVERRIDES.get(architecture, dict)())
    return AutoModelForDepthEstimation.from_config(config), height, width


def tiny_size(architecture: str) -> tuple[object, int, int]:
    """The tests' tiny random model of `architecture` and its input height and width."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synth import TINY_BUILDERS

    model, _, _ = TINY_BUILDERS[architecture](False)
    return (model, *TINY_SIZES[architecture])


def forward_ms(architecture: str, repeats: int, tiny: bool = False) -> float:
    import torch

    model, height, width = (tiny_size if tiny else real_size)(architecture)
    model.eval()
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
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny configs: runs, times nothing real")
    args = parser.parse_args()
    unknown = sorted(set(args.architectures) - set(DEFAULTS))
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}: choose from {', '.join(DEFAULTS)}")
    import torch

    print(f"torch threads: {torch.get_num_threads()}" + (" (tiny configs, not real sizes)" if args.tiny else ""))
    for architecture in args.architectures:
        height, width = TINY_SIZES[architecture] if args.tiny else DEFAULTS[architecture][1:]
        milliseconds = forward_ms(architecture, args.repeats, args.tiny)
        print(f"{architecture:>10} {height}x{width}: {milliseconds:.0f} ms/image", flush=True)


if __name__ == "__main__":
    main()
