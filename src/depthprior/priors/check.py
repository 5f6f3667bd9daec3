"""check(): load a backend, run one image, report what came back. The seed's API test, for all backends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .backends import DEFAULT_BACKEND, BackendSettings, create_backend, settings_for
from ..errors import DepthpriorError, ImageError, first_line
from ..images import read_image_or_fail
from .store import encode_inverse_depth


@dataclass
class CheckReport:
    backend: dict[str, Any]
    image: str
    image_size: tuple[int, int]
    load_seconds: float
    infer_seconds: float
    shape: tuple[int, ...]
    dtype: str
    kind: str
    value_min: float
    value_max: float
    levels: int
    source: str
    source_levels: int | None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"{key:>22}: {value}" for key, value in self.backend.items()]
        lines += [
            f"{'image':>22}: {self.image} ({self.image_size[1]}x{self.image_size[0]})",
            f"{'load time':>22}: {self.load_seconds:.2f} s",
            f"{'inference time':>22}: {self.infer_seconds:.3f} s",
            f"{'output':>22}: shape {self.shape}, {self.dtype}, {self.kind}",
            f"{'value range':>22}: {self.value_min:.6g} .. {self.value_max:.6g}",
            f"{'distinct levels (png)':>22}: {self.levels}",
            f"{'source':>22}: {self.source}"
            + (f" ({self.source_levels} levels)" if self.source_levels else ""),
        ]
        for key, value in self.diagnostics.items():
            text = str(value).rstrip()
            if "\n" in text:
                lines.append(f"{key:>22}:")
                lines.extend("    " + line for line in text.splitlines())
            else:
                lines.append(f"{key:>22}: {text}")
        lines.extend(f"{'PROBLEM':>22}: {problem}" for problem in self.problems)
        lines.append("check: OK" if self.ok else "check: FAILED")
        return "\n".join(lines)


def synthetic_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A textured floor and three discs at different sizes: a recognisable near/far layout."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    floor = (90 + 120 * rows) * (0.85 + 0.15 * np.sin(cols * 60 + rows * 20 * (rows + 0.2)))
    image = np.repeat(floor[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    image[: height // 3] = (170, 200, 235)  # sky band
    for cx, cy, r, colour in ((0.25, 0.7, 0.16, (200, 60, 40)), (0.6, 0.55, 0.09, (40, 150, 60)),
                              (0.82, 0.45, 0.05, (40, 60, 190))):
        cv2.circle(image, (int(cx * width), int(cy * height)), int(r * height), colour, -1, cv2.LINE_AA)
    return image


def check(
    image: str | Path | None = None,
    *,
    backend: str = DEFAULT_BACKEND,
    settings: BackendSettings | None = None,
) -> CheckReport:
    """Run one image through the backend. Raises DepthpriorError if it cannot be loaded."""
    settings = settings_for(backend, settings)
    rgb = read_image_or_fail(image, settings.max_pixels) if image is not None else synthetic_image()
    start = time.perf_counter()
    with create_backend(backend, settings) as engine:
        loaded = time.perf_counter()
        depth = _predict_one(engine, rgb, image)
        done = time.perf_counter()
        described, diagnostics = engine.describe(), engine.diagnostics()
    values = depth.values
    report = CheckReport(
        backend=described, image=str(image) if image else "built-in synthetic image",
        image_size=rgb.shape[:2], load_seconds=loaded - start, infer_seconds=done - loaded,
        shape=tuple(values.shape), dtype=str(values.dtype), kind=depth.kind,
        value_min=float(np.nanmin(values)), value_max=float(np.nanmax(values)), levels=0,
        source=depth.source, source_levels=depth.levels, diagnostics=diagnostics,
    )
    if values.shape != rgb.shape[:2]:
        report.problems.append(f"map shape {values.shape} differs from the image {rgb.shape[:2]}")
    try:
        encoded = encode_inverse_depth(values, depth.kind)
        report.levels = encoded.levels
        if encoded.constant:
            report.problems.append("constant map: the backend returned no depth variation")
    except ValueError as error:
        report.problems.append(str(error))
    return report


def _predict_one(engine, rgb: np.ndarray, image: str | Path | None):
    """The map of one picture; a model that fails on it is one line (ImageError), not a traceback."""
    try:
        return engine.predict([rgb], [Path(image).name if image else ""])[0]
    except DepthpriorError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the model raised, said in one line
        picture = image or "the built-in synthetic image"
        raise ImageError(f"the model failed on {picture} ({rgb.shape[1]}x{rgb.shape[0]}): "
                         f"{type(error).__name__}: {first_line(error)}") from None


__all__ = ["CheckReport", "check", "synthetic_image", "DepthpriorError"]
