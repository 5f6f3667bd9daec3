"""Depth Anything through the local backends against the reference rules, and what the torch
batch size changes in the PNG.

    python benchmarks/reference_parity.py /work/shared/photos/*.jpg
    python benchmarks/reference_parity.py IMAGE... --batch 4 --frame 1066x1600
    python benchmarks/reference_parity.py IMAGE... --model FOLDER --skip-onnx

Builds a random-weight checkpoint with the real V2-Small shapes (benchmarks/onnx_forward.py's,
biases and norms made non-trivial) unless --model is given. The reference is the transformers
model in fp32 fed tests/reference.py's rules: the input `infer_image` makes (cv2 bicubic of
RGB/255 in float64) and the DINOv2 position-embedding resize of Depth Anything's own code.
For each image it prints max and mean |backend - reference| over the reference's range, at
the network's resolution, for the torch backend (fp32) and the onnx backend (the checkpoint
exported by export_onnx, verified, CPU).

--batch N: generate() with the torch backend (fp32, --device, default cpu) at batch size 1 and
N on N frames of --frame HxW made from the images (resized, INTER_AREA), and how many PNG
pixels differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/reference.py: the reference rules, stated once


def reference_network(folder: str):
    """The transformers model, fp32 NCHW, with Depth Anything's own position-embedding resize."""
    import types

    import torch
    from reference import reference_position_resize
    from transformers import AutoModelForDepthEstimation

    model = AutoModelForDepthEstimation.from_pretrained(folder).eval()
    embeddings = model.backbone.embeddings

    def interpolate(self, tokens, height, width):
        table = self.position_embeddings
        side, dim = int(round((table.shape[1] - 1) ** 0.5)), table.shape[2]
        grid = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        resized = reference_position_resize(grid, height // 14, width // 14)
        return torch.cat((table[:, :1], resized.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)

    embeddings.interpolate_pos_encoding = types.MethodType(interpolate, embeddings)

    def run(rgb: np.ndarray, input_size: int) -> np.ndarray:
        from reference import reference_network_input

        pixels = torch.from_numpy(reference_network_input(rgb, input_size))[None]
        with torch.inference_mode():
            return model(pixel_values=pixels).predicted_depth[0].numpy()

    return run


def backend_network(name: str, model: str, input_size: int):
    from depthprior.priors.backends import BackendSettings, create_backend

    engine = create_backend(name, BackendSettings(model=model, device="cpu", dtype="fp32", input_size=input_size))

    def run(rgb: np.ndarray, input_size: int) -> np.ndarray:
        return np.asarray(engine.infer([engine.prepare(rgb, "image")])[0], dtype=np.float32)

    return run


def compare_raw(args: argparse.Namespace, scratch: Path) -> None:
    from depthprior.images import decode_rgb

    runners = {"torch": backend_network("torch", args.model, args.input_size)}
    if not args.skip_onnx:
        from depthprior.priors.onnx_export import export_onnx

        result = export_onnx(args.model, scratch / "model.onnx", input_size=args.input_size, exporter=args.exporter)
        checks = ", ".join(check.format() for check in result.checks)
        print(f"exported ({args.exporter}): parity with the torch model {checks}", flush=True)
        runners["onnx"] = backend_network("onnx", str(result.path), args.input_size)
    reference = reference_network(args.model)
    worst = {name: 0.0 for name in runners}
    columns = "  ".join(f"{name + ' max':>10} {name + ' mean':>10}" for name in runners)
    print(f"{'image':<14} {'size':>10} {'network':>8}  {columns}")
    for path in args.images:
        rgb = decode_rgb(path)
        expected = reference(rgb, args.input_size)
        span = float(expected.max() - expected.min())
        cells = []
        for name, run in runners.items():
            error = np.abs(run(rgb, args.input_size) - expected) / span
            worst[name] = max(worst[name], float(error.max()))
            cells.append(f"{error.max():>10.1e} {error.mean():>10.1e}")
        print(f"{path.name:<14} {rgb.shape[1]:>4}x{rgb.shape[0]:<5} {expected.shape[1]:>3}x{expected.shape[0]:<4} "
              + "  ".join(cells), flush=True)
    print("worst max |backend - reference| / range: " + ", ".join(f"{n} {v:.1e}" for n, v in worst.items()))


def compare_batches(args: argparse.Namespace, scratch: Path) -> None:
    import cv2

    from depthprior import generate
    from depthprior.images import decode_rgb
    from depthprior.priors.store import read_png16

    height, width = (int(v) for v in args.frame.split("x"))
    frames = scratch / "frames"
    frames.mkdir()
    for index in range(args.batch):
        rgb = decode_rgb(args.images[index % len(args.images)])
        if index >= len(args.images):  # more frames than images: a mirrored copy is another frame
            rgb = rgb[:, ::-1]
        frame = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(frames / f"frame{index:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    outputs = {}
    for batch_size in (1, args.batch):
        out = scratch / f"batch{batch_size}"
        summary = generate(frames, out, model=args.model, device=args.device, dtype="fp32",
                           input_size=args.input_size, batch_size=batch_size, progress=False)
        assert summary.exit_code == 0, summary.format()
        outputs[batch_size] = out
    print(f"torch fp32 {args.device}, {args.batch} frames of {width}x{height} ({width * height / 1e6:.1f} MP), "
          f"PNG at batch {args.batch} vs batch 1:")
    for png in sorted(outputs[1].glob("*.png")):
        one = read_png16(png).astype(np.int32)
        many = read_png16(outputs[args.batch] / png.name).astype(np.int32)
        levels = np.abs(many - one)
        print(f"  {png.name}: {np.count_nonzero(levels)} pixels differ "
              f"({100 * np.count_nonzero(levels) / levels.size:.2f}%), at most {levels.max()} PNG levels", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--model", default=None, help="Depth Anything checkpoint folder (default: random V2-Small)")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"])
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--batch", type=int, default=0, help="also compare generate at batch size 1 and this one")
    parser.add_argument("--device", default="cpu", help="torch device for --batch (cpu, cuda, ...)")
    parser.add_argument("--frame", default="1066x1600", help="HxW of the frames for --batch (default 1.7 MP)")
    args = parser.parse_args()

    from onnx_forward import realistic_small

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        if args.model is None:
            args.model = str(realistic_small(scratch / "random-v2-small"))
        compare_raw(args, scratch)
        if args.batch > 1:
            compare_batches(args, scratch)


if __name__ == "__main__":
    main()
