"""Time `depthprior consistency` on a synthetic ring of frames with large priors.

    PYTHONPATH=src python benchmarks/consistency_bench.py --frames 300 --size 1440x1080

The scene (tests/scenes.py) is ray cast at the check's grid size (size x resolution); its
priors are then upsampled to --size and rewritten, so the command reads, resizes and checks
full-size PNGs. Prints the wall and CPU seconds (all threads) of the command alone, and the
masks' rejection rates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenes import inject_blobs, make_scene  # noqa: E402

from depthprior.scene.align import align  # noqa: E402
from depthprior.scene.confidence import Settings, check_consistency  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="1440x1080")
    parser.add_argument("--resolution", type=float, default=0.25)
    parser.add_argument("--neighbours", type=int, default=4)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    grid = (round(width * args.resolution), round(height * args.resolution))
    with tempfile.TemporaryDirectory() as root:
        scene = make_scene(root, n_images=args.frames, width=grid[0], height=grid[1],
                           write_images=False, points_per_image=150, seed=args.seed)
        wrong = inject_blobs(scene, seed=args.seed)
        for name in scene.names:  # full-size priors, then fits for those very maps
            png = cv2.imread(str(scene.depth_path(name)), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(scene.depth_path(name)),
                        cv2.resize(png, (width, height), interpolation=cv2.INTER_LINEAR))
        align(scene.sparse, scene.depths)
        started, cpu = time.perf_counter(), time.process_time()
        summary = check_consistency(scene.sparse, scene.depths, settings=Settings(
            args.neighbours, 0.05, args.resolution))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        injected, kept = rates(scene, wrong, summary.output, (width, height))
    print(f"{args.frames} frames, priors {width}x{height}, --resolution {args.resolution}, "
          f"--neighbours {args.neighbours}: {seconds:.1f} s ({cpu:.1f} s CPU) "
          f"(TAE {summary.tae_before:.4f} -> {summary.tae_after:.4f}); injected pixels "
          f"rejected {injected:.1%}, correct seen pixels rejected {kept:.1%}")


def rates(scene, wrong, masks: Path, size: tuple[int, int]) -> tuple[float, float]:
    """Share of the injected pixels rejected, and of the correct pixels some witness saw."""
    injected = rejected = seen = wrongly = 0
    for name in scene.names:
        mask = cv2.imread(str(masks / (scene.key(name) + ".png")), cv2.IMREAD_UNCHANGED)
        bad = cv2.resize(wrong[name].astype("uint8"), size, interpolation=cv2.INTER_NEAREST) > 0
        injected += bad.sum()
        rejected += (bad & (mask < 128)).sum()
        seen += (~bad & (mask != 128)).sum()
        wrongly += (~bad & (mask < 128)).sum()
    return rejected / max(injected, 1), wrongly / max(seen, 1)


if __name__ == "__main__":
    main()
