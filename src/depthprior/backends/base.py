"""The one interface every backend implements.

A backend turns a batch of HxWx3 uint8 RGB arrays into one float32 map per image at the
image's own height and width. Discovery, batching, writing, resume and progress live once, in
the pipeline, for all backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ..errors import BackendUnavailable, MissingDependencyError

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
    """name: registry key. describe(): what the manifest records. predict(): the work."""

    name: ClassVar[str]
    #: extra to install when the backend's dependencies are missing
    extra: ClassVar[str | None] = None

    def __init__(self, settings: BackendSettings):
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

    @abstractmethod
    def predict(self, images: Sequence[np.ndarray]) -> list[DepthMap]:
        """One DepthMap per image, same order; raises on failure of the batch."""

    def predict_each(self, images: Sequence[np.ndarray]) -> list[DepthMap | Exception]:
        """Per-image outcomes: a failed batch is retried one image at a time.

        Backends whose requests are independent (remote) override this.
        """
        try:
            return self.predict(images)
        except FATAL_ERRORS:
            raise
        except Exception as batch_error:  # noqa: BLE001 - isolated per image below
            if len(images) == 1:
                return [batch_error]
        outcomes: list[DepthMap | Exception] = []
        for image in images:
            try:
                outcomes.extend(self.predict([image]))
            except FATAL_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001
                outcomes.append(error)
        return outcomes

    def preferred_batch_shape_key(self, image: np.ndarray) -> Any:
        """Images with equal keys may share a batch (default: equal stored size)."""
        return image.shape[:2]

    def close(self) -> None:
        """Release resources (sessions, connections, temp files)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

