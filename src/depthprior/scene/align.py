"""depthprior align: per-image scale/offset of the depth priors against a COLMAP model.

The command: check the inputs (model, depth files, frames), plan which images can be fitted,
sample and fit each (`sampling`, `fitting`) on a thread pool, judge the fits (notes, scale
outliers), and write depth_params.json with its report (`depth_params`). Every image of the
model gets an entry; a failed fit, or one align knows is wrong, is written as scale -1, offset 0
(SKIP_SCALE: 3DGS and hierarchical-3DGS then skip that image's depth under their own rule).

Two methods: "robust" (default, `fitting.fit_robust` on bilinear samples between pixel centres)
and "mad" (the official make_depth_scale.py recipe, `fitting.fit_mad` on
`sampling.official_samples`: its numbers, with depthprior's objections as notes).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import depth_params
from .colmap import ModelImage, SparseModel, read_model
from .depth_params import SCALE_BAND, AlignWriteError, Entry
from ..errors import ImageError, UsageError, first_line, listing, one_line
from ..exclusion.masks import ExclusionFolder, ExclusionMissing
from ..files.outputs import OutputFolder, atomic_write_bytes
from ..files.raster import read_prior, same_aspect
from .fitting import MIN_INLIER_FRACTION, MIN_POINTS, Fit, fit_mad, fit_robust
from ..images import image_key, posix_name, safe_join, stored_size
from ..priors.manifest import Manifest
from ..threads import in_order, worker_count
from .sampling import REMAP_MAX_SIDE, method_samples
from ..priors.store import depth_pngs, encode_png16
from ..files.place import local_folder

log = logging.getLogger(__name__)

METHODS = ("robust", "mad")
CONVENTIONS = {
    "robust": "1/z = scale * png / 65536 + offset; scale -1 marks a fit the trainer skips",
    "mad": "1/z = scale * png / 65535 + offset as fitted by the official make_depth_scale.py "
           "(the 3DGS trainer applies it to png / 65536); scale -1 marks a fit the trainer skips",
}
LOW_INLIER_FRACTION = 0.6  # below this: unreliable
MAX_RESIDUAL = 0.15  # median relative residual of the inliers above this: unreliable


class DepthFilesError(UsageError):
    """Depth maps missing, or the depth folder does not match the model."""


def fit_samples(method: str, model: SparseModel, image: ModelImage, depth: np.ndarray,
                kept: np.ndarray | None = None) -> tuple[Fit, int]:
    """Sample the prior at the image's SfM points the method's way (without those on pixels
    `kept` marks False), and fit; the fit and how many samples the exclusion dropped."""
    samples = method_samples(method, model, image, depth, kept)
    if samples is None:
        return Fit.failed(0, f"depth map is {depth.shape[1]}x{depth.shape[0]}: cv2.remap "
                             f"samples maps below {REMAP_MAX_SIDE} pixels a side"), 0
    prior, target, span, dropped = samples
    fit = fit_mad(prior, target, span=span) if method == "mad" else fit_robust(prior, target)
    return fit, dropped


# ---------------------------------------------------------------- results

@dataclass
class ImageResult:
    name: str  # image name in the model
    key: str  # depth_params.json key: name without extension
    depth: str | None  # depth file relative to the depth folder, None when missing
    points: int
    inliers: int
    residual: float | None  # median relative residual of the inliers
    scale: float  # as written to depth_params.json (0 when failed)
    offset: float
    status: str  # "ok", "unreliable", "failed"
    reason: str = ""
    prior_size: list[int] | None = None  # [width, height] of the depth map
    camera_size: list[int] | None = None
    image_size: list[int] | None = None  # stored size of the frame, with --images
    depth_bytes: int | None = None  # size of the depth file fitted: which maps the fit is for
    excluded: int | None = None  # SfM samples on excluded pixels, left out (with an exclusion folder)
    #: whether depth_params.json gives the trainer this fit: not for a failed fit or one align
    #: knows is wrong (written as SKIP_SCALE); a precision warning alone (8-bit source) keeps it
    for_trainer: bool = True
    #: per-sequence fits: the frame's sequence, and its own per-frame fit kept for diagnosis
    sequence: str | None = None
    own_fit: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["residual"] is not None and not np.isfinite(data["residual"]):
            data["residual"] = None
        return data


@dataclass
class AlignSummary:
    output: Path  # depth_params.json
    report: Path
    method: str
    results: list[ImageResult]
    median_scale: float
    model_format: str
    points3D: int
    unmatched_depths: list[str] = field(default_factory=list)  # depth files no image maps to
    seconds: float = 0.0
    exclude: Path | None = None  # the exclusion mask folder, when given
    grouping: str = "frame"  # "sequence": one fit per sequence of a temporal model's priors

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def unreliable(self) -> list[ImageResult]:
        return [r for r in self.results if r.status == "unreliable"]

    @property
    def fitted(self) -> list[ImageResult]:
        return [r for r in self.results if r.status != "failed"]

    @property
    def params(self) -> dict[str, Entry]:
        """depth_params.json's entries: key -> (scale, offset)."""
        return {r.key: Entry(r.scale, r.offset) if r.for_trainer and not r.failed else
                depth_params.SKIP_ENTRY for r in self.results}

    def format(self, *, brief: bool = False) -> str:
        """The per-image table (brief: only images not ok) and the summary lines."""
        lines = _table([r for r in self.results if not brief or r.status != "ok"], self.exclude is not None)
        skipped = sum(not r.for_trainer or r.failed for r in self.results)
        counts = (f"{len(self.results)} images: {len(self.fitted) - len(self.unreliable)} ok, "
                  f"{len(self.unreliable)} unreliable, {len(self.failed)} failed; "
                  f"{skipped} skipped by the trainer (scale -1)")
        lines.append(f"wrote {one_line(self.output)} ({counts}; method {self.method}, median scale "
                     f"{self.median_scale:.4g}, {self.seconds:.1f} s)")
        if self.exclude is not None:
            dropped = sum(r.excluded or 0 for r in self.results)
            lines.append(f"exclusion: {dropped} SfM samples on excluded pixels left out ({one_line(self.exclude)})")
        lines.append(f"report: {one_line(self.report)}")
        if self.unmatched_depths:
            lines.append(f"note: {len(self.unmatched_depths)} depth files match no image of the "
                         f"model ({listing(self.unmatched_depths, 3)})")
        return "\n".join(lines)


