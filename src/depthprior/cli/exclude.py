"""depthprior exclude IMAGES [-o DIR] [--classes sky,person] [--model ID|DIR] [--dilate PX]"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_extension_argument, image_progress, non_negative_int, positive_int


def add_segmentation_arguments(parser: argparse.ArgumentParser, *, flag: str = "--model") -> None:
    """--classes, the checkpoint and its settings, --dilate: for exclude and generate --exclude."""
    from ..exclusion.masks import MAX_DILATE
    from ..exclusion.segmenter import (DEFAULT_CLASSES, DEFAULT_INPUT_SIZE, DEFAULT_MODEL, MAX_INPUT_SIZE,
                                       SIZE_STEP)

    group = parser.add_argument_group("exclusion (segmentation model)")
    if flag == "--model":
        group.add_argument("--classes", default=",".join(DEFAULT_CLASSES), metavar="NAMES",
                           help="classes to exclude, by the names in the checkpoint's id2label, "
                                f"comma-separated; synonyms resolved (default {','.join(DEFAULT_CLASSES)})")
    # defaults None, filled by segmenter_settings and dilation: generate refuses them without --exclude
    group.add_argument(flag, dest="seg_model", default=None, metavar="ID|DIR",
                       help="hub id or local folder of a transformers semantic-segmentation "
                            "checkpoint (SegFormer, UperNet, DPT, BEiT, Mask2Former, ...) "
                            f"(default {DEFAULT_MODEL}, MIT licence, ADE20K classes)")
    group.add_argument("--seg-revision", default=None, help="hub revision of the segmentation model")
    group.add_argument("--seg-input-size", type=int, default=None,  # bounds: SegmenterSettings.check
                       help=f"shorter side the segmentation network sees, to the nearest multiple of "
                            f"{SIZE_STEP}: {SIZE_STEP} to {MAX_INPUT_SIZE} once rounded "
                            f"(default {DEFAULT_INPUT_SIZE})")
    group.add_argument("--dilate", type=non_negative_int, default=None, metavar="PX",  # bound: check_options
                       help=f"grow every excluded region by PX pixels of the frame, 0 to {MAX_DILATE} "
                            "(default 0)")


def segmenter_settings(args: argparse.Namespace, device: str, dtype: str, batch_size: int):
    from ..exclusion.segmenter import DEFAULT_INPUT_SIZE, DEFAULT_MODEL, SegmenterSettings

    return SegmenterSettings(model=_or(args.seg_model, DEFAULT_MODEL), revision=args.seg_revision, device=device,
                             dtype=dtype, input_size=_or(args.seg_input_size, DEFAULT_INPUT_SIZE),
                             batch_size=batch_size)


def dilation(args: argparse.Namespace) -> int:
    return _or(args.dilate, 0)


def _or(value: Any, default: Any) -> Any:
    """An option's value, or its default where it was not given."""
    return default if value is None else value


def class_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..files.raster import DEFAULT_MAX_PIXELS
    from ..priors.backends.base import DTYPES
    from ..priors.backends.torch_hf import DEVICES

    parser = subparsers.add_parser(
        "exclude",
        help="exclusion masks (sky, people, cars, ...) from a segmentation model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Segment every frame and write DIR/<image name without extension>.png, uint8 at\n"
            "the image's stored size: 0 excluded (one of --classes), 255 kept; and\n"
            "DIR/exclude.json (per image the excluded fraction per class; the model and\n"
            "settings). align, consistency, training, export, verify and report take the\n"
            "folder (--exclude / --masks). Reruns skip frames whose mask is intact; a folder\n"
            "made with another model, classes, input size or dilation is refused without\n"
            "--overwrite; one run at a time per folder.\n\n"
            "exit status: 0 every frame done or skipped; 1 some frame failed; 2 bad arguments\n"
            "or inputs (an unknown class, a checkpoint that is not a segmentation model)."
        ),
    )
    parser.add_argument("images", help="folder of frames (or one image)")
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="mask folder (default IMAGES_exclude beside IMAGES)")
    add_segmentation_arguments(parser)
    parser.add_argument("--device", default="auto", help=f"{'|'.join(DEVICES)} (default auto)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="auto: fp16 on CUDA, bf16 on a CPU with native bf16 (AMX, AVX512-BF16), "
                             "fp32 elsewhere")
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="frames per forward pass; only same-size frames share a batch")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="refuse frames above this many pixels before decoding them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace masks made with other settings")
    add_extension_argument(parser)
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads reading frames (default: CPU count, at most 8)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..exclusion.run import exclude

    quiet = getattr(args, "quiet", False)
    settings = segmenter_settings(args, args.device, args.dtype, args.batch_size)
    with image_progress("exclude", quiet) as progress:
        summary = exclude(args.images, args.output, classes=class_names(args.classes),
                          settings=settings, dilate=dilation(args), max_pixels=args.max_pixels,
                          overwrite=args.overwrite, progress=progress, workers=args.workers,
                          extensions=args.ext)
    if not quiet:
        print(summary.format())
    return summary.exit_code
