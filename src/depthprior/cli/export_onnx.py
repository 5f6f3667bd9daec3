"""depthprior export-onnx --model ID_OR_PATH -o model.onnx"""

from __future__ import annotations

import argparse

from ..priors.backends import BackendSettings
from .common import positive_int

_DEFAULTS = BackendSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="a depth checkpoint -> an ONNX file for --backend onnx",
        description="Exports a Depth Anything V1/V2, GLPN, Depth Pro or Prompt Depth Anything checkpoint "
        "(hub id or local folder) to ONNX (Depth Anything, GLPN and Prompt Depth Anything with dynamic "
        "batch, height and width, so one file serves every aspect ratio), then checks the written graph "
        "against the PyTorch model at three aspect ratios before putting it in place. "
        "Use it with: depthprior generate FRAMES OUT --backend onnx --model model.onnx",
    )
    parser.add_argument("--model", default=_DEFAULTS.model,
                        help=f"hub id or local folder of the checkpoint (default {_DEFAULTS.model})")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--input-size", type=positive_int, default=_DEFAULTS.input_size,
                        help="input size the graph is checked at and records as its default "
                             "(Depth Anything: multiple of 14; default 518, for other architectures "
                             "the checkpoint's own size)")
    parser.add_argument("--opset", type=positive_int, default=None,
                        help="ONNX opset (default 18 for dynamo, 17 for torchscript)")
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"),
                        help="torch.onnx exporter: dynamo (default) or the older torchscript tracer")
    parser.add_argument("--static-shape", default=None, metavar="HxW",
                        help="Depth Anything: fix the network input size, e.g. 518x784 (for TensorRT); "
                             "other sizes are then refused. Default: dynamic")
    parser.add_argument("--external-data", action="store_true",
                        help="weights in OUTPUT.data beside the graph (automatic above ~1.8 GB)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the check against PyTorch (saves about two forward passes per shape)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..priors.onnx_export import export_onnx, parse_shape

    result = export_onnx(
        args.model,
        args.output,
        input_size=args.input_size,
        revision=args.revision,
        opset=args.opset,
        exporter=args.exporter,
        static_shape=parse_shape(args.static_shape) if args.static_shape else None,
        verify=not args.no_verify,
        external_data=True if args.external_data else None,
    )
    print(result.format())
    print(f"use it: depthprior generate FRAMES OUT --backend onnx --model {result.path}"
          + (f" --input-size {args.input_size}" if args.input_size != _DEFAULTS.input_size else ""))
    return 0
