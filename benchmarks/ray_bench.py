"""The cost of running generate on Ray, and how it scales with model replicas.

    PYTHONPATH=src python benchmarks/ray_bench.py --model tiny --frames 100
    PYTHONPATH=src python benchmarks/ray_bench.py --model small --frames 100 --replicas 1 2

Frames are real photos (--photos FOLDER, default ../shared/photos) copied to --frames names, or
synthetic --size (default 1440x1080) pictures when the folder has none. For each run it prints the seconds end to
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


def frames(folder: Path, count: int, photos: Path, size: tuple[int, int] = (1440, 1080)) -> Path:
    """`count` frames in `folder`: the photos in `photos` in turn, or synthetic pictures of
    `size` (width, height) when there are none."""
    import cv2

    sources = sorted(p for p in photos.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder.mkdir(parents=True)
    for index in range(count):
        target = folder / f"frame_{index:04d}.jpg"
        if sources:
            shutil.copyfile(sources[index % len(sources)], target)
        else:
            rng = np.random.default_rng(index)
            picture = cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 5)
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


def rate(value: float) -> str:
    """images/s, or why there is none: every frame came back in the first result block."""
    return f"{value:.2f} images/s" if value > 0 else "no rate (every frame came back in the first result block)"


def overhead_lines(local: dict, on_ray: dict) -> list[str]:
    """What Ray costs over the local pipeline on the same frames and model."""
    lines = [
        f"local pipeline: {local['seconds']:.1f} s for {local['done']} frames "
        f"(model load {local['first']:.1f} s, then {rate(local['rate'])})",
        f"Ray, 1 replica: {on_ray['seconds']:.1f} s (Ray start, replica and model load, first "
        f"batch: {on_ray['first']:.1f} s, then {rate(on_ray['rate'])})",
    ]
    throughput = (f"; throughput after start-up {local['rate'] / on_ray['rate'] - 1:+.1%}"
                  if local["rate"] > 0 and on_ray["rate"] > 0 else "")
    lines.append(f"overhead: end to end {on_ray['seconds'] / local['seconds'] - 1:+.1%}{throughput}")
    return lines


def scaling_line(count: int, result: dict) -> str:
    per_replica = [images for _, images in sorted(result["replicas"].items())]
    return (f"{count} replicas: after start-up {rate(result['rate'])} "
            f"({result['rate'] / count:.2f} per replica; images per replica {per_replica})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos",
                        help="folder of photos to copy (default ../shared/photos; none there: synthetic frames)")
    parser.add_argument("--size", default="1440x1080", help="synthetic frames' WIDTHxHEIGHT")
    parser.add_argument("--replicas", type=int, nargs="*", default=[],
                        help="also time these replica counts (scaling)")
    parser.add_argument("--address", default="local", help="Ray address (default: a local instance)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = tuple(int(v) for v in args.size.split("x"))

    from depthprior.priors.distributed import RaySettings

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        images = frames(root / "frames", args.frames, args.photos, size)
        model = model_path(args.model, root)
        local = run(images, root / "local", model, args.input_size)
        on_ray = run(images, root / "ray", model, args.input_size, RaySettings(address=args.address))
        print("\n".join(overhead_lines(local, on_ray)), flush=True)
        if not args.replicas:
            return
        import ray

        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        try:
            for count in args.replicas:
                result = run(images, root / f"ray{count}", model, args.input_size,
                             RaySettings(workers=(count, count)))
                print(scaling_line(count, result), flush=True)
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
