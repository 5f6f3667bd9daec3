"""Video Depth Anything on this machine: depthprior end to end against the official
implementation, the raw network's parity with it, the cost per frame against per-frame V2, and
peak memory against the number of frames.

    PYTHONPATH=src python benchmarks/video_bench.py --frames 64 --size 640x360 \\
        --reference /tmp/Video-Depth-Anything --deps /tmp/vda_deps --memory-frames 100,1000

Same frames (gpu_bench.write_frames), same random VDA-Small weights (random_model.py video; the
per-frame V2 checkpoint holds the same encoder and head weights):
- depthprior: `generate FRAMES OUT --model video_depth_anything_video.pth` (decode, windows,
  spill, one mapping per sequence, 16-bit PNGs, manifest), wall time after the model is loaded;
- official (--reference: a checkout of DepthAnything/Video-Depth-Anything; --deps: a folder with
  einops and easydict, e.g. `pip install --target DIR einops easydict`; torchvision's Compose is
  shimmed when torchvision is missing): decode with OpenCV, `infer_video_depth` (fp32 on the
  CPU), min-max over the video, one 16-bit PNG per frame;
- parity: the raw network output of one window, depthprior's network against the official
  VideoDepthAnything.forward on the same inputs (max |difference| / the output range);
- per-frame V2: `generate` with the per-frame checkpoint (the torch backend, batch 1).
--memory-frames runs `generate` on that many small frames (64x48, the tiny model) in a child
process each and prints its peak resident memory: flat when memory is bounded by the window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_bench import write_frames  # noqa: E402
from random_model import build  # noqa: E402


def run_generate(frames: Path, out: Path, model: Path, input_size: int) -> tuple[float, float]:
    """(seconds after the model loaded, load seconds) of depthprior's generate."""
    from depthprior.priors.pipeline import generate

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = generate(frames, out, model=str(model), device="cpu", input_size=input_size, progress=False)
    elapsed = time.perf_counter() - start
    if summary.exit_code:
        raise SystemExit(f"generate failed: {summary.format()}")
    return elapsed - summary.load_seconds, summary.load_seconds


def official_model(reference: Path, deps: Path | None, checkpoint: Path):
    """The official VideoDepthAnything (vits) with the checkpoint loaded strictly."""
    import torch

    for path in (deps, reference):
        if path is not None:
            sys.path.insert(0, str(path))
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:  # the reference imports Compose only
        shim = types.ModuleType("torchvision")
        shim.transforms = types.ModuleType("torchvision.transforms")

        class Compose:
            def __init__(self, steps):
                self.steps = steps

            def __call__(self, sample):
                for step in self.steps:
                    sample = step(sample)
                return sample

        shim.transforms.Compose = Compose
        sys.modules.update({"torchvision": shim, "torchvision.transforms": shim.transforms})
    from video_depth_anything.video_depth import VideoDepthAnything

    model = VideoDepthAnything(encoder="vits", features=64, out_channels=[48, 96, 192, 384])
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def run_official(model, frames: Path, out: Path, input_size: int) -> float:
    """Seconds for decode + infer_video_depth + one 16-bit PNG per frame (min-max over the video)."""
    import cv2

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    paths = sorted(frames.iterdir())
    video = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])
    depths, _fps = model.infer_video_depth(video, 30, input_size=input_size, device="cpu", fp32=True)
    low, high = float(depths.min()), float(depths.max())
    for path, depth in zip(paths, depths):
        png = np.clip((depth - low) / (high - low) * 65535 + 0.5, 0, 65535).astype(np.uint16)
        cv2.imwrite(str(out / (path.stem + ".png")), png)
    return time.perf_counter() - start


