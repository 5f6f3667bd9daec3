"""The report's plots, drawn with matplotlib (Agg, static images).

Series plots (one figure per figure of the fit, over frame order) come back as PNG bytes with
the pixel position of each marked frame, so the page can link the markers to their cards. The
per-frame scatter reuses one small figure: only the artists' data change between frames, which
keeps 1,000 scatters to a few seconds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import MissingDependencyError

SERIES_SIZE = (5.6, 1.8)  # inches
SERIES_DPI = 100
SCATTER_SIZE = (2.6, 2.0)
SCATTER_DPI = 100
INLIER_COLOUR = "#1f77b4"
OUTLIER_COLOUR = "#d62728"
MARK_COLOUR = "#d62728"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("matplotlib", "report", "depthprior report") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class SeriesPlot:
    title: str
    png: bytes
    width: int
    height: int
    marks: list[tuple[int, float, float]]  # (frame index, x px, y px from the top)


def series_plot(title: str, frames: Sequence[int], values: Sequence[float | None],
                marked: Sequence[int], *, log: bool = False, percent: bool = False) -> SeriesPlot:
    """values over frame indices (None: a gap), the `marked` frame indices circled in red."""
    plt = _pyplot()
    x = np.asarray(frames, dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if percent:
        y = y * 100.0
    figure, axes = plt.subplots(figsize=SERIES_SIZE, dpi=SERIES_DPI)
    try:
        axes.plot(x, y, ".-", color="#444444", markersize=3, linewidth=0.8)
        where = np.isin(x, np.asarray(marked, dtype=np.float64)) & np.isfinite(y)
        axes.scatter(x[where], y[where], s=40, facecolors="none", edgecolors=MARK_COLOUR, zorder=3)
        if log and np.any(np.isfinite(y) & (y > 0)):
            axes.set_yscale("log")
        axes.set_title(title, fontsize=9, loc="left")
        axes.set_xlabel("frame", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.canvas.draw()
        width, height = figure.canvas.get_width_height()
        points = axes.transData.transform(np.column_stack([x[where], y[where]])) if where.any() \
            else np.zeros((0, 2))
        marks = [(int(i), float(px), float(height - py))
                 for i, (px, py) in zip(x[where], points)]
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=SERIES_DPI)
    finally:
        plt.close(figure)
    return SeriesPlot(title, buffer.getvalue(), width, height, marks)


class ScatterDrawer:
    """Prior value against SfM inverse depth with the fitted line, one reused figure."""

    def __init__(self) -> None:
        plt = _pyplot()
        self._plt = plt
        self.figure, self.axes = plt.subplots(figsize=SCATTER_SIZE, dpi=SCATTER_DPI)
        axes = self.axes
        self.inliers = axes.scatter([], [], s=4, c=INLIER_COLOUR, linewidths=0, label="inlier")
        self.outliers = axes.scatter([], [], s=6, c=OUTLIER_COLOUR, linewidths=0, marker="x",
                                     label="outlier")
        (self.line,) = axes.plot([], [], color="black", linewidth=1.0)
        axes.set_xlabel("prior (png / 65536)", fontsize=7)
        axes.set_ylabel("SfM 1/z", fontsize=7)
        axes.tick_params(labelsize=6)
        axes.legend(fontsize=6, loc="upper left", markerscale=2, frameon=False)
        self.figure.tight_layout()

    def draw(self, prior: np.ndarray, target: np.ndarray, inlier: np.ndarray,
             scale: float, offset: float) -> bytes:
        """JPEG bytes of one frame's scatter (the line only when the fit has a positive scale)."""
        self.inliers.set_offsets(np.column_stack([prior[inlier], target[inlier]]))
        self.outliers.set_offsets(np.column_stack([prior[~inlier], target[~inlier]]))
        low, high = (float(prior.min()), float(prior.max())) if prior.size else (0.0, 1.0)
        if scale > 0:
            self.line.set_data([low, high], [scale * low + offset, scale * high + offset])
        else:
            self.line.set_data([], [])
        self._limits(prior, target)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="jpeg", dpi=SCATTER_DPI,
                            pil_kwargs={"quality": 85})
        return buffer.getvalue()

    def _limits(self, prior: np.ndarray, target: np.ndarray) -> None:
        for values, setter in ((prior, self.axes.set_xlim), (target, self.axes.set_ylim)):
            if values.size == 0:
                setter(0.0, 1.0)
                continue
            low, high = float(values.min()), float(values.max())
            pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            setter(low - pad, high + pad)

    def close(self) -> None:
        self._plt.close(self.figure)
