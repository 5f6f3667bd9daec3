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

import cv2
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
    """Prior value against SfM inverse depth with the fitted line, one reused figure.

    The axes are drawn once; per frame only the points and the line are drawn over that
    background (blitting), with each frame's data mapped to the axes' fixed 0..1 range (`draw`
    returns the ranges, which the page prints under the plot). A full redraw (ticks and labels
    laid out per frame) costs ~50 ms a frame, most of a minute for 1,000 frames; this ~5 ms.
    """

    def __init__(self) -> None:
        plt = _pyplot()
        self._plt = plt
        self.figure, self.axes = plt.subplots(figsize=SCATTER_SIZE, dpi=SCATTER_DPI)
        axes = self.axes
        axes.set_xlim(-0.05, 1.05)
        axes.set_ylim(-0.05, 1.05)
        axes.set_xticks([0, 1], ["min", "max"], fontsize=6)
        axes.set_yticks([0, 1], ["min", "max"], fontsize=6)
        axes.set_xlabel("prior", fontsize=7)
        axes.set_ylabel("SfM 1/z", fontsize=7)
        axes.grid(alpha=0.3)
        self.figure.tight_layout()
        self.inliers = axes.scatter([], [], s=4, c=INLIER_COLOUR, linewidths=0, animated=True)
        self.outliers = axes.scatter([], [], s=8, c=OUTLIER_COLOUR, linewidths=0.8, marker="x",
                                     animated=True)
        (self.line,) = axes.plot([], [], color="black", linewidth=1.0, animated=True)
        self.figure.canvas.draw()
        self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)

    def draw(self, prior: np.ndarray, target: np.ndarray, inlier: np.ndarray,
             scale: float, offset: float) -> tuple[bytes, tuple[float, float], tuple[float, float]]:
        """One frame's scatter as JPEG bytes (the line only when the fit has a positive scale),
        and the prior and 1/z ranges that the axes' 0 and 1 stand for."""
        x_range, y_range = _range(prior), _range(target)
        x, y = _unit(prior, x_range), _unit(target, y_range)
        self.inliers.set_offsets(np.column_stack([x[inlier], y[inlier]]))
        self.outliers.set_offsets(np.column_stack([x[~inlier], y[~inlier]]))
        if scale > 0:
            ends = np.array(x_range)
            self.line.set_data(_unit(ends, x_range), _unit(scale * ends + offset, y_range))
        else:
            self.line.set_data([], [])
        canvas = self.figure.canvas
        canvas.restore_region(self.background)
        for artist in (self.inliers, self.outliers, self.line):
            self.axes.draw_artist(artist)
        rgba = np.asarray(canvas.buffer_rgba())
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise OSError("JPEG encoding failed")
        return jpeg.tobytes(), x_range, y_range

    def close(self) -> None:
        self._plt.close(self.figure)


def _range(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0))


def _unit(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """values mapped so that bounds become 0 and 1."""
    low, high = bounds
    return (np.asarray(values, dtype=np.float64) - low) / (high - low)
