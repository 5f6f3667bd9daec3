"""bench(): the model's bare forward time against end-to-end time, per backend, on real files.

Bare forward: backend.infer on prepared inputs of the same shapes the pipeline uses, timed
alone, each shape warmed up first (steady state, as in a long run of same-size frames; this is
also where --compile compiles). End to end: generate() with the same loaded backend into a
temporary folder (decode, prepare, infer, resize back, encode, write, manifest). Their ratio
is the cost of everything around the model. Optionally the plain transformers pipeline loop most people write by hand.

The image folder is scanned once; every contender works on that one list of images.

Shared machines drift by 10-30% over minutes, which swamps differences of that size measured
one after the other. With `repeats` > 1 every contender runs once per round, the order rotating
from round to round, and each ratio (e2e/forward, A vs B) is the median of the per-round ratios:
drift hits both sides of a ratio alike within a round.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .backends import Backend, BackendSettings, LocalBackend, create_backend, option_fields, settings_for
from .backends.preprocess import IMAGENET_MEAN, IMAGENET_STD, PATCH
from ..errors import ImageError, UsageError, first_line
from ..images import ImageItem, Scan, check_pixels, decode_rgb, scan, stored_size
from .store import PNG_MAX


@dataclass
class BenchRow:
    """One contender, one or more rounds; times are per image, medians over the rounds."""

    label: str
    images: int
    load_s: float
    forward_s: float | None  # bare forward per image
    e2e_s: float  # end to end per image, model already loaded
    peak_rss_mb: float
    details: dict[str, Any] = field(default_factory=dict)
    forward_rounds: list[float] = field(default_factory=list)
    e2e_rounds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.e2e_rounds:
            self.e2e_rounds = [self.e2e_s]
            self.forward_rounds = [self.forward_s] if self.forward_s else []

    @property
    def rounds(self) -> int:
        return len(self.e2e_rounds)

    @property
    def ratio(self) -> float | None:
        """End to end over bare forward: the median of the per-round ratios."""
        if not self.forward_rounds:
            return None
        return statistics.median(e / f for e, f in zip(self.e2e_rounds, self.forward_rounds))

    @property
    def images_per_s(self) -> float:
        return 1.0 / self.e2e_s if self.e2e_s > 0 else 0.0

    def speedup_over(self, other: "BenchRow") -> float:
        """How many times faster end to end this row is than `other` (median of per-round ratios)."""
        return statistics.median(o / s for s, o in zip(self.e2e_rounds, other.e2e_rounds))


@dataclass
class BenchReport:
    rows: list[BenchRow]

    def format(self) -> str:
        rounds = max((row.rounds for row in self.rows), default=1)
        spread = rounds > 1
        header = (f"{'backend':<22} {'images':>6} {'load s':>7} {'forward ms/img':>15} "
                  f"{'e2e ms/img':>11} {'e2e/fwd':>8} {'images/s':>9} {'peak RSS MB':>12}"
                  + (f" {'e2e min-max ms':>15}" if spread else ""))
        lines = [header, "-" * len(header)]
        for row in self.rows:
            forward = f"{row.forward_s * 1e3:.1f}" if row.forward_s else "-"
            ratio = f"{row.ratio:.3f}" if row.ratio else "-"
            line = (f"{row.label:<22} {row.images:>6} {row.load_s:>7.1f} {forward:>15} "
                    f"{row.e2e_s * 1e3:>11.1f} {ratio:>8} {row.images_per_s:>9.2f} {row.peak_rss_mb:>12.0f}")
            if spread:
                low, high = min(row.e2e_rounds), max(row.e2e_rounds)
                line += f" {f'{low * 1e3:.0f}-{high * 1e3:.0f}':>15}"
            lines.append(line)
        if spread:
            lines.append(f"medians over {rounds} interleaved rounds; ratios are medians of per-round ratios")
        best = min(self.rows, key=lambda row: row.e2e_s) if self.rows else None
        for row in self.rows:
            if best and row is not best:
                lines.append(_comparison(best, row))
        return "\n".join(lines)


def _comparison(first: BenchRow, second: BenchRow) -> str:
    """The faster of the two first: medians of per-round ratios can disagree with the medians."""
    speedup = first.speedup_over(second)
    if speedup < 1:
        first, second, speedup = second, first, 1 / speedup
    return f"{first.label} is {speedup:.2f}x faster end to end than {second.label}"


class RssSampler:
    """Peak resident memory of this process while active (sampled from /proc, Linux)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "RssSampler":
        self.peak = current_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_backend(engine: Backend, images: Path | Scan, label: str | None = None,
                  workers: int | None = None, load_s: float = 0.0) -> BenchRow:
    """Bare forward and end-to-end time of one loaded backend over every image in `images`
    (a folder, or a Scan of one: then it is not walked again)."""
    from .pipeline import generate

    found = _scanned(images)
    items = found.items
    # the bare forward of a model on this machine; a remote backend has none to time
    forward = _bare_forward(engine, items) if isinstance(engine, LocalBackend) else None
    with tempfile.TemporaryDirectory(prefix="depthprior-bench-") as out, RssSampler() as rss:
        summary = generate(found, out, backend=engine, progress=False, workers=workers)
    if summary.failed:
        raise RuntimeError(f"benchmark run failed on {len(summary.failed)} images: {summary.failed}")
    return BenchRow(
        label=label or engine.name, images=summary.done, load_s=load_s,
        forward_s=forward / len(items) if forward is not None else None, e2e_s=summary.elapsed / summary.done,
        peak_rss_mb=rss.peak / 2**20, details=engine.describe(),
    )


