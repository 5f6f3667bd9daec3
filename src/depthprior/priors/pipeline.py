"""generate(): plan -> read -> infer -> write, with bounded queues, progress and a summary.

Generation only: verifying and aligning afterwards is chained one level up (depthprior.steps).

Reading (decode + prepare) and writing (resize back + encode + atomic write) run in thread
pools beside inference; OpenCV releases the GIL, so they overlap the model. At most a fixed
number of images is in flight, so memory does not grow with the number of images.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .backends import DEFAULT_BACKEND, Backend, BackendSettings, backend_class, settings_for
from .backends.base import FATAL_ERRORS, DepthMap
from ..errors import BackendUnavailable, ImageError, UsageError, first_line, listing
from ..images import ImageItem, Scan, decode_rgb, is_inside, normalise_extensions, safe_join, scan
from ..files import place
from ..files.place import Location, location
from ..threads import yield_to_inference
from .distributed import RaySettings, check_backend, run_on_ray
from .manifest import ImageRecord, Manifest, ManifestError, ThrottledSaver, output_files
from .store import (
    OutputLock,
    check_writable,
    encode_inverse_depth,
    remove_stale_temporaries,
    write_npy,
    write_png16,
)

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a generate run did. exit_code: 0 all done or skipped, 1 failures or stopped early."""

    out: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    flagged: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, str] = field(default_factory=dict)  # damaged outputs found and redone
    ignored: dict[str, str] = field(default_factory=dict)  # entries that are not images (FIFO, loop)
    hidden: list[str] = field(default_factory=list)  # hidden folders and image files, never read
    manifest_error: str | None = None  # the manifest could not be written at the end
    elapsed: float = 0.0
    load_seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    #: on Ray: the cluster and replicas used, images done by each replica, seconds to the first
    cluster: str | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    ray_startup: float = 0.0
    ray_first: int = 0  # images in the first result block (done within ray_startup)
    #: what the next steps need without reading the folders again: the input root, the images
    #: found there (outside OUT), and the manifest as this run left it
    images: Path | None = field(default=None, repr=False)
    items: list[ImageItem] = field(default_factory=list, repr=False)
    manifest: Manifest | None = field(default=None, repr=False)

    @property
    def images_per_s(self) -> float:
        """Throughput after the model was loaded."""
        working = self.elapsed - self.load_seconds
        return self.done / working if working > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.stopped or self.manifest_error else 0

    def format(self) -> str:
        lines = [
            f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} "
            f"of {self.total} images in {self.elapsed:.1f} s (model load {self.load_seconds:.1f} s, "
            f"then {self.images_per_s:.2f} images/s) -> {self.out}"
        ]
        if self.cluster:
            lines.append(self._cluster_line())
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; rerun the same command to resume")
        if self.interrupted:
            lines.append("interrupted: finished outputs are kept; rerun the same command to resume")
        if self.manifest_error:
            lines.append(
                f"{self.manifest_error}: finished outputs are kept but not all are recorded; "
                "free space (or fix the folder) and rerun the same command to resume"
            )
        if self.hidden:
            lines.append(f"  IGNORED {len(self.hidden)} hidden entries (names starting with '.' are "
                         f"never inputs): {listing(self.hidden, limit=3)}")
        for name, reason in self.ignored.items():
            lines.append(f"  IGNORED {name}: {reason}")
        for name, reason in self.repaired.items():
            lines.append(f"  REDONE {name}: damaged output ({reason})")
        for name, reason in self.failed.items():
            lines.append(f"  FAILED {name}: {reason}")
        for name, reason in self.flagged.items():
            lines.append(f"  WARNING {name}: {reason}")
        return "\n".join(lines)


    def _cluster_line(self) -> str:
        working = max(self.elapsed - self.load_seconds - self.ray_startup, 1e-9)
        replicas = ", ".join(f"{name}: {count} images, {count / working:.2f}/s"
                             for name, count in sorted(self.replicas.items()))
        return (f"on Ray: {self.cluster}; first results after {self.ray_startup:.1f} s, then "
                f"{self.ray_images_per_s:.2f} images/s; per replica: {replicas or 'none'}")

    @property
    def ray_images_per_s(self) -> float:
        """Throughput on Ray once the first results are back (start-up and model load done)."""
        working = self.elapsed - self.load_seconds - self.ray_startup
        return max(self.done - self.ray_first, 0) / working if working > 0 else 0.0