def _table(rows: list[ImageResult], excluded: bool = False) -> list[str]:
    if not rows:
        return []
    keys = [one_line(r.key) for r in rows]
    width = min(max(len("image"), *(len(key) for key in keys)), 60)
    column = lambda r: f"  {r.excluded if r.excluded is not None else '-':>5}" if excluded else ""  # noqa: E731
    lines = [f"{'image':<{width}}  {'points':>6}  {'inliers':>7}{'  excl.' if excluded else ''}  "
             f"{'resid':>6}  {'scale':>10}  {'offset':>10}  status"]
    for r, key in zip(rows, keys):
        status = one_line(r.status + (f": {r.reason}" if r.reason else ""))
        name = key if len(key) <= width else "..." + key[-(width - 3):]
        lines.append(f"{name:<{width}}  {r.points:>6}  {r.inliers:>7}{column(r)}  {_percent(r.residual):>6}  "
                     f"{r.scale:>10.4g}  {r.offset:>10.4g}  {status}")
    return lines


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return "<0.1%" if value < 0.001 else f"{value:.1%}"


# ---------------------------------------------------------------- the command

def align(
    sparse: Path | str,
    depths: Path | str,
    *,
    images: Path | str | None = None,
    output: Path | str | None = None,
    method: str = "robust",
    allow_missing: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    exclude: Path | str | None = None,
    per_sequence: bool | None = None,
) -> AlignSummary:
    """Fit every image's prior to the model's SfM points and write depth_params.json + report.

    sparse: a COLMAP model folder (SCENE/sparse/0), binary or text. depths: the folder holding
    `<image name without extension>.png` for the model's images (subfolders mirrored). images:
    optional frame folder; every registered image must be in it, and an image whose stored size
    has another aspect ratio than its camera (a rotation, a crop) fails. output: the params file
    (default SPARSE/depth_params.json); the report goes beside it as *.report.json.
    allow_missing: images without a depth file are skipped by the trainer (SKIP_SCALE) and get
    a blank placeholder PNG (3DGS stops at a camera without one) instead of stopping the run.
    exclude: a mask folder of `depthprior exclude`: SfM samples on excluded pixels (sky,
    people) are left out of the fit and counted per image; an image without a usable mask
    there fails.

    Raises UsageError subclasses (nothing written) for a bad model, missing or mismatched depth
    files, missing frames, a bad method, or an output folder another run is writing;
    AlignWriteError (a WriteError naming the file) when the output cannot be written: then
    neither file is changed.
    Images whose fit failed, or that align knows are wrong (few inliers, a large residual, a
    scale far from the others), are written with SKIP_SCALE (-1) so 3DGS skips them under its
    own rule, and listed in the summary: check `summary.failed` and `summary.unreliable`.
    per_sequence: one fit per sequence from all its frames' samples, written to every frame's
    entry (None: when the depth manifest says the priors are a temporal model's, which map each
    sequence with one value mapping; True is refused for other priors); each frame's own fit
    stays in the report, and a frame the sequence's fit does not explain is skipped and flagged.
    """
    started = time.monotonic()
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    sparse = Path(sparse)
    depths = local_folder(depths, "align reads DEPTHS on this machine")
    output = Path(output) if output is not None else depth_params.default_path(sparse)
    if not depths.is_dir():
        raise DepthFilesError(
            f"depth folder not found: {depths}; run 'depthprior generate' first or fix the path"
        )
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise UsageError(f"image folder not found: {images_dir}")
    _check_output(output)

    exclusion = ExclusionFolder(exclude) if exclude is not None else None
    model = read_model(sparse)
    if not model.images:
        raise UsageError(f"the COLMAP model in {sparse} has no images")
    check_keys(model)
    if exclusion is not None:
        exclusion.check_covers([image.key for image in model.images], sparse)
    with OutputFolder(output.parent):  # a second align writing these files is refused
        return _align_locked(model, sparse, depths, images_dir, output, method, allow_missing,
                             workers, progress, started, exclusion, per_sequence)