def _bare_forward(engine: Backend, items: list[ImageItem]) -> float:
    """Seconds spent in engine.infer alone, batched the way the pipeline batches, at steady
    state: each input shape (size, batch length) first runs once untimed, as it has long since
    in a real run of many frames. The end-to-end run that follows then sees warm shapes too."""
    from .frames import prepared_batches

    warmed, total = set(), 0.0
    for entries in prepared_batches(engine, items):
        unreadable = next((entry for entry in entries if entry.error is not None), None)
        if unreadable is not None:
            raise UsageError(f"{unreadable.item.path}: {unreadable.error}")
        batch = [entry.prepared for entry in entries]
        shape = (engine.batch_key(batch[0]), len(batch))
        if shape not in warmed:
            engine.infer(batch)  # allocations, kernel selection, graph planning for this shape
            warmed.add(shape)
        start = time.perf_counter()
        engine.infer(batch)
        total += time.perf_counter() - start
    return total


def _scanned(images: Path | str | Scan) -> Scan:
    return images if isinstance(images, Scan) else scan(images)


def bench_transformers_pipeline(images: Path | Scan, settings: BackendSettings) -> BenchRow:
    """The loop most people write: transformers.pipeline("depth-estimation") + 16-bit save."""
    import cv2
    import torch
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    from .backends.torch_hf import resolve_device, resolve_dtype, torch_dtype

    device = resolve_device(settings.device)
    start = time.perf_counter()
    pipe = hf_pipeline("depth-estimation", model=settings.model, device=device,
                       image_processor=_depth_anything_processor(settings.input_size),
                       dtype=torch_dtype(resolve_dtype(settings.dtype, device)))
    load_s = time.perf_counter() - start
    paths = [item.path for item in _scanned(images).items]
    for path in _one_per_size(paths, settings.max_pixels):  # steady state: every shape once
        pipe(Image.fromarray(decode_rgb(path, settings.max_pixels)))
    with tempfile.TemporaryDirectory(prefix="depthprior-bench-") as out, RssSampler() as rss:
        start = time.perf_counter()
        for index, path in enumerate(paths):
            predicted = pipe(Image.fromarray(decode_rgb(path, settings.max_pixels)))["predicted_depth"]
            depth = predicted.squeeze().float().cpu().numpy() if torch.is_tensor(predicted) else np.asarray(predicted)
            low, high = float(depth.min()), float(depth.max())
            png = ((depth - low) / max(high - low, 1e-12) * PNG_MAX).astype(np.uint16)
            cv2.imwrite(str(Path(out) / f"{index}.png"), png)
        elapsed = time.perf_counter() - start
    return BenchRow("transformers pipeline", len(paths), load_s, None, elapsed / len(paths),
                    rss.peak / 2**20, {"model": settings.model, "device": device})


def _one_per_size(paths: list[Path], max_pixels: int | None) -> list[Path]:
    """One frame of each stored size; a frame over the pixel cap or the aspect limit is refused
    here, from its header, as generate refuses it."""
    by_size: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            size = stored_size(path)
            check_pixels(*size, max_pixels)
        except ImageError as error:
            raise ImageError(f"{path}: {first_line(error)}") from None
        by_size.setdefault(size, path)
    return list(by_size.values())


