"""The plan of a generate run, decided before any model loads: the inputs, the identity of the
settings, the manifest it continues, the lock on OUT and what is left to do; the Summary it
fills. The local executor (pipeline) and the Ray executor (distributed) both consume it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from .backends import Backend, BackendSettings
from ..errors import DepthpriorError, UsageError, first_line, listing, one_line
from ..images import ImageItem, Scan, is_inside, normalise_extensions, safe_join, scan
from ..files import place
from ..files.place import location
from .manifest import ImageRecord, Manifest, ManifestError, ThrottledSaver, output_files
from .store import OutputLock, check_writable, remove_stale_temporaries

log = logging.getLogger("depthprior.priors.pipeline")


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
    removed: list[str] = field(default_factory=list)  # outputs of redone images no record names now
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
    #: generate --exclude: what the exclusion masks' pass did (exclusion.run.ExcludeSummary)
    exclusion: Any = None

    @property
    def images_per_s(self) -> float:
        """Throughput after the model was loaded."""
        working = self.elapsed - self.load_seconds
        return self.done / working if working > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        excluded_failed = self.exclusion is not None and bool(self.exclusion.failed)
        return 1 if self.failed or self.stopped or self.manifest_error or excluded_failed else 0

    def format(self) -> str:
        lines = [
            f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} "
            f"of {self.total} images in {self.elapsed:.1f} s (model load {self.load_seconds:.1f} s, "
            f"then {self.images_per_s:.2f} images/s) -> {one_line(self.out)}"
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
            lines.append(f"  IGNORED {one_line(name)}: {one_line(reason)}")
        if self.removed:
            lines.append(f"  REMOVED {len(self.removed)} outputs of redone images that no record names "
                         f"now: {listing(self.removed, limit=3)}")
        for name, reason in list(self.repaired.items())[:REDONE_SHOWN]:
            lines.append(f"  REDONE {one_line(name)}: {one_line(reason)}")
        if len(self.repaired) > REDONE_SHOWN:
            lines.append(f"  REDONE {len(self.repaired) - REDONE_SHOWN} more")
        for name, reason in self.failed.items():
            lines.append(f"  FAILED {one_line(name)}: {one_line(reason)}")
        for name, reason in self.flagged.items():
            lines.append(f"  WARNING {one_line(name)}: {one_line(reason)}")
        if self.exclusion is not None:
            lines.append(f"exclusion masks: {self.exclusion.headline()}")
            lines.extend(f"  EXCLUSION FAILED {one_line(name)}: {one_line(reason)}"
                         for name, reason in self.exclusion.failed.items())
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


#: REDONE lines a summary shows (a copied frame folder can redo thousands)
REDONE_SHOWN = 20


@dataclass
class Plan:
    items: list[ImageItem]
    todo: list[ImageItem]
    manifest: Manifest
    identity: dict[str, Any]
    images_root: Path
    lock: OutputLock
    damaged: dict[str, str] = field(default_factory=dict)  # finished before, redone: why
    #: inputs whose outputs another record also named (dropped): that record's name
    claimed: dict[str, str] = field(default_factory=dict)
    #: outputs (relative to OUT) of records this run replaced or dropped: stale unless a record
    #: names them again (remove_superseded)
    superseded: set[str] = field(default_factory=set)
    unwritable: dict[str, str] = field(default_factory=dict)  # outputs would land outside OUT

    @cached_property
    def versions(self) -> dict[str, str]:
        """Each input's version by name (recorded with its prior), read once when asked."""
        return {item.name: item.version for item in self.items}


def find_inputs(images: str | os.PathLike[str] | Scan, out_root: Path, backend_type: type[Backend],
            extensions: Iterable[str], follow_outside: bool) -> Scan:
    """The images to work on, what discovery left alone, and the outside-links rule."""
    images_root = images.root if isinstance(images, Scan) else location(images)
    if place.same_place(images_root, out_root):
        raise UsageError(f"output folder {out_root} is the input folder; choose a separate folder")
    scanned = images if isinstance(images, Scan) else scan(images_root, normalise_extensions(extensions))
    found = dataclasses.replace(  # a caller's Scan stays as it was; OUT's own entries left out
        scanned, items=[item for item in scanned.items if not is_inside(item.path, out_root)],
        skipped={name: reason for name, reason in scanned.skipped.items()
                 if not place.is_local(images_root) or not is_inside(Path(images_root, name), out_root)})
    if not found.items:
        raise UsageError(f"no images found in {images_root} outside the output folder {out_root}")
    for name, reason in {**found.skipped, **found.loops}.items():
        log.warning("ignored %s: %s", one_line(name), one_line(reason))
    outside = found.outside
    if outside:
        message = (f"{len(outside)} of {len(found.items)} images lie outside {images_root}, "
                   f"reached through linked folders (e.g. {outside[0].name})")
        if backend_type.uploads and not follow_outside:
            raise UsageError(f"{message}; --backend {backend_type.name} would upload them: pass "
                             "--follow-outside to send them too, or remove the links")
        log.warning("%s", message)
    return found