@dataclass
class PreparedImage:
    """One image read and prepared for the backend (or why it could not be)."""

    item: ImageItem
    height: int = 0
    width: int = 0
    prepared: Any = None
    error: str | None = None


#: options of the steps that may follow generate, refused here with a pointer to the chain
_NEXT_STEP_OPTIONS = ("verify", "num_samples", "align", "consistency", "report")


def generate(
    images: str | os.PathLike[str] | Scan,
    out: str | os.PathLike[str],
    *,
    backend: str | Backend = DEFAULT_BACKEND,
    settings: BackendSettings | None = None,
    format: str = "png",
    overwrite: bool = False,
    extensions: Iterable[str] = (),
    workers: int | None = None,
    progress: bool = True,
    follow_outside: bool = False,
    ray: RaySettings | None = None,
    **setting_overrides: Any,
) -> Summary:
    """Depth priors for every image under `images`, written to `out` (README: Output format).

    `images` is a folder, one image, or a Scan of one (depthprior.images.scan; then the folder is
    not walked again and `extensions` is not used). Generation only: depthprior.steps.run_generate
    runs verify and align after it.

    Backend options are given as `settings` or as keyword overrides of BackendSettings fields
    (model=..., device=..., dtype=..., batch_size=..., input_size=..., ...). `backend` is a
    registry name, or an already loaded Backend (then its own settings apply and it stays open).
    Images reached through links to folders outside `images` are counted before any work; a
    backend that uploads images refuses them unless `follow_outside`.

    `ray` (depthprior.priors.distributed.RaySettings) runs the work on a Ray cluster: the same
    plan, outputs and manifest; the images must be a folder every node sees, or a URL.
    """
    _refuse_next_step_options(setting_overrides)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a whole number of at least 1 (or None); got {workers!r}")
    loaded = backend if isinstance(backend, Backend) else None
    backend_type = type(loaded) if loaded else backend_class(backend)
    if ray is not None:
        check_backend(backend_type, loaded)
    settings = loaded.settings if loaded else settings_for(backend_type, settings, **setting_overrides)
    images_root = images.root if isinstance(images, Scan) else location(images)
    out_root = location(out)
    found = _inputs(images, out_root, backend_type, extensions, follow_outside)
    plan = _plan(found.items, images_root, out_root, backend_type, settings, format, overwrite)
    try:
        summary = Summary(out=out_root, total=len(plan.items),
                          skipped=len(plan.items) - len(plan.todo) - len(plan.unwritable),
                          repaired=dict(plan.damaged), ignored={**found.skipped, **found.loops},
                          hidden=list(found.hidden),
                          images=images_root, items=plan.items, manifest=plan.manifest)
        start = time.perf_counter()
        for name, reason in plan.unwritable.items():
            record_result(plan.manifest, summary, name, ImageRecord.failed(reason))
        if plan.todo and ray is not None:
            log.info("%d images found, %d to do, %d already done; format=%s", len(plan.items),
                     len(plan.todo), len(plan.items) - len(plan.todo), format)
            run_on_ray(backend_type, settings, plan, format, ray, progress, summary)
        elif plan.todo:
            engine = loaded or backend_type(settings)
            try:
                summary.load_seconds = time.perf_counter() - start
                plan.manifest.backend = engine.describe()
                summary.backend = plan.manifest.backend
                _log_settings(plan, engine, format)
                _run(engine, plan, format, workers, progress, summary)
            finally:
                if loaded is None:
                    engine.close()
        else:
            log.info("nothing to do: all %d images already have outputs in %s", summary.skipped, out_root)
            if plan.unwritable:
                summary.manifest_error = save_manifest(plan.manifest)
        summary.elapsed = time.perf_counter() - start
    finally:
        plan.lock.release()
    return summary


