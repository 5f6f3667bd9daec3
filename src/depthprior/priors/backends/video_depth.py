"""Video Depth Anything behind --model: the official checkpoints (hub ids and .pth files, relative
and metric, every size) loaded into depthprior's own network (video_network), run a window of
frames at a time (video_windows holds the rule over a sequence).

Preprocessing is depthprior's reference one (preprocess.prepare_rgb) at the reference's input
size rule for video: frames wider than 16:9 (ratio > 1.78) get input_size * 1.777 / ratio,
rounded to a multiple of 14. On CUDA the network runs under fp16 autocast (the reference's
default; weights stay fp32, the last head convolutions in fp32); elsewhere fp32. Maps come back
to the frame's size with preprocess.resize_map (bilinear, half-pixel centres).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ModelLoadError, first_line
from .base import BackendSettings, DepthMap, MapKind
from .preprocess import PATCH, PREPROCESSING, prepare_rgb, resize_map
from .torch_hf import import_torch, resolve_device, resolve_dtype
from .video_checkpoints import HUB_FILES, file_name, is_metric
from .video_network import build_network, load_state_into, read_config
from .video_windows import WINDOW

log = logging.getLogger(__name__)

#: the reference's widest aspect ratio at the full input size, and the factor it scales by
MAX_RATIO = 1.78
RATIO_FACTOR = 1.777
_licences_told: set[str] = set()


def video_input_size(height: int, width: int, input_size: int) -> int:
    """The reference's input size for frames of this size (smaller for frames wider than 16:9)."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        input_size = round(int(input_size * RATIO_FACTOR / ratio) / PATCH) * PATCH
    return max(input_size, PATCH)


def read_state(model: str, revision: str | None = None) -> tuple[dict[str, Any], Path]:
    """The official state dict of a hub id or a local .pth file, and where it lies."""
    torch = import_torch()
    path = Path(model).expanduser()
    if not path.is_file():
        if model not in HUB_FILES:
            raise ModelLoadError(f"cannot load model {model!r}: no such .pth file (give a Video Depth Anything "
                                 f"checkpoint file, or one of: {', '.join(HUB_FILES)})")
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, HUB_FILES[model], revision=revision))
        except ImportError:
            raise ModelLoadError(f"cannot load model {model!r}: huggingface_hub is not installed") from None
        except Exception as error:  # noqa: BLE001 - offline, not cached, a wrong revision, ...
            raise ModelLoadError(
                f"cannot load model {model!r}: {first_line(error)} (offline machines need the file "
                f"{HUB_FILES[model]} in the Hugging Face cache, or pass --model with its local path)") from None
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning is not ours to show
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        # torch's own text for a file that holds code advises weights_only=False: never ours to give
        raise ModelLoadError(f"cannot load model {model!r}: {path.name} is not a Video Depth Anything "
                             f"checkpoint torch can read safely (a state dict of tensors; "
                             f"{type(error).__name__}); give the official .pth file") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict) and len(state) <= 3:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"cannot load model {model!r}: {path.name} holds a {type(state).__name__}, "
                             "not a state dict")
    return state, path


def load_video_network(model: str, revision: str | None = None) -> Any:
    """depthprior's network with the checkpoint's weights, in eval mode (fp32)."""
    state, _ = read_state(model, revision)
    config = read_config(state, model)
    network = build_network(config)
    load_state_into(network, state, model)
    _tell_licence(model, config.size_name, config.licence)
    return network.eval()


def _tell_licence(model: str, size: str | None, licence: str | None) -> None:
    if licence is None or licence.startswith("Apache") or model in _licences_told:
        return
    _licences_told.add(model)
    log.warning("%s is Video Depth Anything-%s, released under %s (non-commercial use only)",
                model, size, licence)


class VideoDepthModel:
    """A loaded Video Depth Anything checkpoint: prepare frames, run a window, resize back."""

    name = "torch"

    def __init__(self, settings: BackendSettings):
        torch = import_torch()
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.network = load_video_network(settings.model, settings.revision).to(self.device)
        self.metric = is_metric(settings.model)
        self.kind: MapKind = "depth" if self.metric else "disparity"
        self._autocast = self.device.startswith("cuda") and self.dtype in ("fp16", "bf16")
        self._autocast_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16

    def describe(self) -> dict[str, Any]:
        config = self.network.config
        return {
            "backend": self.name, "model": self.settings.model, "checkpoint": file_name(self.settings.model),
            "architecture": "VideoDepthAnything", "architecture_type": "video_depth_anything",
            "size": config.size_name or f"custom ({config.embed_dim}-wide, {config.depth} layers)",
            "licence": config.licence or "unknown",
            "model_output": self.kind,
            "convention": "metric depth (m)" if self.metric else "relative disparity (inverse depth)",
            "units": "m" if self.metric else "relative",
            "device": self.device, "dtype": self.dtype if self._autocast else "fp32",
            "input_size": self.settings.input_size,
            "temporal": (f"windows of {WINDOW} frames, 10 keyframes of the previous window, "
                         f"{'no stitching (metric)' if self.metric else 'scale/shift stitching'}, "
                         "8-frame crossfade; one value mapping per sequence"),
            "preprocessing": PREPROCESSING + "; input size 1.777/ratio smaller for frames wider than 16:9",
        }

    def prepare(self, image: np.ndarray, input_size: int) -> np.ndarray:
        return prepare_rgb(image, input_size)

    def run_window(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The network's raw maps (network resolution, float32) for one window of inputs."""
        torch = import_torch()
        pixels = torch.from_numpy(np.stack(inputs)).to(self.device)
        with torch.inference_mode(), torch.autocast(device_type=self.device.split(":")[0],
                                                    dtype=self._autocast_dtype, enabled=self._autocast):
            maps = self.network(pixels, len(inputs))
        return list(maps.float().cpu().numpy())

    def finish(self, values: np.ndarray, height: int, width: int) -> DepthMap:
        return DepthMap(resize_map(values, height, width), kind=self.kind)

    def close(self) -> None:
        self.network = None
