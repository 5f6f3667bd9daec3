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

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .masks import FORMAT_VERSION, REPORT_NAME, make_mask, mask_name, read_report
from .segmenter import DEFAULT_CLASSES, Segmenter, SegmenterSettings, identity, labels_of, resolve_classes
from ..errors import DepthpriorError, ImageError, UsageError, WriteError, first_line
from ..files.jsonfile import encode_json
from ..files.outputs import OutputFolder
from ..files.raster import DEFAULT_MAX_PIXELS, decode_rgb, encode_plane, read_mask
from ..images import ImageItem, is_inside, safe_join, scan
from ..files import place
from ..threads import in_order, worker_count

#: exclude.json is rewritten after this many new masks (and at the end), so a killed run keeps them
SAVE_EVERY = 16


def default_output(folder: Path | str) -> Path:
    """FOLDER_exclude beside FOLDER (the depths folder for generate, IMAGES for exclude)."""
    resolved = Path(folder).resolve()
    if not resolved.name:
        raise UsageError(f"{folder} is the file system's root: pass -o for the mask folder")
    return resolved.parent / (resolved.name + "_exclude")


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

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def seconds_per_frame(self) -> float:
        return (self.seconds - self.load_seconds) / self.done if self.done else 0.0

    def format(self) -> str:
        classes = sorted({name for entry in self.fractions.values() for name in entry})
        lines = []
        if self.fractions:
            lines.append(f"{'image':<32} " + " ".join(f"{name[:9]:>9}" for name in classes))
            for name, entry in sorted(self.fractions.items()):
                lines.append(f"{name[-32:]:<32} " + " ".join(
                    f"{entry.get(c, 0.0):>9.1%}" for c in classes))
        lines.append(f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} of "
                     f"{self.total} images in {self.seconds:.1f} s (model load {self.load_seconds:.1f} s, "
                     f"{self.seconds_per_frame:.2f} s per frame) -> {self.output}")
        lines.extend(f"  FAILED {name}: {reason}" for name, reason in self.failed.items())
        return "\n".join(lines)


class Excluder:
    """The mask folder of one run: its identity, the entries it keeps, and one frame at a time
    (decoded by the caller) segmented and written; exclude.json rewritten as it goes."""

    def __init__(self, folder: OutputFolder, settings: SegmenterSettings, classes: Sequence[str],
                 dilate: int, overwrite: bool):
        if dilate < 0:
            raise UsageError(f"--dilate is a number of pixels, at least 0, not {dilate}")
        self.folder, self.settings, self.dilate = folder, settings, dilate
        id2label, _ = labels_of(settings)
        self.classes = resolve_classes(classes, id2label, settings.model)
        self.identity = {**identity(settings, self.classes), "dilate": dilate}
        previous = read_report(folder.root)
        self.entries: dict[str, dict[str, Any]] = {}
        #: the keys an earlier run wrote masks for: those this run does not produce are removed
        self.previous_keys = {entry.get("key") for entry in (previous or {"images": {}})["images"].values()
                              if isinstance(entry.get("key"), str) and entry.get("key")}
        if previous is not None and previous["images"]:
            if previous.get("identity") != self.identity and not overwrite:
                raise UsageError(f"{folder.root} holds masks made with other settings "
                                 f"({_differences(previous.get('identity') or {}, self.identity)}); "
                                 "pass --overwrite to replace them, or choose another folder")
            if not overwrite:
                self.entries = dict(previous["images"])
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
            if error.errno in _FATAL_WRITES:
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
        document = {"version": FORMAT_VERSION, "identity": self.identity,
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


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys
                     if old.get(key) != new.get(key))


def source_stamp(item: ImageItem) -> list[int] | None:
    """A local image's size and mtime (ns): a changed frame is segmented again."""
    if not place.is_local(item.path):
        return None
    try:
        stat = os.stat(item.path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


#: write errors that end the run (the others, e.g. a name too long, fail one image)
_FATAL_WRITES = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


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
) -> ExcludeSummary:
    """Write an exclusion mask per image under `images` and exclude.json into `output`
    (default IMAGES_exclude beside IMAGES); see the module doc.

    Raises UsageError (nothing written) for a missing folder, an unknown class, a checkpoint that
    is not a segmentation model, or a folder of other settings; a bad image fails that image.
    """
    started = time.monotonic()
    settings = settings or SegmenterSettings()
    settings.check()
    found = scan(images)
    output = Path(output) if output is not None else default_output(found.root)
    items = [item for item in found.items if not is_inside(item.path, output)]
    if not items:
        raise UsageError(f"no images found in {images} outside the mask folder {output}")
    for item in items:
        safe_join(output, mask_name(item.stem))  # every target checked before any is written
    summary = ExcludeSummary(output, total=len(items))
    with OutputFolder(output) as folder:
        excluder = Excluder(folder, settings, classes, dilate, overwrite)
        todo = [item for item in items if not excluder.resumable(item)]
        summary.skipped = len(items) - len(todo)
        excluder.entries = {name: entry for name, entry in excluder.entries.items()
                            if name in {item.name for item in items}}
        if todo:
            summary.load_seconds = excluder.load()
        try:
            for done, (item, reason) in enumerate(_segment_all(excluder, todo, max_pixels,
                                                               worker_count(workers)), start=1):
                if reason is not None:
                    summary.failed[item.name] = reason
                if progress:
                    progress(done, len(todo))
        finally:
            excluder.save()
        folder.remove_unproduced(mask_name(key) for key in excluder.previous_keys)
    for name, entry in excluder.entries.items():
        if entry.get("status") == "ok":
            summary.fractions[name] = entry["fractions"]
    summary.done = len(todo) - len(summary.failed)
    summary.seconds = time.monotonic() - started
    return summary


def _segment_all(excluder: Excluder, todo: list[ImageItem], max_pixels: int | None,
                 workers: int) -> Iterator[tuple[ImageItem, str | None]]:
    """Decode frames on worker threads, a batch's worth at a time, and segment them in order."""
    step = max(excluder.settings.batch_size, 1) * 4

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
        good = [(item, frame) for item, frame in zip(chunk, decoded) if isinstance(frame, np.ndarray)]
        for item, frame in zip(chunk, decoded):
            if isinstance(frame, str):
                excluder.fail(item, frame)
                yield item, frame
        frames = [frame for _, frame in good]
        for batch in excluder.frame_size_groups(frames):
            batch_items = [good[i][0] for i in batch]
            try:
                reasons = excluder.segment(batch_items, [frames[i] for i in batch])
            except (DepthpriorError, MemoryError) as error:
                if isinstance(error, (UsageError, WriteError)):
                    raise
                reasons = [first_line(error)] * len(batch)
                for item in batch_items:
                    excluder.fail(item, reasons[0])
            yield from zip(batch_items, reasons)


__all__ = ["ExcludeSummary", "Excluder", "default_output", "exclude"]