def _align_locked(model: SparseModel, sparse: Path, depths: Path, images_dir: Path | None,
                  output: Path, method: str, allow_missing: bool, workers: int | None,
                  progress: Callable[[int, int], None] | None, started: float,
                  exclusion: ExclusionFolder | None = None,
                  per_sequence: bool | None = None) -> AlignSummary:
    depth_files = set(depth_pngs(depths))
    # None where priors of another tool have none; unreadable, refused (ManifestError) as every
    # reader refuses it: its sequences and prior sizes decide the fit
    manifest = Manifest.load(depths)
    sequences = sequence_of(manifest)
    if per_sequence and not sequences:
        raise UsageError(f"--per-sequence needs priors of a temporal model (one value mapping per "
                         f"sequence, recorded in {depths}/depthprior.json); these are mapped frame by "
                         "frame: leave --per-sequence out")
    per_sequence = bool(sequences) if per_sequence is None else per_sequence
    plan = _plan(model, depths, depth_files, images_dir, allow_missing)
    results = _run(model, depths, plan, method, workers, progress, _prior_sizes(manifest), exclusion)

    ordered = [results[image.name] for image in model.images]
    if per_sequence:
        fit_sequences(model, depths, ordered, sequences, method, exclusion)
    median_scale = _mark_outlying_scales(ordered)
    keys = {image.key for image in model.images}
    summary = AlignSummary(
        output=output,
        report=depth_params.report_path(output),
        method=method,
        results=ordered,
        median_scale=median_scale,
        model_format=model.format,
        points3D=int(model.point_ids.size),
        unmatched_depths=[stem + ".png" for stem in sorted(depth_files - keys)],
        exclude=exclusion.root if exclusion is not None else None,
        grouping="sequence" if per_sequence else "frame",
    )
    _write_placeholders(depths, [r for r in ordered if r.reason == NO_DEPTH_FILE])
    summary.seconds = time.monotonic() - started
    _write(summary, sparse, depths, images_dir, manifest)
    return summary