def _depth_anything_processor(input_size: int) -> Any:
    """The processor Depth Anything hub checkpoints ship, at the benchmark's input size."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(
        do_resize=True, size={"height": input_size, "width": input_size}, keep_aspect_ratio=True,
        ensure_multiple_of=PATCH, resample=3, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        do_pad=False,
    )


def bench(
    images: str | Path | Scan,
    *,
    backends: Iterable[str] = ("torch",),
    settings: BackendSettings | None = None,
    onnx_model: str | None = None,
    baseline: bool = False,
    workers: int | None = None,
    repeats: int = 1,
    **options: Any,
) -> BenchReport:
    """Compare backends (and optionally the transformers pipeline loop) on the same images.

    settings.model is the checkpoint (hub id or folder); the onnx backend uses `onnx_model`,
    or an export of settings.model made into a temporary folder. Each round loads, times and
    closes every contender in turn (rotating the order), so every row sees one model in memory.
    Backend options (compile=True, timeout=...) go to the backends that take them; one that no
    compared backend takes is refused.
    """
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    settings = settings or BackendSettings()
    found = _scanned(images)  # usage errors before any model is loaded; shared by all contenders
    checked = _settings_per_backend(list(backends), settings, options)
    baseline_settings = settings_for("torch", settings) if baseline else None
    with tempfile.TemporaryDirectory(prefix="depthprior-bench-onnx-") as scratch:
        contenders: list[tuple[str, Callable[[], BenchRow]]] = []
        for name, backend_settings in checked.items():
            if name == "onnx":
                backend_settings = dataclasses.replace(
                    backend_settings, model=onnx_model or _export_for_bench(settings, Path(scratch))
                )
            contenders.append((name, _backend_round(name, backend_settings, found, workers)))
        if baseline:
            contenders.append(("transformers pipeline",
                               lambda: bench_transformers_pipeline(found, baseline_settings)))
        rounds: dict[str, list[BenchRow]] = {label: [] for label, _ in contenders}
        for index in range(repeats):
            shift = index % len(contenders)
            for label, run_round in contenders[shift:] + contenders[:shift]:
                rounds[label].append(run_round())
                _release_memory()
    return BenchReport([merge_rounds(rows) for rows in rounds.values()])


def _settings_per_backend(backends: list[str], settings: BackendSettings,
                          options: dict[str, Any]) -> dict[str, BackendSettings]:
    """Each backend's checked settings, given the options it takes, before anything loads.

    The onnx backend runs the exported (or given) file, whose source revision is recorded in it.
    """
    checked, taken = {}, set()
    for name in backends:
        own = {f.name for f in option_fields(name)} & set(options)
        taken |= own
        shared = dataclasses.replace(settings, revision=None) if name == "onnx" else settings
        checked[name] = settings_for(name, shared, **{key: options[key] for key in own})
    leftover = {key: value for key, value in options.items() if key not in taken}
    if leftover and backends:
        settings_for(backends[0], settings, **leftover)  # raises: names who takes them
    return checked


def _backend_round(name: str, settings: BackendSettings, found: Scan,
                   workers: int | None) -> Callable[[], BenchRow]:
    def run_round() -> BenchRow:
        start = time.perf_counter()
        with create_backend(name, settings) as engine:
            load_s = time.perf_counter() - start
            return bench_backend(engine, found, name, workers, load_s)
    return run_round


def merge_rounds(rows: list[BenchRow]) -> BenchRow:
    """One row from several rounds of the same contender: median times, highest peak RSS."""
    first = rows[0]
    forwards = [row.forward_s for row in rows if row.forward_s]
    return BenchRow(
        label=first.label, images=first.images,
        load_s=statistics.median(row.load_s for row in rows),
        forward_s=statistics.median(forwards) if forwards else None,
        e2e_s=statistics.median(row.e2e_s for row in rows),
        peak_rss_mb=max(row.peak_rss_mb for row in rows),
        details=first.details,
        forward_rounds=forwards if len(forwards) == len(rows) else [],
        e2e_rounds=[row.e2e_s for row in rows],
    )


def _release_memory() -> None:
    """Hand freed heap back to the OS between contenders, so peak RSS is each one's own."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _export_for_bench(settings: BackendSettings, folder: Path) -> str:
    from .onnx_export import export_onnx

    path = folder / "model.onnx"
    export_onnx(settings.model, path, input_size=settings.input_size, revision=settings.revision)
    return str(path)
