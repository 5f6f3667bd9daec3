"""GPU throughput benchmark: synthetic 1920x1080 frames, Depth-Anything-V2-Small (random weights) at 518.

    PYTHONPATH=src python3 benchmarks/gpu_bench.py --frames 256 --batch-sizes 1,8,16
    PYTHONPATH=src python3 benchmarks/gpu_bench.py --backend onnx --device cuda --workdir /tmp/gb
    PYTHONPATH=src python3 benchmarks/gpu_bench.py --arch video --frames 128   # Video Depth Anything-Small fp16

Prints, per batch size, the bare forward rate (model only, same inputs) and the end-to-end rate
of `generate` (decode, prepare, infer, resize back, 16-bit PNG encode, atomic write, manifest)
once the model is loaded (--arch video: Video Depth Anything, random VDA-Small weights: the
forward rate of one 32-frame window, and generate's rate over the frames as one sequence;
--batch-sizes does not apply, a window is the batch). Runs in well under 5 minutes on one GPU. Needs only torch,
transformers, opencv, numpy, tqdm (no download: the weights are random, the shapes are real);
--backend onnx also onnxruntime(-gpu), and runs an fp32 export of the same model (export-onnx
writes fp32 graphs). --workdir keeps the frames, the model and its export there and reuses them
on the next run (benchmarks/device_check.sh runs the backends one after the other on them).
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def prepare(workdir: Path, frames: int, width: int, height: int, arch: str) -> tuple[Path, Path]:
    """Frames and the random model in `workdir`, made unless an earlier run left them there."""
    folder = workdir / f"frames_{frames}_{width}x{height}"
    if not folder.is_dir():
        partial = workdir / (folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_frames(partial, frames, width, height)
        partial.rename(folder)
    model = workdir / f"model_{arch}"
    if arch.startswith("video"):  # an official-layout .pth
        found = sorted(model.glob("*.pth")) if model.is_dir() else []
        return folder, found[0] if found else build(arch, model)
    if not (model / "config.json").is_file():
        build(arch, model)
    return folder, model


def video_rows(args: argparse.Namespace, frames: Path, checkpoint: Path, workdir: Path) -> None:
    """Video Depth Anything: one window's bare forward rate and generate's end-to-end rate."""
    from depthprior.images import decode_rgb
    from depthprior.priors.backends import BackendSettings
    from depthprior.priors.backends.video_depth import VideoDepthModel, video_input_size
    from depthprior.priors.backends.video_windows import STEP, WINDOW
    from depthprior.priors.pipeline import generate

    settings = BackendSettings(model=str(checkpoint), device=args.device, dtype=args.dtype, input_size=args.input_size)
    paths = sorted(frames.iterdir())
    load = time.perf_counter()
    model = VideoDepthModel(settings)
    load_s = time.perf_counter() - load
    image = decode_rgb(paths[0])
    prepared = model.prepare(image, video_input_size(*image.shape[:2], args.input_size))
    window = [prepared] * WINDOW
    model.run_window(window)  # warm-up
    repeats = 3
    start = time.perf_counter()
    for _ in range(repeats):
        model.run_window(window)
    forward = (time.perf_counter() - start) / repeats
    model.close()
    out = workdir / "out_video"
    shutil.rmtree(out, ignore_errors=True)
    summary = generate(frames, out, model=str(checkpoint), device=args.device, dtype=args.dtype,
                       input_size=args.input_size, progress=False)
    if summary.exit_code:
        raise SystemExit(f"generate failed: {summary.format()}")
    described = summary.backend
    print(f"video {described.get('device')} {described.get('dtype')}: forward {WINDOW / forward:.1f} network "
          f"frames/s ({STEP / forward:.1f} new frames/s in a long sequence: {STEP} per {WINDOW}-frame window), "
          f"end to end {summary.images_per_s:.1f} img/s ({summary.done} frames {image.shape[1]}x{image.shape[0]}, "
          f"input {args.input_size}, load {load_s:.1f} s)", flush=True)


def onnx_file(model: Path, input_size: int, exporter: str) -> Path:
    """The model's ONNX export next to it (made once; export_onnx checks it against torch)."""
    from depthprior.priors.onnx_export import export_onnx

    path = model.with_name(f"{model.name}_{exporter}_{input_size}.onnx")
    if not path.is_file():
        start = time.perf_counter()
        export_onnx(str(model), path, input_size=input_size, exporter=exporter)
        print(f"exported {path.name} ({exporter}) in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def backend_settings(backend: str, model: Path, args: argparse.Namespace, batch_size: int):
    """The checked settings of one run; --compile is the torch backend's own option."""
    from depthprior.priors.backends import BackendSettings, settings_for

    shared = BackendSettings(model=str(model), device=args.device, dtype=args.dtype,
                             input_size=args.input_size, batch_size=batch_size)
    options = {"compile": True} if args.compile else {}
    return settings_for(backend, shared, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--device", default="auto",
                        help="torch: auto, cpu, cuda[:N]; onnx: auto, cpu, cuda[:N], tensorrt[:N]")
    parser.add_argument("--dtype", default="auto", help="torch only (an onnx export computes in fp32)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--arch", default="small", help="benchmarks/random_model.py size (tiny: smoke tests)")
    parser.add_argument("--exporter", default="dynamo", help="onnx: the exporter of the model's export")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep frames, model and export here and reuse them (default: a temp folder)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (each batch size compiles once, in the untimed warm-up)")
    args = parser.parse_args()
    if args.compile and args.backend != "torch":
        parser.error("--compile applies to --backend torch")
    if args.backend == "onnx" and args.dtype not in ("auto", "fp32"):
        parser.error("--backend onnx runs the fp32 export: use --dtype auto")

    import torch

    from depthprior.priors.backends import create_backend
    from depthprior.priors.bench import BenchReport, bench_backend

    width, height = map(int, args.size.split("x"))
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}, "
          f"{os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        start = time.perf_counter()
        frames, model = prepare(workdir, args.frames, width, height, args.arch)
        print(f"{args.frames} frames {width}x{height} + random {args.arch} model in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        if args.arch.startswith("video"):
            if args.backend != "torch":
                parser.error("--arch video runs on --backend torch")
            video_rows(args, frames, model, workdir)
            return
        if args.backend == "onnx":
            model = onnx_file(model, args.input_size, args.exporter)
        rows = []
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            settings = backend_settings(args.backend, model, args, batch_size)
            load = time.perf_counter()
            with create_backend(args.backend, settings) as engine:
                load_s = time.perf_counter() - load
                label = f"{args.backend} {engine.describe().get('device', '')} {engine.dtype} b{batch_size}"
                row = bench_backend(engine, frames, label + (" compiled" if args.compile else ""),
                                    args.workers, load_s)
            rows.append(row)
            print(f"{row.label}: forward {1 / row.forward_s:.1f} img/s, end to end "
                  f"{row.images_per_s:.1f} img/s ({row.images} frames {width}x{height}, "
                  f"input {args.input_size}, load {load_s:.1f} s)", flush=True)
        print()
        print(BenchReport(rows).format())


if __name__ == "__main__":
    from depthprior.errors import DepthpriorError

    try:
        main()
    except DepthpriorError as error:  # e.g. a GPU provider that does not start: one line, exit 2
        print(f"gpu_bench: error: {error}", file=sys.stderr)
        sys.exit(2)
