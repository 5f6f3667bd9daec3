"""depthprior consistency: per-pixel confidence masks of the aligned priors from the SfM poses.

Reads the model (`colmap.read_model`), the priors as a trainer reads them (`PriorSet` with
depth_params.json), picks each image's witnesses by shared SfM points, lets them vote
(`consistency`), and writes DIR/<image key>.png (uint8 at the prior's size) and
DIR/consistency.json. Images whose fit failed or is unreliable are neither subject nor witness.
A rerun skips images whose inputs (their prior, params, pose and camera, their witnesses' too,
and the settings) have the digest recorded in consistency.json and whose mask is there. The
mask folder is an `OutputFolder`: locked for the run, masks of images a rerun no longer checks
removed, and consistency.json rewritten without the entries a run will change before it changes
any mask, so masks made with other settings are never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import consistency
from .align import check_keys
from .colmap import ModelCamera, ModelImage, SparseModel, read_model
from .consistency import TRUSTED, View
from .depth_params import default_path, params_file
from .priorset import PriorSet
from ..priors.manifest import image_folder
from ..errors import FileFormatError, ImageError, UsageError, WriteError, first_line, one_line
from ..exclusion.masks import ExclusionFolder
from ..files.jsonfile import encode_json, expect_object, read_json
from ..files.outputs import OutputFolder, folder_beside
from ..files.raster import encode_plane, read_mask
from ..images import image_key, is_inside, mask_name, posix_name, read_regular_file, safe_join
from ..threads import in_order, worker_count
from ..files.place import local_folder

REPORT_NAME = "consistency.json"
FORMAT_VERSION = 1
#: per-image statuses of consistency.json that come with a mask
WITH_MASK = ("checked", "skipped", "unchecked")
#: camera models whose rays all look forward (z > 0), which the reprojection needs
UNSUPPORTED_CAMERAS = ("EQUIRECTANGULAR",)


@dataclass
class Settings:
    neighbours: int = 4
    threshold: float = 0.05
    resolution: float = 0.25

    def check(self) -> None:
        if self.neighbours < 1:
            raise UsageError(f"--neighbours must be at least 1, not {self.neighbours}")
        if not 0 < self.threshold < 1:
            raise UsageError(f"--threshold is a relative depth difference in (0, 1), not {self.threshold}")
        if not 0 < self.resolution <= 1:
            raise UsageError(f"--resolution is a fraction of the prior's size in (0, 1], not {self.resolution}")


@dataclass
class ImageReport:
    name: str
    key: str
    status: str  # "checked", "skipped" (resumed), "unchecked" (no witness), "excluded", "failed"
    reason: str | None = None
    witnesses: list[str] = field(default_factory=list)
    checked: float = 0.0  # fraction of pixels some witness has evidence on
    agreeing: float = 0.0  # fraction of pixels trusted with evidence (mask > UNSEEN or tie)
    rejected: float = 0.0
    disagreement: float | None = None  # median relative depth difference of the evidence
    digest: str | None = None
    excluded: float | None = None  # fraction an exclusion mask leaves out (with --exclude)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("name",)}


@dataclass
class ConsistencySummary:
    output: Path
    images: list[ImageReport]
    tae_before: float | None = None
    tae_after: float | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[ImageReport]:
        return [r for r in self.images if r.status in ("unchecked", "excluded", "failed")]

    def to_json(self, settings: Settings) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "settings": settings.__dict__,
            "mask": {"rejected": consistency.REJECTED, "excluded": consistency.EXCLUDED,
                     "unseen": consistency.UNSEEN,
                     "trusted_from": TRUSTED, "all_agree": consistency.AGREED},
            "scene": {"tae_before": self.tae_before, "tae_after": self.tae_after},
            "images": {r.name: r.to_json() for r in self.images},
        }

    def format(self) -> str:
        lines = [f"{'image':<32} {'status':<9} {'wit':>3} {'checked':>8} {'agree':>7} "
                 f"{'reject':>7} {'disagr':>7}"]
        for r in self.images:
            dis = f"{r.disagreement:.3f}" if r.disagreement is not None else "-"
            lines.append(f"{one_line(r.name)[-32:]:<32} {r.status:<9} {len(r.witnesses):>3} "
                         f"{r.checked:>8.1%} {r.agreeing:>7.1%} {r.rejected:>7.1%} {dis:>7}")
            if r.reason:
                lines.append(f"    {one_line(r.reason)}")
        tae = " -> ".join(f"{v:.4f}" if v is not None else "-" for v in (self.tae_before, self.tae_after))
        lines.append(f"TAE before -> after masking: {tae}")
        lines.append(f"masks: {one_line(self.output)} ({len(self.failed)} image(s) not checked, "
                     f"{self.seconds:.1f} s)")
        return "\n".join(lines)


def default_output(depths: Path) -> Path:
    """DEPTHS_confidence beside DEPTHS, also for "." and ".." (named after the real folder)."""
    return folder_beside(depths, "_confidence", "depth folder")


def check_consistency(
    sparse: Path | str,
    depths: Path | str,
    *,
    params: Path | str | None = None,
    output: Path | str | None = None,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    exclude: Path | str | None = None,
) -> ConsistencySummary:
    """Write a confidence mask per usable image and consistency.json; see the module doc.

    Images are loaded, then checked, on `workers` threads (default min(8, cores)); the outputs
    do not depend on the count. The mask folder is locked for the run; a mask that cannot be
    written fails its image (named in the report), and masks this run no longer produces (an
    image now excluded) are removed, so consistency.json and the masks always agree.

    exclude: a mask folder of `depthprior exclude`: its excluded pixels (sky, people) have no
    depth here, so they are no evidence as witnesses, and are 0 (EXCLUDED) in the masks; an
    image without a usable exclusion mask fails.

    Raises UsageError (nothing written) for bad settings, model, depth folder, params or output.
    """
    started = time.monotonic()
    settings = settings or Settings()
    settings.check()
    sparse, depths = Path(sparse), local_folder(depths, "consistency reads DEPTHS on this machine")
    params, output = _inputs(sparse, depths, params, output)
    if exclude is not None and os.path.realpath(output) == os.path.realpath(exclude):
        raise UsageError(f"the output folder {output} is the exclusion mask folder --exclude reads: "
                         "its confidence masks would overwrite the exclusion masks (same names); "
                         "pass another -o")
    exclusion = ExclusionFolder(exclude) if exclude is not None else None
    model = read_model(sparse)
    check_keys(model)
    if exclusion is not None:
        exclusion.check_covers([image.key for image in model.images], sparse)
    _check_cameras(model)
    priors = PriorSet(depths, params)
    usable, excluded = _usable(model, priors)
    if not usable:
        raise UsageError(f"no image of {sparse} has a reliable aligned prior in {depths}; "
                         f"check {params}")
    for image in usable:
        safe_join(output, image.key, ".png")  # every target checked before any is written
    with OutputFolder(output) as folder:
        previous = read_report(output)
        summary = _run(model, usable, excluded, _Views(priors, settings.resolution, exclusion),
                       folder, previous or {}, settings, progress, worker_count(workers))
        for report in summary.images:  # a failure is no reason to delete an earlier mask
            if report.status == "failed":
                folder.keep(mask_name(report.key))
        if previous is not None:  # a mask folder of an earlier run: what it holds is ours
            stale = {entry.get("key") for entry in previous.values()} | {i.key for i in model.images}
            folder.remove_unproduced(f"{key}.png" for key in stale if isinstance(key, str) and key)
        summary.seconds = time.monotonic() - started
        folder.write(REPORT_NAME, encode_json(summary.to_json(settings)))
    return summary


def _run(model: SparseModel, usable: list[ModelImage], excluded: list[ImageReport],
         views: "_Views", folder: OutputFolder, previous: dict[str, dict], settings: Settings,
         progress: Callable[[int, int], None] | None, count: int) -> ConsistencySummary:
    usable, unreadable = _readable(usable, views, count)
    neighbours = covisible(model, usable, settings.neighbours)
    digests = {image.name: input_digest(image, neighbours[image.name], views.file_digest,
                                        views.priors, settings, views.exclusion) for image in usable}
    previous = _forget_changed(folder, previous, digests, settings)
    reports = excluded + unreadable
    masks: dict[str, np.ndarray] = {}

    def work(image: ModelImage) -> tuple[ImageReport, np.ndarray]:
        return _image(image, neighbours[image.name], views, folder, digests[image.name],
                      previous.get(image.name), settings.threshold)

    for done, (report, mask) in enumerate(in_order(work, usable, count), start=1):
        reports.append(report)
        masks[report.name] = mask
        if progress:
            progress(done, len(usable))
    reports.sort(key=lambda r: r.name)
    summary = ConsistencySummary(folder.root, reports)
    summary.tae_before, summary.tae_after = scene_tae(usable, views, masks, count)
    return summary


def _forget_changed(folder: OutputFolder, previous: dict[str, dict], digests: dict[str, str],
                    settings: Settings) -> dict[str, dict]:
    """The earlier entries still valid for this run; when some are not, consistency.json is
    rewritten without them first, so a run stopped midway never leaves a mask beside a record
    of other inputs or settings (a rerun would trust it)."""
    valid = {name: entry for name, entry in previous.items()
             if entry.get("digest") is not None and entry.get("digest") == digests.get(name)}
    if any(entry.get("status") in WITH_MASK for name, entry in previous.items() if name not in valid):
        interim = ConsistencySummary(folder.root, [])
        document = interim.to_json(settings)
        document["images"] = valid
        folder.write(REPORT_NAME, encode_json(document))
    return valid


def _inputs(sparse: Path, depths: Path, params: Path | str | None,
            output: Path | str | None) -> tuple[Path, Path]:
    """The params file and mask folder to use; UsageError when the depths, params or output
    cannot be."""
    if not depths.is_dir():
        raise UsageError(f"depth folder not found: {depths}; run 'depthprior generate' first")
    params = params_file(params) if params is not None else default_path(sparse)
    if not params.is_file():
        raise UsageError(f"depth params not found: {params}; run 'depthprior align' first "
                         "or pass --params")
    output = Path(output) if output is not None else default_output(depths)
    _check_output(output, depths)
    return params, output


def _check_output(output: Path, depths: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file; pass a folder for the masks")
    if is_inside(output, depths):
        raise UsageError(f"output {output} is inside the depth folder {depths}: its masks would "
                         "be read as priors; choose a folder beside it")
    if is_inside(depths, output):
        raise UsageError(f"the depth folder {depths} is inside the mask folder {output}: "
                         "choose a folder beside it")
    frames = image_folder(depths)
    if frames is not None and is_inside(output, frames):
        raise UsageError(f"output {output} is inside the image folder {frames} the priors were "
                         "made from: its masks would mix with the frames (or replace one); "
                         "choose a folder beside the depth folder")
    report = output / REPORT_NAME
    if report.is_dir():
        raise FileFormatError(report, "is a folder, not a file", _REPORT_HINT)


_REPORT_HINT = "remove it (or choose another -o) and run depthprior consistency again"


def _check_cameras(model: SparseModel) -> None:
    for camera in model.cameras.values():
        if camera.model in UNSUPPORTED_CAMERAS:
            raise UsageError(f"camera {camera.camera_id} of {model.path} is {camera.model}, which "
                             "depthprior consistency does not support (it reprojects through "
                             "perspective cameras): undistort to PINHOLE views first "
                             "(e.g. colmap image_undistorter)")


def _usable(model: SparseModel, priors: PriorSet) -> tuple[list[ModelImage], list[ImageReport]]:
    """Registered images with a reliable, aligned prior; a report for each of the others."""
    usable, excluded = [], []
    for image in model.images:
        reason = None
        if not image.registered:
            reason = "not registered in the model"
        elif image.name not in priors:
            reason = f"no depth prior in {priors.root}"
        else:
            reliable, why = priors.reliability(image.name)
            if not reliable:
                reason = f"unreliable or failed fit: {why}"
        if reason is None:
            usable.append(image)
        else:
            excluded.append(ImageReport(image.name, image.key, "excluded", reason))
    return usable, excluded


def _readable(images: list[ModelImage], views: "_Views",
              workers: int) -> tuple[list[ModelImage], list[ImageReport]]:
    """The images whose prior loads; a failure report (with its reason) for each of the others.

    An unreadable prior fails its own image only: it is neither subject nor witness. Every
    view is loaded here, so the checks after it only read the cache.
    """
    readable, failed = [], []
    for image, reason in zip(images, in_order(views.prepare, images, workers)):
        if reason is None:
            readable.append(image)
        else:
            failed.append(ImageReport(image.name, image.key, "failed", reason))
    return readable, failed


def covisible(model: SparseModel, images: list[ModelImage], count: int) -> dict[str, list[ModelImage]]:
    """Each image's `count` images sharing the most SfM points with it (ties by name).

    Counts walk the tracks of each image's own points (cost: the sum of squared track lengths),
    not every observation of the model once per image.
    """
    point_rows = [_point_rows(model, image) for image in images]
    rows = np.concatenate(point_rows) if point_rows else np.zeros(0, np.intp)
    owners = np.repeat(np.arange(len(images)), [r.size for r in point_rows])
    owners_by_point = owners[np.argsort(rows, kind="stable")]
    track_length = np.bincount(rows, minlength=model.point_ids.size)
    track_start = np.cumsum(track_length) - track_length
    result = {}
    for index, image in enumerate(images):
        tracks = _ranges(track_start[point_rows[index]], track_length[point_rows[index]])
        shared = np.bincount(owners_by_point[tracks], minlength=len(images))
        shared[index] = 0
        order = sorted(np.flatnonzero(shared), key=lambda i: (-shared[i], images[i].name))
        result[image.name] = [images[i] for i in order[:count]]
    return result


def _point_rows(model: SparseModel, image: ModelImage) -> np.ndarray:
    """Rows in model.point_ids of the distinct points an image observes."""
    ids = np.unique(image.point3D_ids[image.point3D_ids >= 0])
    if not model.point_ids.size:
        return np.zeros(0, np.intp)
    where = np.clip(np.searchsorted(model.point_ids, ids), 0, model.point_ids.size - 1)
    return where[model.point_ids[where] == ids]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices start, start + 1, ..., start + length - 1 of every range, concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if ends.size else 0)


class _Views:
    """Views at the grid size, built once per image; rays once per camera and grid size."""

    def __init__(self, priors: PriorSet, resolution: float, exclusion: ExclusionFolder | None = None):
        self.priors = priors
        self.resolution = resolution
        self.exclusion = exclusion
        self._views: dict[str, View] = {}
        self._rays: dict[tuple, tuple[np.ndarray, Callable]] = {}
        self.prior_sizes: dict[str, tuple[int, int]] = {}
        self._digests: dict[Path, bytes] = {}

    def file_digest(self, path: Path) -> bytes:
        if path not in self._digests:
            self._digests[path] = hashlib.sha256(read_regular_file(path)).digest()
        return self._digests[path]

    def prepare(self, image: ModelImage) -> str | None:
        """Load an image's view and digest its prior; why it cannot be used, or None."""
        from .priorset import MissingPriorError

        try:
            prior = self.priors.path(image.name)
            self.file_digest(prior)
            self.get(image)
        except ImageError as error:
            return f"cannot read the prior {prior.name}: {first_line(error)}"
        except (MissingPriorError, UsageError) as error:
            return first_line(error)
        except OSError as error:
            return f"cannot read the prior of {image.name!r}: {error.strerror or error}"
        return None

    def get(self, image: ModelImage) -> View:
        view = self._views.get(image.name)
        if view is None:
            full = self.priors.load(image.name).inverse_depth  # decoded once per image
            height, width = self.prior_sizes[image.name] = full.shape
            grid = (max(2, round(height * self.resolution)), max(2, round(width * self.resolution)))
            inverse = cv2.resize(full, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR)
            if self.exclusion is not None:  # excluded pixels have no depth: never evidence
                inverse[~self.kept(image, grid)] = np.nan
            rays, to_grid = self._camera(image.camera, grid)
            view = View(inverse, rays, image.cam_from_world, to_grid)
            self._views[image.name] = view
        return view

    def kept(self, image: ModelImage, size: tuple[int, int]) -> np.ndarray:
        """The exclusion mask's kept pixels at `size`, read at the prior's size (whose aspect
        ratio it must have: ExclusionMissing otherwise)."""
        assert self.exclusion is not None
        full = self.exclusion.kept(image.key, size=self.prior_size(image))
        if full.shape == tuple(size):
            return full
        return cv2.resize(full.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0

    def prior_size(self, image: ModelImage) -> tuple[int, int]:
        if image.name not in self.prior_sizes:
            self.get(image)
        return self.prior_sizes[image.name]

    def _camera(self, camera: ModelCamera, grid: tuple[int, int]):
        key = (camera.camera_id, grid)
        if key not in self._rays:
            self._rays[key] = camera_grid(camera, grid)
        return self._rays[key]


def camera_grid(camera: ModelCamera, grid: tuple[int, int]):
    """Rays of a grid's pixel centres and the projection of camera points onto that grid.

    The grid covers the camera's image (each axis scaled by grid size / camera size); the
    camera model (distortion included) is pycolmap's.
    """
    import pycolmap

    rows, cols = grid
    sx, sy = camera.width / cols, camera.height / rows
    model = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height,
                            params=camera.params)
    u, v = np.meshgrid((np.arange(cols) + 0.5) * sx, (np.arange(rows) + 0.5) * sy)
    rays = model.cam_from_img(np.column_stack([u.ravel(), v.ravel()])).reshape(rows, cols, 2)

    def to_grid(points: np.ndarray) -> np.ndarray:
        pixels = np.asarray(model.img_from_cam(points), dtype=np.float64)
        return pixels / [sx, sy]

    return rays.astype(np.float32), to_grid


