"""The report's data: one `Frame` per image from the manifest, the align report and the masks.

Everything is read through the module that owns its format: the manifest (`priors.manifest`),
depth_params.json and its align report (`scene.depth_params`), consistency.json
(`files.jsonfile`), the COLMAP model (`scene.colmap`). Nothing here draws or writes. A folder
another tool wrote (PNGs, no manifest) gives one frame per PNG.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..exclusion.masks import ExclusionFolder
from ..errors import UnsafePathError, UsageError
from ..files.jsonfile import expect_object, read_json
from ..images import discover, image_key, safe_join
from ..priors.manifest import ImageRecord, Manifest
from ..priors.store import depth_pngs
from ..priors.verify import LOW_LEVELS
from ..scene import depth_params
from ..scene.confidence import REPORT_NAME as CONSISTENCY_REPORT
from ..scene.depth_params import REPORT_IMAGES, DepthParams

#: a frame's status, worst first: the grid's default order and the filter's choices
STATUSES = ("failed", "flagged", "unreliable", "ok")
#: series points further than this many robust sigmas from the median are outliers
OUTLIER_SIGMAS = 3.5
#: a step between consecutive frames larger than this many robust sigmas of the steps is a jump
JUMP_SIGMAS = 5.0
#: ... and larger than this in log scale (a 25% change), so a very steady scene flags nothing
MIN_SCALE_JUMP = math.log(1.25)


@dataclass
class FitRow:
    """One image's fit as align reported it (or as depth_params.json alone says)."""

    status: str  # ok / unreliable / failed
    reason: str
    scale: float
    offset: float
    points: int | None = None
    inliers: int | None = None
    residual: float | None = None
    usable: bool = True  # False: the trainer never applies these numbers (not finite, overflow)

    @property
    def inlier_ratio(self) -> float | None:
        if not self.points or self.inliers is None:
            return None
        return self.inliers / self.points

    @property
    def rejected(self) -> float | None:
        ratio = self.inlier_ratio
        return None if ratio is None else 1.0 - ratio


@dataclass
class Frame:
    """One image of the scene, in frame order (sorted names)."""

    index: int
    key: str  # image name without extension: output stem and depth_params.json key
    name: str  # image name as the manifest (or the model) has it
    generated: str  # "ok", "failed", or "absent" (not in the manifest)
    record: ImageRecord | None = None
    prior: Path | None = None  # the depth PNG
    photo: Path | None = None
    mask: Path | None = None
    exclusion: Path | None = None  # its exclusion mask (depthprior exclude), with --exclude
    excluded: float | None = None  # the fraction exclude.json says it leaves out
    fit: FitRow | None = None
    reasons: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)  # "scale outlier", "offset jump", ...

    @property
    def status(self) -> str:
        if self.generated != "ok" or (self.fit is not None and self.fit.status == "failed"):
            return "failed"
        if self.record is not None and (self.record.flags or self.record.levels < LOW_LEVELS):
            return "flagged"
        if self.fit is not None and self.fit.status == "unreliable":
            return "unreliable"
        return "ok"

    @property
    def rank(self) -> int:
        return STATUSES.index(self.status)

    def figures(self) -> dict[str, float | None]:
        """The numbers the grid sorts by."""
        fit = self.fit
        record = self.record
        return {
            "frame": float(self.index),
            "scale": fit.scale if fit else None,
            "offset": fit.offset if fit else None,
            "inliers": fit.inlier_ratio if fit else None,
            "residual": fit.residual if fit else None,
            "points": float(fit.points) if fit and fit.points is not None else None,
            "levels": float(record.levels) if record and record.ok else None,
            "excluded": self.excluded,
        }


@dataclass
class SceneData:
    out: Path
    manifest: Manifest | None  # None: a folder of PNGs another tool wrote
    frames: list[Frame]
    images: Path | None
    sparse: Path | None
    params: Path | None
    masks: Path | None
    method: str | None = None
    median_scale: float | None = None
    consistency: dict[str, Any] | None = None
    exclusion: Path | None = None  # the exclusion mask folder

    def counts(self) -> dict[str, int]:
        if self.manifest is None:
            priors = sum(frame.prior is not None for frame in self.frames)
            return {"images": priors, "done": priors, "failed": 0, "flagged": 0}
        records = list(self.manifest.images.values())
        return {
            "images": len(records),
            "done": sum(r.ok for r in records),
            "failed": sum(not r.ok for r in records),
            "flagged": sum(r.ok and bool(r.flags) for r in records),
        }

    def fit_counts(self) -> dict[str, int] | None:
        if self.params is None:
            return None
        fits = [f.fit for f in self.frames if f.fit is not None]
        return {status: sum(fit.status == status for fit in fits)
                for status in ("ok", "unreliable", "failed")}

    def status_counts(self) -> dict[str, int]:
        return {status: sum(f.status == status for f in self.frames) for status in STATUSES}


