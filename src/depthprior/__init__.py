"""depthprior: monocular depth priors (Depth Anything) for 3D Gaussian Splatting."""

from __future__ import annotations

__version__ = "0.2.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .priors.pipeline import Summary
    from .steps import GenerateRun


def generate(images: Any, out: Any, **options: Any) -> "Summary":
    """Folder of frames -> 16-bit inverse-depth PNGs in OUT. See depthprior.priors.pipeline.generate."""
    from .priors.pipeline import generate as _generate

    return _generate(images, out, **options)


def run_generate(images: Any, out: Any, **options: Any) -> "GenerateRun":
    """generate, then verify and align as asked. See depthprior.steps.run_generate."""
    from .steps import run_generate as _run_generate

    return _run_generate(images, out, **options)


__all__ = ["__version__", "generate", "run_generate"]
