"""depthprior export nerfstudio|dn-splatter|sparsegs: scene-scale depth from aligned priors for other trainers."""

from __future__ import annotations

import argparse
import math

from ..images import DEFAULT_MAX_PIXELS


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _factors(text: str) -> tuple[int, ...]:
    try:
        factors = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,4,8, got {text!r}") from None
    if any(factor < 2 for factor in factors):
        raise argparse.ArgumentTypeError(f"every factor must be >= 2, got {text!r}")
    return factors


def _max_pixels(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _downscales(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--downscales", type=_factors, default=(),
                        help="also write depths_N/ for these factors (e.g. 2,4,8), as nerfstudio "
                             "reads with --downscale-factor N; every existing images_N/ gets one "
                             "anyway")


def _common(parser: argparse.ArgumentParser, masks: bool = True) -> None:
    parser.add_argument("--depths", required=True, help="output folder of depthprior generate")
    parser.add_argument("--sparse", required=True,
                        help="COLMAP model folder the priors were aligned to (e.g. scene/sparse/0)")
    parser.add_argument("--params", default=None,
                        help="depth_params.json from depthprior align (default SPARSE/depth_params.json)")
    parser.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS,
                        help="refuse cameras above this many pixels (default 100 MP)")
    if not masks:
        return
    parser.add_argument("--masks", default=None, metavar="DIR", nargs="+", action="extend",
                        help="mask folders, one or several: confidence masks from depthprior "
                             "consistency and exclusion masks from depthprior exclude; depth 0 "
                             "(none) where their product is below 128/255 (rejected or excluded)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write depth at the scene's scale for nerfstudio, DN-Splatter or SparseGS",
        description="Turn aligned priors (depthprior align) into depth in the COLMAP model's "
        "units, laid out as another trainer reads it. Needs depth_params.json: run "
        "`depthprior align` first.",
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")

    ns = targets.add_parser(
        "nerfstudio",
        help="uint16 depth PNGs + depth_file_path in transforms.json",
        description="Write DIR/depthprior_depth/<image>.png (uint16, depth / UNIT_SCALE, 0 = no "
        "depth) and set depth_file_path on every frame of transforms.json. An existing "
        "transforms.json is updated in place (its poses must be at the model's scale); a "
        "missing one is written from the COLMAP model.",
    )
    _common(ns)
    ns.add_argument("--transforms", required=True,
                    help="transforms.json to update or create (a folder, or a path not ending in "
                         ".json, means FOLDER/transforms.json)")
    ns.add_argument("--out", default=None,
                    help="folder for the depth PNGs (default depthprior_depth beside transforms.json)")
    ns.add_argument("--unit-scale", type=_positive_float, default=None,
                    help="scene units per PNG step, nerfstudio's depth_unit_scale_factor (default: "
                         "chosen from the scene's depths so that the far ones fit 16 bits and the "
                         "near ones get 256 steps or more; refused when no unit does both). The "
                         "printed command passes it to ns-train")
    ns.add_argument("--images-prefix", default="images",
                    help="folder of the frames relative to transforms.json, for a new "
                         "transforms.json (default images)")
    _downscales(ns)
    ns.set_defaults(run=run_nerfstudio)

    dn = targets.add_parser(
        "dn-splatter",
        help="depth laid out as a DN-Splatter dataparser reads it, and its training command",
        description="coolermap (default): write DATA/mono_depth/<rank>_<stem>_aligned.npy "
        "(float32 HxWx1 depth in the model's units, 0 = no depth) and <rank>_<stem>.npy (the "
        "unaligned prediction as depth x 1000) for every registered image, ranked so that "
        "coolermap's by-position pairing gives every image its own depth. normal-nerfstudio: "
        "the nerfstudio export into DATA/transforms.json (uint16 millimetres). Prints the "
        "ns-train command that reads the export.",
    )
    _common(dn)
    dn.add_argument("--data", required=True, help="DN-Splatter data root")
    dn.add_argument("--out", default=None, help="folder for the .npy files (default DATA/mono_depth)")
    dn.add_argument("--parser", choices=("coolermap", "normal-nerfstudio"), default="coolermap",
                    help="the DN-Splatter dataparser you will train with (default coolermap)")
    _downscales(dn)
    dn.set_defaults(run=run_dn_splatter)

    sg = targets.add_parser(
        "sparsegs",
        help="SCENE/depths/<stem>.npy as SparseGS reads them",
        description="Write SCENE/depths/<file name up to its first dot>.npy (float32 HxW z-depth "
        "in the model's units, for SparseGS's Pearson depth loss) for every registered image, "
        "and print the SparseGS command. SparseGS's folders are flat: image names that meet "
        "there (same file name in two folders, or up to the first dot) are refused.",
    )
    _common(sg, masks=False)
    sg.add_argument("--scene", required=True,
                    help="the SparseGS scene folder (its -s): SCENE/images, SCENE/sparse/0")
    sg.set_defaults(run=run_sparsegs)


def run_nerfstudio(args: argparse.Namespace) -> int:
    from ..scene.export import export_nerfstudio

    summary = export_nerfstudio(
        args.depths, args.sparse, args.transforms, params=args.params, out=args.out,
        unit_scale=args.unit_scale, images_prefix=args.images_prefix,
        downscales=args.downscales, max_pixels=args.max_pixels, masks=args.masks,
    )
    print(summary.format())
    return 0


def run_dn_splatter(args: argparse.Namespace) -> int:
    from ..scene.export import export_dn_splatter

    summary = export_dn_splatter(args.depths, args.sparse, args.data, params=args.params,
                                 out=args.out, parser=args.parser, downscales=args.downscales,
                                 max_pixels=args.max_pixels, masks=args.masks)
    print(summary.format())
    return 0


def run_sparsegs(args: argparse.Namespace) -> int:
    from ..scene.export import export_sparsegs

    summary = export_sparsegs(args.depths, args.sparse, args.scene, params=args.params,
                              max_pixels=args.max_pixels)
    print(summary.format())
    return 0