# ---------------------------------------------------------------- gathering

def gather(out: Path | str, *, images: Path | str | None = None, sparse: Path | str | None = None,
           masks: Path | str | None = None, exclude: Path | str | None = None) -> SceneData:
    """Read everything the page shows; UsageError (one line) for inputs that cannot be used."""
    out = _folder(out, "output folder")
    manifest = Manifest.load(out)
    images_root = _images_root(images, manifest)
    sparse_dir = _folder(sparse, "sparse model folder") if sparse is not None else None
    masks_dir = _folder(masks, "mask folder") if masks is not None else None
    frames = (_frames(out, manifest, images_root) if manifest is not None
              else _frames_of_pngs(out, images_root))
    if manifest is None and not frames:
        raise UsageError(f"{out} holds no depth priors (no depthprior.json, no PNGs): run "
                         "depthprior generate first, or pass the folder it wrote")
    scene = SceneData(out, manifest, frames, images_root, sparse_dir, None, masks_dir)
    if sparse_dir is not None:
        _add_fits(scene, depth_params.default_path(sparse_dir))
    if masks_dir is not None:
        _add_masks(scene, masks_dir)
    if exclude is not None:
        _add_exclusion(scene, ExclusionFolder(exclude))
    mark_series(scene.frames)
    return scene


