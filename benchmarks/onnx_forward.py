"""Bare forward time, PyTorch vs ONNX Runtime (CPU), on the same prepared input.

    python benchmarks/onnx_forward.py /work/shared/photos/demo01.jpg --reps 8
    python benchmarks/onnx_forward.py IMAGE --model FOLDER --variants dynamo,torchscript --threads 2

Builds a random-weight Depth-Anything-V2-Small (real shapes, no download) unless --model is
given, exports it with each requested exporter (depthprior.priors.onnx_export.export_onnx, verified),
then times torch and every ONNX variant on the image's prepared input (the pipeline's shape),
interleaved rep by rep so background load hits all alike, and prints min and median ms.
Variants: dynamo, torchscript, and "<variant>+ortopt" (ONNX Runtime's transformer optimizer,
attention/LayerNorm/GELU fusion, applied to the export).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def ort_session(path: Path, threads: int | None, spinning: bool) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def realistic_small(folder: Path) -> Path:
    """benchmarks/random_model.py's V2-Small with every bias and norm weight made non-trivial:
    default init leaves biases at 0 and norm weights at 1, which graph optimisers could fold
    away or deduplicate, unlike in a real checkpoint."""
    import torch
    from random_model import build
    from transformers import AutoModelForDepthEstimation

    build("small", folder)
    model = AutoModelForDepthEstimation.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1 and "head.conv3" not in name:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


def ortopt(source: Path, target: Path, heads: int, hidden: int) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type="vit", num_heads=heads, hidden_size=hidden)
    print(f"  ortopt fusions {source.name}: "
          f"{ {k: v for k, v in model.get_fused_operator_statistics().items() if v} }", flush=True)
    model.save_model_to_file(str(target))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: random V2-Small)")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--variants", default="dynamo,torchscript")
    parser.add_argument("--shape", default=None, metavar="HxW",
                        help="time this network input size instead of the image's (e.g. 518x518)")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's)")
    parser.add_argument("--no-spinning", action="store_true")
    parser.add_argument("--onnx", action="append", default=[], type=Path,
                        help="also time this ONNX file (repeatable)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder to keep the exports in (and reuse them from on the next run)")
    args = parser.parse_args()

    import torch

    from depthprior.priors.backends.preprocess import prepare_rgb
    from depthprior.priors.backends.torch_hf import load_depth_model
    from depthprior.images import decode_rgb
    from depthprior.priors.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = args.keep or Path(scratch_name)
        scratch.mkdir(parents=True, exist_ok=True)
        if args.model is None:
            args.model = str(realistic_small(scratch / "v2-small"))
        image = decode_rgb(args.image)
        pixels = prepare_rgb(image, args.input_size)[None]
        if args.shape:
            import cv2

            height, width = (int(v) for v in args.shape.split("x"))
            pixels = prepare_rgb(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                                 min(height, width))[None]
        print(f"image {args.image} {image.shape[1]}x{image.shape[0]} -> network input "
              f"{pixels.shape[3]}x{pixels.shape[2]}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs", flush=True)

        network = load_depth_model(args.model)
        backbone = network.config.backbone_config
        tensor = torch.from_numpy(pixels)

        def run_torch() -> np.ndarray:
            with torch.inference_mode():
                return network(pixel_values=tensor).predicted_depth.numpy()

        runners = {"torch": run_torch}
        files: dict[str, Path] = {}
        for variant in [v for v in args.variants.split(",") if v]:
            base = variant.split("+")[0]
            if base not in files and args.keep and (scratch / f"{base}.onnx").exists():
                files[base] = scratch / f"{base}.onnx"
                print(f"  reusing {files[base]}", flush=True)
            if base not in files:
                start = time.perf_counter()
                result = export_onnx(args.model, scratch / f"{base}.onnx", input_size=args.input_size,
                                     exporter=base)
                print(f"  export {base}: {time.perf_counter() - start:.1f} s, "
                      f"{result.size_bytes / 2**20:.1f} MiB, parity {', '.join(c.format() for c in result.checks)}",
                      flush=True)
                files[base] = result.path
            path = files[base]
            if variant.endswith("+ortopt"):
                path = ortopt(path, scratch / f"{base}-ortopt.onnx", backbone.num_attention_heads,
                              backbone.hidden_size)
            session = ort_session(path, args.threads, not args.no_spinning)
            runners[variant] = (lambda s: lambda: s.run(None, {"pixel_values": pixels})[0])(session)

        for path in args.onnx:
            session = ort_session(path, args.threads, not args.no_spinning)
            runners[path.name] = (lambda s: lambda: s.run(None, {"pixel_values": pixels})[0])(session)

        reference = run_torch()
        for name, run in runners.items():
            got = run()
            error = np.abs(got - reference).max() / (reference.max() - reference.min())
            print(f"  {name}: output {got.shape}, max error {error:.1e} of range", flush=True)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.reps):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        base = min(times["torch"])
        print(f"\n{'variant':<24} {'min ms':>8} {'median ms':>10} {'torch/variant (min)':>20}")
        for name, values in times.items():
            print(f"{name:<24} {1e3 * min(values):>8.0f} {1e3 * float(np.median(values)):>10.0f} "
                  f"{base / min(values):>20.2f}")


if __name__ == "__main__":
    main()
