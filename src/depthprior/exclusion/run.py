"""depthprior exclude: a segmentation model -> exclusion masks (sky, people, cars, ...) per frame.

`exclude()` plans before any weights load (inputs, classes resolved against the checkpoint's
labels, the identity, the lock, what a rerun can keep), then reads frames on worker threads,
segments same-size frames in batches and writes DIR/<image key>.png (masks.make_mask) and
DIR/exclude.json. A rerun keeps every image whose entry, source file (size and mtime) and mask
are intact; a folder made with another model, classes, input size or dilation is refused
unless `overwrite`. `Excluder` is the part `generate --exclude` runs beside the depth model on
frames it has already decoded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .masks import FORMAT_VERSION, MAX_DILATE, REPORT_NAME, make_mask, mask_name, read_report
from .segmenter import (DEFAULT_CLASSES, Segmenter, SegmenterSettings, class_ids, identity, labels_of,
                        resolve_classes)
from ..errors import FileFormatError, ImageError, UsageError, WriteError, first_line, one_line
from ..files.jsonfile import encode_json
from ..files.outputs import OutputFolder, folder_beside
from ..files.raster import DEFAULT_MAX_PIXELS, decode_rgb, encode_plane, read_mask
from ..images import ImageItem, is_inside, normalise_extensions, safe_join, scan
from ..files import place
from ..priors.fingerprint import identity_differences
from ..threads import in_order, worker_count

#: exclude.json is rewritten after this many new masks (and at the end), so a killed run keeps them
SAVE_EVERY = 16
#: identity keys a mask folder written before they were recorded lacks: it resumes, and its
#: identity keeps lacking them (its earlier masks' dtype is unknown) until --overwrite
IDENTITY_ADDED_LATER = frozenset({"weights", "dtype"})


def default_output(folder: Path | str) -> Path:
    """FOLDER_exclude beside FOLDER (the depths folder for generate, IMAGES for exclude)."""
    return folder_beside(folder, "_exclude")


@dataclass
class ExcludeSummary:
    output: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    load_seconds: float = 0.0
    segment_seconds: float = 0.0  # in the model: preparing, the forward pass, masks, writing

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def seconds_per_frame(self) -> float:
        """Segmentation time per frame (reading the frame not included)."""
        return self.segment_seconds / self.done if self.done else 0.0

    def headline(self) -> str:
        return (f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} of "
                f"{self.total} images in {self.seconds:.1f} s (model load {self.load_seconds:.1f} s, "
                f"segmentation {self.seconds_per_frame:.2f} s per frame) -> {one_line(self.output)}")

    def format(self) -> str:
        classes = sorted({name for entry in self.fractions.values() for name in entry})
        lines = []
        if self.fractions:
            widths = [max(9, len(name)) for name in classes]
            lines.append(f"{'image':<32} " + " ".join(f"{name:>{w}}" for name, w in zip(classes, widths)))
            for name, entry in sorted(self.fractions.items()):
                lines.append(f"{one_line(name)[-32:]:<32} " + " ".join(
                    f"{entry.get(c, 0.0):>{w}.1%}" for c, w in zip(classes, widths)))
        lines.append(self.headline())
        lines.extend(f"  FAILED {one_line(name)}: {one_line(reason)}" for name, reason in self.failed.items())
        return "\n".join(lines)


class Excluder:
    """The mask folder of one run: its identity, the entries it keeps, and one frame at a time
    (decoded by the caller) segmented and written; exclude.json rewritten as it goes."""

    def __init__(self, folder: OutputFolder, settings: SegmenterSettings,
                 classes: dict[str, list[int]], dilate: int, overwrite: bool):
        self.folder, self.settings, self.dilate = folder, settings, dilate
        self.classes = classes  # resolve_classes: each name asked for -> its label ids
        self.identity = {**identity(settings, self.classes), "dilate": dilate}
        try:
            previous = read_report(folder.root)
        except FileFormatError:
            if not overwrite:
                raise
            previous = None  # --overwrite starts afresh: a malformed record names no mask to remove
        self.entries: dict[str, dict[str, Any]] = {}
        #: the keys an earlier run wrote masks for (its "ok" entries, each key its image's, as
        #: read_report checks): those this run does not produce are removed
        self.previous_keys = {entry["key"] for entry in (previous or {"images": {}})["images"].values()
                              if entry.get("status") == "ok" and isinstance(entry.get("key"), str)
                              and entry.get("key")}
        if previous is not None and previous["images"]:
            earlier = dict(previous.get("identity") or {})
            if "classes" in earlier:
                earlier["classes"] = class_ids(earlier["classes"])
            differences = identity_differences(earlier, self.identity, IDENTITY_ADDED_LATER)
            if differences and not overwrite:
                raise UsageError(f"{folder.root} holds masks made with other settings "
                                 f"({'; '.join(differences)}); "
                                 "pass --overwrite to replace them, or choose another folder")
            if not overwrite:
                self.entries = _renamed(dict(previous["images"]), previous, self.classes)
                for key in IDENTITY_ADDED_LATER - set(earlier):  # still unknown for its earlier masks
                    self.identity.pop(key, None)
        self.segmenter: Segmenter | None = None
        self._unsaved = 0

    def resumable(self, item: ImageItem) -> bool:
        """Whether an image's mask from an earlier run stands: its entry, source and mask intact."""
        entry = self.entries.get(item.name)
        if not entry or entry.get("status") != "ok" or entry.get("source") != source_stamp(item):
            return False
        try:
            read_mask(self.folder.path(mask_name(item.stem)), tuple(entry["size"]))
        except (ImageError, KeyError, TypeError, UsageError):
            return False
        self.folder.keep(mask_name(item.stem))
        return True

    def load(self) -> float:
        """Load the model (once); the seconds it took."""
        started = time.monotonic()
        if self.segmenter is None:
            self.segmenter = Segmenter(self.settings)
        return time.monotonic() - started

    def segment(self, items: list[ImageItem], frames: list[np.ndarray]) -> list[str | None]:
        """Segment same-network-size frames as one batch; write their masks. Per frame the
        reason it failed, or None."""
        assert self.segmenter is not None
        prepared = [self.segmenter.prepare(frame) for frame in frames]
        maps = self.segmenter.groups(prepared, [f.shape[:2] for f in frames], self.classes)
        return [self.write(item, groups) for item, groups in zip(items, maps)]

    def write(self, item: ImageItem, groups: np.ndarray) -> str | None:
        mask, fractions = make_mask(groups, list(self.classes), self.dilate)
        try:
            self.folder.write(mask_name(item.stem), encode_plane(mask))
        except WriteError as error:
            if error.ends_run:
                raise
            self.fail(item, first_line(error))
            return first_line(error)
        self.entries[item.name] = {"key": item.stem, "status": "ok", "size": list(mask.shape),
                                   "fractions": fractions, "source": source_stamp(item)}
        self._changed()
        return None

    def fail(self, item: ImageItem, reason: str) -> None:
        self.entries[item.name] = {"key": item.stem, "status": "failed", "reason": reason}
        self._changed()

    def _changed(self) -> None:
        self._unsaved += 1
        if self._unsaved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        document = {"version": FORMAT_VERSION, "identity": self.identity, "classes": self.classes,
                    "mask": {"excluded": 0, "kept": 255}, "images": dict(sorted(self.entries.items()))}
        self.folder.write(REPORT_NAME, encode_json(document))
        self._unsaved = 0

    def frame_size_groups(self, frames: list[np.ndarray]) -> list[list[int]]:
        """Indices of frames grouped in batches of one network size, up to batch_size each."""
        assert self.segmenter is not None
        batches: list[list[int]] = []
        key = None
        for index, frame in enumerate(frames):
            size = self.segmenter.network_size(*frame.shape[:2])
            if batches and size == key and len(batches[-1]) < self.settings.batch_size:
                batches[-1].append(index)
            else:
                batches.append([index])
                key = size
        return batches


