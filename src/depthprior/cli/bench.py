"""depthprior bench IMAGES"""

from __future__ import annotations

import argparse

from ..priors.backends import backend_names
from .common import add_backend_arguments, given_options, shared_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the model alone against the whole pipeline, per backend",
        description="For each backend: load time, the model's bare forward time per image, the "
        "end-to-end time per image once loaded (decode, resize, infer, encode, write), their "
        "ratio, images/s and peak RSS. Outputs go to a temporary folder.",
    )
    parser.add_argument("images", help="folder of frames to time on")
    add_backend_arguments(parser)
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated backends to compare, from {','.join(backend_names())} "
                             "(default: --backend)")
    parser.add_argument("--onnx-model", default=None,
                        help="ONNX file for the onnx backend (default: export --model to a temp folder)")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the plain transformers pipeline('depth-estimation') loop")
    parser.add_argument("--workers", type=int, default=None, help="read/write threads")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds per contender; times are medians, ratios medians of "
                             "per-round ratios (use 3+ on a machine whose speed drifts)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..priors.bench import bench
    from ..errors import UsageError

    names = [name.strip() for name in (args.backends or args.backend).split(",") if name.strip()]
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise UsageError(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(backend_names())}")
    report = bench(args.images, backends=names, settings=shared_settings(args),
                   onnx_model=args.onnx_model, baseline=args.baseline, workers=args.workers,
                   repeats=args.repeats, **given_options(args))
    print(report.format())
    return 0
