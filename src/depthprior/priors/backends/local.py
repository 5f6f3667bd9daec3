"""What the local backends (torch, onnx) share: Depth Anything's preprocessing on the way in
(another architecture's own, architectures.Architecture, when one is set), the resize back on
the way out, and batches retried one input at a time when they fail."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Hashable, Sequence

import numpy as np

from .architectures import Architecture, Prediction
from .base import FATAL_ERRORS, Backend, DepthMap, MapKind
from .preprocess import prepare_rgb, resize_map


class LocalBackend(Backend):
    """A model run on this machine: prepare and finish are CPU work, `infer` runs the model."""

    #: what the model outputs; set once the model is loaded
    kind: MapKind = "disparity"
    #: the model's architecture entry, when it is not Depth Anything (whose raw outputs are arrays)
    architecture: Architecture | None = None

    def prepare(self, image: np.ndarray, name: str) -> np.ndarray:
        return prepare_rgb(image, self.settings.input_size)

    def batch_key(self, prepared: Any) -> Hashable:
        return getattr(prepared, "shape", None)

    @abstractmethod
    def infer(self, batch: Sequence[Any]) -> list[Any]:
        """Raw outputs, one per prepared input, same order; raises if the batch fails."""

    def infer_each(self, batch: Sequence[Any]) -> list[Any | Exception]:
        """The batch through `infer`; when it fails, each input alone, so one bad input fails
        only itself."""
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

    def finish(self, raw: Any, height: int, width: int) -> DepthMap:
        if not isinstance(raw, Prediction):
            return DepthMap(resize_map(raw, height, width), kind=self.kind)
        resized = resize_map(crop_frame(raw.values, raw.frame), height, width)
        extras = dict(raw.extras)
        values = self.architecture.values(resized, extras, width)
        return DepthMap(values, kind=self.kind, extras=extras)


def crop_frame(values: np.ndarray, frame: Any) -> np.ndarray:
    """The part of a network output that shows the image (Frame), padding cut off."""
    if frame is None:
        return values
    outer = resize_map(values, *frame.outer)
    return outer[frame.top:frame.top + frame.height, frame.left:frame.left + frame.width]