def _image(image: ModelImage, witnesses: list[ModelImage], views: _Views, folder: OutputFolder,
           digest: str, old: dict | None, threshold: float) -> tuple[ImageReport, np.ndarray]:
    names = [w.name for w in witnesses]
    resumed = _resume(image, old, digest, folder, views)
    if resumed is not None:
        report, mask = resumed
        report.witnesses = names
        return report, _grid_mask(mask, views.get(image).shape)
    subject = views.get(image)
    votes = [consistency.witness_votes(subject, views.get(w), threshold) for w in witnesses]
    agree = sum((v.agree.astype(np.int32) for v in votes), np.zeros(subject.shape, np.int32))
    contradict = sum((v.contradict.astype(np.int32) for v in votes), np.zeros(subject.shape, np.int32))
    mask = consistency.confidence(agree, contradict)
    differences = np.concatenate([v.disagreement for v in votes]) if votes else np.zeros(0)
    seen = (agree + contradict) > 0
    report = ImageReport(
        image.name, image.key, "checked" if seen.any() else "unchecked",
        None if seen.any() else "no witness sees any of its pixels", names,
        float(seen.mean()), float((seen & (mask >= TRUSTED)).mean()),
        float((mask < TRUSTED).mean()),
        float(np.median(differences)) if differences.size else None, digest,
    )
    height, width = views.prior_size(image)
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    if views.exclusion is not None:
        kept = views.kept(image, (height, width))
        full[~kept] = consistency.EXCLUDED
        report.excluded = float(1.0 - kept.mean())
    try:
        folder.write(mask_name(image.key), encode_plane(full))
    except WriteError as error:
        if error.ends_run:
            raise  # every later mask would fail the same way: stop, keeping what is written
        return ImageReport(image.name, image.key, "failed", first_line(error), names), mask
    return report, mask