def _refuse_next_step_options(options: dict[str, Any]) -> None:
    given = [name for name in _NEXT_STEP_OPTIONS if name in options]
    if given:
        raise UsageError(
            f"generate() makes the priors only and takes no {', '.join(given)}: call "
            "depthprior.steps.run_generate(images, out, verify=..., align=..., consistency=..., "
            "report=...) (also depthprior.run_generate) to run those steps after it"
        )


@dataclass
class _Plan:
    items: list[ImageItem]
    todo: list[ImageItem]
    manifest: Manifest
    identity: dict[str, Any]
    images_root: Path
    lock: OutputLock
    damaged: dict[str, str] = field(default_factory=dict)  # finished before, files damaged
    unwritable: dict[str, str] = field(default_factory=dict)  # outputs would land outside OUT


def _inputs(images: str | os.PathLike[str] | Scan, out_root: Path, backend_type: type[Backend],
            extensions: Iterable[str], follow_outside: bool) -> Scan:
    """The images to work on, what discovery left alone, and the outside-links rule."""
    images_root = images.root if isinstance(images, Scan) else location(images)
    if _same_place(images_root, out_root):
        raise UsageError(f"output folder {out_root} is the input folder; choose a separate folder")
    scanned = images if isinstance(images, Scan) else scan(images_root, normalise_extensions(extensions))
    found = dataclasses.replace(  # a caller's Scan stays as it was; OUT's own entries left out
        scanned, items=[item for item in scanned.items if not is_inside(item.path, out_root)],
        skipped={name: reason for name, reason in scanned.skipped.items()
                 if not place.is_local(images_root) or not is_inside(Path(images_root, name), out_root)})
    if not found.items:
        raise UsageError(f"no images found in {images_root} outside the output folder {out_root}")
    for name, reason in {**found.skipped, **found.loops}.items():
        log.warning("ignored %s: %s", name, reason)
    outside = found.outside
    if outside:
        message = (f"{len(outside)} of {len(found.items)} images lie outside {images_root}, "
                   f"reached through linked folders (e.g. {outside[0].name})")
        if backend_type.uploads and not follow_outside:
            raise UsageError(f"{message}; --backend {backend_type.name} would upload them: pass "
                             "--follow-outside to send them too, or remove the links")
        log.warning("%s", message)
    return found


def _same_place(first: Location, second: Location) -> bool:
    return place.same_place(first, second)


def _plan(
    items: list[ImageItem],
    images_root: Path,
    out_root: Path,
    backend_type: type[Backend],
    settings: BackendSettings,
    fmt: str,
    overwrite: bool,
) -> _Plan:
    """Everything decided before any model is loaded: resume, identity, what to do.

    The output folder is locked from here on (released by the caller), so a second run can
    neither interleave its manifest with this one nor clean up this run's temporaries.
    """
    output_files("x", fmt)  # validates the format
    check_writable(out_root)
    lock = OutputLock(out_root).acquire()
    try:
        identity = backend_type.identity(settings)
        manifest = _resume_manifest(out_root, identity, overwrite)
        manifest.inputs = place.record(images_root)
        removed = remove_stale_temporaries(out_root)
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
        plan = _Plan(items, [], manifest, identity, images_root, lock)
        for item in items:
            _schedule(plan, item, fmt, overwrite)
    except BaseException:
        lock.release()
        raise
    return plan


def _resume_manifest(out_root: Path, identity: dict[str, Any], overwrite: bool) -> Manifest:
    """The manifest this run continues (or a new one), refusing outputs of other settings."""
    try:
        manifest = Manifest.load(out_root)
    except ManifestError:
        if not overwrite:
            raise
        kept = Manifest.set_aside(out_root)
        log.warning("the manifest in %s could not be used; kept as %s", out_root, kept.name)
        manifest = None
    if manifest is not None and not overwrite and any(True for _ in manifest.iter_ok()):
        differences = manifest.differences(identity)
        if differences:
            raise UsageError(
                f"{out_root} holds outputs made with other settings ({'; '.join(differences)}); "
                "pass --overwrite to replace them, or choose another output folder"
            )
    if manifest is None or overwrite:
        manifest = Manifest(root=out_root)
    manifest.identity = identity
    return manifest