NO_DEPTH_FILE = "no depth file"


def _write_placeholders(depths: Path, missing: list[ImageResult]) -> None:
    """A blank prior for each registered image without one (--allow-missing): 3DGS reads the
    PNG of every camera and stops at a missing one; depth_params.json skips these images."""
    for result in missing:
        width, height = result.camera_size or (0, 0)
        try:
            target = safe_join(depths, result.key, ".png")
            atomic_write_bytes(target, encode_png16(np.zeros((height, width), np.uint16)))
            result.reason = (f"{NO_DEPTH_FILE}: a blank placeholder was written so 3DGS can load "
                             "the camera; its depth is skipped")
        except (OSError, UsageError, ValueError) as error:
            result.reason = (f"{NO_DEPTH_FILE}, and no placeholder could be written "
                             f"({first_line(error)}): 3DGS will stop at this camera")


def _run(model: SparseModel, depths: Path, plan: list[Plan], method: str, workers: int | None,
         progress: Callable[[int, int], None] | None,
         prior_sizes: dict[str, tuple[int, int]],
         exclusion: ExclusionFolder | None = None) -> dict[str, ImageResult]:
    """Image name -> result: the planned ones as they are, the others fitted on a thread pool."""
    results = {image.name: result for image, result, _rel, _size in plan if result is not None}
    jobs = [(image, rel, size) for image, result, rel, size in plan if result is None]

    def work(job: tuple[ModelImage, str, list[int] | None]) -> ImageResult:
        image, rel, image_size = job
        return _fit_image(model, image, depths / rel, rel, image_size, method,
                          prior_sizes.get(image.key), exclusion)

    fitted = in_order(work, jobs, worker_count(workers), "align")
    for done, result in enumerate(fitted, start=1):
        results[result.name] = result
        if progress:
            progress(done, len(jobs))
    return results


def _check_output(output: Path) -> None:
    """Fail before the work, not after it, when the params file cannot be written there."""
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; pass a file name such as "
                         f"{output / depth_params.PARAMS_NAME}")
    if output.suffix.lower() != ".json":  # a slip of -o (the model's cameras.bin, a prior)
        raise UsageError(f"output {output} should end in .json, e.g. "
                         f"{output.parent / depth_params.PARAMS_NAME}")
    report = depth_params.report_path(output)
    if report.is_dir():
        raise UsageError(f"the report {report} of {output} is a folder; remove it or choose "
                         "another -o")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the output folder creates the missing ones
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {output}: {parent} is not a writable folder; choose another -o")


def check_keys(model: SparseModel) -> None:
    """UsageError when two images of the model share a key (a.jpg + a.png, a name twice): they
    would share one depth file, params entry and mask."""
    seen: dict[str, str] = {}
    for image in model.images:
        key = image.key
        if key in seen:
            raise UsageError(
                f"images {seen[key]} and {image.name} in the model share the depth file "
                f"{key}.png and the {depth_params.PARAMS_NAME} key {key!r}; rename one of them"
            )
        seen[key] = image.name


Plan = tuple[ModelImage, "ImageResult | None", str, "list[int] | None"]


def _plan(model: SparseModel, depths: Path, depth_files: set[str], images_dir: Path | None,
          allow_missing: bool) -> list[Plan]:
    """Per image: either a finished result (not registered, no depth file) or a job to fit."""
    registered = [image for image in model.images if image.registered]
    if not registered:
        raise UsageError(f"the COLMAP model in {model.path} has no registered images")
    _check_depth_files(registered, depths, depth_files, allow_missing)
    sizes: dict[str, list[int]] = {}
    if images_dir is not None:
        _check_frames(registered, images_dir)
        sizes = _image_sizes(images_dir, [image.name for image in registered])

    plan: list[Plan] = []
    for image in model.images:
        camera_size = [image.camera.width, image.camera.height]
        rel = image.key + ".png"
        if not image.registered:
            result = ImageResult(image.name, image.key, None, 0, 0, None, 0.0, 0.0, "failed",
                                 "not registered in the model (no pose)", camera_size=camera_size)
            plan.append((image, result, rel, None))
        elif image.key not in depth_files:
            result = ImageResult(image.name, image.key, None, 0, 0, None, 0.0, 0.0, "failed",
                                 NO_DEPTH_FILE, camera_size=camera_size)
            plan.append((image, result, rel, None))
        else:
            plan.append((image, None, rel, sizes.get(image.name)))
    return plan


