"""DN-Splatter gets coolermap's ranked float32 .npy depths (and masks), or nerfstudio's layout."""

from __future__ import annotations

import glob
import math
import os
import re
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ...errors import UsageError, listing
from ...files.outputs import OutputFolder
from ...images import DEFAULT_MAX_PIXELS, is_inside, safe_join
from ..weights import Folders, MaskFolders
from ..priorset import PriorSet
from ...priors.store import TRAINER_SCALE, decode_inverse_depth, encode_npy
from .common import (COLMAP_NOTES, DepthSpan, EXPORT_RECORD, ExportSummary, _check_out,
    _check_sizes, _finish, _open, _recorded, _require_masks, _require_priors, _size, aligned_depth, pixel_weights,
    floor_warning, rejected, shell_word)
from .nerfstudio import export_nerfstudio


DN_SPLATTER_DIR = "mono_depth"
DN_SPLATTER_PARSERS = ("coolermap", "normal-nerfstudio")
#: AGS-Mesh's depth/normal confidence: DATA/depth_normals_mask/*.jpg, 255 = drop
DROP_MASK_DIR = "depth_normals_mask"
#: where the binary model coolermap needs is written (DATA/...) when --sparse cannot serve it
COOLERMAP_MODEL_DIR = "depthprior_colmap"


