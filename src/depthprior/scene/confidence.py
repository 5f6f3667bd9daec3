"""depthprior consistency: per-pixel confidence masks of the aligned priors from the SfM poses.

Reads the model (`colmap.read_model`), the priors as a trainer reads them (`PriorSet` with
depth_params.json), picks each image's witnesses by shared SfM points, lets them vote
(`consistency`), and writes DIR/<image key>.png (uint8 at the prior's size) and
DIR/consistency.json. Images whose fit failed or is unreliable are neither subject nor witness.
A rerun skips images whose inputs (their prior, params, pose and camera, their witnesses' too,
and the settings) have the digest recorded in consistency.json and whose mask is there.
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
from .colmap import ModelCamera, ModelImage, SparseModel, read_model
from .consistency import TRUSTED, View
from .depth_params import default_path, params_file
from .priorset import PriorSet
from ..errors import ImageError, UsageError, first_line
from ..images import is_inside, read_regular_file, safe_join
from ..priors.store import atomic_write_bytes
from ..threads import in_order, worker_count
from ..files.place import local_folder

REPORT_NAME = "consistency.json"
FORMAT_VERSION = 1


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
            "mask": {"rejected": consistency.REJECTED, "unseen": consistency.UNSEEN,
                     "trusted_from": TRUSTED, "all_agree": consistency.AGREED},
            "scene": {"tae_before": self.tae_before, "tae_after": self.tae_after},
            "images": {r.name: r.to_json() for r in self.images},
        }

    def format(self) -> str:
        lines = [f"{'image':<32} {'status':<9} {'wit':>3} {'checked':>8} {'agree':>7} "
                 f"{'reject':>7} {'disagr':>7}"]
        for r in self.images:
            dis = f"{r.disagreement:.3f}" if r.disagreement is not None else "-"
            lines.append(f"{r.name[-32:]:<32} {r.status:<9} {len(r.witnesses):>3} "
                         f"{r.checked:>8.1%} {r.agreeing:>7.1%} {r.rejected:>7.1%} {dis:>7}")
            if r.reason:
                lines.append(f"    {r.reason}")
        tae = " -> ".join(f"{v:.4f}" if v is not None else "-" for v in (self.tae_before, self.tae_after))
        lines.append(f"TAE before -> after masking: {tae}")
        lines.append(f"masks: {self.output} ({len(self.failed)} image(s) not checked, "
                     f"{self.seconds:.1f} s)")
        return "\n".join(lines)


def default_output(depths: Path) -> Path:
    depths = Path(depths)
    return depths.with_name(depths.resolve().name + "_confidence")


def check_consistency(
    sparse: Path | str,
    depths: Path | str,
    *,
    params: Path | str | None = None,
    output: Path | str | None = None,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> ConsistencySummary:
    """Write a confidence mask per usable image and consistency.json; see the module doc.

    Images are loaded, then checked, on `workers` threads (default min(8, cores)); the outputs
    do not depend on the count.

    Raises UsageError (nothing written) for bad settings, model, depth folder, params or output.
    """
    started = time.monotonic()
    settings = settings or Settings()
    settings.check()
    sparse, depths = Path(sparse), local_folder(depths, "consistency reads DEPTHS on this machine")
    params, output = _inputs(sparse, depths, params, output)
    model = read_model(sparse)
    priors = PriorSet(depths, params)
    usable, excluded = _usable(model, priors)
    if not usable:
        raise UsageError(f"no image of {sparse} has a reliable aligned prior in {depths}; "
                         f"check {params}")
    for image in usable:
        safe_join(output, image.key, ".png")  # every target checked before any is written
    _make_folder(output)
    views = _Views(priors, settings.resolution)
    count = worker_count(workers)
    usable, unreadable = _readable(usable, views, count)
    neighbours = covisible(model, usable, settings.neighbours)
    previous = _previous_digests(output)
    reports = excluded + unreadable
    masks: dict[str, np.ndarray] = {}

    def work(image: ModelImage) -> tuple[ImageReport, np.ndarray]:
        return _image(image, neighbours[image.name], views, priors, output, settings, previous)

    for done, (report, mask) in enumerate(in_order(work, usable, count), start=1):
        reports.append(report)
        masks[report.name] = mask
        if progress:
            progress(done, len(usable))
    reports.sort(key=lambda r: r.name)
    summary = ConsistencySummary(output, reports)
    summary.tae_before, summary.tae_after = scene_tae(usable, views, masks, count)
    summary.seconds = time.monotonic() - started
    atomic_write_bytes(output / REPORT_NAME,
                       json.dumps(summary.to_json(settings), indent=1).encode("utf-8"))
    return summary


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


def _make_folder(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the mask folder {output}: {error.strerror}; "
                         "choose another -o") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write in the mask folder {output}; choose another -o")


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

    def __init__(self, priors: PriorSet, resolution: float):
        self.priors = priors
        self.resolution = resolution
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
            rays, to_grid = self._camera(image.camera, grid)
            view = View(inverse, rays, image.cam_from_world, to_grid)
            self._views[image.name] = view
        return view

    def _prior_size(self, image: ModelImage) -> tuple[int, int]:
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


def _image(image: ModelImage, witnesses: list[ModelImage], views: _Views, priors: PriorSet,
           output: Path, settings: Settings, previous: dict[str, dict]) -> tuple[ImageReport, np.ndarray]:
    target = safe_join(output, image.key, ".png")
    digest = input_digest(image, witnesses, views.file_digest, priors, settings)
    names = [w.name for w in witnesses]
    resumed = _resume(image, previous.get(image.name), digest, target, views)
    if resumed is not None:
        report, mask = resumed
        report.witnesses = names
        return report, _grid_mask(mask, views.get(image).shape)
    subject = views.get(image)
    votes = [consistency.witness_votes(subject, views.get(w), settings.threshold) for w in witnesses]
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
    height, width = views._prior_size(image)
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    ok, buffer = cv2.imencode(".png", full)
    if not ok:
        raise OSError(f"cannot encode the mask of {image.name}")
    atomic_write_bytes(target, buffer.tobytes())
    return report, mask


def _resume(image: ModelImage, old: dict | None, digest: str, target: Path,
            views: "_Views") -> tuple[ImageReport, np.ndarray] | None:
    """The earlier report of an image whose inputs are unchanged and whose mask is intact."""
    if old is None or old.get("digest") != digest or not target.is_file():
        return None
    numbers = [old.get(k) for k in ("checked", "agreeing", "rejected")]
    disagreement = old.get("disagreement")
    if not all(_is_number(n) for n in numbers) or not (disagreement is None or _is_number(disagreement)):
        return None
    mask = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.dtype != np.uint8 or mask.shape != views._prior_size(image):
        return None
    report = ImageReport(image.name, image.key, "skipped", None, [], *map(float, numbers),
                         disagreement, digest)
    return report, mask


def load_mask(folder: Path | str, key: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image's confidence in [0, 1] (mask / 255), bilinear to size = (height, width).

    Raises MissingPriorError naming the image when its mask is missing or unreadable.
    """
    from .priorset import MissingPriorError

    path = safe_join(folder, key, ".png")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise MissingPriorError(f"no confidence mask for {key!r}: {path} is missing or not a "
                                "uint8 mask; run `depthprior consistency` or drop masks=")
    values = mask.astype(np.float32) / consistency.AGREED
    if size is not None and tuple(size) != values.shape:
        values = cv2.resize(values, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _grid_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def input_digest(image: ModelImage, witnesses: list[ModelImage], file_digest: Callable[[Path], bytes],
                 priors: PriorSet, settings: Settings) -> str:
    """sha256 of everything a mask depends on: settings, and per view its prior, fit and pose."""
    digest = hashlib.sha256(json.dumps(settings.__dict__, sort_keys=True).encode())
    for view in [image, *witnesses]:
        stem = priors.stem(view.name)
        digest.update(view.name.encode() + b"\0")
        digest.update(file_digest(priors.path(view.name)))
        digest.update(repr(priors.params.entries.get(stem)).encode())
        digest.update(np.asarray(view.cam_from_world, dtype=np.float64).tobytes())
        digest.update(view.camera.model.encode() + np.asarray(
            [view.camera.width, view.camera.height, *view.camera.params], np.float64).tobytes())
    return digest.hexdigest()


def _previous_digests(output: Path) -> dict[str, dict]:
    """The per-image entries of an earlier consistency.json (none when absent or unreadable)."""
    try:
        data = json.loads((output / REPORT_NAME).read_text(encoding="utf-8"))
        images = data["images"]
        return {name: entry for name, entry in images.items() if isinstance(entry, dict)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


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
           "load_mask",
           "covisible", "default_output"]
