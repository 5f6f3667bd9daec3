"""Which --model values are Video Depth Anything checkpoints, known without loading anything:
the official hub ids (each holds one .pth file) and .pth files. A temporal model runs sequences,
so only the torch backend takes it (Backend.temporal_models) and never on Ray."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError

#: the official sizes: hub id suffix -> encoder name in the file name
_SIZES = {"Small": "vits", "Base": "vitb", "Large": "vitl"}
#: hub id -> the official file it holds (relative and metric, every size)
HUB_FILES = {
    **{f"depth-anything/Video-Depth-Anything-{size}": f"video_depth_anything_{enc}.pth"
       for size, enc in _SIZES.items()},
    **{f"depth-anything/Metric-Video-Depth-Anything-{size}": f"metric_video_depth_anything_{enc}.pth"
       for size, enc in _SIZES.items()},
}
#: metric checkpoints are told by their official file name
METRIC_PREFIX = "metric_"
#: changes whenever the window rule or the sequence mapping give other values (output identity)
TEMPORAL_VERSION = 1


def is_video_model(model: str) -> bool:
    return model in HUB_FILES or model.lower().endswith(".pth")


def file_name(model: str) -> str:
    """The checkpoint's file name: the hub id's official file, or the local file's own name."""
    return HUB_FILES.get(model) or Path(model).name


def is_metric(model: str) -> bool:
    return file_name(model).lower().startswith(METRIC_PREFIX)


def refuse_temporal(backend: str, model: str) -> None:
    """One line when a backend that runs frames one by one is given a temporal model."""
    if is_video_model(model):
        raise UsageError(f"model {model!r} is a Video Depth Anything checkpoint, which runs sequences of frames: "
                         f"--backend {backend} cannot run it; use --backend torch")
