"""generate for temporal models (Video Depth Anything): sequences are the unit of work.

The frames of one folder, in natural name order (frame_2 before frame_10), are one sequence;
all of them have one size. A sequence runs window by window (backends.video_windows); its maps
become PNGs only once the whole sequence is known, because its frames share one value mapping
(the sequence's inverse-depth range: a pixel value means the same disparity in every frame).

Crash safety and bounded memory: each window's final maps (float32, network resolution) and
the eight maps awaiting the next crossfade are spilled to OUT/.depthprior-sequences/<sequence>/
(one .npy per map, written atomically), then the state file records the window as done (the
commit point). A killed run resumes at the next window from the spilled maps, so it loses at
most the window in flight and writes what an uninterrupted run writes. When the last window is
done, the sequence's range is taken over the spilled maps, each frame's PNG is written at the
frame's size (resize_map: bilinear, half-pixel centres) and the spill is removed. Disk: one
float map per frame at network resolution while its sequence runs (about 2 MB at 518x924).

A frame that cannot be read fails alone: the window takes the nearest readable frame in its
place (the previous one, else the next), so the neighbours of a hole stay consistent.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageError, UsageError, first_line
from ..files import place
from ..files.jsonfile import expect_object, read_json, write_json
from ..files.raster import stored_size
from ..images import ImageItem, decode_rgb
from .backends.base import FATAL_ERRORS, BackendSettings
from .backends.video_windows import CROSSFADE, STEP, WINDOW, Resume, Window, anchor_frame, stitch, window_count
from .frames import write_outputs
from .manifest import ImageRecord, ThrottledSaver, sequence_of
from .plan import Plan, Summary, record_result
from .store import inverse_depth, read_npy, write_npy

log = logging.getLogger("depthprior.priors.pipeline")

#: where sequences in progress keep their maps, inside OUT (hidden: never an input or a prior)
SPILL_FOLDER = ".depthprior-sequences"
STATE_NAME = "state.json"


@dataclass
class Sequence:
    name: str  # the folder relative to IMAGES ("." for IMAGES itself)
    items: list[ImageItem]


def natural_key(name: str) -> list[Any]:
    """frame_2 before frame_10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def group_sequences(items: list[ImageItem]) -> list[Sequence]:
    """One sequence per folder, its frames in natural name order; sequences in natural order."""
    folders: dict[str, list[ImageItem]] = {}
    for item in items:
        folder = sequence_of(item.name)
        folders.setdefault(folder, []).append(item)
    return [Sequence(folder, sorted(folders[folder], key=lambda item: natural_key(item.name)))
            for folder in sorted(folders, key=natural_key)]


def sequence_size(sequence: Sequence) -> tuple[int, int] | None:
    """(height, width) shared by every frame whose header is readable; a UsageError naming the
    first frame of another size (unreadable frames fail later, alone)."""
    first: tuple[str, tuple[int, int]] | None = None
    for item in sequence.items:
        try:
            width, height = stored_size(item.path)
        except (ImageError, OSError):
            continue
        if first is None:
            first = (item.name, (height, width))
        elif (height, width) != first[1]:
            raise UsageError(
                f"{item.name} is {width}x{height}, but the frames of sequence {sequence.name!r} are "
                f"{first[1][1]}x{first[1][0]} ({first[0]}): a temporal model needs one size per sequence; "
                "move frames of other sizes into a folder of their own")
    return None if first is None else first[1]


def run_sequences(settings: BackendSettings, plan: Plan, fmt: str, progress: bool, summary: Summary) -> None:
    """Every sequence with a frame to do, from its first frame (or from its spilled windows)."""
    from tqdm import tqdm

    from .backends.video_depth import VideoDepthModel

    todo = {item.name for item in plan.todo}
    sequences = [s for s in group_sequences(plan.items) if any(item.name in todo for item in s.items)]
    sizes = [sequence_size(s) for s in sequences]  # every size checked before the model loads
    running = {item.name for s in sequences for item in s.items}
    # a sequence with a frame to do is redone whole (its mapping covers every frame)
    summary.skipped = sum(1 for item in plan.items if item.name not in running and item.name not in plan.unwritable)
    started = time.perf_counter()
    model = VideoDepthModel(settings)
    summary.load_seconds = time.perf_counter() - started
    saver = ThrottledSaver(plan.manifest)
    bar = tqdm(total=sum(len(s.items) for s in sequences), unit="img", disable=not progress, dynamic_ncols=True)
    try:
        plan.manifest.backend = model.describe()
        summary.backend = plan.manifest.backend
        log.info("%d frames in %d sequences to do (%d frames done before)", bar.total, len(sequences),
                 len(plan.items) - bar.total)
        for sequence, size in zip(sequences, sizes):
            SequenceRun(model, sequence, size, plan, fmt, summary, saver, bar).run()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        model.close()
        saver.dirty = True
        saver.flush()
        summary.manifest_error = saver.error
        bar.close()


