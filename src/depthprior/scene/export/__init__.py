"""Depth at the scene's scale, from aligned priors, in the layouts nerfstudio, DN-Splatter and
SparseGS read.

Every export needs depth_params.json from `depthprior align` (they fail with one line asking
for it rather than fitting silently with other settings) and the COLMAP model it was fitted on.
Each image's prior is loaded exactly as a 3DGS trainer would (`PriorSet`: png / 2**16,
bilinear resize to the camera's size, ``scale * x + offset``), then ``depth = 1 / that`` in the
model's units; pixels whose aligned inverse depth is <= 0 have no depth (0). Images whose fit
failed or is an outlier are written as all-invalid maps, because the trainers need one depth
file per frame and treat 0 as "no depth". Each export prints the command that reads it.

nerfstudio (``ns-train depth-nerfacto nerfstudio-data --data DIR --depth-unit-scale-factor U``):
    DEPTH_DIR/<image name without ext>.png: uint16 depth in units of U scene units, U chosen
    from the scene's depth range unless given (`choose_unit`), 0 invalid; every frame gets
    ``"depth_file_path"``; DIR/sparse_pc.ply + ``ply_file_path`` (the model's points, as
    ns-process-data writes them) unless one is named. transforms.json is updated in place when
    it exists (its poses must be at the COLMAP model's scale: checked) or written from the
    model. Trained at 1/N size, nerfstudio-data opens DIR/depths_N/<file name of
    depth_file_path> and the colmap parser <depths-path>_N/<image name>.png: both written for
    every DIR/images_N and requested factor, each pixel the median of its block's valid depths.

DN-Splatter, `coolermap` parser (``--data DATA --colmap-path ...``): it natsorts the image
paths and the DATA/mono_depth/*_aligned.npy names separately and pairs them by position, so
files are named ``<rank>_<stem>``, rank = the image's place in that order:
    <rank>_<stem>_aligned.npy: float32 (H, W, 1) z-depth in the model's units
    (depth_unit_scale_factor 1), 0 invalid;
    <rank>_<stem>.npy: float32 (H, W, 1) the unaligned prediction as depth x 1000
    (its convention for monocular depth in millimetres: exact for metric models, which predict
    1/m; relative units for disparity models), 0 where undefined.
    It reads cameras.bin/images.bin only and takes intrinsics in image id order: a text model,
    or ids out of name order across cameras, get DATA/depthprior_colmap (binary, renumbered).
DN-Splatter, `normal-nerfstudio` parser: the nerfstudio export into DATA/transforms.json.
With masks, both also write DATA/depth_normals_mask/<rank>_<stem>.jpg (AGS-Mesh: 255 = drop).

SparseGS (``python train.py -s SCENE``): SCENE/depths/<file name up to its first dot>.npy,
float32 (H, W) z-depth, flat (colliding names refused).

One module per consumer (nerfstudio, dn_splatter, sparsegs) beside what they share (common).
"""

from .common import EMPTY_DEPTH, ExportSummary, aligned_depth, depth_blocks, min_pool_valid, pool_valid
from .dn_splatter import coolermap_stems, export_dn_splatter, natural_key, unaligned_depth_mm
from .nerfstudio import export_nerfstudio
from .sparsegs import export_sparsegs, sparsegs_stems

__all__ = ["EMPTY_DEPTH", "ExportSummary", "aligned_depth", "coolermap_stems", "depth_blocks",
           "export_dn_splatter", "export_nerfstudio", "export_sparsegs", "sparsegs_stems",
           "min_pool_valid", "pool_valid", "natural_key", "unaligned_depth_mm"]