def _check_depth_files(registered: list[ModelImage], depths: Path, depth_files: set[str],
                       allow_missing: bool) -> None:
    """DepthFilesError when no registered image, or (without allow_missing) some, have a map."""
    missing = [image for image in registered if image.key not in depth_files]
    if len(missing) == len(registered):
        example = f"{image_key(registered[0].name)}.png"
        found = sorted(depth_files)
        seen = f"; it holds {len(found)} PNGs, e.g. {found[0]}.png" if found else "; it holds no PNGs"
        raise DepthFilesError(
            f"none of the {len(registered)} registered images has a depth map in {depths} "
            f"(looked for e.g. {example}){seen}. Pass the folder 'depthprior generate' wrote for "
            "the frames of this model"
        )
    if missing and not allow_missing:
        raise DepthFilesError(
            f"{len(missing)} of {len(registered)} registered images have no depth map in "
            f"{depths}: {listing((f'{image.key}.png' for image in missing), 3)}. Generate them, "
            "or pass --allow-missing to have the trainer skip those images"
        )


def _check_frames(registered: list[ModelImage], images_dir: Path) -> None:
    """UsageError when a registered image is not in the frame folder."""
    absent = [image.name for image in registered if not _is_file(images_dir / image.name)]
    if absent:
        raise UsageError(
            f"{len(absent)} registered images of the model are not in {images_dir}: "
            f"{listing(absent, 3)}. Pass the image folder the model was made from"
        )


def _image_sizes(images_dir: Path, names: list[str]) -> dict[str, list[int]]:
    """Stored [width, height] of each frame, from its header (no EXIF rotation, no decoding)."""
    sizes: dict[str, list[int]] = {}
    for name in names:
        path = images_dir / name
        try:
            sizes[name] = list(stored_size(path))
        except ImageError as error:
            raise UsageError(f"cannot read the size of {path}: {error}") from None
    return sizes


