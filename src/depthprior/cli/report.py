"""depthprior report OUT"""

from __future__ import annotations

import argparse

from .common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="one HTML page of the priors, fits and masks of a scene",
        description="Write OUT/report.html and a folder of thumbnails beside it: the scene "
        "summary, scale/offset/inliers/residual over frame order, and per frame the photo, the "
        "colour-mapped prior, the mask overlay and the fit. Opens from disk, no server.",
    )
    parser.add_argument("out", help="output folder of depthprior generate (or a folder of depth "
                                    "PNGs another tool wrote: one frame per PNG)")
    parser.add_argument("--images", default=None,
                        help="image folder (default: the one recorded in the manifest)")
    parser.add_argument("--sparse", default=None, metavar="SPARSE",
                        help="COLMAP model folder whose depth_params.json (depthprior align) "
                             "gives the fits")
    parser.add_argument("--masks", default=None, metavar="DIR",
                        help="confidence masks (<image key>.png) and their consistency.json")
    parser.add_argument("--exclude", default=None, metavar="DIR",
                        help="exclusion masks from 'depthprior exclude': shown beside each prior, "
                             "with each frame's excluded fraction")
    parser.add_argument("-o", "--output", default=None, help="HTML file (default OUT/report.html)")
    parser.add_argument("--max-pixels", type=positive_int, default=None,
                        help="refuse photos, priors and masks above this many pixels, from "
                             "their header (default 100 MP): that frame's picture is not shown")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..images import DEFAULT_MAX_PIXELS
    from ..report import report

    summary = report(args.out, images=args.images, sparse=args.sparse, masks=args.masks,
                     exclude=args.exclude,
                     output=args.output, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    print(summary.format())
    return 0
