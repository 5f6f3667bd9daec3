"""generate(): plan -> read -> infer -> write, with bounded queues, progress and a summary.

Generation only: verifying and aligning afterwards is chained one level up (depthprior.steps).

Reading (decode + prepare) and writing (resize back + encode + atomic write) run in thread
pools beside inference; OpenCV releases the GIL, so they overlap the model. At most a fixed
number of images is in flight, so memory does not grow with the number of images.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .backends import DEFAULT_BACKEND, Backend, BackendSettings, backend_class, settings_for
from ..errors import BackendUnavailable, UsageError, first_line
from ..images import Scan
from ..files import place
from ..files.place import location
from ..threads import yield_to_inference
from .distributed import RaySettings, check_backend, run_on_ray
from .frames import PreparedImage, batch_size, batches, load_frame, prepared_batches, write_outputs
from .manifest import ImageRecord, ThrottledSaver
from .plan import Plan, Summary, find_inputs, make_plan, record_result, remove_superseded, save_manifest
from .sequences import redo_changed_sequences, run_sequences
from .backends.video_checkpoints import is_video_model

if TYPE_CHECKING:  # pragma: no cover
    from ..exclusion.run import ExcludeJob, ExclusionPass

__all__ = ["PreparedImage", "Summary", "generate", "prepared_batches", "record_result",
           "save_manifest", "write_outputs"]

log = logging.getLogger(__name__)


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
    exclude: "ExcludeJob | None" = None,
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

    `exclude` (depthprior.exclusion.run.ExcludeJob) also writes exclusion masks (default
    OUT_exclude beside OUT): the frames this run decodes for the depth model are segmented in
    the same reading pass, on its device; frames whose prior was already done are read for
    the masks alone. Its summary is `Summary.exclusion`.
    """
    _refuse_next_step_options(setting_overrides)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a whole number of at least 1 (or None); got {workers!r}")
    loaded = backend if isinstance(backend, Backend) else None
    backend_type = type(loaded) if loaded else backend_class(backend)
    if ray is not None:
        check_backend(backend_type, loaded)
    settings = loaded.settings if loaded else settings_for(backend_type, settings, **setting_overrides)
    temporal = is_video_model(str(settings.model))
    if temporal and ray is not None:
        raise UsageError(f"model {settings.model!r} is a temporal model (Video Depth Anything): its frames "
                         "are one sequence, which --ray would split across replicas; leave --ray out")
    images_root = images.root if isinstance(images, Scan) else location(images)
    out_root = location(out)
    found = find_inputs(images, out_root, backend_type, extensions, follow_outside)
    if exclude is not None and (ray is not None or not place.is_local(out_root)):
        raise UsageError("--exclude runs beside the local model into a local folder: without "
                         "--ray and with a local OUT (or run `depthprior exclude` after)")
    if exclude is not None:  # its options, checkpoint and classes are checked before OUT is made
        from ..exclusion.run import check_job

        check_job(exclude, option="--exclude")
    plan = make_plan(found.items, images_root, out_root, backend_type, settings, format, overwrite)
    if temporal:
        redo_changed_sequences(plan)
    exclusion = None
    try:
        if exclude is not None:
            exclusion = _exclusion_pass(exclude, out_root, plan, settings, overwrite)
        summary = Summary(out=out_root, total=len(plan.items),
                          skipped=len(plan.items) - len(plan.todo) - len(plan.unwritable),
                          repaired=dict(plan.damaged), ignored={**found.skipped, **found.loops},
                          hidden=list(found.hidden),
                          images=images_root, items=plan.items, manifest=plan.manifest)
        start = time.perf_counter()
        for name, reason in plan.unwritable.items():
            record_result(plan, summary, name, ImageRecord.failed(reason))
        if plan.todo and ray is not None:
            log.info("%d images found, %d to do, %d already done; format=%s", len(plan.items),
                     len(plan.todo), len(plan.items) - len(plan.todo), format)
            run_on_ray(backend_type, settings, plan, format, ray, progress, summary)
        elif plan.todo and temporal:
            run_sequences(settings, plan, format, progress, summary)
        elif plan.todo:
            engine = loaded or backend_type(settings)
            try:
                summary.load_seconds = time.perf_counter() - start
                plan.manifest.backend = engine.describe()
                summary.backend = plan.manifest.backend
                _log_settings(plan, engine, format)
                _run(engine, plan, format, workers, progress, summary, exclusion)
            finally:
                if loaded is None:
                    engine.close()
        else:
            log.info("nothing to do: all %d images already have outputs in %s", summary.skipped, out_root)
            if plan.unwritable:
                summary.manifest_error = save_manifest(plan.manifest)
        if plan.superseded and not summary.stopped and summary.manifest_error is None:
            summary.removed = remove_superseded(plan)  # the manifest no longer names them
        if exclusion is not None:
            summary.exclusion = exclusion.finish(settings.max_pixels, workers,
                                                 complete=not (summary.interrupted or summary.stopped))
        summary.elapsed = time.perf_counter() - start
    finally:
        if exclusion is not None:
            exclusion.__exit__(None, None, None)
        plan.lock.release()
    return summary


