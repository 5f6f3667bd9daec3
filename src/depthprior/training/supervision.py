"""DepthSupervision: the one object a trainer calls per step to get the weighted depth loss."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from ..errors import UsageError
from .losses import (
    depth_weight_schedule,
    edge_aware_weight,
    l1_inverse_depth_loss,
    pearson_depth_loss,
    ssi_loss,
)
from .priors import DepthParams, DepthPriors

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "l1": l1_inverse_depth_loss,
    "pearson": pearson_depth_loss,
    "ssi": ssi_loss,
}
RENDERED = ("inverse_depth", "depth")


@dataclass
class StepRecord:
    """What the last call did, for logging (tensors are detached; no device sync here)."""

    name: str
    weight: float  # lambda_depth * schedule(iteration)
    value: torch.Tensor | None  # unweighted loss; None when skipped
    skipped: str | None  # why no loss was computed


class DepthSupervision:
    """``loss = lambda_depth * schedule(iteration) * depth_loss(render, prior)`` for one image.

    The seed's ``train(depth_dir=..., lambda_depth=...)`` integration point::

        supervision = DepthSupervision("depths", lambda_depth=0.1, loss="l1",
                                       params="scene/sparse/0/depth_params.json")
        supervision.check(camera.image_name for camera in cameras)   # fail early, by name
        ...
        loss = photometric + supervision(cam.image_name, render_pkg["depth"], iteration)

    ``rendered`` says once what the trainer's rasterizer renders: ``"inverse_depth"`` (the
    official 3DGS rasterizer's ``depth`` output, the default) or ``"depth"`` (z-depth, e.g.
    gsplat's ``"D"``/``"ED"`` modes), converted here to ``1 / depth`` where depth > ``min_depth``
    and masked elsewhere. The prior is loaded at the render's height and width, on its device.

    ``loss="l1"`` is 3DGS's masked L1 on aligned inverse depth and needs ``params``
    (depth_params.json from `depthprior align`); ``"pearson"`` and ``"ssi"`` are scale and
    shift invariant and work without it. With ``lambda_depth=1`` and the defaults
    (``weight_init=1.0, weight_final=0.01, max_steps=30000``) the ``"l1"`` loss equals 3DGS's
    ``depth_l1_weight(iteration) * Ll1depth_pure``.

    ``masks``: the folder `depthprior consistency` wrote, a folder `depthprior exclude` wrote,
    or several (their weights multiply); each pixel's weight is multiplied by its confidence
    (mask / 255, bilinear to the render size) and its exclusion (0 on sky, people, ...), so
    rejected and excluded pixels get none, and no gradient. Images consistency excluded (see
    its consistency.json) have no mask and no depth loss.

    Images whose fit failed or is an outlier (see `DepthPriors.reliability`) give a zero loss
    without gradient; an image without a prior raises `MissingPriorError`.
    """

    def __init__(
        self,
        depth_dir: "str | os.PathLike[str]",
        lambda_depth: float = 0.1,
        loss: str = "l1",
        params: "str | os.PathLike[str] | Mapping[str, Any] | DepthParams | None" = None,
        *,
        rendered: str = "inverse_depth",
        max_steps: int = 30000,
        weight_init: float = 1.0,
        weight_final: float = 0.01,
        edge_gamma: float | None = None,
        min_depth: float = 1e-6,
        cache: bool = True,
        masks: "str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None" = None,
    ):
        if loss not in LOSSES:
            raise UsageError(f"unknown depth loss {loss!r}: choose one of {', '.join(LOSSES)}")
        if rendered not in RENDERED:
            raise UsageError(f"rendered must be one of {', '.join(RENDERED)}, not {rendered!r}")
        if loss == "l1" and params is None:
            raise UsageError(
                "the l1 depth loss compares with aligned priors: pass params= the "
                "depth_params.json written by `depthprior align`, or use loss='pearson' or 'ssi'"
            )
        if lambda_depth < 0:
            raise UsageError("lambda_depth must be >= 0")
        depth_weight_schedule(0, weight_init, weight_final, max_steps)  # validates
        self.priors = DepthPriors(depth_dir, params, cache=cache, masks=masks)
        self.lambda_depth = float(lambda_depth)
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]
        self.rendered = rendered
        self.max_steps = max_steps
        self.weight_init = weight_init
        self.weight_final = weight_final
        self.edge_gamma = edge_gamma
        self.min_depth = min_depth
        self.last: StepRecord | None = None

    def weight(self, iteration: int) -> float:
        """``lambda_depth * depth_weight_schedule(iteration, init, final, max_steps)``."""
        schedule = depth_weight_schedule(
            iteration, self.weight_init, self.weight_final, self.max_steps
        )
        return self.lambda_depth * schedule

    def check(self, names: Iterable[str]) -> None:
        """Raise one MissingPriorError naming every training image without a prior, and the
        first whose prior file is missing or unreadable (its header is checked, nothing
        decoded) or whose mask is missing or wrong."""
        names = list(names)
        self.priors.check(names)
        for name in names:
            self.priors.check_readable(name)
            if self.priors.reliable(name) and self.priors.unmasked(name) is None:
                self.priors.confidence(name)

    def __call__(
        self,
        name: str,
        rendered: torch.Tensor,
        iteration: int,
        *,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted depth loss for image `name` (a 0-d tensor on the render's device).

        ``rendered``: (H, W) or (1, H, W) inverse depth or depth (see ``rendered=``).
        ``image``: the ground-truth RGB (3, H, W) in [0, 1], used for the edge-aware weight
        when ``edge_gamma`` is set. ``mask``: optional (1, H, W) weights (e.g. an alpha mask).
        """
        if rendered.ndim not in (2, 3):
            raise ValueError(f"expected a rendered map (H, W) or (1, H, W), got {tuple(rendered.shape)}")
        prior = self.priors.get(name, size=rendered.shape[-2:], device=rendered.device)
        zero = rendered.new_zeros(())
        weight = self.weight(iteration)
        if not prior.reliable:
            self.last = StepRecord(prior.stem, weight, None, prior.reason)
            return zero
        unmasked = self.priors.unmasked(name)
        if unmasked is not None:
            self.last = StepRecord(prior.stem, weight, None, unmasked)
            return zero
        if weight == 0.0:
            self.last = StepRecord(prior.stem, weight, None, "weight is 0 at this iteration")
            return zero
        target = prior.inverse_depth
        if rendered.ndim == 2:
            target = target[0]
        weights = mask
        confidence = self.priors.confidence(name, rendered.shape[-2:], rendered.device)
        if confidence is not None:
            confidence = confidence[0] if rendered.ndim == 2 else confidence
            weights = confidence if weights is None else weights * confidence
        if self.rendered == "depth":
            valid = rendered > self.min_depth
            pred = 1.0 / torch.where(valid, rendered, torch.ones_like(rendered))
            weights = valid.to(rendered.dtype) if weights is None else weights * valid
        else:
            pred = rendered
        if self.edge_gamma is not None:
            if image is None:
                raise ValueError("edge_gamma is set: pass image= (the RGB ground truth)")
            edges = edge_aware_weight(image.to(rendered.device), self.edge_gamma)
            edges = edges[0] if rendered.ndim == 2 else edges
            weights = edges if weights is None else weights * edges
        value = self.loss_fn(pred, target, weights)
        self.last = StepRecord(prior.stem, weight, value.detach(), None)
        return weight * value


__all__ = ["DepthSupervision", "LOSSES", "RENDERED", "StepRecord"]