def parity(model, checkpoint: Path, frames: Path, input_size: int, count: int = 32) -> float:
    """max |ours - official| / official range of the raw outputs of one window."""
    import torch

    from depthprior.images import decode_rgb
    from depthprior.priors.backends.preprocess import prepare_rgb
    from depthprior.priors.backends.video_depth import load_video_network

    ours = load_video_network(str(checkpoint))
    paths = sorted(frames.iterdir())[:count]
    inputs = torch.from_numpy(np.stack([prepare_rgb(decode_rgb(p), input_size) for p in paths]))
    with torch.no_grad():
        reference = model(inputs[None])[0]
        mine = ours(inputs, len(paths))
    return float((mine - reference).abs().max() / (reference.max() - reference.min()))


def peak_memory(count: int, workdir: Path, model: Path) -> float:
    """MiB of peak resident memory of a child process running generate on `count` frames."""
    import cv2

    frames = workdir / f"memory_{count}"
    if not frames.is_dir():
        frames.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for index in range(count):
            cv2.imwrite(str(frames / f"frame_{index:05d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    # VmHWM: the child's own peak (ru_maxrss would include the forked parent's, kept across exec)
    code = ("import re, resource, sys\nfrom depthprior.priors.pipeline import generate\n"
            "s = generate(sys.argv[1], sys.argv[2], model=sys.argv[3], device='cpu', input_size=56, progress=False)\n"
            "try:\n    peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "except OSError:\n    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(s.exit_code, peak)")
    out = workdir / f"memory_out_{count}"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, "-c", code, str(frames), str(out), str(model)],
                            capture_output=True, text=True, check=True)
    status, kib = result.stdout.split()[-2:]
    if status != "0":
        raise SystemExit(f"generate on {count} frames exited {status}: {result.stderr[-2000:]}")
    return int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--arch", default="video", help="random_model.py video size (video-tiny: smoke tests)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of DepthAnything/Video-Depth-Anything (official rows and parity)")
    parser.add_argument("--deps", type=Path, default=None, help="a folder with einops and easydict for it")
    parser.add_argument("--memory-frames", default="", help="e.g. 100,1000: peak memory of generate per count")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        if args.frames:  # --frames 0: only --memory-frames
            for label, seconds, load in time_rows(args, workdir):
                print(f"  {label}: {seconds:.1f} s, {1000 * seconds / args.frames:.0f} ms/frame (load {load:.1f} s)")
        for count in [int(c) for c in args.memory_frames.split(",") if c]:
            tiny = workdir / "video-tiny" / "video_depth_anything_video-tiny.pth"
            if not tiny.is_file():
                build("video-tiny", tiny.parent)
            print(f"  peak memory, generate on {count} frames 64x48 (tiny model): "
                  f"{peak_memory(count, workdir, tiny):.0f} MiB", flush=True)


def time_rows(args: argparse.Namespace, workdir: Path) -> list[tuple[str, float, float]]:
    """(label, seconds, load seconds) of depthprior VDA, per-frame V2 and, with --reference, the
    official implementation, on the same frames and weights; prints the parity line."""
    width, height = map(int, args.size.split("x"))
    frames = workdir / f"frames_{args.frames}_{width}x{height}"
    if not frames.is_dir():
        frames.mkdir(parents=True)
        write_frames(frames, args.frames, width, height)
    checkpoint = workdir / args.arch / f"video_depth_anything_{args.arch}.pth"
    if not checkpoint.is_file():
        build(args.arch, checkpoint.parent)
    rows = [("depthprior VDA", *run_generate(frames, workdir / "out_video", checkpoint, args.input_size)),
            ("depthprior per-frame V2 (same weights)",
             *run_generate(frames, workdir / "out_per_frame", checkpoint.parent / "per_frame", args.input_size))]
    if args.reference is not None:
        start = time.perf_counter()
        model = official_model(args.reference, args.deps, checkpoint)
        load = time.perf_counter() - start
        rows.append(("official infer_video_depth + PNGs",
                     run_official(model, frames, workdir / "out_official", args.input_size), load))
        print(f"parity, raw network output of one window: max |depthprior - official| = "
              f"{parity(model, checkpoint, frames, args.input_size):.2e} of the range", flush=True)
    print(f"\n{args.frames} frames {width}x{height}, input {args.input_size}, random {args.arch} weights:")
    return rows


if __name__ == "__main__":
    main()