def _schedule(plan: _Plan, item: ImageItem, fmt: str, overwrite: bool) -> None:
    """Put one image in todo, unwritable, or leave it done (checking its files cheaply)."""
    try:
        for relative in output_files(item.stem, fmt):
            safe_join(plan.manifest.root, relative)
    except UsageError as error:
        plan.unwritable[item.name] = str(error)
        return
    if not overwrite and plan.manifest.is_complete(item.name, fmt):
        damage = plan.manifest.damage(item.name, fmt)
        if damage is None:
            return
        plan.damaged[item.name] = damage
    plan.todo.append(item)


def _log_settings(plan: _Plan, engine: Backend, fmt: str) -> None:
    described = ", ".join(f"{k}={v}" for k, v in engine.describe().items() if k != "preprocessing")
    log.info("depthprior generate: %s", described)
    log.info(
        "%d images found, %d to do, %d already done; format=%s; batch_size=%d",
        len(plan.items), len(plan.todo), len(plan.items) - len(plan.todo), fmt,
        _batch_size(engine),
    )


def _batch_size(engine: Backend) -> int:
    return engine.preferred_batch_size


def _run(
    engine: Backend, plan: _Plan, fmt: str, workers: int | None, progress: bool, summary: Summary
) -> None:
    from tqdm import tqdm

    workers = workers or max(2, min(8, os.cpu_count() or 2))
    batch_size = _batch_size(engine)
    window = max(2 * batch_size, 2 * workers)
    saver = ThrottledSaver(plan.manifest)
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True)
    pending: deque[Future] = deque()

    def collect(block_until: int) -> None:
        """Record finished writes; wait while more than block_until are in flight."""
        while pending and (pending[0].done() or len(pending) > block_until):
            try:
                name, record = pending.popleft().result()
            except BackendUnavailable as error:  # storage gone: not done, a rerun does it
                summary.stopped = summary.stopped or str(error)
                continue
            record_result(plan.manifest, summary, name, record)
            saver.touch()
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed), refresh=False)

    readers = ThreadPoolExecutor(workers, "depthprior-read", initializer=yield_to_inference)
    writers = ThreadPoolExecutor(workers, "depthprior-write", initializer=yield_to_inference)
    try:
        loaded = _bounded_map(readers, lambda item: _load(engine, item), plan.todo, window)
        for batch in _batches(engine, loaded, batch_size):
            good = [entry for entry in batch if entry.error is None]
            outcomes = engine.infer_each([entry.prepared for entry in good]) if good else []
            for entry, outcome in zip(good, outcomes):
                entry.prepared = None
                pending.append(writers.submit(_write, engine, plan.manifest.root, entry, outcome, fmt))
            for entry in batch:
                if entry.error is not None:
                    pending.append(_done_future((entry.item.name, ImageRecord.failed(entry.error))))
            collect(block_until=window)
            if summary.stopped:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    except BackendUnavailable as error:
        summary.stopped = str(error)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        try:
            collect(block_until=0)
        except KeyboardInterrupt:
            summary.interrupted = True
            writers.shutdown(wait=True, cancel_futures=True)
            collect(block_until=0)
        writers.shutdown(wait=True)
        saver.dirty = True
        saver.flush()
        summary.manifest_error = saver.error
        bar.close()


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list, window: int) -> Iterator[Any]:
    """pool.map in order, with at most `window` results computed ahead of the consumer."""
    queue: deque[Future] = deque()
    iterator = iter(items)
    for item in iterator:
        queue.append(pool.submit(fn, item))
        if len(queue) >= window:
            break
    while queue:
        result = queue.popleft().result()
        for item in iterator:
            queue.append(pool.submit(fn, item))
            break
        yield result


