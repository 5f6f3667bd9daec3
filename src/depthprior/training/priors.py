"""DepthPriors: image name -> prior tensor at a training resolution, on a device.

The loading rules (3DGS-exact reading, resizing, alignment and reliability, and where this is
stricter than 3DGS) live in `depthprior.scene.priorset`; this module moves the arrays to torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from ..scene.confidence import WITH_MASK
from ..scene.depth_params import SCALE_BAND, DepthParams
from ..scene.priorset import MissingPriorError, PriorArray, PriorSet
from ..scene.weights import MaskFolders


@dataclass
class Prior(PriorArray):
    """`PriorArray` with its values as a tensor, ready to compare with a rendered inverse depth."""

    inverse_depth: torch.Tensor  # (1, H, W) float32 on the device; aligned when `aligned`


class DepthPriors(PriorSet):
    """Image name -> prior tensor at a training resolution, on a device.

    ``depth_dir`` is the folder `depthprior generate` wrote (PNGs + depthprior.json). ``params``
    is depth_params.json from `depthprior align` (a path, the sparse folder holding it, or a
    dict); without it the priors are returned unaligned as ``png / 2**16`` (fine for the
    Pearson and scale-and-shift-invariant losses, meaningless for the L1 loss).

    Loading is 3DGS's: ``png / 2**16``, ``cv2.resize`` (bilinear) to the requested
    ``(height, width)``, then ``scale * x + offset``. An image is unreliable (a trainer skips it)
    when its fit failed (scale <= 0), its scale is outside [0.2, 5] x the median positive scale,
    it has no entry in depth_params.json, or the align report marks it unreliable or failed.

    Names are accepted with or without extension (``frame_001.jpg``, ``frame_001``), as the
    relative path the images were generated from (``cam0/frame_001.jpg``) or, when unambiguous,
    as the bare file name. A name without a prior raises `MissingPriorError`, never zeros.
    Loaded tensors are cached per (name, size, device) when ``cache`` (3DGS keeps every camera's
    prior in memory too). With ``masks`` (a folder `depthprior consistency` or `depthprior
    exclude` wrote, or several: their weights multiply), `confidence` gives each image's
    per-pixel weight to multiply the loss weight by (an excluded pixel's is 0).
    """

    def __init__(
        self,
        depth_dir: "str | os.PathLike[str]",
        params: "str | os.PathLike[str] | Mapping[str, Any] | DepthParams | None" = None,
        *,
        device: "str | torch.device" = "cpu",
        cache: bool = True,
        scale_band: tuple[float, float] = SCALE_BAND,
        masks: "str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None" = None,
    ):
        super().__init__(depth_dir, params, scale_band=scale_band)
        self.device = torch.device(device)
        self.cache = cache
        self._cache: dict[tuple[str, tuple[int, int] | None, str], Prior] = {}
        self.masks = MaskFolders.of(masks)
        #: key -> (status, reason) from the consistency folders' consistency.json
        self._mask_status = self.masks.statuses if self.masks is not None else {}
        self._mask_cache: dict[tuple[str, tuple[int, int] | None, str], torch.Tensor] = {}

    def get(
        self,
        name: str,
        size: "tuple[int, int] | torch.Size | None" = None,
        device: "str | torch.device | None" = None,
    ) -> Prior:
        """The prior for `name`, resized to ``size = (height, width)`` (None: stored size)."""
        stem = self.stem(name)
        target = torch.device(device) if device is not None else self.device
        hw = (int(size[0]), int(size[1])) if size is not None else None
        key = (stem, hw, str(target))
        if self.cache and key in self._cache:
            return self._cache[key]
        array = self.load(stem, hw)
        tensor = torch.from_numpy(array.inverse_depth[None]).to(target)
        prior = Prior(**{**vars(array), "inverse_depth": tensor})
        if self.cache:
            self._cache[key] = prior
        return prior

    def unmasked(self, name: str) -> str | None:
        """Why `depthprior consistency` wrote no mask for this image (it excluded it, or its
        prior failed there), or None when it has one or there are no masks."""
        status, reason = self._mask_status.get(self.stem(name), ("", None))
        if not status or status in WITH_MASK:
            return None
        return f"depthprior consistency {status} it ({reason or 'no reason given'}): no mask"

    def confidence(
        self,
        name: str,
        size: "tuple[int, int] | torch.Size | None" = None,
        device: "str | torch.device | None" = None,
    ) -> torch.Tensor | None:
        """The image's weight as (1, H, W) at size; None without masks=: the product of its
        confidence masks / 255 (bilinear) and its exclusion masks (0 excluded, 1 kept).

        A confidence mask must be a single-channel uint8 PNG of the prior's stored size (never
        stretched from another size), an exclusion mask of its aspect ratio; both then follow the
        prior to `size` (bilinear, whatever its aspect ratio); a missing or wrong
        one raises MissingPriorError naming the file, like a missing prior, and so does an
        image consistency excluded (see `unmasked`).
        """
        if self.masks is None:
            return None
        stem = self.stem(name)
        why = self.unmasked(stem)
        if why is not None:
            raise MissingPriorError(f"no confidence mask for {name!r}: {why}; DepthSupervision "
                                    "skips its depth loss")
        target = torch.device(device) if device is not None else self.device
        hw = (int(size[0]), int(size[1])) if size is not None else None
        key = (stem, hw, str(target))
        tensor = self._mask_cache.get(key)
        if tensor is None:
            values = self.masks.weight(stem, self.prior_size(stem), hw)
            tensor = torch.from_numpy(values[None]).to(target)
            if self.cache:
                self._mask_cache[key] = tensor
        return tensor

    def inverse_depth(
        self,
        name: str,
        size: "tuple[int, int] | torch.Size | None" = None,
        device: "str | torch.device | None" = None,
    ) -> torch.Tensor:
        """Shortcut for ``get(name, size, device).inverse_depth``: a (1, H, W) float32 tensor."""
        return self.get(name, size, device).inverse_depth


__all__ = ["DepthParams", "DepthPriors", "MissingPriorError", "Prior", "SCALE_BAND"]
