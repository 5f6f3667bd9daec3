"""The one interface every backend implements, and the settings every backend shares.

A backend turns a batch of HxWx3 uint8 RGB arrays into one float32 map per image at the
image's own height and width. Discovery, batching, writing, resume and progress live once, in
the pipeline, for all backends.

Settings: BackendSettings holds what every backend takes; a backend's own options (torch's
compile, the Space's address and request policy) are a frozen dataclass it declares as
`Options`, carried in BackendSettings.options. `Backend.check_settings` is the one place a
backend's settings are checked; every command goes through it (backends.settings_for) before
any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Literal, Sequence

import numpy as np

from ...errors import BackendUnavailable, MissingDependencyError, UsageError
from ...images import DEFAULT_MAX_PIXELS
from .preprocess import PATCH
from .video_checkpoints import refuse_temporal

MapKind = Literal["disparity", "depth"]

#: errors that end the whole run instead of one image
FATAL_ERRORS = (BackendUnavailable, MissingDependencyError, KeyboardInterrupt, MemoryError)
DTYPES = ("auto", "fp32", "fp16", "bf16")


#: the largest --input-size: 4096 is ~60x the work of 518, and a 16:1 frame at it is a
#: 4096 x 65536 network input (3 GB in float32) already
MAX_INPUT_SIZE = 4096


@dataclass(frozen=True)
class BackendSettings:
    """What every backend is configured with; `options` holds the chosen backend's own ones
    (an instance of its Options dataclass; None until checked = its defaults)."""

    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    input_size: int = 518
    batch_size: int = 1
    #: pictures above this many pixels are refused before decoding (inputs and a server's replies)
    max_pixels: int = DEFAULT_MAX_PIXELS
    options: Any = None


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none beyond BackendSettings."""


def require_number(name: str, value: Any, kind: type) -> None:
    """A UsageError unless `value` is a number of `kind`: int, or float (finite; ints too)."""
    kinds = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise UsageError(f"{option_flag(name)} must be {'a finite number' if kind is float else 'an integer'}, "
                         f"got {value!r}")


def option_flag(name: str) -> str:
    """The command-line spelling of a settings field or option: min_interval -> --min-interval."""
    return "--" + name.replace("_", "-")


@dataclass
class DepthMap:
    """One prediction at the image's stored resolution.

    kind: "disparity" (relative inverse depth, near = large) or "depth" (metric, metres).
    source: where the values came from ("model", or e.g. "space:gray8").
    levels: number of distinct values the source could hold, when it was quantised.
    notes: anything the manifest should say about this image (e.g. a resize by the backend).
    extras: per-image model outputs recorded in the manifest (e.g. Depth Pro's focal length).
    """

    values: np.ndarray
    kind: MapKind = "disparity"
    source: str = "model"
    levels: int | None = None
    notes: list[str] = field(default_factory=list)
    #: per-image model outputs besides the map, e.g. Depth Pro's field_of_view_deg and focal_px
    extras: dict[str, float] = field(default_factory=dict)


class Backend(ABC):
    """A depth model behind three stages, so the pipeline can overlap them:

    prepare(image, name)  runs in the reader pool, thread-safe, once per image; name is the
                       image's posix path relative to the input root (ImageItem.name). Local
                       backends do CPU work (resize, normalise; a prompt for the image by its
                       name); the remote backend encodes the upload and submits the request,
                       which runs in its own pool (see SpaceBackend).
    infer_each(batch)  runs on the main thread: one outcome per prepared input, same order, a
                       raw output or the Exception that failed that input. Errors in
                       FATAL_ERRORS end the run and propagate.
    finish(raw, h, w)  runs in the writer pool, thread-safe: one raw output -> a DepthMap at
                       the image's stored height and width.

    Local backends (torch, onnx) share these stages in LocalBackend and implement `infer`.
    """

    name: ClassVar[str]
    #: this backend's own options (a frozen dataclass; its fields become command-line options)
    Options: ClassVar[type] = NoOptions
    #: whether images leave this machine (a remote service): links out of IMAGES need consent
    uploads: ClassVar[bool] = False
    #: whether --model may name a temporal model (Video Depth Anything), run by sequences
    temporal_models: ClassVar[bool] = False

    @classmethod
    def check_settings(cls, settings: BackendSettings) -> BackendSettings:
        """The settings with this backend's options filled in and checked, or a UsageError.

        Cheap: no model, file or network is touched. Subclasses add their own checks.
        """
        if not cls.temporal_models:
            refuse_temporal(cls.name, str(settings.model))
        for name in ("batch_size", "input_size", "max_pixels"):
            require_number(name, getattr(settings, name), int)
        if settings.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if settings.input_size > MAX_INPUT_SIZE:
            raise UsageError(f"--input-size {settings.input_size} is above {MAX_INPUT_SIZE}: the "
                             "network input of one frame would take gigabytes (models are trained "
                             "at 384-1536); choose a smaller size, e.g. 518")
        cls.check_input_size(settings)
        if settings.max_pixels < 1:
            raise UsageError("--max-pixels must be at least 1")
        if settings.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {settings.dtype!r}: choose one of {', '.join(DTYPES)}")
        options = cls.Options() if settings.options is None else settings.options
        if not isinstance(options, cls.Options):
            raise UsageError(f"{type(options).__name__} are not options of --backend {cls.name} "
                             f"(it takes {cls.Options.__name__})")
        return dataclasses.replace(settings, options=cls.check_options(options))

    @classmethod
    def check_input_size(cls, settings: BackendSettings) -> None:
        """--input-size for Depth Anything: a multiple of its patch size (backends running other
        architectures override this)."""
        if settings.input_size < PATCH or settings.input_size % PATCH:
            raise UsageError(f"--input-size must be a positive multiple of {PATCH} "
                             f"(Depth Anything's patch size), e.g. 518; got {settings.input_size}")

    @classmethod
    def check_options(cls, options: Any) -> Any:
        """This backend's options, checked (and completed, e.g. from the environment)."""
        return options

    def __init__(self, settings: BackendSettings):
        self.settings = self.check_settings(settings)
        self.options = self.settings.options

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
    def preferred_batch_size(self) -> int:
        """Inputs per infer_each call: --batch-size unless the backend needs more at once."""
        return self.settings.batch_size

    @abstractmethod
    def prepare(self, image: np.ndarray, name: str) -> Any:
        """Per-image work before inference (see the class docstring); thread-safe."""

    def batch_key(self, prepared: Any) -> Hashable:
        """Prepared inputs with equal keys may share a batch."""
        return None

    @abstractmethod
    def infer_each(self, batch: Sequence[Any]) -> list[Any | Exception]:
        """Per-input outcomes, same order: a raw output or the error that failed that input."""

    @abstractmethod
    def finish(self, raw: Any, height: int, width: int) -> DepthMap:
        """The DepthMap of one image at its stored height and width."""

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[DepthMap]:
        """All three stages in series, raising the first failure: for check, tests, simple callers
        (names: the images' relative names, as prepare takes them; default "")."""
        names = [""] * len(images) if names is None else list(names)
        outcomes = self.infer_each([self.prepare(image, name) for image, name in zip(images, names)])
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [self.finish(raw, *image.shape[:2]) for raw, image in zip(outcomes, images)]

    def diagnostics(self) -> dict[str, Any]:
        """Extra facts for `depthprior check` (e.g. a remote endpoint's API and last response)."""
        return {}

    def close(self) -> None:
        """Release resources (sessions, connections, temp files)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