def prepared_batches(engine: Backend, items: Iterable[ImageItem]) -> Iterator[list[PreparedImage]]:
    """The items read and prepared in order on this thread, batched exactly as generate batches
    them (for timing the model alone); unreadable ones come through with `error` set."""
    return _batches(engine, (_load(engine, item) for item in items), _batch_size(engine))


def _batches(engine: Backend, loaded: Iterator[PreparedImage], batch_size: int) -> Iterator[list[PreparedImage]]:
    """Consecutive inputs with the same batch key, up to batch_size; failed reads pass through."""
    batch: list[PreparedImage] = []
    key: Any = None
    for entry in loaded:
        entry_key = None if entry.error is not None else engine.batch_key(entry.prepared)
        if batch and entry.error is None and (entry_key != key or len(batch) >= batch_size):
            yield batch
            batch = []
        if entry.error is None:
            key = entry_key
        batch.append(entry)
    if batch:
        yield batch


def _load(engine: Backend, item: ImageItem) -> PreparedImage:
    try:
        image = decode_rgb(item.path, max_pixels=engine.settings.max_pixels)
        return PreparedImage(item, image.shape[0], image.shape[1], engine.prepare(image, item.name))
    except FATAL_ERRORS:
        raise
    except ImageError as error:
        return PreparedImage(item, error=str(error))
    except Exception as error:  # noqa: BLE001 - one bad file never stops the batch
        return PreparedImage(item, error=f"{type(error).__name__}: {error}")


def _write(engine: Backend, root: Path, entry: PreparedImage, outcome: Any, fmt: str) -> tuple[str, ImageRecord]:
    name = entry.item.name
    if isinstance(outcome, BaseException):
        return name, ImageRecord.failed(first_line(outcome))
    try:
        depth = engine.finish(outcome, entry.height, entry.width)
        return name, write_outputs(root, entry.item, depth, fmt)
    except BackendUnavailable:  # the storage went away: the run stops there
        raise
    except Exception as error:  # noqa: BLE001
        return name, ImageRecord.failed(first_line(error))


def write_outputs(root: Location, item: ImageItem, depth: DepthMap, fmt: str) -> ImageRecord:
    """Encode one image's map, write its files under root and return its manifest record
    (the local pipeline's writer threads and the Ray path's write tasks both end here)."""
    height, width = depth.values.shape
    encoded = encode_inverse_depth(depth.values, depth.kind)
    outputs = output_files(item.stem, fmt)
    for rel in outputs:
        path = safe_join(root, rel)
        if rel.endswith(".png"):
            write_png16(path, encoded.png)
        else:
            write_npy(path, depth.values)
    levels = encoded.levels if depth.levels is None else min(encoded.levels, depth.levels)
    return ImageRecord(
        status="ok",
        stem=item.stem,
        outputs=outputs,
        width=width,
        height=height,
        raw_min=encoded.raw_min,
        raw_max=encoded.raw_max,
        raw_kind=encoded.raw_kind,
        npy_kind=depth.kind if fmt in ("npy", "both") else None,
        source=depth.source,
        source_levels=depth.levels,
        levels=levels,
        precision_bits=round(float(np.log2(max(levels, 1))), 2),
        flags=["constant"] if encoded.constant else [],
        notes=list(depth.notes),
        extras=dict(depth.extras),
    )


def save_manifest(manifest: Manifest) -> str | None:
    """Save now; the error line if the manifest could not be written (the run goes on)."""
    saver = ThrottledSaver(manifest)
    saver.dirty = True
    saver.flush()
    return saver.error


def _done_future(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def record_result(manifest: Manifest, summary: Summary, name: str, record: ImageRecord) -> None:
    """One image's record into the manifest and the summary's counts."""
    manifest.images[name] = record
    if record.ok:
        summary.done += 1
        if record.constant:
            summary.flagged[name] = "constant prediction: written as all zeros, not usable as a prior"
    else:
        summary.failed[name] = record.error or "failed"