def _is_file(path: Path) -> bool:
    """Path.is_file, False for a name the file system refuses (too long) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False


def _fit_image(model: SparseModel, image: ModelImage, path: Path, rel: str,
               image_size: list[int] | None, method: str,
               prior_size_hw: tuple[int, int] | None = None,
               exclusion: ExclusionFolder | None = None) -> ImageResult:
    """One image's result. A frame or depth map whose aspect ratio is not its camera's fails
    `robust`; `mad` writes the official script's numbers anyway (it does not look), unreliable.
    prior_size_hw: the (height, width) its manifest record gives the map, which it must have."""
    camera_size = [image.camera.width, image.camera.height]

    def failed(reason: str, points: int = 0, prior_size: list[int] | None = None) -> ImageResult:
        return ImageResult(image.name, image.key, rel, points, 0, None, 0.0, 0.0, "failed",
                           reason, prior_size, camera_size, image_size)

    notes = []
    if image_size is not None and not same_aspect(image_size, camera_size):
        notes.append(f"image file is {image_size[0]}x{image_size[1]} but its camera is "
                     f"{camera_size[0]}x{camera_size[1]} (rotated or cropped?)")
    try:
        depth = read_prior(path, prior_size_hw)
    except ImageError as error:
        return failed(f"cannot read the depth file: {first_line(error)}")
    prior_size = [int(depth.shape[1]), int(depth.shape[0])]
    if not same_aspect(prior_size, camera_size):
        notes.append(f"depth map is {prior_size[0]}x{prior_size[1]} but the camera is "
                     f"{camera_size[0]}x{camera_size[1]} (rotated, cropped or another image?)")
    if notes and method != "mad":
        return failed(notes[0], prior_size=prior_size)
    kept = None
    if exclusion is not None:
        try:
            kept = exclusion.kept(image.key, size=depth.shape)
        except ExclusionMissing as error:
            return failed(first_line(error), prior_size=prior_size)
    fit, dropped = fit_samples(method, model, image, depth, kept)
    if not fit.ok:
        reason = fit.reason
        if kept is not None and dropped:  # e.g. an all-zero mask: say where the points went
            reason += (f"; {dropped} on pixels the exclusion mask excludes "
                       f"({100 * (1 - kept.mean()):.0f}% of the frame): check its mask")
        return ImageResult(image.name, image.key, rel, fit.points, fit.inliers,
                           _finite(fit.residual), 0.0, 0.0, "failed", reason, prior_size,
                           camera_size, image_size, excluded=dropped if kept is not None else None)
    notes += _fit_problems(fit)
    warnings = _precision_warnings(depth)
    return ImageResult(image.name, image.key, rel, fit.points, fit.inliers, fit.residual,
                       float(fit.scale), float(fit.offset),
                       "unreliable" if notes or warnings else "ok", "; ".join(notes + warnings),
                       prior_size, camera_size, image_size, depth_params.depth_bytes(path),
                       excluded=dropped if kept is not None else None, for_trainer=not notes)


def _precision_warnings(depth: np.ndarray) -> list[str]:
    """What limits a fit's precision without making it wrong: the trainer still gets it."""
    if depth.dtype != np.uint16:
        return [f"{depth.dtype} depth file, not uint16: few levels"]
    return []


def _fit_problems(fit: Fit) -> list[str]:
    """Why a fit is wrong (the fitter's own doubt, few inliers, a large residual): the trainer
    must not use it."""
    notes = [fit.reason] if fit.reason else []
    if fit.inliers < LOW_INLIER_FRACTION * fit.points:
        notes.append(f"only {fit.inliers / fit.points:.0%} of the points agree with the fit")
    if fit.residual > MAX_RESIDUAL:
        notes.append(f"median residual {fit.residual:.0%}")
    return notes


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _mark_outlying_scales(results: list[ImageResult]) -> float:
    """Median of the positive scales the trainer is given (as it computes it); mark those far
    from it as not for the trainer."""
    scales = np.array([r.scale for r in results
                       if r.status != "failed" and r.for_trainer and r.scale > 0])
    if scales.size == 0:
        return 0.0
    median = float(np.median(scales))
    low, high = SCALE_BAND
    for result in results:
        if result.status == "failed":
            continue
        ratio = result.scale / median
        if ratio < low or ratio > high:
            note = f"scale {ratio:.2g}x the scene median (the 3DGS trainer ignores this depth)"
            result.reason = f"{result.reason}; {note}" if result.reason else note
            result.status = "unreliable"
            result.for_trainer = False
    return median


# ---------------------------------------------------------------- writing

def _write(summary: AlignSummary, sparse: Path, depths: Path, images_dir: Path | None,
           manifest: Manifest | None) -> None:
    report = {
        "sparse": str(sparse),
        "depths": str(depths),
        depth_params.REPORT_DEPTHS: depth_params.depth_folder_record(depths),
        "images": str(images_dir) if images_dir is not None else None,
        "exclude": str(summary.exclude) if summary.exclude is not None else None,
        "output": str(summary.output),
        "method": summary.method,
        "grouping": summary.grouping,
        "convention": CONVENTIONS[summary.method],
        "model": {"format": summary.model_format, "images": len(summary.results),
                  "points3D": summary.points3D},
        "depth_manifest": manifest.backend if manifest is not None else None,
        "summary": {
            "images": len(summary.results),
            "fitted": len(summary.fitted),
            "unreliable": len(summary.unreliable),
            "failed": len(summary.failed),
            "median_scale": summary.median_scale,
            "seconds": round(summary.seconds, 3),
        },
        "thresholds": {
            "min_points": MIN_POINTS,
            "min_inlier_fraction": MIN_INLIER_FRACTION,
            "low_inlier_fraction": LOW_INLIER_FRACTION,
            "max_residual": MAX_RESIDUAL,
            "scale_band": list(SCALE_BAND),
        },
        "unmatched_depths": summary.unmatched_depths,
    }
    per_image = {r.key: r.to_json() for r in summary.results}
    depth_params.write(summary.output, summary.params, report, per_image)


