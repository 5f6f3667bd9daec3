"""Depth losses for Gaussian-splatting trainers, and the 3DGS depth-weight schedule.

Every loss compares a **rendered inverse depth** ``pred`` with a prior ``target`` that is
itself inverse depth (what `depthprior generate` writes and `DepthPriors` returns). A trainer
whose rasterizer renders depth converts first: ``pred = 1 / depth`` where depth > 0
(`DepthSupervision(rendered="depth")` does this for you).

Shapes: ``(H, W)``, ``(1, H, W)`` or a batch ``(B, 1, H, W)``. ``pred`` and ``target`` must
have the same height and width. ``mask`` (optional) broadcasts against them; it is a 0/1 mask
or non-negative weights (an alpha mask, `edge_aware_weight`, or both multiplied). For a batch
the per-image losses are averaged.

========================  ==========================================================  =========
loss                      formula (w = mask, sums over pixels of one image)           invariant
========================  ==========================================================  =========
l1_inverse_depth_loss     mean_i |(pred_i - target_i) * w_i|  (mean over ALL pixels,  none
                          exactly as 3DGS train.py)
pearson_depth_loss        1 - corr_w(pred, target)                                    a*x + b,
                                                                                      a > 0, on
                                                                                      either side
ssi_loss                  sum_i w_i |s*target_i + t - pred_i| / sum_i w_i, with       a*target
                          (s, t) = argmin sum_i w_i (s*target_i + t - pred_i)^2,      + b
                          s clamped to >= 0 (closed form)
========================  ==========================================================  =========
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-12


def l1_inverse_depth_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The 3DGS depth loss: ``mean(|(pred - target) * mask|)`` on inverse depth.

    ``pred`` is the rendered inverse depth (3DGS: ``render_pkg["depth"]``, which its rasterizer
    fills with inverse depth), ``target`` the **aligned** prior (``scale * png / 2**16 +
    offset``, see `DepthPriors` with depth_params.json). The mean runs over every pixel,
    masked ones included, so a half-masked image weighs half: this is 3DGS's exact formula.
    Not invariant to anything: the prior must be aligned to the scene's scale.
    """
    _check_shapes(pred, target)
    diff = pred - target
    if mask is not None:
        diff = diff * mask
    return diff.abs().mean()


def pearson_depth_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - corr(pred, target)``: Pearson correlation over the (weighted) pixels.

    Scale and shift invariant on both sides (``a * x + b`` with ``a > 0``), so it works with
    unaligned priors; the sparse-view method of FSGS/SparseGS. In [0, 2]: 0 for a prediction
    that is any increasing affine function of the prior, 1 for none, 2 for a reversed one.
    ``pred`` is rendered inverse depth; a constant image gives 1 (no correlation).
    """
    _check_shapes(pred, target)
    p, t, w = _flatten(pred, target, mask)
    total = w.sum(-1).clamp_min(_EPS)
    pc = p - (w * p).sum(-1, keepdim=True) / total[..., None]
    tc = t - (w * t).sum(-1, keepdim=True) / total[..., None]
    cov = (w * pc * tc).sum(-1)
    var = (w * pc * pc).sum(-1) * (w * tc * tc).sum(-1)
    corr = cov / var.clamp_min(_EPS * _EPS).sqrt()
    return (1.0 - corr).mean()


def ssi_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scale-and-shift-invariant L1: align the prior to the render in closed form, then L1.

    ``(s, t)`` minimise ``sum w (s * target + t - pred)^2`` per image (weighted least squares,
    solved exactly; gradients flow through the fit), ``s`` clamped to >= 0 so an upside-down
    render is not rewarded; the loss is the weighted mean of ``|s * target + t - pred|``.
    Invariant to any affine change of the prior (its unknown scale and offset), so no
    depth_params.json is needed; measured in the render's inverse-depth units, so its size is
    comparable with the L1 loss. ``pred`` is rendered inverse depth.
    """
    _check_shapes(pred, target)
    p, t, w = _flatten(pred, target, mask)
    total = w.sum(-1, keepdim=True).clamp_min(_EPS)
    p_mean = (w * p).sum(-1, keepdim=True) / total
    t_mean = (w * t).sum(-1, keepdim=True) / total
    tc = t - t_mean
    var = (w * tc * tc).sum(-1, keepdim=True)
    cov = (w * tc * (p - p_mean)).sum(-1, keepdim=True)
    scale = torch.where(var > _EPS, cov / var.clamp_min(_EPS), torch.zeros_like(var))
    scale = scale.clamp_min(0.0)
    shift = p_mean - scale * t_mean
    residual = (scale * t + shift - p).abs()
    return ((w * residual).sum(-1, keepdim=True) / total).mean()


def edge_aware_weight(image: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """Per-pixel weight ``exp(-gamma * g)`` that fades the depth loss at RGB edges.

    ``g`` is the image gradient: the channel mean of ``|I(x+1, y) - I(x, y)| + |I(x, y+1) -
    I(x, y)|`` (forward differences; the last row/column repeats its neighbour's value).
    ``image`` is RGB in [0, 1], ``(3, H, W)`` or ``(B, 3, H, W)``; the result is ``(1, H, W)``
    or ``(B, 1, H, W)`` in (0, 1], 1 on flat regions. Monocular depth is least trustworthy at
    object boundaries (blurred edges, thin structures); multiply it into ``mask``. No gradient.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected an image (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    with torch.no_grad():
        image = image.float()
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs()
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs()
        dx = torch.cat([dx, dx[..., :, -1:]], dim=-1)
        dy = torch.cat([dy, dy[..., -1:, :]], dim=-2)
        grad = (dx + dy).mean(dim=-3, keepdim=True)
        return torch.exp(-gamma * grad)


def depth_weight_schedule(
    iteration: int, init: float = 1.0, final: float = 0.01, max_steps: int = 30000
) -> float:
    """The 3DGS depth-loss weight: log-linear from ``init`` at step 0 to ``final`` at max_steps.

    ``exp((1 - u) * ln(init) + u * ln(final))`` with ``u = clip(iteration / max_steps, 0, 1)``,
    0 for a negative iteration or when init and final are both 0: 3DGS's
    ``get_expon_lr_func(depth_l1_weight_init, depth_l1_weight_final, max_steps=iterations)``.
    """
    if iteration < 0 or (init == 0.0 and final == 0.0):
        return 0.0
    if init <= 0 or final <= 0:
        raise ValueError("init and final must both be > 0 (or both 0 to disable)")
    if max_steps <= 0:
        raise ValueError("max_steps must be > 0")
    u = min(max(iteration / max_steps, 0.0), 1.0)
    return math.exp(math.log(init) * (1.0 - u) + math.log(final) * u)


def _check_shapes(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim < 2 or target.ndim < 2 or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"rendered {tuple(pred.shape)} and prior {tuple(target.shape)} differ in size; "
            "load the prior at the render's (height, width)"
        )


def _flatten(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, pixels) views of pred, target and weights; one image unless pred is 4-D."""
    weights = torch.ones_like(pred) if mask is None else mask.to(pred.dtype)
    p, t, w = torch.broadcast_tensors(pred, target.to(pred.dtype), weights)
    if p.ndim == 4:
        n = p.shape[0]
        return p.reshape(n, -1), t.reshape(n, -1), w.reshape(n, -1)
    return p.reshape(1, -1), t.reshape(1, -1), w.reshape(1, -1)


__all__ = [
    "depth_weight_schedule",
    "edge_aware_weight",
    "l1_inverse_depth_loss",
    "pearson_depth_loss",
    "ssi_loss",
]
