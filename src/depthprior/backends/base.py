"""The one interface every backend implements.

A backend turns a batch of HxWx3 uint8 RGB arrays into one float32 map per image at the
image's own height and width. Discovery, batching, writing, resume and progress live once, in
the pipeline, for all backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Literal, Sequence

import numpy as np

from ..errors import BackendUnavailable, MissingDependencyError, UsageError
from ..images import DEFAULT_MAX_PIXELS

MapKind = Literal["disparity", "depth"]

#: errors that end the whole run instead of one image
FATAL_ERRORS = (BackendUnavailable, MissingDependencyError, KeyboardInterrupt, MemoryError)


@dataclass(frozen=True)
class BackendSettings:
    """Everything a backend may be configured with. Each backend reads the fields it knows."""

    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    input_size: int = 518
    batch_size: int = 1
    compile: bool = False  # torch backend: torch.compile the model (one compile per input shape)
    #: pictures above this many pixels are refused before decoding (inputs and a server's replies)
    max_pixels: int = DEFAULT_MAX_PIXELS
    # remote Space
    space: str = "depth-anything/Depth-Anything-V2"
    hf_token: str | None = field(default=None, repr=False)
    retries: int = 5
    min_interval: float = 1.0
    concurrency: int = 1
    timeout: float = 120.0


@dataclass
class DepthMap:
    """One prediction at the image's stored resolution.

    kind: "disparity" (relative inverse depth, near = large) or "depth" (metric, metres).
    source: where the values came from ("model", or e.g. "space:gray8").
    levels: number of distinct values the source could hold, when it was quantised.
    notes: anything the manifest should say about this image (e.g. a resize by the backend).
    """

    values: np.ndarray
    kind: MapKind = "disparity"
    source: str = "model"
    levels: int | None = None
    notes: list[str] = field(default_factory=list)


class Backend(ABC):
    """A depth model behind three stages, so the pipeline can overlap them:

    prepare(image)  CPU work on one image, thread-safe (runs in the reader pool)
    infer(batch)    the model on a batch of prepared inputs (runs on the main thread)
    finish(raw, h, w)  CPU work turning one raw output into a DepthMap at the image's size,
                    thread-safe (runs in the writer pool)
    """

    name: ClassVar[str]
    #: whether the backend can torch.compile its model (BackendSettings.compile)
    compiles: ClassVar[bool] = False
    #: whether images leave this machine (a remote service): links out of IMAGES need consent
    uploads: ClassVar[bool] = False

    def __init__(self, settings: BackendSettings):
        if settings.compile and not self.compiles:
            raise UsageError(f"--compile applies to --backend torch, not {self.name}")
        self.settings = settings

    @classmethod
    def identity(cls, settings: BackendSettings) -> dict[str, Any]:
        """Settings that change the output values, known before loading anything.

        Outputs made with a different identity are never mixed in one folder.
        """
        return {"backend": cls.name, "model": settings.model, "input_size": settings.input_size}

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Model, revision, device, dtype, convention: recorded once in the manifest."""

    @property
    def preferred_batch_size(self) -> int | None:
        """Inputs per infer_each call this backend wants, or None to follow settings.batch_size.

        A remote backend with N requests in flight (--concurrency N) needs N inputs per call;
        the pipeline batches max(settings.batch_size, preferred_batch_size) inputs.
        """
        return None

    def prepare(self, image: np.ndarray) -> Any:
        return image

    def batch_key(self, prepared: Any) -> Hashable:
        """Prepared inputs with equal keys may share a batch."""
        return getattr(prepared, "shape", None)

    @abstractmethod
    def infer(self, batch: Sequence[Any]) -> list[Any]:
        """Raw outputs, one per prepared input, same order; raises if the batch fails."""

    @abstractmethod
    def finish(self, raw: Any, height: int, width: int) -> DepthMap:
        """The DepthMap of one image at its stored height and width."""

    def infer_each(self, batch: Sequence[Any]) -> list[Any | Exception]:
        """Per-input outcomes: a failed batch is retried one input at a time.

        Errors in FATAL_ERRORS end the run and propagate. Backends whose requests are
        independent (remote) override this.
        """
        try:
            return self.infer(batch)
        except FATAL_ERRORS:
            raise
        except Exception as batch_error:  # noqa: BLE001 - isolated per input below
            if len(batch) == 1:
                return [batch_error]
        outcomes: list[Any | Exception] = []
        for prepared in batch:
            try:
                outcomes.extend(self.infer([prepared]))
            except FATAL_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001
                outcomes.append(error)
        return outcomes

    def predict(self, images: Sequence[np.ndarray]) -> list[DepthMap]:
        """All three stages in series: for check, tests and simple callers."""
        raws = self.infer([self.prepare(image) for image in images])
        return [self.finish(raw, *image.shape[:2]) for raw, image in zip(raws, images)]

    def diagnostics(self) -> dict[str, Any]:
        """Extra facts for `depthprior check` (e.g. a remote endpoint's API and last response)."""
        return {}

    def close(self) -> None:
        """Release resources (sessions, connections, temp files)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