def _resume(image: ModelImage, old: dict | None, digest: str, folder: OutputFolder,
            views: "_Views") -> tuple[ImageReport, np.ndarray] | None:
    """The earlier report of an image whose inputs are unchanged and whose mask is intact."""
    if old is None or old.get("digest") != digest or old.get("status") not in WITH_MASK:
        return None
    numbers = [old.get(k) for k in ("checked", "agreeing", "rejected")]
    disagreement = old.get("disagreement")
    if not all(_is_number(n) for n in numbers) or not (disagreement is None or _is_number(disagreement)):
        return None
    try:
        mask = read_mask(folder.path(mask_name(image.key)), views.prior_size(image))
    except ImageError:
        return None
    folder.keep(mask_name(image.key))
    status = "unchecked" if old.get("status") == "unchecked" else "skipped"
    report = ImageReport(image.name, image.key, status, old.get("reason") if status == "unchecked"
                         else None, [], *map(float, numbers), disagreement, digest)
    if _is_number(old.get("excluded")):
        report.excluded = float(old["excluded"])
    return report, mask


def load_mask(folder: Path | str, key: str, prior_size: tuple[int, int],
              size: tuple[int, int] | None = None) -> np.ndarray:
    """An image's confidence in [0, 1] (mask / 255), bilinear to size = (height, width).

    The mask must be a single-channel uint8 PNG of its prior's size `prior_size` =
    (height, width): anything else (missing, damaged, RGB, 16-bit, another size) raises
    MissingPriorError naming the file and what is wrong; it is never stretched to fit.
    """
    from .priorset import MissingPriorError

    path = safe_join(folder, mask_name(key))
    if not os.path.isfile(path):
        raise MissingPriorError(f"no confidence mask for {key!r}: {path} is missing; run "
                                "`depthprior consistency` or drop masks=")
    try:
        mask = read_mask(path, prior_size)
    except ImageError as error:
        raise MissingPriorError(first_line(error)) from None
    values = mask.astype(np.float32) / consistency.AGREED
    if size is not None and tuple(size) != values.shape:
        values = cv2.resize(values, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return values


def read_report(output: Path | str) -> dict[str, dict] | None:
    """The per-image entries of the consistency.json in a mask folder (None when there is
    none); FileFormatError naming it when it is not one this command wrote."""
    data = read_json(Path(output) / REPORT_NAME, missing_ok=True, check=_check_report,
                     hint=_REPORT_HINT)
    return None if data is None else dict(data["images"])


def _check_report(data: Any) -> None:
    images = expect_object(data).get("images")
    if not isinstance(images, dict):
        raise TypeError("'images' is not an object of image names")
    for name, entry in images.items():
        if not isinstance(entry, dict):
            raise TypeError(f"the entry of image {name!r} is not an object")
        if not isinstance(entry.get("key", ""), str) or not isinstance(entry.get("status", ""), str):
            raise TypeError(f"the entry of image {name!r} has a malformed 'key' or 'status'")


def statuses(folder: Path | str) -> dict[str, tuple[str, str | None]]:
    """image key -> (status, reason) of every image consistency.json in `folder` names
    ({} without one)."""
    entries = read_report(folder) or {}
    return {posix_name(entry.get("key") or image_key(name)): (entry.get("status", ""),
                                                               entry.get("reason"))
            for name, entry in entries.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _grid_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def input_digest(image: ModelImage, witnesses: list[ModelImage], file_digest: Callable[[Path], bytes],
                 priors: PriorSet, settings: Settings, exclusion: ExclusionFolder | None = None) -> str:
    """sha256 of everything a mask depends on: settings, and per view its prior, fit, pose and
    exclusion mask."""
    digest = hashlib.sha256(json.dumps(settings.__dict__, sort_keys=True).encode())
    for view in [image, *witnesses]:
        stem = priors.stem(view.name)
        digest.update(view.name.encode() + b"\0")
        digest.update(file_digest(priors.path(view.name)))
        digest.update(repr(priors.params.entries.get(stem)).encode())
        digest.update(np.asarray(view.cam_from_world, dtype=np.float64).tobytes())
        digest.update(view.camera.model.encode() + np.asarray(
            [view.camera.width, view.camera.height, *view.camera.params], np.float64).tobytes())
        if exclusion is not None:
            digest.update(b"exclude\0" + exclusion.digest(view.key))
    return digest.hexdigest()


def scene_tae(images: list[ModelImage], views: _Views, masks: dict[str, np.ndarray],
              workers: int = 1) -> tuple[float | None, float | None]:
    """Mean TAE over consecutive frames by name, before and after dropping rejected pixels."""
    def pair(frames: tuple[ModelImage, ModelImage]) -> tuple[float | None, float | None]:
        first, second = frames
        return consistency.temporal_error(views.get(first), views.get(second),
                                          masks[first.name] >= TRUSTED,
                                          masks[second.name] >= TRUSTED)

    errors = list(in_order(pair, pairwise(images), workers))
    before = [plain for plain, _ in errors if plain is not None]
    after = [masked for _, masked in errors if masked is not None]
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return mean(before), mean(after)


__all__ = ["ConsistencySummary", "ImageReport", "REPORT_NAME", "Settings", "check_consistency",
           "load_mask", "mask_name", "read_report", "statuses",
           "covisible", "default_output"]