def _other_reports() -> tuple[str, ...]:
    """Reports of the folders whose key.png files are not exclusion masks: consistency's masks,
    generate's priors (its manifest), align's depth_params.json beside them."""
    from ..priors.manifest import MANIFEST_NAME
    from ..scene.confidence import REPORT_NAME as CONSISTENCY_REPORT
    from ..scene.depth_params import PARAMS_NAME

    return CONSISTENCY_REPORT, MANIFEST_NAME, PARAMS_NAME


def _renamed(entries: dict[str, dict[str, Any]], previous: dict[str, Any],
             classes: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """Earlier entries with their fractions under this run's class names: a class asked for by
    a synonym (people, person) has the same label ids, so the same masks and fractions."""
    named = previous.get("classes")
    if not isinstance(named, dict):
        named = (previous.get("identity") or {}).get("classes")
    if not isinstance(named, dict):
        return entries
    now = {tuple(sorted(ids)): name for name, ids in classes.items()}
    rename = {}
    for old, ids in named.items():
        try:
            rename[old] = now.get(tuple(sorted(int(i) for i in ids)), old)
        except (TypeError, ValueError):
            continue
    renamed = {}
    for name, entry in entries.items():
        fractions = entry.get("fractions")
        if isinstance(fractions, dict):
            entry = {**entry, "fractions": {rename.get(k, k): v for k, v in fractions.items()}}
        renamed[name] = entry
    return renamed


def source_stamp(item: ImageItem) -> list[int] | None:
    """A local image's size and mtime (ns): a changed frame is segmented again."""
    if not place.is_local(item.path):
        return None
    try:
        stat = os.stat(item.path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]




@dataclass(frozen=True)
class ExcludeJob:
    """What `generate --exclude` asks for: the classes, the model and its settings, the
    dilation, and the mask folder (default OUT_exclude beside the depths folder)."""

    classes: Sequence[str] = DEFAULT_CLASSES
    settings: SegmenterSettings = field(default_factory=SegmenterSettings)
    dilate: int = 0
    output: Path | str | None = None


def check_job(job: ExcludeJob, option: str = "--classes") -> dict[str, list[int]]:
    """The job's settings, dilation, checkpoint (its config only) and classes checked, nothing
    made: UsageError in one line (`option` is what the user named the classes with); the
    classes resolved (resolve_classes)."""
    check_options(job)
    return resolve_classes(job.classes, labels_of(job.settings)[0], job.settings.model, option)


def check_options(job: ExcludeJob) -> None:
    """The job's numbers (the segmenter's settings, --dilate), nothing loaded: UsageError in one line."""
    from ..priors.backends.base import require_number

    job.settings.check()
    require_number("dilate", job.dilate, int)  # "3", 2.5, True, nan from the Python API
    if not 0 <= job.dilate <= MAX_DILATE:
        raise UsageError(f"--dilate must be 0 to {MAX_DILATE} pixels, not {job.dilate}: it grows every "
                         "excluded region by that many pixels of the frame, and more would exclude "
                         "whole frames")


class ExclusionPass:
    """One run's masks for a list of frames: the folder locked, the identity checked and what
    an earlier run left kept before any model loads; frames a caller has decoded already are
    segmented through `segment` (generate's reading pass), `finish` reads and segments the
    others, then writes exclude.json and removes masks of frames that are gone. Use as a
    context manager (the lock is released on exit)."""

    def __init__(self, output: Path, items: list[ImageItem], job: ExcludeJob, overwrite: bool):
        for report in _other_reports():  # their key.png files have the masks' names
            if os.path.lexists(os.path.join(output, report)):
                raise UsageError(f"{output} holds {report}: it is another command's output folder, whose "
                                 "PNG files the masks would overwrite; pass another -o (default "
                                 "IMAGES_exclude, or OUT_exclude with generate)")
        for item in items:
            safe_join(output, mask_name(item.stem))  # every target checked before any is written
        # the checkpoint and the classes are checked before the folder is made or locked
        classes = check_job(job)
        self.items = items
        self.folder = OutputFolder(output)
        self.summary = ExcludeSummary(output, total=len(items))
        self._started = time.monotonic()
        self.folder.__enter__()
        try:
            self.excluder = Excluder(self.folder, job.settings, classes, job.dilate, overwrite)
            names = {item.name for item in items}
            self.excluder.entries = {name: entry for name, entry in self.excluder.entries.items()
                                     if name in names}
            self.need = {item.name for item in items if not self.excluder.resumable(item)}
        except BaseException:
            self.folder.__exit__(None, None, None)
            raise
        self.summary.skipped = len(items) - len(self.need)

    def __enter__(self) -> "ExclusionPass":
        return self

    def __exit__(self, *exc: object) -> None:
        self.folder.__exit__(*exc)

    def wants(self, item: ImageItem) -> bool:
        return item.name in self.need

    def segment(self, frames: list[tuple[ImageItem, np.ndarray]]) -> list[tuple[ImageItem, str | None]]:
        """Segment decoded frames (same network size in batches); per frame why it failed or None."""
        if not frames:
            return []
        if self.excluder.segmenter is None:
            self.summary.load_seconds += self.excluder.load()
        started = time.monotonic()
        results: list[tuple[ImageItem, str | None]] = []
        for batch in self.excluder.frame_size_groups([frame for _, frame in frames]):
            items = [frames[i][0] for i in batch]
            try:
                reasons = self.excluder.segment(items, [frames[i][1] for i in batch])
            except (UsageError, WriteError, KeyboardInterrupt):
                raise
            except Exception as error:  # noqa: BLE001 - out of memory on the device, ...
                reasons = [first_line(error)] * len(items)
                for item in items:
                    self.excluder.fail(item, reasons[0])
            results.extend(zip(items, reasons))
        self.summary.segment_seconds += time.monotonic() - started
        for item, reason in results:
            self.need.discard(item.name)
            if reason is not None:
                self.summary.failed[item.name] = reason
        return results

    def fail(self, item: ImageItem, reason: str) -> None:
        self.excluder.fail(item, reason)
        self.need.discard(item.name)
        self.summary.failed[item.name] = reason

    def finish(self, max_pixels: int | None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               complete: bool = True) -> ExcludeSummary:
        """Segment the frames still without a mask (read here; not when `complete` is False,
        e.g. after an interrupted generate), write exclude.json, remove masks of frames gone."""
        try:
            todo = [item for item in self.items if item.name in self.need] if complete else []
            for done, _result in enumerate(self._read_and_segment(todo, max_pixels,
                                                                   worker_count(workers)), start=1):
                if progress:
                    progress(done, len(todo))
        finally:
            self.excluder.save()
        if complete:
            self.folder.remove_unproduced(mask_name(key) for key in self.excluder.previous_keys)
        for name, entry in self.excluder.entries.items():
            if entry.get("status") == "ok":
                self.summary.fractions[name] = entry["fractions"]
        self.summary.done = sum(1 for item in self.items if item.name not in self.need) \
            - self.summary.skipped - len(self.summary.failed)
        self.summary.seconds = time.monotonic() - self._started
        return self.summary

    def _read_and_segment(self, todo: list[ImageItem], max_pixels: int | None,
                          workers: int) -> Iterator[tuple[ImageItem, str | None]]:
        """Decode frames on worker threads, a few batches at a time, and segment them in order."""
        step = max(self.excluder.settings.batch_size, 1) * 4

        def read(item: ImageItem) -> np.ndarray | str:
            try:
                return decode_rgb(item.path, max_pixels)
            except ImageError as error:
                return first_line(error)
            except OSError as error:
                return f"cannot read {item.name}: {error.strerror or first_line(error)}"

        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            decoded = list(in_order(read, chunk, workers))
            for item, frame in zip(chunk, decoded):
                if isinstance(frame, str):
                    self.fail(item, frame)
                    yield item, frame
            yield from self.segment([(item, frame) for item, frame in zip(chunk, decoded)
                                     if isinstance(frame, np.ndarray)])


def exclude(
    images: Path | str,
    output: Path | str | None = None,
    *,
    classes: Sequence[str] = DEFAULT_CLASSES,
    settings: SegmenterSettings | None = None,
    dilate: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    extensions: Iterable[str] = (),
) -> ExcludeSummary:
    """Write an exclusion mask per image under `images` and exclude.json into `output`
    (default IMAGES_exclude beside IMAGES); see the module doc.

    Raises UsageError (nothing written) for a missing folder, an unknown class, a checkpoint that
    is not a segmentation model, or a folder of other settings; a bad image fails that image.
    """
    job = ExcludeJob(tuple(classes), settings or SegmenterSettings(), dilate, output)
    check_options(job)
    found = scan(images, normalise_extensions(extensions))
    target = Path(output) if output is not None else default_output(found.root)
    if output is not None and is_inside(found.root, target):  # masks f0.png over the frames f0.png
        raise UsageError(f"the mask folder {target} holds the images of {images}: masks named like "
                         "the frames would overwrite them; pass another -o, e.g. the default "
                         f"{default_output(found.root)}")
    items = [item for item in found.items if not is_inside(item.path, target)]
    if not items:
        raise UsageError(f"no images found in {images} outside the mask folder {target}")
    with ExclusionPass(target, items, job, overwrite) as run:
        return run.finish(max_pixels, workers, progress)


__all__ = ["ExcludeJob", "ExcludeSummary", "ExclusionPass", "Excluder", "check_job", "check_options",
           "default_output", "exclude"]
