"""One frame's work, the same in both executors: read and prepare it, batch prepared frames
as the model takes them, and write its outputs with their manifest record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from .backends import Backend
from .backends.base import FATAL_ERRORS, DepthMap
from ..errors import ImageError
from ..images import ImageItem, decode_rgb, safe_join
from ..files.place import Location
from .manifest import ImageRecord, output_files
from .store import encode_inverse_depth, write_npy, write_png16


@dataclass
class PreparedImage:
    """One image read and prepared for the backend (or why it could not be)."""

    item: ImageItem
    height: int = 0
    width: int = 0
    prepared: Any = None
    error: str | None = None
    rgb: Any = None  # the decoded frame, kept when another model reads it too (generate --exclude)


def batch_size(engine: Backend) -> int:
    return engine.preferred_batch_size


def prepared_batches(engine: Backend, items: Iterable[ImageItem]) -> Iterator[list[PreparedImage]]:
    """The items read and prepared in order on this thread, batched exactly as generate batches
    them (for timing the model alone); unreadable ones come through with `error` set."""
    return batches(engine, (load_frame(engine, item) for item in items), batch_size(engine))


def batches(engine: Backend, loaded: Iterator[PreparedImage], batch_size: int) -> Iterator[list[PreparedImage]]:
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


def load_frame(engine: Backend, item: ImageItem, keep: bool = False) -> PreparedImage:
    """Read and prepare one frame; `keep`: the decoded RGB stays on it (`rgb`)."""
    try:
        image = decode_rgb(item.path, max_pixels=engine.settings.max_pixels)
        return PreparedImage(item, image.shape[0], image.shape[1], engine.prepare(image, item.name),
                             rgb=image if keep else None)
    except FATAL_ERRORS:
        raise
    except ImageError as error:
        return PreparedImage(item, error=str(error))
    except Exception as error:  # noqa: BLE001 - one bad file never stops the batch
        return PreparedImage(item, error=f"{type(error).__name__}: {error}")


def write_outputs(root: Location, item: ImageItem, depth: DepthMap, fmt: str,
                  sequence: tuple[str, int, tuple[float, float]] | None = None) -> ImageRecord:
    """Encode one image's map, write its files under root and return its manifest record
    (the local pipeline's writer threads, the Ray path's write tasks and the sequence writer
    all end here). sequence: (its name, the frame's position, the sequence's inverse-depth
    range), for frames of temporal models: one value mapping for the whole sequence."""
    height, width = depth.values.shape
    encoded = encode_inverse_depth(depth.values, depth.kind, sequence[2] if sequence else None)
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
        sequence=sequence[0] if sequence else None,
        position=sequence[1] if sequence else None,
    )