class NoReadableFrame(ImageError):
    """Every frame of a sequence failed to load (each has its own reason)."""


def redo_changed_sequences(plan: Plan) -> None:
    """A sequence whose frames changed since its priors were made (a frame removed or renamed,
    so the positions the manifest records no longer match) is redone whole, since one value
    mapping covers all its frames. Its records are dropped, those of frames that are gone and
    the rest: a redo stopped midway must not leave a new record and an old one at one position."""
    todo = {item.name for item in plan.todo}
    for sequence in group_sequences(plan.items):
        names = {item.name for item in sequence.items}
        gone = [name for name, record in plan.manifest.images.items()
                if record.ok and record.sequence == sequence.name and name not in names]
        moved = any(record is not None and record.ok and record.position not in (None, position)
                    for position, record in enumerate(plan.manifest.images.get(item.name)
                                                      for item in sequence.items))
        if not gone and not moved:
            continue
        for name in [*gone, *names]:
            plan.manifest.images.pop(name, None)
        for item in sequence.items:
            if item.name not in todo and item.name not in plan.unwritable:
                plan.todo.append(item)
                plan.damaged[item.name] = ("its sequence changed since its priors were made (a frame "
                                           "removed or renamed): the sequence is redone")


class SequenceRun:
    """One sequence: its windows (resumed from the spill), then its PNGs with one mapping."""

    def __init__(self, model: Any, sequence: Sequence, size: tuple[int, int] | None, plan: Plan, fmt: str,
                 summary: Summary, saver: ThrottledSaver, bar: Any):
        from .backends.video_depth import video_input_size

        self.model, self.sequence, self.size, self.plan, self.fmt = model, sequence, size, plan, fmt
        self.summary, self.saver, self.bar = summary, saver, bar
        self.count = len(sequence.items)
        self.input_size = video_input_size(*size, model.settings.input_size) if size else 0
        digest = hashlib.sha256(sequence.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.spill = place.join(plan.manifest.root, f"{SPILL_FOLDER}/{digest}")
        self.failed: dict[int, str] = {}

    # ------------------------------------------------------------ the spill

    def _file(self, name: str) -> Any:
        return place.join(self.spill, name)

    def _identity(self) -> dict[str, Any]:
        return {"sequence": self.sequence.name, "frames": [item.name for item in self.sequence.items],
                "input_size": self.input_size, "settings": self.plan.identity}

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state = read_json(self._file(STATE_NAME), missing_ok=True, check=expect_object)
        except UsageError as error:  # damaged: start the sequence again
            log.warning("sequence %s: its spilled state is unusable (%s); starting it again",
                        self.sequence.name, first_line(error))
            return None
        window = state.get("window") if state else None
        if not state or state.get("identity") != self._identity() or isinstance(window, bool) or \
                not isinstance(window, int) or not 0 <= window < window_count(self.count):
            return None
        return state

    def _save_state(self, window: int) -> None:
        write_json(self._file(STATE_NAME), {"identity": self._identity(), "window": window,
                                            "failed": {str(k): v for k, v in self.failed.items()}})

    def _map(self, kind: str, position: int, window: int | None = None) -> Any:
        tag = f"pending-{window}" if kind == "pending" else "final"
        return self._file(f"{tag}-{position:07d}.npy")

    def _clear_spill(self) -> None:
        folder = place.Place.of(self.spill)
        if not folder.is_folder():
            return
        for name in folder.list_files():
            place.Place.of(place.join(self.spill, name)).remove()
        if place.is_local(self.spill):
            try:
                folder.local_path().rmdir()
                folder.local_path().parent.rmdir()  # the spill folder, when no sequence is left
            except OSError:
                pass

    # ------------------------------------------------------------ the work

    def run(self) -> None:
        if self.size is None:  # no frame readable at all
            for item in self.sequence.items:
                self._record(item.name, ImageRecord.failed("not a readable image header"))
            return
        state, resume, total = self._load_state(), None, window_count(self.count)
        if state is not None and state["window"] < total - 1:
            resume = self._resume(state["window"])
            if resume is None:  # a spilled map is unusable: the sequence starts again
                state = None
        if state is None:
            self._clear_spill()
        else:
            self.failed = {int(k): v for k, v in state.get("failed", {}).items()}
            log.info("sequence %s: resuming after window %d of %d", self.sequence.name, state["window"] + 1, total)
        if state is None or resume is not None:
            previous = None if resume is None else resume.window - 1
            try:
                for window in stitch(self.count, self._load, self.model.run_window, self.model.metric, resume):
                    self._spill(window, previous)
                    previous = window.index
            except NoReadableFrame as error:  # every frame failed: each says why, the run goes on
                for position, item in enumerate(self.sequence.items):
                    self._record(item.name, ImageRecord.failed(self.failed.get(position, str(error))))
                self._clear_spill()
                return
        self._write_outputs()
        self._clear_spill()

    def _resume(self, done: int) -> Resume | None:
        try:
            first = read_npy(self._map("final", 0))
            anchor = read_npy(self._map("final", anchor_frame(done)))
            pending = [read_npy(self._map("pending", p, done)) for p in self._pending_positions(done)]
        except (OSError, ValueError) as error:
            log.warning("sequence %s: a spilled map is unusable (%s); starting it again",
                        self.sequence.name, first_line(error))
            return None
        return Resume(done + 1, first, anchor, pending)

    @staticmethod
    def _pending_positions(window: int) -> list[int]:
        return [window * STEP + WINDOW - CROSSFADE + i for i in range(CROSSFADE)]

    def _spill(self, window: Window, previous: int | None) -> None:
        for position, values in window.final:
            write_npy(self._map("final", position), values)
        for position, values in window.pending:
            write_npy(self._map("pending", position, window.index), values)
        self._save_state(window.index)  # the commit point: this window is done
        if previous is not None:
            for position in self._pending_positions(previous):
                place.Place.of(self._map("pending", position, previous)).remove()
        self.bar.set_postfix(sequence=self.sequence.name, window=f"{window.index + 1}/{window_count(self.count)}",
                             refresh=False)

    def _load(self, position: int) -> np.ndarray:
        """A frame's network input; an unreadable frame fails and its nearest readable neighbour
        (the previous one, else the next) stands in for it in the window."""
        order = [position] + list(range(position - 1, -1, -1)) + list(range(position + 1, self.count))
        for candidate in order:
            if candidate in self.failed:
                continue
            item = self.sequence.items[candidate]
            try:
                image = decode_rgb(item.path, max_pixels=self.model.settings.max_pixels)
                if image.shape[:2] != self.size:
                    raise ImageError(f"image is {image.shape[1]}x{image.shape[0]}, the sequence's frames are "
                                     f"{self.size[1]}x{self.size[0]}")
                return self.model.prepare(image, self.input_size)
            except FATAL_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001 - one bad frame never stops its sequence
                self.failed[candidate] = str(error) if isinstance(error, ImageError) else \
                    f"{type(error).__name__}: {error}"
        raise NoReadableFrame(f"no frame of sequence {self.sequence.name!r} can be used")

    def _write_outputs(self) -> None:
        good = [p for p in range(self.count) if p not in self.failed]
        bounds = self._bounds(good)
        for position, item in enumerate(self.sequence.items):
            if position in self.failed:
                self._record(item.name, ImageRecord.failed(self.failed[position]))
                continue
            try:
                depth = self.model.finish(read_npy(self._map("final", position)), *self.size)
                record = write_outputs(self.plan.manifest.root, item, depth, self.fmt,
                                       (self.sequence.name, position, bounds))
            except FATAL_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001
                record = ImageRecord.failed(first_line(error))
            self._record(item.name, record)

    def _bounds(self, positions: list[int]) -> tuple[float, float]:
        """The sequence's inverse-depth range over its frames' maps, read one at a time."""
        low, high = np.inf, -np.inf
        for position in positions:
            values, _ = inverse_depth(read_npy(self._map("final", position)), self.model.kind)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        return (float(low), float(high)) if positions else (0.0, 0.0)

    def _record(self, name: str, record: ImageRecord) -> None:
        record_result(self.plan, self.summary, name, record)
        self.saver.touch()
        self.bar.update(1)