def _exclusion_pass(job: "ExcludeJob", out_root: Any, plan: Plan, settings: BackendSettings,
                    overwrite: bool) -> "ExclusionPass":
    """generate --exclude's mask folder, planned before any model loads: the segmenter runs on
    the depth model's device, dtype and batch size unless the job says otherwise."""
    import dataclasses

    from ..exclusion.run import ExclusionPass, default_output

    segmenter = job.settings
    defaults = type(segmenter)()
    segmenter = dataclasses.replace(
        segmenter, device=settings.device if segmenter.device == defaults.device else segmenter.device,
        dtype=settings.dtype if segmenter.dtype == defaults.dtype else segmenter.dtype,
        batch_size=settings.batch_size if segmenter.batch_size == defaults.batch_size else segmenter.batch_size)
    output = Path(job.output) if job.output is not None else default_output(out_root)
    return ExclusionPass(output, plan.items, dataclasses.replace(job, settings=segmenter), overwrite)


def _refuse_next_step_options(options: dict[str, Any]) -> None:
    given = [name for name in _NEXT_STEP_OPTIONS if name in options]
    if given:
        raise UsageError(
            f"generate() makes the priors only and takes no {', '.join(given)}: call "
            "depthprior.steps.run_generate(images, out, verify=..., align=..., consistency=..., "
            "report=...) (also depthprior.run_generate) to run those steps after it"
        )


def _log_settings(plan: Plan, engine: Backend, fmt: str) -> None:
    described = ", ".join(f"{k}={v}" for k, v in engine.describe().items() if k != "preprocessing")
    log.info("depthprior generate: %s", described)
    log.info(
        "%d images found, %d to do, %d already done; format=%s; batch_size=%d",
        len(plan.items), len(plan.todo), len(plan.items) - len(plan.todo), fmt,
        batch_size(engine),
    )


def _run(
    engine: Backend, plan: Plan, fmt: str, workers: int | None, progress: bool, summary: Summary,
    exclusion: "ExclusionPass | None" = None,
) -> None:
    from tqdm import tqdm

    workers = workers or max(2, min(8, os.cpu_count() or 2))
    size = batch_size(engine)
    window = max(2 * size, 2 * workers)
    saver = ThrottledSaver(plan.manifest)
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True)
    pending: deque[Future] = deque()
    write = _Writes(engine, plan.manifest.root, fmt)

    def collect(block_until: int) -> None:
        """Record finished writes; wait while more than block_until are in flight."""
        while pending and (pending[0].done() or len(pending) > block_until):
            try:
                name, record = pending.popleft().result()
            except BackendUnavailable as error:  # storage gone: not done, a rerun does it
                summary.stopped = summary.stopped or str(error)
                continue
            record_result(plan, summary, name, record)
            saver.touch()
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed), refresh=False)

    readers = ThreadPoolExecutor(workers, "depthprior-read", initializer=yield_to_inference)
    writers = ThreadPoolExecutor(workers, "depthprior-write", initializer=yield_to_inference)
    try:
        loaded = _bounded_map(readers, lambda item: load_frame(
            engine, item, keep=exclusion is not None and exclusion.wants(item)), plan.todo, window)
        for batch in batches(engine, loaded, size):
            good = [entry for entry in batch if entry.error is None]
            outcomes = engine.infer_each([entry.prepared for entry in good]) if good else []
            if exclusion is not None:  # the same decoded frames, through the segmentation model
                exclusion.segment([(entry.item, entry.rgb) for entry in good if entry.rgb is not None])
                for entry in good:
                    entry.rgb = None
            for entry, outcome in zip(good, outcomes):
                entry.prepared = None
                pending.append(writers.submit(write, entry, outcome))
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


class _Writes:
    """The write pool's work: one image's outputs. Once a write finds the storage gone, those
    queued behind it stop untried (each would wait through every retry layer again)."""

    def __init__(self, engine: Backend, root: Path, fmt: str):
        self.engine, self.root, self.fmt = engine, root, fmt
        self.gone: BackendUnavailable | None = None

    def __call__(self, entry: PreparedImage, outcome: Any) -> tuple[str, ImageRecord]:
        if self.gone is not None:
            raise BackendUnavailable(str(self.gone))
        try:
            return _write(self.engine, self.root, entry, outcome, self.fmt)
        except BackendUnavailable as error:
            self.gone = error
            raise


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


def _done_future(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


