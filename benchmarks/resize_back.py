"""How the map is resized back to the image: depthprior's bilinear against the bicubic of
`transformers.pipeline("depth-estimation")` (both on half-pixel centres).

    python benchmarks/resize_back.py
    python benchmarks/resize_back.py --network 384x576 --image 1066x1600 --size 90x180

Step edge: a synthetic map at --network size (a disc and a square of disparity 1 on 0.1, edges
at arbitrary sub-pixel places) resized to --image. Tiny DPT and GLPN: tests/synth.py's random
checkpoints on pictures of the --case sizes (tests/synth.scene_rgb), depthprior's torch backend against the
pipeline's `predicted_depth`, and both kernels on depthprior's own network output (padding cut).

Printed per case: max and mean |bicubic - bilinear| over the map's range; pixels whose value
leaves the range of the 2x2 network pixels around them (what a prior should never invent), and
by how much at most; and the distance between the two kernels' 50% crossings of the step edge.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/synth.py's checkpoints


def bicubic(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pipeline's resize back (post_process_depth_estimation): torch bicubic, align_corners=False."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    resized = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bicubic", align_corners=False)
    return resized[0, 0].numpy()


def neighbour_indices(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source samples around each target sample on half-pixel centres."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    return low, np.minimum(low + 1, source - 1)


def neighbourhood_range(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per target pixel, the min and max of the 2x2 source pixels it lies between."""
    rows, cols = neighbour_indices(values.shape[0], height), neighbour_indices(values.shape[1], width)
    corners = np.stack([values[np.ix_(r, c)] for r in rows for c in cols])
    return corners.min(axis=0), corners.max(axis=0)


def overshoot(resized: np.ndarray, source: np.ndarray) -> tuple[int, float]:
    """(pixels outside their 2x2 neighbourhood's range, the largest excess over the source range)."""
    low, high = neighbourhood_range(source, *resized.shape)
    span = float(source.max() - source.min())
    excess = np.maximum(resized - high, low - resized)
    tolerance = 1e-6 * span
    return int(np.count_nonzero(excess > tolerance)), float(max(excess.max(), 0.0)) / span


def step_map(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = (rows - 0.37 * height) ** 2 + (cols - 0.31 * width) ** 2 < (0.21 * height) ** 2
    square = (np.abs(rows - 0.62 * height) < 0.17 * height) & (np.abs(cols - 0.71 * width) < 0.13 * width)
    return np.where(disc | square, 1.0, 0.1).astype(np.float32)


def crossing(row: np.ndarray, level: float) -> float:
    """Where a monotone-ish profile first crosses `level` (linear between samples)."""
    index = int(np.argmax(row >= level))
    before, after = row[index - 1], row[index]
    return index - 1 + (level - before) / (after - before)


def report(name: str, source: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> None:
    span = float(source.max() - source.min())
    difference = np.abs(theirs - ours) / span
    ours_out, ours_excess = overshoot(ours, source)
    theirs_out, theirs_excess = overshoot(theirs, source)
    print(f"{name}: |bicubic - bilinear| max {100 * difference.max():.2f}% mean {100 * difference.mean():.3f}% "
          f"of range; outside the 2x2 neighbourhood: bilinear {ours_out} px (max {100 * ours_excess:.2f}%), "
          f"bicubic {theirs_out} of {ours.size} px (max {100 * theirs_excess:.2f}% of range)", flush=True)


def step_edge(network: tuple[int, int], image: tuple[int, int]) -> None:
    from depthprior.priors.backends.preprocess import resize_map

    source = step_map(*network)
    ours, theirs = resize_map(source, *image), bicubic(source, *image)
    report(f"step edge {network[0]}x{network[1]} -> {image[0]}x{image[1]}", source, ours, theirs)
    row = int(0.72 * image[0])  # below the disc, through the square, whose left edge rises from 0.1 to 1
    shift = crossing(theirs[row], 0.55) - crossing(ours[row], 0.55)
    print(f"  straight edge (row {row}): 50% crossing bicubic - bilinear {shift:+.3f} image px; beyond the step "
          f"bicubic {100 * (theirs[row].max() - 1) / 0.9:.1f}% over and {100 * (0.1 - theirs[row].min()) / 0.9:.1f}% "
          f"under, bilinear {100 * (ours[row].max() - 1) / 0.9:.1f}% and {100 * (0.1 - ours[row].min()) / 0.9:.1f}%",
          flush=True)


def checkpoint(architecture: str, size: tuple[int, int], scratch: Path) -> None:
    import torch
    from PIL import Image
    from synth import build_tiny_checkpoint, scene_rgb
    from transformers import pipeline

    from depthprior.priors.backends import BackendSettings, create_backend
    from depthprior.priors.backends.local import crop_frame

    model = build_tiny_checkpoint(scratch / architecture, architecture)
    image = scene_rgb(*size, seed=3)
    with create_backend("torch", BackendSettings(model=str(model), device="cpu", dtype="fp32")) as engine:
        prepared = engine.prepare(image, "image.png")
        raw = engine.infer([prepared])[0]
        ours = engine.finish(raw, *size).values
    estimator = pipeline("depth-estimation", model=str(model), device="cpu")
    with torch.inference_mode():
        theirs = estimator(Image.fromarray(image))["predicted_depth"].numpy()
    source = crop_frame(raw.values, raw.frame)
    padded = "" if source.shape == raw.values.shape else \
        f", padding cut from {raw.values.shape[0]}x{raw.values.shape[1]}: the pipeline resizes it with the map"
    span = float(source.max() - source.min())
    print(f"{architecture} {size[0]}x{size[1]} (network {source.shape[0]}x{source.shape[1]}{padded}): "
          f"pipeline vs depthprior max {100 * np.abs(theirs - ours).max() / span:.2f}% "
          f"mean {100 * np.abs(theirs - ours).mean() / span:.3f}% of range", flush=True)
    report(f"  {architecture} same network map, both kernels", source, ours, bicubic(source, *size))


#: the tiny DPT (a ViT) takes square token grids only: 150x150 (upsampled from 64x64) and 45x64
#: (48x64 padded to 64x64); GLPN runs at the picture's size floored to multiples of 32
CASES = ["dpt:150x150", "dpt:45x64", "glpn:120x160", "glpn:45x64"]


def size_argument(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", type=size_argument, default=(384, 576), help="step-edge map HxW")
    parser.add_argument("--image", type=size_argument, default=(1066, 1600), help="step-edge target HxW")
    parser.add_argument("--case", action="append", default=None, metavar="ARCH:HxW",
                        help="a tiny checkpoint and a picture size (repeatable; default: " + " ".join(CASES) + ")")
    args = parser.parse_args()
    step_edge(args.network, args.image)
    step_edge(args.image, args.network)
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.case or CASES:
            architecture, size = case.split(":")
            checkpoint(architecture, size_argument(size), Path(scratch) / case.replace(":", "-"))


if __name__ == "__main__":
    main()
