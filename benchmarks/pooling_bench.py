"""Which pooling gives nerfstudio's depths_N the truest depth from a noisy prior?

    PYTHONPATH=src python benchmarks/pooling_bench.py [--size 640x480] [--seed 0]

A synthetic depth map (a slanted wall at 4-6 units with nearer boxes at 1.5-2.5 in front, 10%
of the pixels without depth) is made noisy as a prior is (multiplicative noise on inverse
depth, sigma 0.5%, 2%, 5%), quantised to the export's uint16 steps, and shrunk by 2, 4 and 8
with each candidate. Each result is compared with the true depth at the small pixel's centre
(its ray). Printed per candidate: the median relative error, the mean signed relative error
(the bias; negative = nearer) on blocks inside one surface, and the share of edge blocks whose
depth is off by more than 10% (a blend of two surfaces, or the wrong one).
"""

from __future__ import annotations

import argparse

import numpy as np

from depthprior.scene.export import EMPTY_DEPTH, depth_blocks, min_pool_valid, pool_valid

UNIT = 1e-3


def _mean_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    blocks = depth_blocks(depth, size).astype(np.float64)
    valid = blocks < EMPTY_DEPTH
    total = np.where(valid, blocks, 0).sum(-1)
    count = valid.sum(-1)
    return np.where(count > 0, np.rint(total / np.maximum(count, 1)), 0).astype(np.uint16)


def _mean_inverse(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    blocks = depth_blocks(depth, size).astype(np.float64)
    valid = blocks < EMPTY_DEPTH
    total = np.where(valid, 1.0 / np.where(valid, blocks, 1.0), 0).sum(-1)
    count = valid.sum(-1)
    mean = total / np.maximum(count, 1)
    return np.where(count > 0, np.rint(1.0 / np.maximum(mean, 1e-12)), 0).astype(np.uint16)


CANDIDATES = {
    "min of valid (before)": min_pool_valid,
    "median of valid (now)": pool_valid,
    "mean of valid depth": _mean_depth,
    "mean of valid inverse depth": _mean_inverse,
}


def true_depth(x: np.ndarray, y: np.ndarray, width: int, height: int,
               boxes: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """Depth at continuous image positions (pixel k covers [k, k + 1))."""
    depth = 4.0 + 2.0 * x / width + 0.5 * y / height
    for x0, y0, x1, y1, d in boxes:
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        depth = np.where(inside, d, depth)
    return depth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(args.seed)
    boxes = []
    for _ in range(12):
        x0, y0 = rng.uniform(0, width * 0.85), rng.uniform(0, height * 0.85)
        boxes.append((x0, y0, x0 + rng.uniform(20, width * 0.3), y0 + rng.uniform(20, height * 0.3),
                      rng.uniform(1.5, 2.5)))
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    truth = true_depth(xs, ys, width, height, boxes)
    holes = rng.random((height, width)) < 0.1

    print(f"{'noise':>6} {'N':>2}  {'candidate':<30} {'median |err|':>12} {'bias (flat)':>12} "
          f"{'edge >10%':>10}")
    for sigma in (0.005, 0.02, 0.05):
        noisy = 1.0 / ((1.0 / truth) * (1.0 + sigma * rng.standard_normal(truth.shape)))
        png = np.where(holes, 0, np.clip(np.rint(noisy / UNIT), 1, 65535)).astype(np.uint16)
        for factor in (2, 4, 8):
            size = (height // factor, width // factor)
            sy, sx = np.mgrid[0:size[0], 0:size[1]] + 0.5
            cx, cy = sx * width / size[1], sy * height / size[0]
            small_truth = true_depth(cx, cy, width, height, boxes)
            full_blocks = depth_blocks(np.rint(truth / UNIT).astype(np.uint16), size)
            edge = full_blocks.min(-1) * 1.05 < full_blocks.max(-1)  # two surfaces in the block
            for name, pool in CANDIDATES.items():
                pooled = pool(png, size).astype(np.float64) * UNIT
                valid = pooled > 0
                relative = (pooled - small_truth) / small_truth
                flat = valid & ~edge
                print(f"{sigma:>6.1%} {factor:>2}  {name:<30} "
                      f"{np.median(np.abs(relative[valid])):>12.3%} "
                      f"{relative[flat].mean():>+12.3%} "
                      f"{(np.abs(relative[valid & edge]) > 0.1).mean():>10.1%}")


if __name__ == "__main__":
    main()
