"""depthprior verify OUT"""

from __future__ import annotations

import argparse

from .common import add_extension_argument, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check generated depth maps and write a contact sheet",
        description="Check OUT: an output for every image, decodable single-channel uint16, "
        "same size as its image, not blank or constant, enough distinct levels, consistent "
        "with the manifest. Writes OUT/depthprior_verify.png (image beside coloured depth).",
    )
    parser.add_argument("out", help="output folder of depthprior generate")
    parser.add_argument("--images", default=None,
                        help="image folder (default: the one recorded in the manifest)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--num-samples", type=positive_int, default=8,
                          help="frames to check in depth and show (default 8)")
    sampling.add_argument("--all", action="store_true", help="check every frame")
    parser.add_argument("--sheet", default=None, help="contact sheet path (default OUT/depthprior_verify.png)")
    add_extension_argument(parser)
    parser.add_argument("--masks", default=None, metavar="DIR", nargs="+", action="extend",
                        help="mask folders, one or several: confidence masks from 'depthprior "
                             "consistency', exclusion masks from 'depthprior exclude' (their "
                             "excluded fraction listed per frame); each checked and shown beside "
                             "each map on the contact sheet")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..priors.verify import verify

    report = verify(args.out, images=args.images, num_samples=args.num_samples, all=args.all,
                    sheet=args.sheet, extensions=args.ext, masks=args.masks)
    print(report.format())
    return 0 if report.ok else 1
