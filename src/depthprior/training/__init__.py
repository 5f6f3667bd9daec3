"""Torch helpers for Gaussian-splatting trainers: load priors, depth losses, weight schedule.

No trainer-specific dependency: a trainer passes image names and rendered maps.

    from depthprior.training import DepthSupervision
    supervision = DepthSupervision("depths", lambda_depth=0.1, loss="l1",
                                   params="scene/sparse/0/depth_params.json")
    loss = loss + supervision(camera.image_name, render_pkg["depth"], iteration)

See `DepthPriors` (loading, alignment, reliability), the losses in `depthprior.training.losses`
(formulas and expected inputs) and `DepthSupervision` (one call per step).
"""

from __future__ import annotations

from .losses import (
    depth_weight_schedule,
    edge_aware_weight,
    l1_inverse_depth_loss,
    pearson_depth_loss,
    ssi_loss,
)
from .priors import SCALE_BAND, DepthParams, DepthPriors, MissingPriorError, Prior
from .supervision import LOSSES, RENDERED, DepthSupervision, StepRecord

__all__ = [
    "DepthParams",
    "DepthPriors",
    "DepthSupervision",
    "LOSSES",
    "MissingPriorError",
    "Prior",
    "RENDERED",
    "SCALE_BAND",
    "StepRecord",
    "depth_weight_schedule",
    "edge_aware_weight",
    "l1_inverse_depth_loss",
    "pearson_depth_loss",
    "ssi_loss",
]
