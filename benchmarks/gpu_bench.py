"""GPU throughput benchmark: synthetic 1920x1080 frames, Depth-Anything-V2-Small (random weights) at 518.

    PYTHONPATH=src python3 benchmarks/gpu_bench.py --frames 256 --batch-sizes 1,8,16

Prints, per batch size, the bare forward rate (model only, same inputs) and the end-to-end rate
of `generate` (decode, prepare, infer, resize back, 16-bit PNG encode, atomic write, manifest)
once the model is loaded. Runs in well under 5 minutes on one GPU. Needs only torch,
transformers, opencv, numpy, tqdm (no download: the weights are random, the shapes are real).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import build  # noqa: E402


def write_frames(folder: Path, count: int, width: int, height: int) -> None:
    """Smooth random scenes with texture: realistic JPEG and PNG costs, different per frame."""
    rng = np.random.default_rng(0)
    bases = [cv2.resize(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), (width, height),
                        interpolation=cv2.INTER_CUBIC) for _ in range(8)]
    noise = rng.integers(-12, 12, (height, width, 3), dtype=np.int16)

    def one(index: int) -> None:
        frame = np.clip(bases[index % 8].astype(np.int16) + np.roll(noise, index * 7, axis=1), 0, 255)
        cv2.imwrite(str(folder / f"frame_{index:05d}.jpg"), frame.astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--arch", default="small")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (each batch size compiles once, in the untimed warm-up)")
    args = parser.parse_args()

    import torch

    from depthprior.priors.backends import BackendSettings, create_backend
    from depthprior.priors.bench import BenchReport, bench_backend

    width, height = map(int, args.size.split("x"))
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}, "
          f"{os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        frames = scratch / "frames"
        frames.mkdir()
        start = time.perf_counter()
        write_frames(frames, args.frames, width, height)
        model = build(args.arch, scratch / "model")
        print(f"{args.frames} frames {width}x{height} + random {args.arch} model in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        rows = []
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            settings = BackendSettings(model=str(model), device=args.device, dtype=args.dtype,
                                       input_size=args.input_size, batch_size=batch_size,
                                       compile=args.compile)
            load = time.perf_counter()
            with create_backend("torch", settings) as engine:
                load_s = time.perf_counter() - load
                row = bench_backend(engine, frames, f"torch {engine.dtype} b{batch_size}{' compiled' if args.compile else ''}",
                                    args.workers, load_s)
            rows.append(row)
            print(BenchReport([row]).format().splitlines()[-1], f"(forward {1 / row.forward_s:.1f} img/s)",
                  flush=True)
        print()
        print(BenchReport(rows).format())


if __name__ == "__main__":
    main()
