"""The cost of running generate on Ray, and how it scales with model replicas.

    PYTHONPATH=src python benchmarks/ray_bench.py --model tiny --frames 100
    PYTHONPATH=src python benchmarks/ray_bench.py --model small --frames 100 --replicas 1 2

Frames are real photos (--photos, default ../shared/photos) copied to --frames names, or
synthetic 1440x1080 pictures when there are none. For each run it prints the seconds end to
end (the process's own start-up excluded: Ray and the model load inside the timing), the time to
the first result, and images/s after it. `overhead` compares the Ray path with the local
pipeline on the same frames and model; `scaling` runs N replicas (GPUs where the node has them,
else CPU replicas that share the cores) and prints images/s per replica count.
--model: tiny (the tests' random model), small|base|large (random weights at Depth Anything
V2's real sizes, benchmarks/random_model.py), or a checkpoint folder / hub id.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def frames(folder: Path, count: int, photos: Path) -> Path:
    import cv2

    sources = sorted(p for p in photos.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder.mkdir(parents=True)
    for index in range(count):
        target = folder / f"frame_{index:04d}.jpg"
        if sources:
            shutil.copyfile(sources[index % len(sources)], target)
        else:
            rng = np.random.default_rng(index)
            picture = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1440, 3), dtype=np.uint8), (0, 0), 5)
            cv2.imwrite(str(target), picture)
    return folder


def model_path(name: str, root: Path) -> str:
    if name == "tiny":
        from synth import build_tiny_model

        return str(build_tiny_model(root / "tiny"))
    if name in ("small", "base", "large"):
        from random_model import build

        return str(build(name, root / name))
    return name


def run(images: Path, out: Path, model: str, input_size: int, ray_settings=None) -> dict:
    from depthprior import generate

    start = time.perf_counter()
    summary = generate(images, out, model=model, input_size=input_size, progress=False, ray=ray_settings)
    seconds = time.perf_counter() - start
    first = summary.ray_startup if ray_settings else summary.load_seconds
    return {"seconds": seconds, "first": first,
            "rate": summary.ray_images_per_s if ray_settings else summary.images_per_s,
            "done": summary.done, "replicas": summary.replicas}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos")
    parser.add_argument("--replicas", type=int, nargs="*", default=[],
                        help="also time these replica counts (scaling)")
    parser.add_argument("--address", default="local", help="Ray address (default: a local instance)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from depthprior.priors.distributed import RaySettings

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        images = frames(root / "frames", args.frames, args.photos)
        model = model_path(args.model, root)
        local = run(images, root / "local", model, args.input_size)
        print(f"local pipeline: {local['seconds']:.1f} s for {local['done']} frames "
              f"(model load {local['first']:.1f} s, then {local['rate']:.2f} images/s)")
        on_ray = run(images, root / "ray", model, args.input_size, RaySettings(address=args.address))
        print(f"Ray, 1 replica: {on_ray['seconds']:.1f} s (Ray start, replica and model load, first "
              f"batch: {on_ray['first']:.1f} s, then {on_ray['rate']:.2f} images/s)")
        print(f"overhead: end to end {on_ray['seconds'] / local['seconds'] - 1:+.1%}; "
              f"throughput after start-up {local['rate'] / on_ray['rate'] - 1:+.1%}")
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        try:
            for count in args.replicas:
                result = run(images, root / f"ray{count}", model, args.input_size,
                             RaySettings(workers=(count, count)))
                per = {name: n for name, n in sorted(result["replicas"].items())}
                print(f"{count} replicas: {result['rate']:.2f} images/s after start-up "
                      f"({result['rate'] / count:.2f} per replica; images per replica {list(per.values())})")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
