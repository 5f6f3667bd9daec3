"""depthprior consistency --sparse SCENE/sparse/0 --depths DEPTHS"""

from __future__ import annotations

import argparse

from .common import image_progress, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "consistency",
        help="confidence masks: which pixels of each aligned prior the other views agree with",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "For every registered image with a reliable aligned prior, reproject its depth\n"
            "into the images that share the most SfM points with it (its witnesses) and\n"
            "compare, occlusion-aware: a point hidden behind a witness's surface is no\n"
            "evidence; within --threshold it agrees; in front of it, or with a witness's\n"
            "point in front of it, it is contradicted.\n\n"
            "Writes DIR/<image name without extension>.png, uint8 at the prior's size:\n"
            "  255 every witness with evidence agrees, 128..254 the agreeing share,\n"
            "  128 no witness sees the pixel (kept, at half weight), 0 rejected (more\n"
            "  witnesses contradict than agree) or excluded (--exclude); >= 128 is trusted.\n"
            "and DIR/consistency.json (per image: witnesses, fractions checked, agreeing,\n"
            "rejected, median relative disagreement; the scene's TAE before and after\n"
            "masking). Reruns skip images whose inputs have not changed and remove the\n"
            "masks of images no longer checked; one run at a time per folder.\n\n"
            "exit status: 0 every image checked; 1 some image could not be checked (failed or\n"
            "unreliable fit, no witness); 2 bad arguments or inputs (nothing written)."
        ),
    )
    parser.add_argument("--sparse", required=True, metavar="SPARSE",
                        help="COLMAP model folder, binary or text (e.g. SCENE/sparse/0)")
    parser.add_argument("--depths", required=True, metavar="DEPTHS",
                        help="depth maps from 'depthprior generate'")
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="depth_params.json from 'depthprior align' (default SPARSE/depth_params.json)")
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="mask folder (default DEPTHS_confidence beside DEPTHS)")
    parser.add_argument("--neighbours", type=positive_int, default=4,
                        help="witnesses per image, by shared SfM points (default 4)")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="relative depth difference that still agrees (default 0.05)")
    parser.add_argument("--resolution", type=float, default=0.25,
                        help="fraction of the prior's size the check runs at (default 0.25); "
                             "masks are written at the prior's size")
    parser.add_argument("--exclude", default=None, metavar="DIR",
                        help="exclusion masks from 'depthprior exclude': excluded pixels (sky, "
                             "people) are 0 in the masks and no evidence as witnesses")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads (default: CPU count, at most 8); outputs do not depend on it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scene.confidence import Settings, check_consistency

    quiet = getattr(args, "quiet", False)
    settings = Settings(args.neighbours, args.threshold, args.resolution)
    with image_progress("consistency", quiet) as progress:
        summary = check_consistency(args.sparse, args.depths, params=args.params,
                                    output=args.output, settings=settings, progress=progress,
                                    workers=args.workers, exclude=args.exclude)
    if not quiet:
        print(summary.format())
    return 1 if summary.failed else 0
