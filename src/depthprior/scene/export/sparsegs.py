"""SparseGS gets SCENE/depths/<file name up to its first dot>.npy: float32 z-depth, flat."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from ...errors import UsageError, listing
from ...files.outputs import OutputFolder
from ...images import DEFAULT_MAX_PIXELS, is_inside
from ...priors.store import encode_npy
from .common import (ExportSummary, _check_sizes, _finish, _open, _require_priors, _size,
    aligned_depth, shell_word)


SPARSEGS_DIR = "depths"


def export_sparsegs(
    depths: Path | str,
    sparse: Path | str,
    scene: Path | str,
    *,
    params: Path | str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ExportSummary:
    """SCENE/depths/<stem>.npy as SparseGS reads them, and the command that trains on them.

    SparseGS (``python train.py -s SCENE``) opens SCENE/images/<basename of the image name> and
    np.load(SCENE/depths/<that basename up to its first dot>.npy) for every image of
    SCENE/sparse/0: one flat folder, so names that meet there are refused. Its Pearson depth
    loss wants depth-like values (correlated with rendered z-depth): each file is float32 (H, W)
    z-depth in the model's units from the aligned prior; pixels without depth take the image's
    farthest depth; an image whose fit failed is all zeros (constant: no depth gradient).
    """
    priors, _model, registered = _open(depths, sparse, params)
    scene = Path(scene)
    out_dir = scene / SPARSEGS_DIR
    if is_inside(out_dir, priors.root) or is_inside(priors.root, out_dir):
        raise UsageError(
            f"SparseGS reads {out_dir}/*.npy, which overlaps the prior folder {priors.root}: "
            "generate the priors into another folder (e.g. SCENE/depthprior), align, and export again"
        )
    _require_priors(priors, [image.name for image in registered])
    _check_sizes(registered, max_pixels)
    stems = sparsegs_stems([image.name for image in registered])

    summary = ExportSummary("sparsegs", out_dir)
    with OutputFolder(out_dir) as folder:
        for image in registered:
            depth, reason = aligned_depth(priors, image.name, _size(image))
            valid = depth > 0
            if valid.any():
                depth = np.where(valid, depth, depth[valid].max())
            folder.write(stems[image.name] + ".npy", encode_npy(depth.astype(np.float32)))
            summary.images += 1
            if reason:
                summary.invalid[image.key] = reason
        _finish(folder)
    model_dir = scene / "sparse" / "0"
    if not (model_dir.is_dir() and os.path.samefile(model_dir, sparse)):
        summary.notes.append(f"note: SparseGS reads the model from {model_dir}; put the model "
                             f"the priors were aligned to ({sparse}) there")
    if not (scene / "images").is_dir():
        summary.notes.append(f"note: SparseGS reads the frames from {scene / 'images'}/<file name>")
    summary.command = f"python train.py -s {shell_word(str(scene))}"
    return summary


def sparsegs_stems(names: list[str]) -> dict[str, str]:
    """Image name -> SparseGS's image_name (basename up to its first dot); UsageError for
    names that meet in its flat folders or have no such stem."""
    stems = {name: PurePosixPath(name).name.split(".")[0] for name in names}
    empty = [name for name, stem in stems.items() if not stem]
    if empty:
        raise UsageError(f"SparseGS names depth by the file name up to its first dot, which is "
                         f"empty for {listing(empty, quote=True)}: rename those images")
    seen: dict[str, str] = {}
    for name, stem in stems.items():
        if stem in seen:
            raise UsageError(
                f"SparseGS reads images/<file name> and depths/<file name up to its first dot>.npy "
                f"from flat folders, so {seen[stem]!r} and {name!r} both become {stem!r}: rename "
                "one of them (in the model and on disk)"
            )
        seen[stem] = name
    return stems
