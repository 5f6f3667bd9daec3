"""depthprior align --sparse SCENE/sparse/0 --depths DEPTHS"""

from __future__ import annotations

import argparse

from .common import image_progress, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="fit each depth map to the SfM points: depth_params.json for 3DGS (-d)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "For every image of a COLMAP model, sample its depth prior at the image's SfM\n"
            "points and fit, per image,\n\n"
            "    1/z = scale * png / 65536 + offset\n\n"
            "Writes depth_params.json, the file the official 3DGS trainer reads with -d:\n"
            "{\"<image name without extension>\": {\"scale\": s, \"offset\": o}, ...}, and a\n"
            "per-image report beside it (depth_params.report.json). Every image of the model\n"
            "gets an entry; a failed fit, or one align knows is wrong (few inliers, a large\n"
            "residual, a scale far from the others), is written as scale -1, offset 0, and\n"
            "3DGS then skips that image's depth; an 8-bit prior's fit is kept, with a warning.\n\n"
            "exit status: 0 every image fitted; 1 some fits failed (the file is still\n"
            "written) or the files could not be written (neither was changed); 2 bad\n"
            "arguments or inputs, or another align writing there (nothing written)."
        ),
    )
    parser.add_argument("--sparse", required=True, metavar="SPARSE",
                        help="COLMAP model folder, binary or text (e.g. SCENE/sparse/0)")
    parser.add_argument("--depths", required=True, metavar="DEPTHS",
                        help="depth maps from 'depthprior generate': DEPTHS/<image name without "
                             "extension>.png, subfolders as in the model's image names")
    parser.add_argument("--images", default=None, metavar="IMAGES",
                        help="optional: the frames the model was made from. Checks that every "
                             "registered image is there and that its stored size has its "
                             "camera's aspect ratio (a rotated or cropped frame fails). Not needed "
                             "for the fit: depth maps of another resolution (downscaled) are "
                             "sampled by scaling the camera's pixels on both axes")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="params file (default SPARSE/depth_params.json, where the 3DGS "
                             "trainer looks); the report is written beside it as *.report.json")
    parser.add_argument("--method", default="robust", choices=("robust", "mad"),
                        help="robust (default): least median of squares + Tukey IRLS, accurate "
                             "when some SfM points sample a wrong prior (sky, thin stems, edges); "
                             "mad: the official 3DGS recipe (utils/make_depth_scale.py: median and "
                             "mean absolute deviation), with its samples and its numbers")
    parser.add_argument("--allow-missing", action="store_true",
                        help="images without a depth file are skipped by the trainer (scale -1, and a blank "
                             "placeholder PNG so 3DGS can load the camera) instead of stopping")
    parser.add_argument("--exclude", default=None, metavar="DIR",
                        help="exclusion masks from 'depthprior exclude': SfM points on excluded "
                             "pixels (sky, people, cars) are left out of the fit, counted per image")
    parser.add_argument("--brief", action="store_true",
                        help="list only failed and unreliable images, not the full table "
                             "(also with -q)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads (default: CPU count, at most 8)")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--per-sequence", dest="per_sequence", action="store_const", const=True,
                          default=None,
                          help="one scale/offset per sequence from all its frames' SfM points, written to "
                               "every frame's entry (the default for priors of a temporal model such as "
                               "Video Depth Anything, whose sequences share one value mapping); each frame's "
                               "own fit stays in the report")
    grouping.add_argument("--per-frame", dest="per_sequence", action="store_const", const=False,
                          help="one fit per frame, also for a temporal model's priors")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scene.align import align

    quiet = getattr(args, "quiet", False)
    with image_progress("align", quiet) as progress:
        summary = align(
            args.sparse,
            args.depths,
            images=args.images,
            output=args.output,
            method=args.method,
            allow_missing=args.allow_missing,
            workers=args.workers,
            progress=progress,
            exclude=args.exclude,
            per_sequence=args.per_sequence,
        )
    print(summary.format(brief=args.brief or quiet))
    return 1 if summary.failed else 0