def unaligned_depth_mm(priors: PriorSet, name: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: 1000 / (the prior's raw inverse depth), 0 where that is <= 0."""
    png = priors.read_png(name).astype(np.float32)
    if png.shape != size:
        png = cv2.resize(png, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    record = priors.record(name)
    if record is not None and record.ok and record.decodable:
        raw = decode_inverse_depth(png, record.raw_min, record.raw_max).astype(np.float64)
    else:  # no manifest: the normalised values, as 3DGS reads them
        raw = png.astype(np.float64) / TRAINER_SCALE
    depth = np.zeros(size, dtype=np.float64)
    np.divide(1000.0, raw, out=depth, where=raw > 0)
    return depth.astype(np.float32)


def export_dn_splatter(
    depths: Path | str,
    sparse: Path | str,
    data: Path | str,
    *,
    params: Path | str | None = None,
    out: Path | str | None = None,
    parser: str = "coolermap",
    downscales: tuple[int, ...] = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    masks: "Folders | MaskFolders" = None,
) -> ExportSummary:
    """Depth laid out as DN-Splatter's `parser` reads it, and the command that trains on it.

    coolermap: DATA/mono_depth/<rank>_<stem>_aligned.npy in the model's units, named so that
    their natural order is the images' natural order (coolermap pairs them by position).
    normal-nerfstudio: the nerfstudio export into DATA/transforms.json (uint16 millimetres, the
    parser's depth_unit_scale_factor 1e-3).
    """
    if parser not in DN_SPLATTER_PARSERS:
        raise UsageError(f"--parser must be one of {', '.join(DN_SPLATTER_PARSERS)}, not {parser!r}")
    data = Path(data)
    masks = MaskFolders.of(masks)
    if parser == "normal-nerfstudio":
        if masks is not None:
            priors, _model, registered = _open(depths, sparse, params)
            _check_drop_masks_free(data, registered, parser)
        summary = export_nerfstudio(depths, sparse, data / "transforms.json", params=params,
                                    downscales=downscales, max_pixels=max_pixels, masks=masks,
                                    require_points=True)
        summary.target = "dn-splatter (normal-nerfstudio)"
        summary.notes = [note for note in summary.notes if not note.startswith(COLMAP_NOTES)]
        summary.command = (f"ns-train dn-splatter --pipeline.model.use-depth-loss True "
                           f"normal-nerfstudio --data {shell_word(str(data))} "
                           f"--depth-unit-scale-factor {summary.unit_scale!r}")
        summary.notes.extend(summary.floor_notes)
        if masks is not None:
            _write_drop_masks(data, priors, registered, masks, summary, parser)
        return summary
    return _export_coolermap(depths, sparse, data, params, out, max_pixels, masks)


def _export_coolermap(depths, sparse, data: Path, params, out, max_pixels,
                      masks: MaskFolders | None) -> ExportSummary:
    priors, model, registered = _open(depths, sparse, params)
    out_dir = Path(out) if out is not None else data / DN_SPLATTER_DIR
    _check_glob_safe(data)
    _check_out(out_dir, priors.root, masks)
    _require_priors(priors, [image.name for image in registered])
    _require_masks(masks, priors, [image.name for image in registered])
    _check_sizes(registered, max_pixels)
    _check_not_globbed([image.name for image in registered])
    stems = coolermap_stems([image.name for image in registered])
    for image in registered:
        safe_join(out_dir, stems[image.name], "_aligned.npy")  # every target before any write

    ours = {stems[image.name] + "_aligned.npy" for image in registered}
    _refuse_stale(out_dir, ours | set(_recorded(out_dir / EXPORT_RECORD)))
    if masks is not None:
        _check_drop_masks_free(data, registered, "coolermap")
    why_rewrite = _coolermap_model_problem(model, registered)

    summary = ExportSummary("dn-splatter (coolermap)", out_dir)
    span = DepthSpan(math.inf, 0.0)
    written: dict[str, np.ndarray] = {}  # name -> where a depth was written (with masks)
    with OutputFolder(out_dir) as folder:
        for image in registered:
            stem, size = stems[image.name], _size(image)
            depth, reason = aligned_depth(priors, image.name, size, masks)
            span.add(depth)
            if masks is not None:
                written[image.name] = depth > 0
            unaligned = unaligned_depth_mm(priors, image.name, size)
            drop = rejected(masks, priors, image.name, size) if reason is None else None
            if drop is not None:
                unaligned[drop] = 0.0
            folder.write(stem + "_aligned.npy", encode_npy(depth[..., None]))
            folder.write(stem + ".npy", encode_npy(unaligned[..., None]))
            summary.images += 1
            if reason:
                summary.invalid[image.key] = reason
        _finish(folder)
    if masks is not None:
        _write_drop_masks(data, priors, registered, masks, summary, "coolermap", written)
    colmap_dir = Path(sparse)
    if why_rewrite:
        colmap_dir = data / COOLERMAP_MODEL_DIR
        _write_coolermap_model(model, colmap_dir)
        summary.notes.append(f"binary model for coolermap, images numbered in name order -> "
                             f"{colmap_dir} ({why_rewrite})")
    summary.command = _coolermap_command(data, colmap_dir)
    summary.notes.extend(floor_warning(span))
    if out_dir.resolve() != (data / DN_SPLATTER_DIR).resolve():
        summary.notes.append(f"note: coolermap reads DATA/{DN_SPLATTER_DIR}; move {out_dir} there")
    if not (data / "images").is_dir():
        summary.notes.append(f"note: coolermap reads the frames from {data / 'images'}/<image name>; "
                             "put them there or add --images-path to the command")
    return summary


def _write_drop_masks(data: Path, priors: PriorSet, registered: list, masks: MaskFolders,
                      summary: ExportSummary, parser: str,
                      depths_of: dict[str, np.ndarray] | None = None) -> None:
    """DATA/depth_normals_mask/<rank>_<stem>.jpg, as AGS-Mesh reads them: natural-sorted and
    paired by position with the parser's list of images (rank = the image's place in it),
    value = 255 x (1 - confidence), i.e. 255 where a pixel is to be dropped (rejected by the
    mask, or without depth)."""
    folder_path = data / DROP_MASK_DIR
    stems = _check_drop_masks_free(data, registered, parser)
    with OutputFolder(folder_path) as folder:
        for image in registered:
            size = _size(image)
            if depths_of is not None:
                has_depth = depths_of[image.name]
            else:
                has_depth = aligned_depth(priors, image.name, size, masks)[0] > 0
            if not priors.reliable(image.name):  # consistency wrote it no mask: nothing to keep
                drop = np.full(size, 255.0)
            else:
                confidence = pixel_weights(masks, priors, image.name, size)
                drop = np.where(has_depth, np.rint(255.0 * (1.0 - np.clip(confidence, 0, 1))), 255)
            folder.write(stems[image.name] + ".jpg", encode_jpeg(drop.astype(np.uint8)))
        _finish(folder)
    summary.notes.append(f"drop masks (255 = drop, AGS-Mesh's confidence 1 - value/255) -> {folder_path}")


def _check_drop_masks_free(data: Path, registered: list, parser: str) -> dict[str, str]:
    """Image name -> drop mask stem; refuses other *.jpg in the folder (they would shift the
    by-position pairing).

    coolermap lists the images in natural order; normal-nerfstudio sorts its frames by path
    (np.argsort of the file names), which the ranks follow then."""
    folder_path = data / DROP_MASK_DIR
    names = [image.name for image in registered]
    if parser == "coolermap":
        stems = coolermap_stems(names)
    else:
        ordered = sorted(names, key=lambda name: PurePosixPath("images", name).parts)
        width = max(5, len(str(len(ordered) - 1)))
        stems = {name: f"{rank:0{width}d}_{PurePosixPath(name).stem}"
                 for rank, name in enumerate(ordered)}
    ours = {stems[image.name] + ".jpg" for image in registered}
    _refuse_stale(folder_path, ours | set(_recorded(folder_path / EXPORT_RECORD)), "*.jpg",
                  "AGS-Mesh")
    return stems


def encode_jpeg(plane: np.ndarray) -> bytes:
    """Single-channel JPEG at quality 100 (the format AGS-Mesh globs)."""
    ok, data = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, 100])
    if not ok:
        raise UsageError("cannot encode a drop mask as JPEG")
    return data.tobytes()


def _check_not_globbed(names: list[str]) -> None:
    """coolermap globs mono_depth/*_aligned.npy: the unaligned <rank>_<stem>.npy of a stem
    ending in _aligned would be read as one more aligned depth."""
    caught = [name for name in names if PurePosixPath(name).stem.endswith("_aligned")]
    if caught:
        raise UsageError(
            f"DN-Splatter reads every mono_depth/*_aligned.npy as an aligned depth, so the files of "
            f"{listing(caught, quote=True)} (a name ending in _aligned) would be paired with other "
            "images: rename those images (and in the model) and export again"
        )


def _coolermap_model_problem(model: Any, registered: list) -> str | None:
    """Why coolermap cannot read the model as it is, or None.

    coolermap opens cameras.bin and images.bin (no text), and takes each frame's intrinsics in
    image id order but its pose and file name in natural name order: with cameras of different
    intrinsics and ids out of name order, frames get another image's intrinsics.
    """
    if model.format != "binary":
        return "coolermap reads cameras.bin and images.bin; the model is text"
    by_id = sorted(registered, key=lambda image: image.image_id)
    by_name = sorted(registered, key=lambda image: natural_key(f"images/{image.name}"))
    shifted = [named.name for named, numbered in zip(by_name, by_id)
               if _intrinsics(named.camera) != _intrinsics(numbered.camera)]
    if shifted:
        return (f"coolermap gives frames the intrinsics of the image with the same place in image "
                f"id order; the ids are not in name order, so {len(shifted)} frame(s) "
                f"({listing(shifted, quote=True)}) would get another camera's")
    return None


def _intrinsics(camera: Any) -> tuple:
    return (camera.model, camera.width, camera.height, tuple(np.asarray(camera.params).tolist()))


def _write_coolermap_model(model: Any, folder_path: Path) -> None:
    from ..colmap_binary import binary_model, renumbered

    files = renumbered(binary_model(model.path, model.format),
                       lambda name: natural_key(f"images/{name}"))
    with OutputFolder(folder_path) as folder:
        folder.write_together(sorted(files.items()))
        _finish(folder)


def natural_key(text: str) -> tuple:
    """natsort's default key: NFD text split into strings and unsigned integers.

    Runs of decimal digits are one integer; a digit that is not a decimal (e.g. "²") is one on
    its own; a key starts with a string and never holds two integers side by side.
    """
    key: list[Any] = []
    for part in _natural_parts(unicodedata.normalize("NFD", text)):
        if isinstance(part, int) and (not key or isinstance(key[-1], int)):
            key.append("")
        key.append(part)
    return tuple(key)


def _natural_parts(text: str):
    for run in re.split(r"(\d+)", text):
        if run and run[0].isdecimal():
            yield int(run)
            continue
        start = 0
        for index, char in enumerate(run):
            if unicodedata.digit(char, None) is not None:
                if index > start:
                    yield run[start:index]
                yield unicodedata.digit(char)
                start = index + 1
        if start < len(run):
            yield run[start:]


def coolermap_stems(names: list[str]) -> dict[str, str]:
    """Image name -> depth file stem "<rank>_<file stem>", rank = the image's place in coolermap.

    coolermap natsorts the image paths (DATA/images/<name>) and the depth file names separately
    and pairs them by position. Zero-padded ranks in front make the depth files' natural order
    the images' own, whatever the folders and stems are.
    """
    keys = {name: natural_key(f"images/{name}") for name in names}
    ordered = sorted(names, key=keys.__getitem__)
    for first, second in zip(ordered, ordered[1:]):
        if keys[first] == keys[second]:
            raise UsageError(
                f"DN-Splatter sorts {first!r} and {second!r} as equal (natural order), so their "
                "order and their depth files' pairing is arbitrary: rename one of them"
            )
    width = max(5, len(str(len(ordered) - 1)))
    return {name: f"{rank:0{width}d}_{PurePosixPath(name).stem}" for rank, name in enumerate(ordered)}


def _check_glob_safe(data: Path) -> None:
    if glob.has_magic(str(data)) or glob.has_magic(str(data.absolute())):
        raise UsageError(
            f"DN-Splatter finds depth with glob('{data}/mono_depth/*_aligned.npy'), which reads "
            f"*, ? and [ in the data path as patterns: move the scene to a path without them"
        )


def _refuse_stale(out_dir: Path, ours: set[str], pattern: str = "*_aligned.npy",
                  reader: str = "DN-Splatter") -> None:
    """Other files matching the consumer's glob would join its sorted list and shift every pair."""
    found = glob.glob(os.path.join(glob.escape(str(out_dir)), pattern))
    stale = sorted(os.path.basename(path) for path in found if os.path.basename(path) not in ours)
    if stale:
        raise UsageError(
            f"{out_dir} holds {len(stale)} other {pattern} file(s) ({listing(stale)}) that "
            f"{reader} would pair with images too: delete them (or the folder) and export again"
        )


def _coolermap_command(data: Path, sparse: Path) -> str:
    colmap = os.path.relpath(sparse, data) if is_inside(sparse, data) else str(sparse.absolute())
    return (f"ns-train dn-splatter --pipeline.model.use-depth-loss True coolermap "
            f"--data {shell_word(str(data))} --colmap-path {shell_word(colmap)} "
            "--depth-unit-scale-factor 1")
