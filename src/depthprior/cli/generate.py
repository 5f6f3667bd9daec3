"""depthprior generate IMAGES OUT"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..priors.manifest import FORMATS
from .common import (add_backend_arguments, add_extension_argument, backend_settings, positive_int,
                     refuse_without)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="a folder of frames -> 16-bit inverse-depth PNGs for 3DGS",
        description="Depth prior for every image under IMAGES (recursive), written to OUT with "
        "mirrored subfolders as single-channel uint16 PNGs: inverse depth, near = bright, "
        "min-max normalised per image. Resumable; a manifest OUT/depthprior.json records how.",
    )
    parser.add_argument("images", help="folder of frames (or one image), or a URL such as "
                        "s3://bucket/scene/images")
    parser.add_argument("out", help="output folder, or a URL such as s3://bucket/scene/depths")
    add_backend_arguments(parser)
    cluster = parser.add_argument_group("Ray cluster (pip install 'depthprior[ray]')")
    cluster.add_argument("--ray", nargs="?", const="auto", default=None, type=_ray_address,
                         metavar="auto|local|ADDRESS",
                         help="run on Ray: auto (the running cluster, else a local one; the "
                              "default), local, or a cluster address (host:port, ray://host:port)")
    cluster.add_argument("--ray-workers", type=_workers, default=None, metavar="N|MIN-MAX",
                         help="model replicas, autoscaled between MIN and MAX (default: one per "
                              "GPU, or one per node without GPUs)")
    cluster.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                         help="GPUs per replica, fractions share one (default: 1 where the "
                              "cluster has GPUs, else 0)")
    output = parser.add_argument_group("output")
    output.add_argument("--format", default="png", choices=FORMATS,
                        help="png: 3DGS uint16 inverse depth; npy: raw float32 prediction; both")
    output.add_argument("--overwrite", action="store_true",
                        help="redo images that already have outputs (also when settings differ)")
    add_extension_argument(output)
    output.add_argument("--workers", type=positive_int, default=None,
                        help="threads for decoding and writing (default: CPU count, at most 8)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--follow-outside", action="store_true",
                        help="let a remote backend upload images reached through links to folders "
                             "outside IMAGES (they are counted, and refused without this)")
    from ..exclusion.segmenter import DEFAULT_CLASSES
    from .exclude import add_segmentation_arguments

    parser.add_argument("--exclude", nargs="?", const=",".join(DEFAULT_CLASSES), default=None,
                        metavar="CLASSES",
                        help="also write exclusion masks of these classes (default "
                             f"{','.join(DEFAULT_CLASSES)}) into OUT_exclude, segmenting the "
                             "frames in the same reading pass; --align, --consistency and "
                             "--report then leave the excluded pixels out")
    add_segmentation_arguments(parser, flag="--exclude-model")
    checks = parser.add_argument_group("after generation")
    checks.add_argument("--verify", action="store_true", help="run `depthprior verify` on OUT")
    checks.add_argument("--num-samples", type=positive_int, default=8,
                        help="frames on the verify contact sheet (default 8)")
    checks.add_argument("--align", metavar="SPARSE", default=None,
                        help="COLMAP model folder (e.g. scene/sparse/0): fit per-image scale/offset "
                             "and write depth_params.json there")
    checks.add_argument("--consistency", action="store_true",
                        help="after --align, write confidence masks of the aligned priors beside "
                             "OUT (`depthprior consistency`, OUT_confidence)")
    checks.add_argument("--report", action="store_true",
                        help="write OUT/report.html at the end (`depthprior report`; with the fits "
                             "when --align is given)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..steps import run_generate

    result = run_generate(
        args.images,
        args.out,
        verify=args.verify,
        num_samples=args.num_samples,
        align=args.align,
        consistency=args.consistency,
        report=args.report,
        backend=args.backend,
        settings=backend_settings(args),
        format=args.format,
        overwrite=args.overwrite,
        extensions=args.ext,
        workers=args.workers,
        progress=not args.no_progress and not args.quiet,
        follow_outside=args.follow_outside,
        ray=_ray_settings(args),
        exclude=_exclude_job(args),
    )
    print(result.format())
    sys.stdout.flush()
    return result.exit_code


def _exclude_job(args: argparse.Namespace):  # -> ExcludeJob | None
    from ..exclusion.run import ExcludeJob
    from .exclude import class_names, dilation, segmenter_settings

    refuse_without("--exclude", args.exclude is not None,
                   {"--exclude-model": args.seg_model, "--seg-revision": args.seg_revision,
                    "--seg-input-size": args.seg_input_size, "--dilate": args.dilate})
    if args.exclude is None:
        return None
    settings = segmenter_settings(args, args.device, args.dtype, args.batch_size)
    return ExcludeJob(class_names(args.exclude), settings, dilation(args))


def _ray_address(text: str) -> str:
    """--ray's value: an empty one (--ray=) is no address; --ray alone means auto."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give auto, local or a cluster address (host:port), "
                                         "or --ray alone for auto; not an empty value")
    return text


def _workers(text: str) -> tuple[int, int]:
    from ..priors.distributed import parse_workers

    try:
        return parse_workers(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ray_settings(args: argparse.Namespace):  # -> RaySettings | None
    from ..priors.distributed import RaySettings

    refuse_without("--ray", args.ray is not None,
                   {"--ray-workers": args.ray_workers, "--ray-gpus-per-worker": args.ray_gpus_per_worker})
    if args.ray is None:
        return None
    return RaySettings(address=args.ray, workers=args.ray_workers,
                       gpus_per_worker=args.ray_gpus_per_worker)