def _folder(path: Path | str, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{what} not found: {path}")
    return path


def _images_root(images: Path | str | None, manifest: Manifest | None) -> Path | None:
    """--images, else the folder the manifest records when it still exists, else None."""
    if images is not None:
        return _folder(images, "image folder")
    recorded = Path(manifest.inputs) if manifest is not None and manifest.inputs else None
    return recorded if recorded is not None and recorded.is_dir() else None


def _is_file(path: Path) -> bool:
    """Path.is_file, False for a name the file system refuses (too long) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False


def _frames_of_pngs(out: Path, images_root: Path | None) -> list[Frame]:
    """A folder another tool wrote: a frame per depth PNG, its photo found by key."""
    photos = _photos_by_key(images_root) if images_root is not None else {}
    frames = []
    for index, (stem, path) in enumerate(depth_pngs(out).items()):
        photo = photos.get(stem)
        name = photo.relative_to(images_root).as_posix() if photo is not None else stem + ".png"
        frames.append(Frame(index, stem, name, "ok", prior=path, photo=photo))
    return frames


def _frames(out: Path, manifest: Manifest, images_root: Path | None) -> list[Frame]:
    frames = []
    for index, (name, record) in enumerate(sorted(manifest.images.items())):
        key = record.stem if record.ok else image_key(name)
        frame = Frame(index, key, name, "ok" if record.ok else "failed", record)
        if record.ok:
            frame.prior = _prior_file(out, record)
            if record.flags:
                frame.reasons.append("flagged: " + ", ".join(record.flags))
            if record.levels < LOW_LEVELS:
                frame.reasons.append(f"only {record.levels} distinct levels (8-bit or coarser)")
        else:
            frame.reasons.append(f"generate failed: {record.error or 'no reason recorded'}")
        frame.photo = _photo(images_root, name)
        frames.append(frame)
    return frames


def _photos_by_key(images_root: Path) -> dict[str, Path]:
    """key -> frame in images_root; none when they cannot be told apart (a.jpg and a.png)."""
    try:
        return {item.stem: Path(item.path) for item in discover(images_root)}
    except UsageError:
        return {}


def _prior_file(out: Path, record: ImageRecord) -> Path | None:
    """The record's PNG (its reader says when it is missing or unreadable), None without one."""
    png = [rel for rel in record.outputs if rel.endswith(".png")]
    return out / png[0] if png else None


def _photo(images_root: Path | None, name: str) -> Path | None:
    if images_root is None:
        return None
    try:
        path = safe_join(images_root, name)
    except (UnsafePathError, OSError):
        return None
    return path if _is_file(path) else None


def _add_fits(scene: SceneData, params_path: Path) -> None:
    """Per-frame fits from depth_params.json and, when there, its align report."""
    if not os.path.lexists(params_path):
        raise UsageError(f"no {depth_params.PARAMS_NAME} in {params_path.parent}: run "
                         f"`depthprior align --sparse {params_path.parent} --depths {scene.out}` "
                         "first, or leave out --sparse")
    params = DepthParams.load(params_path, depth_dir=scene.out)
    report = params.report or {}
    table = report.get(REPORT_IMAGES)
    rows = table if isinstance(table, Mapping) else {}
    scene.params = params_path
    scene.method = report.get("method") if isinstance(report.get("method"), str) else None
    scene.median_scale = params.median_scale
    by_key = {frame.key: frame for frame in scene.frames}
    for key, entry in params.entries.items():
        frame = by_key.get(key)
        if frame is None:  # in the model, not in the manifest
            frame = Frame(len(scene.frames), key, key, "absent",
                          reasons=["no prior: not in the manifest"])
            scene.frames.append(frame)
            by_key[key] = frame
        frame.fit = _fit_row(entry, params, key, rows.get(key))
        if frame.fit.status != "ok":
            frame.reasons.append(f"fit {frame.fit.status}: {frame.fit.reason}")


def _fit_row(entry: depth_params.Entry, params: DepthParams, key: str,
             row: Any) -> FitRow:
    """The align report's row, made no better than depth_params.json's own numbers allow."""
    row = row if isinstance(row, Mapping) else {}
    reported = row.get("status") if row.get("status") in ("ok", "unreliable", "failed") else "ok"
    # a fit align made but knows is wrong: the trainer's file skips it, the report shows it
    skipped = entry == depth_params.SKIP_ENTRY and reported in ("unreliable", "failed") \
        and _number(row.get("scale")) is not None and _number(row.get("offset")) is not None
    if skipped:
        entry = depth_params.Entry(_number(row["scale"]), _number(row["offset"]))
    judged = (reported if skipped else "failed" if not entry.scale > 0 else
              "unreliable" if key in params.unreliable else "ok")
    order = ("ok", "unreliable", "failed")
    status = max(reported, judged, key=order.index)
    reasons = [str(row.get("reason") or "")]
    if skipped and reported == "unreliable":
        reasons.append("skipped by the trainer (scale -1 in depth_params.json)")
    if judged != "ok" and judged == status and reported != status:
        reasons.append(params.unreliable.get(key, "scale 0 in depth_params.json"))
    elif status != "ok" and not reasons[0]:
        reasons.append(params.unreliable.get(key, "scale 0 in depth_params.json"))
    return FitRow(status, "; ".join(r for r in reasons if r), entry.scale, entry.offset,
                  _int(row.get("points")), _int(row.get("inliers")), _number(row.get("residual")),
                  usable=entry.scale > 0 and (skipped or key not in params.unusable))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _add_masks(scene: SceneData, masks_dir: Path) -> None:
    for frame in scene.frames:
        try:
            path = safe_join(masks_dir, frame.key, ".png")
        except (UnsafePathError, OSError):
            continue
        frame.mask = path if _is_file(path) else None
    scene.consistency = read_consistency(masks_dir)


def _add_exclusion(scene: SceneData, folder: ExclusionFolder) -> None:
    scene.exclusion = folder.root
    for frame in scene.frames:
        try:
            path = safe_join(folder.root, frame.key, ".png")
        except (UnsafePathError, OSError):
            continue
        frame.exclusion = path if _is_file(path) else None
        frame.excluded = folder.fraction(frame.key)


def read_consistency(masks_dir: Path) -> dict[str, Any] | None:
    """The scene-level numbers of masks_dir/consistency.json (scalars only), None without one."""
    path = masks_dir / CONSISTENCY_REPORT
    if not os.path.lexists(path):
        return None
    data = read_json(path, check=expect_object,
                     hint="rerun depthprior consistency, or leave out --masks")
    scene = data.get("scene") if isinstance(data.get("scene"), Mapping) else data
    return {str(k): v for k, v in scene.items()
            if isinstance(v, (str, int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- jumps and outliers

def mark_series(frames: list[Frame]) -> None:
    """Mark frames whose scale or offset is an outlier, or jumps from the frame before."""
    fitted = [f for f in frames if f.fit is not None and f.fit.status != "failed" and f.fit.usable]
    if len(fitted) < 3:
        return
    series = {
        "scale": np.log([f.fit.scale for f in fitted]),
        "offset": np.array([f.fit.offset for f in fitted]),
    }
    for what, values in series.items():
        floor = MIN_SCALE_JUMP if what == "scale" else 0.0
        for i in outliers(values):
            fitted[i].marks.append(f"{what} outlier")
        for i in jumps(values, floor):
            fitted[i].marks.append(f"{what} jump")


def _robust_sigma(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def outliers(values: np.ndarray) -> list[int]:
    """Indices further than OUTLIER_SIGMAS robust sigmas from the median."""
    sigma = _robust_sigma(values)
    spread = np.abs(values - np.median(values))
    if sigma <= 0:
        return [int(i) for i in np.flatnonzero(spread > 0)] if np.count_nonzero(spread) * 2 < len(values) else []
    return [int(i) for i in np.flatnonzero(spread > OUTLIER_SIGMAS * sigma)]


def jumps(values: np.ndarray, floor: float = 0.0) -> list[int]:
    """Indices i whose step from i-1 exceeds JUMP_SIGMAS robust sigmas of all steps and floor."""
    steps = np.abs(np.diff(values))
    if steps.size < 2:
        return []
    limit = max(JUMP_SIGMAS * 1.4826 * float(np.median(steps)), floor)
    if limit <= 0:
        limit = float(np.finfo(np.float64).eps) * max(1.0, float(np.max(np.abs(values))))
    return [int(i) + 1 for i in np.flatnonzero(steps > limit)]