def sequence_of(manifest: Manifest | None) -> dict[str, str]:
    """key -> sequence, for priors a temporal model mapped one sequence at a time ({} otherwise)."""
    if manifest is None:
        return {}
    return {posix_name(record.stem): record.sequence for _name, record in manifest.iter_ok()
            if record.sequence is not None}


def fit_sequences(model: SparseModel, depths: Path, results: list[ImageResult], sequences: dict[str, str],
                  method: str, exclusion: ExclusionFolder | None = None) -> None:
    """One fit per sequence from the samples of all its readable frames, written to each frame's
    result; the frame's own fit moves to own_fit. A frame whose samples the sequence's fit does
    not explain (median relative residual above MAX_RESIDUAL) is flagged and skipped."""
    images = {image.name: image for image in model.images}
    groups: dict[str, list[ImageResult]] = {}
    for result in results:
        if result.key in sequences and result.prior_size is not None:
            groups.setdefault(sequences[result.key], []).append(result)
    for sequence, members in groups.items():
        samples = {}
        for result in members:
            depth = read_prior(depths / result.depth)
            try:  # the samples the frame's own fit used: none on excluded pixels
                kept = exclusion.kept(result.key, size=depth.shape) if exclusion is not None else None
            except ExclusionMissing:
                continue
            drawn = method_samples(method, model, images[result.name], depth, kept)
            if drawn is not None:
                samples[result.name] = drawn[:2]
        prior = np.concatenate([p for p, _ in samples.values()]) if samples else np.zeros(0)
        target = np.concatenate([t for _, t in samples.values()]) if samples else np.zeros(0)
        fit = fit_mad(prior, target) if method == "mad" else fit_robust(prior, target)
        for result in members:
            _take_sequence_fit(result, sequence, fit, samples.get(result.name))


def _take_sequence_fit(result: ImageResult, sequence: str, fit: Fit,
                       samples: tuple[np.ndarray, np.ndarray] | None) -> None:
    result.own_fit = {"scale": result.scale, "offset": result.offset, "points": result.points,
                      "inliers": result.inliers, "residual": result.residual, "status": result.status,
                      "reason": result.reason}
    result.sequence = sequence
    if not fit.ok:
        result.scale, result.offset, result.status, result.for_trainer = 0.0, 0.0, "failed", False
        result.reason = f"the fit of sequence {sequence!r} failed: {fit.reason}"
        return
    result.scale, result.offset = float(fit.scale), float(fit.offset)
    result.status, result.reason, result.for_trainer = "ok", "", True
    if samples is None or samples[0].size == 0:
        result.reason = "no SfM points of its own: its sequence's fit"
        return
    prior, target = samples
    residual = float(np.median(np.abs(fit.scale * prior + fit.offset - target) / np.abs(target)))
    result.points, result.residual = int(prior.size), residual
    if residual > MAX_RESIDUAL:
        result.status, result.for_trainer = "unreliable", False
        result.reason = (f"disagrees with its sequence's fit (median residual {residual:.0%} at its "
                         f"{prior.size} points)")


def _prior_sizes(manifest: Manifest | None) -> dict[str, tuple[int, int]]:
    """key -> (height, width) the manifest records for each depth map (which it must have)."""
    if manifest is None:
        return {}
    return {posix_name(record.stem): (record.height, record.width)
            for _name, record in manifest.iter_ok() if record.width and record.height}


__all__ = ["AlignSummary", "AlignWriteError", "DepthFilesError", "ImageResult", "METHODS",
           "align", "check_keys", "fit_samples"]
