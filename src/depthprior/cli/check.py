"""depthprior check [IMAGE]"""

from __future__ import annotations

import argparse

from .common import add_backend_arguments, backend_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="load a backend, run one image, show what came back (connection test)",
        description="Loads the chosen backend, runs one image (a built-in synthetic one if none "
        "is given) and prints the model, device, output shape, dtype, value range and time. "
        "With --backend space the image is uploaded to that third-party server.",
    )
    parser.add_argument("image", nargs="?", default=None, help="image to run (optional)")
    add_backend_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..priors.check import check

    report = check(args.image, backend=args.backend, settings=backend_settings(args))
    print(report.format())
    return 0 if report.ok else 1