def make_plan(
    items: list[ImageItem],
    images_root: Path,
    out_root: Path,
    backend_type: type[Backend],
    settings: BackendSettings,
    fmt: str,
    overwrite: bool,
) -> Plan:
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
        plan = Plan(items, [], manifest, identity, images_root, lock)
        one_owner_per_output(plan)
        for item in items:
            _schedule(plan, item, fmt, overwrite)
    except BaseException:
        lock.release()
        raise
    return plan


def _resume_manifest(out_root: Path, identity: dict[str, Any], overwrite: bool) -> Manifest:
    """The manifest this run continues (or a new one), refusing outputs of other settings."""
    try:
        manifest = Manifest.load(out_root, resuming=True)
    except ManifestError:
        if not overwrite:
            raise
        kept = Manifest.set_aside(out_root)
        log.warning("the manifest in %s could not be used; kept as %s", one_line(out_root), one_line(kept.name))
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


def one_owner_per_output(plan: Plan) -> None:
    """One output, one record: the record of a gone input naming the outputs of an input that is
    there now (a.jpg's, after a.jpg was replaced by a.png) is dropped. The input is redone
    when it had a record of its own too, since nothing says which image the file was made from."""
    owners = {item.stem: item.name for item in plan.items}
    names = set(owners.values())
    for name, record in list(plan.manifest.images.items()):  # a current input's record: _schedule
        owner = owners.get(record.stem) if record.ok and name not in names else None
        if owner is not None:
            plan.superseded.update(plan.manifest.images.pop(name).outputs)
            plan.claimed[owner] = name


def _schedule(plan: Plan, item: ImageItem, fmt: str, overwrite: bool) -> None:
    """Put one image in todo, unwritable, or leave it done (checking its files cheaply)."""
    try:
        for relative in output_files(item.stem, fmt):
            safe_join(plan.manifest.root, relative)
    except UsageError as error:
        plan.unwritable[item.name] = str(error)
        return
    if not overwrite and plan.manifest.is_complete(item.name, fmt):
        damage = plan.manifest.damage(item.name, fmt)
        record = plan.manifest.images[item.name]
        other = plan.claimed.get(item.name)
        reason = _changed(record, plan.versions[item.name]) or (
            f"its output was recorded for {other!r} too, another file, and may "
            "have been made from it" if other else None) or (
            f"damaged output ({damage})" if damage else None) or (
            f"its record names the outputs of {record.stem!r}, not of {item.stem!r}"
            if record.stem != item.stem else None)
        if reason is None:
            return
        plan.damaged[item.name] = reason
    plan.todo.append(item)


def _changed(record: ImageRecord, version: str) -> str | None:
    """Why a finished prior no longer belongs to its frame (the file was replaced), or None.
    Records from before versions were kept, and frames whose version is unknown, are trusted."""
    if not record.frame_version or not version or _same_frame(record.frame_version, version):
        return None
    return "its frame changed since the prior was made"


def _same_frame(recorded: str, current: str) -> bool:
    """Whether two frame versions name one frame: equal ones; versions read two ways (a file's
    digest, an object's listing, an older manifest's size alone: the frames moved between a
    folder and a bucket, or the manifest is older) can only tell their sizes apart."""
    def kind(version: str) -> str:
        return "size" if ":" not in version else "listing" if "=" in version else "file"

    if recorded == current or kind(recorded) == kind(current):
        return recorded == current
    return recorded.split(":", 1)[0] == current.split(":", 1)[0]


def record_result(plan: Plan, summary: Summary, name: str, record: ImageRecord) -> None:
    """One image's record into the manifest and the summary's counts."""
    replaced = plan.manifest.images.get(name)
    if replaced is not None and replaced.ok:  # ok records' outputs are checked: STEM.png/.npy in OUT
        plan.superseded.update(replaced.outputs)
    plan.manifest.images[name] = record
    if record.ok:
        record.frame_version = plan.versions.get(name) or None
        summary.done += 1
        if record.constant:
            summary.flagged[name] = "constant prediction: written as all zeros, not usable as a prior"
    else:
        summary.failed[name] = record.error or "failed"


def remove_superseded(plan: Plan) -> list[str]:
    """Remove the outputs of replaced or dropped records that no record names now (a --format
    png run's PNGs after a --format npy one; the PNG a gone frame's record named): verify,
    align and export would read them as priors. Called after the manifest was saved; what
    cannot be removed is left, with a warning. Returns what was removed."""
    named = {output for record in plan.manifest.images.values() for output in record.outputs}
    removed = []
    for relative in sorted(plan.superseded - named):
        target = place.Place.of(plan.manifest.root).child(relative)
        try:
            if target.exists():
                target.remove()
                removed.append(relative)
        except (OSError, DepthpriorError) as error:
            log.warning("could not remove %s, which no record names now: %s", one_line(str(target)),
                        first_line(error))
    return removed


def save_manifest(manifest: Manifest) -> str | None:
    """Save now; the error line if the manifest could not be written (the run goes on)."""
    saver = ThrottledSaver(manifest)
    saver.dirty = True
    saver.flush()
    return saver.error
