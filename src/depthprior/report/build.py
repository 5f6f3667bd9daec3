"""depthprior report: gather the scene (`data`), draw (`pictures`, `plots`), write (`page`).

Per-frame pictures are read and shrunk on a thread pool (OpenCV releases the GIL); the
matplotlib scatters are drawn on the calling thread from one reused figure, from at most
SCATTER_POINTS samples per frame (the counts shown are always over all samples).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ImageError, UsageError, first_line, one_line
from ..files.outputs import OutputFolder
from ..files.raster import read_mask, read_prior
from ..images import DEFAULT_MAX_PIXELS
from ..threads import in_order, worker_count
from ..scene.sampling import method_samples
from . import pictures
from .data import Frame, SceneData, gather
from .page import FrameView, render
from .plots import ScatterDrawer, SeriesPlot, series_plot
from ..files.place import local_folder

REPORT_NAME = "report.html"
ASSETS_SUFFIX = "_files"
SCATTER_POINTS = 400
ASSET_NAME = re.compile(r"\d{5}-(photo|prior|mask|exclude|fit)\.jpg")


@dataclass
class ReportSummary:
    path: Path  # the HTML file
    assets: Path  # the folder of pictures beside it
    frames: int
    statuses: dict[str, int]
    fits: dict[str, int] | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        statuses = ", ".join(f"{count} {status}" for status, count in self.statuses.items())
        lines = [f"wrote {one_line(self.path)} ({self.frames} frames: {statuses}; {self.seconds:.1f} s)"]
        if self.fits is None:
            lines.append("no SfM model given: the page shows the priors only (no fits, plots or scatters)")
        lines += [f"note: {one_line(note)}" for note in self.notes]
        lines.append(f"open it in a browser: {self.path.resolve().as_uri()}")  # percent-encoded: one line
        return "\n".join(lines)


@dataclass
class FrameWork:
    """What a worker prepares for one frame: its view and, with a model, the scatter samples."""

    view: FrameView
    samples: tuple[np.ndarray, np.ndarray] | None = None


def report(out: Path | str, *, images: Path | str | None = None, sparse: Path | str | None = None,
           masks: Path | str | None = None, output: Path | str | None = None,
           max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None,
           exclude: Path | str | None = None) -> ReportSummary:
    """Write OUT/report.html (or `output`) and its assets folder for a generate output folder.

    images: the frames (default: the folder the manifest records). sparse: the COLMAP model
    whose depth_params.json (from `depthprior align`) gives the fits. masks: confidence masks
    (`<key>.png`, uint8, >= 128 trusted) and optionally their consistency.json. exclude: the
    exclusion masks of `depthprior exclude`, shown beside the prior with each frame's
    excluded fraction.
    Raises UsageError (one line) for inputs that cannot be used, or an output folder another
    run is writing; WriteError (one line naming the file) when a file cannot be written. A
    picture that cannot be read or made fails that frame (a note), never the page.
    """
    started = time.monotonic()
    out = local_folder(out, "report reads OUT on this machine")
    scene = gather(out, images=images, sparse=sparse, masks=masks, exclude=exclude)
    page = Path(output) if output is not None else scene.out / REPORT_NAME
    assets = _check_output(page)
    model = _model(scene)
    with OutputFolder(page.parent) as folder:
        folder.path(page.name)  # a page that is a link out is refused before any drawing
        earlier = _earlier_pictures(assets)
        views = _draw_frames(scene, model, Pictures(folder, assets.name), max_pixels, workers)
        html = render(scene, views, _series(scene))
        # a file name that is not valid UTF-8 stays its own bytes, so links still find the file
        folder.write(page.name, html.encode("utf-8", "surrogateescape"))
        folder.remove_unproduced(earlier)
    notes = [note for view in views.values() for note in view.notes][:5]
    return ReportSummary(page, assets, len(scene.frames), scene.status_counts(), scene.fit_counts(),
                         time.monotonic() - started, notes)


def _check_output(page: Path) -> Path:
    """The assets folder beside the page; UsageError when the page cannot go there."""
    if page.is_dir():
        raise UsageError(f"output {page} is a folder; pass a file name such as {page / REPORT_NAME}")
    if page.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"output {page} should end in .html")
    assets = page.with_name(page.stem + ASSETS_SUFFIX)
    if assets.is_symlink():  # its pictures would be written (and old ones deleted) elsewhere
        raise UsageError(f"the report's assets folder {assets} is a link; remove it or choose "
                         "another -o")
    if assets.exists() and not assets.is_dir():
        raise UsageError(f"the report's assets folder {assets} is a file; remove it or choose "
                         "another -o")
    return assets


def _earlier_pictures(assets: Path) -> list[str]:
    """The pictures an earlier report left in assets (relative to the page's folder): only
    names this command writes, nothing else of the folder."""
    if not assets.is_dir():
        return []
    return [f"{assets.name}/{old.name}" for old in assets.iterdir()
            if ASSET_NAME.fullmatch(old.name)]


@dataclass
class Pictures:
    """Where the frames' pictures go: the assets folder of the page's OutputFolder."""

    folder: OutputFolder
    assets: str  # the assets folder's name, beside the page

    def write(self, frame: "Frame", what: str, data: bytes) -> str:
        """Write one picture; its address relative to the page."""
        relative = f"{self.assets}/{frame.index:05d}-{what}.jpg"
        self.folder.write(relative, data)
        return relative


def _model(scene: SceneData):
    if scene.params is None or scene.sparse is None:
        return None
    from ..scene.colmap import read_model

    return read_model(scene.sparse)


# ---------------------------------------------------------------- per frame

def _draw_frames(scene: SceneData, model, pictures_out: Pictures,
                 max_pixels: int | None, workers: int | None) -> dict[int, FrameView]:
    images = {image.key: image for image in model.images} if model is not None else {}

    def work(frame: Frame) -> FrameWork:
        return _frame_work(frame, model, images.get(frame.key), scene.method, pictures_out,
                           max_pixels)

    views: dict[int, FrameView] = {}
    drawer = ScatterDrawer() if model is not None else None
    try:
        drawn = in_order(work, scene.frames, worker_count(workers or None, limit=4), "report")
        for frame, done in zip(scene.frames, drawn):
            if drawer is not None and done.samples is not None and frame.fit is not None:
                _scatter(drawer, frame, done.samples, done.view, pictures_out)
            views[frame.index] = done.view
    finally:
        if drawer is not None:
            drawer.close()
    return views


def _frame_work(frame: Frame, model, image, method: str | None, pictures_out: Pictures,
                max_pixels: int | None) -> FrameWork:
    view = FrameView()
    photo = None
    if frame.photo is not None:
        photo = _picture(view, frame, "photo", pictures.photo_thumbnail, frame.photo, max_pixels)
        if photo is not None:
            view.photo = pictures_out.write(frame, "photo", pictures.encode_jpeg(photo))
    record = frame.record
    record_size = (record.height, record.width) if record is not None and record.ok else None
    depth = colour = None
    if frame.prior is not None:
        depth = _picture(view, frame, "prior", read_prior, frame.prior, record_size, max_pixels)
    if depth is not None:
        colour = pictures.prior_thumbnail(depth)
        view.prior = pictures_out.write(frame, "prior", pictures.encode_jpeg(colour))
    base = photo if photo is not None else colour
    view.size = (base.shape[1], base.shape[0]) if base is not None else view.size
    mask_size = depth.shape if depth is not None else record_size
    if frame.mask is not None and mask_size is None:
        view.notes.append(f"{frame.name}: mask not shown: no prior to check its size against")
    elif frame.mask is not None:  # a mask must have its prior's size
        mask = _picture(view, frame, "mask", read_mask, frame.mask, mask_size, max_pixels)
        under = pictures.overlay_base(photo, colour, mask_size)
        if mask is not None and under is not None:
            overlay, view.mask_trusted = pictures.mask_overlay(under, mask)
            view.overlay = pictures_out.write(frame, "mask", pictures.encode_jpeg(overlay))
    if frame.exclusion is not None and mask_size is not None:  # at the image's size = its prior's
        excluded = _picture(view, frame, "exclusion mask", read_mask, frame.exclusion, mask_size, max_pixels)
        under = pictures.overlay_base(photo, colour, mask_size)
        if excluded is not None and under is not None:
            overlay, _kept = pictures.mask_overlay(under, excluded)
            view.exclusion = pictures_out.write(frame, "exclude", pictures.encode_jpeg(overlay))
    samples = None
    if model is not None and image is not None and depth is not None and frame.fit is not None:
        samples = scatter_samples(model, image, depth, method)
    return FrameWork(view, samples)


def _picture(view: FrameView, frame: Frame, what: str, read, *args) -> np.ndarray | None:
    """read(*args), or None with a note on the frame when it cannot be read."""
    try:
        return read(*args)
    except ImageError as error:
        view.notes.append(f"{frame.name}: {what} not shown: {first_line(error)}")
        return None


def scatter_samples(model, image, depth: np.ndarray,
                    method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(prior, SfM 1/z) sampled the way align's method sampled them."""
    samples = method_samples(method or "robust", model, image, depth)
    if samples is None:
        return np.zeros(0), np.zeros(0)
    prior, target, _span, _dropped = samples
    return np.asarray(prior, np.float64), np.asarray(target, np.float64)


def inlier_mask(prior: np.ndarray, target: np.ndarray, scale: float, offset: float,
                inliers: int | None) -> np.ndarray:
    """The reported number of inliers, as the samples closest to the fitted line (align's
    inliers are a band around the line, so these are the same samples)."""
    mask = np.zeros(prior.size, dtype=bool)
    if not scale > 0 or not inliers:
        return mask
    residual = np.abs(scale * prior + offset - target)
    mask[np.argsort(residual, kind="stable")[:inliers]] = True
    return mask


def _scatter(drawer: ScatterDrawer, frame: Frame, samples: tuple[np.ndarray, np.ndarray],
             view: FrameView, pictures_out: Pictures) -> None:
    prior, target = samples
    fit = frame.fit
    inlier = inlier_mask(prior, target, fit.scale, fit.offset, fit.inliers if fit.usable else 0)
    if prior.size > SCATTER_POINTS:
        keep = np.sort(np.random.default_rng(frame.index).choice(prior.size, SCATTER_POINTS,
                                                                 replace=False))
        prior, target, inlier = prior[keep], target[keep], inlier[keep]
    scale = fit.scale if fit.usable else 0.0  # no line for numbers the trainer never applies
    jpeg, x_range, y_range = drawer.draw(prior, target, inlier, scale, fit.offset)
    view.scatter_ranges = (x_range, y_range)
    view.scatter = pictures_out.write(frame, "fit", jpeg)


# ---------------------------------------------------------------- series

def _series(scene: SceneData) -> list[SeriesPlot]:
    frames = [f for f in scene.frames if f.fit is not None]
    if not frames:
        return []
    index = [f.index for f in frames]
    fits = [f.fit for f in frames]

    def marked(*kinds: str) -> list[int]:
        return [f.index for f in frames if any(m.split()[0] in kinds for m in f.marks)
                or f.status != "ok"]

    ok = [fit if fit.status != "failed" and fit.usable else None for fit in fits]
    return [
        series_plot("scale (log)", index, [f.scale if f else None for f in ok], marked("scale"),
                    log=True),
        series_plot("offset", index, [f.offset if f else None for f in ok], marked("offset")),
        series_plot("inliers (%)", index, [f.inlier_ratio for f in fits], marked(), percent=True),
        series_plot("rejected (%)", index, [f.rejected for f in fits], marked(), percent=True),
        series_plot("median residual of the inliers (%)", index, [f.residual for f in fits],
                    marked(), percent=True),
    ]
