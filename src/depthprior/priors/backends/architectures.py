"""The depth architectures transformers maps for depth estimation, one entry each: how its
network input is made, what its output means, and how --input-size applies.

Depth Anything keeps depthprior's reference preprocessing (preprocess.prepare_rgb). The others
run the checkpoint's own image processor (its saved size, rounding rule, resample and
normalisation), so the network sees what `transformers.pipeline` gives it; padding the
processor adds is recorded per image (a Frame) and cut from the output before the map is
resized back to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import ImageError, ModelLoadError, UsageError
from ...files.jsonfile import expect_object, read_json
from .base import MapKind

#: what BackendSettings.input_size holds when the user gave none: for architectures other than
#: Depth Anything it means "the checkpoint's own size"
DEFAULT_INPUT_SIZE = 518


@dataclass(frozen=True)
class Frame:
    """Where the image lies in the network output: resize the output to outer (h, w), keep
    rows top..top+height and columns left..left+width; the rest is padding."""

    outer: tuple[int, int]
    top: int
    left: int
    height: int
    width: int


@dataclass
class Prepared:
    """One image's network input and where the image lies in it."""

    pixels: np.ndarray  # 3xhxw float32
    frame: Frame | None = None
    prompt: np.ndarray | None = None  # 1xh'xw' float32 prompt depth (Prompt Depth Anything)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape


@dataclass
class Prediction:
    """One raw network output, with its frame and per-image model outputs (e.g. field of view)."""

    values: np.ndarray
    frame: Frame | None = None
    extras: dict[str, float] = field(default_factory=dict)


class Architecture:
    """One depth architecture. Subclasses set the class attributes and override what differs."""

    model_type: ClassVar[str]
    #: the --input-size rule in words; None: fixed-size, --input-size is refused
    input_size_rule: ClassVar[str | None] = None
    recommended: ClassVar[str] = ""

    def __init__(self, config: Any = None, processor: Any = None):
        self.config = config
        self.processor = processor

    def kind(self) -> MapKind:
        return "depth"

    def convention(self) -> str:
        return {"depth": "metric depth (m)", "disparity": "relative disparity (inverse depth)"}[self.kind()]

    @classmethod
    def check_input_size(cls, input_size: int) -> None:
        if input_size != DEFAULT_INPUT_SIZE and cls.input_size_rule is None:
            raise UsageError(f"--input-size does not apply to {cls.model_type} checkpoints: "
                             f"{cls.fixed_size_reason()}; leave --input-size out")
        if input_size < 32:
            raise UsageError(f"--input-size must be at least 32 for {cls.model_type}, got {input_size}")

    @classmethod
    def fixed_size_reason(cls) -> str:
        return "the model runs at the size its image processor fixes"

    def processor_overrides(self, input_size: int) -> dict[str, Any]:
        """Keyword arguments that make the processor honour --input-size."""
        if input_size == DEFAULT_INPUT_SIZE or self.input_size_rule is None:
            return {}
        return {"size": {"height": input_size, "width": input_size}}

    def prepare(self, image: np.ndarray, input_size: int) -> Prepared:
        pixels = self.process(image, input_size, self.processor_overrides(input_size))
        return Prepared(np.ascontiguousarray(pixels, dtype=np.float32))

    def process(self, image: np.ndarray, input_size: int, overrides: dict[str, Any]) -> np.ndarray:
        """The processor's network input for one HxWx3 image, once the frame is known to fit."""
        self.check_frame(image.shape[0], image.shape[1], input_size)
        # channels_last said, not guessed: transformers takes a 1xWx3 or 3xWx3 image for
        # channels-first and fails on it ("mean must have 1 elements")
        pixels = self.processor(images=image, return_tensors="np", input_data_format="channels_last",
                                **overrides)
        return pixels["pixel_values"][0]

    def network_size(self, height: int, width: int, input_size: int) -> tuple[int, int] | None:
        """(height, width) of the network input the processor makes of a frame; None: any
        frame fits (a fixed-size resize)."""
        return None

    def min_side(self) -> int:
        """The shortest network-input side the model takes: its rounding multiple, and its
        backbone's patch."""
        multiple = getattr(self.processor, "ensure_multiple_of", None) or getattr(
            self.processor, "size_divisor", None) or 1
        config = self.config
        patch = getattr(getattr(config, "backbone_config", None), "patch_size", None) or getattr(
            config, "patch_size", None) or 1
        return max(int(multiple), int(patch) if isinstance(patch, int) else 1)

    def check_frame(self, height: int, width: int, input_size: int) -> None:
        """ImageError (before any preprocessing) when the frame is too small for the model."""
        size = self.network_size(height, width, input_size)
        needed = self.min_side()
        if size is not None and min(size) < needed:
            raise ImageError(
                f"image is {width}x{height}: {self.model_type} would make a {size[1]}x{size[0]} "
                f"network input, and its sides must be at least {needed} px; use a larger frame")

    def extras(self, output: Any, index: int) -> dict[str, float]:
        """Per-image outputs besides the map (index: position in the batch)."""
        return {}

    def values(self, resized: np.ndarray, extras: dict[str, float], width: int) -> np.ndarray:
        """The map at the image's size from the resized raw output (default: the raw values)."""
        return resized

    def preprocessing(self, input_size: int) -> str:
        processor = self.processor
        settings = {key: getattr(processor, key, None) for key in (
            "size", "keep_aspect_ratio", "ensure_multiple_of", "size_divisor", "do_pad", "resample",
            "image_mean", "image_std")}
        settings["size"] = self.processor_overrides(input_size).get("size", settings["size"])
        shown = ", ".join(f"{key}={_plain(value)}" for key, value in settings.items() if value is not None)
        return f"{type(processor).__name__}({shown}); padding cut, map resized back bilinear"

    def describe(self, input_size: int) -> dict[str, Any]:
        return {"architecture_type": self.model_type, "convention": self.convention(),
                "units": "m" if self.kind() == "depth" else "relative",
                "preprocessing": self.preprocessing(input_size)}


def _plain(value: Any) -> Any:
    if hasattr(value, "name"):  # PILImageResampling
        return value.name.lower()
    height, width = _get(value, "height"), _get(value, "width")
    if height is not None and width is not None:
        return f"{height}x{width}"
    if isinstance(value, (tuple, list)):
        return [round(float(v), 4) for v in value]
    return value


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


class DepthAnything(Architecture):
    model_type = "depth_anything"
    input_size_rule = "shorter side scaled to it, both sides multiples of 14"
    recommended = "default: fast relative prior for 3DGS (V2 Small/Base/Large), metric variants for metres"

    def kind(self) -> MapKind:
        metric = getattr(self.config, "depth_estimation_type", "relative") == "metric"
        return "depth" if metric else "disparity"


class DPT(Architecture):
    model_type = "dpt"
    input_size_rule = "square target, aspect kept and rounded to the processor's multiple"
    recommended = "MiDaS v3 (DPT-Large/Hybrid) for pipelines built on MiDaS; DINOv2 heads for metres"

    def kind(self) -> MapKind:
        backbone = getattr(getattr(self.config, "backbone_config", None), "model_type", None)
        return "depth" if backbone == "dinov2" else "disparity"  # DINOv2 DPT heads: NYU/KITTI metres

    def prepare(self, image: np.ndarray, input_size: int) -> Prepared:
        pixels = self.process(image, input_size, {**self.processor_overrides(input_size), "do_pad": False})
        divisor = getattr(self.processor, "size_divisor", None)
        if not getattr(self.processor, "do_pad", False) or not divisor:
            return Prepared(np.ascontiguousarray(pixels, dtype=np.float32))
        return centre_pad(pixels, divisor)


    def network_size(self, height: int, width: int, input_size: int) -> tuple[int, int] | None:
        return aspect_resize(self.processor, height, width, self.processor_overrides(input_size))


def aspect_resize(processor: Any, height: int, width: int,
                  overrides: dict[str, Any]) -> tuple[int, int]:
    """The size DPT-style processors (DPT, Prompt Depth Anything, ZoeDepth) resize to: the
    side scaled least sets the scale (with keep_aspect_ratio), each side rounded to the
    nearest multiple of ensure_multiple_of (0 for a thin strip)."""
    if not getattr(processor, "do_resize", True):
        return height, width
    target = overrides.get("size") or getattr(processor, "size", None) or {}
    target_h, target_w = _get(target, "height"), _get(target, "width")
    if target_h is None or target_w is None:
        return height, width
    multiple = int(getattr(processor, "ensure_multiple_of", None) or 1)
    scale_h, scale_w = target_h / height, target_w / width
    if getattr(processor, "keep_aspect_ratio", False):
        scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return (round(scale_h * height / multiple) * multiple,
            round(scale_w * width / multiple) * multiple)


def centre_pad(pixels: np.ndarray, divisor: int) -> Prepared:
    """Zero padding (after normalisation) to multiples of `divisor`, centred as DPT's processor."""
    height, width = pixels.shape[1:]
    outer = (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
    top, left = (outer[0] - height) // 2, (outer[1] - width) // 2
    padded = np.zeros((pixels.shape[0], *outer), dtype=np.float32)
    padded[:, top:top + height, left:left + width] = pixels
    return Prepared(padded, Frame(outer, top, left, height, width))


class PromptDepthAnything(DPT):
    """Depth Anything with a metric depth prompt per image (--prompt-sparse): the network
    normalises the prompt to 0..1 and maps its output back to the prompt's range."""

    model_type = "prompt_depth_anything"
    recommended = "metric depth in the SfM scene's units, prompted by its sparse points (--prompt-sparse)"

    def kind(self) -> MapKind:
        return "depth"

    def convention(self) -> str:
        return "metric depth in the prompt's units (the SfM model's; metres when it is metric)"

    def describe(self, input_size: int) -> dict[str, Any]:
        return {**super().describe(input_size), "units": "SfM model units"}


class GLPN(Architecture):
    model_type = "glpn"
    recommended = "metric indoor (NYU) / driving (KITTI) depth; runs at the image's own size"

    @classmethod
    def fixed_size_reason(cls) -> str:
        return "GLPN runs at the image's own size, rounded down to a multiple of its size_divisor"

    def network_size(self, height: int, width: int, input_size: int) -> tuple[int, int] | None:
        divisor = int(getattr(self.processor, "size_divisor", None) or 32)
        return height // divisor * divisor, width // divisor * divisor


class ZoeDepth(Architecture):
    model_type = "zoedepth"
    input_size_rule = "square target, aspect kept, rounded to the processor's multiple"
    recommended = "metric depth (NYU indoor, KITTI outdoor, or both)"

    def prepare(self, image: np.ndarray, input_size: int) -> Prepared:
        prepared = super().prepare(image, input_size)
        if not getattr(self.processor, "do_pad", True):
            return prepared
        height, width = image.shape[:2]  # reflect padding of int(sqrt(side / 2) * 3) per side
        pad_h, pad_w = int(np.sqrt(height / 2) * 3), int(np.sqrt(width / 2) * 3)
        prepared.frame = Frame((height + 2 * pad_h, width + 2 * pad_w), pad_h, pad_w, height, width)
        return prepared

    def network_size(self, height: int, width: int, input_size: int) -> tuple[int, int] | None:
        if getattr(self.processor, "do_pad", True):
            height, width = height + 2 * int(np.sqrt(height / 2) * 3), width + 2 * int(np.sqrt(width / 2) * 3)
        return aspect_resize(self.processor, height, width, self.processor_overrides(input_size))


class DepthPro(Architecture):
    """Apple's Depth Pro: canonical inverse depth; with its field-of-view head, metres."""

    model_type = "depth_pro"
    recommended = "sharp metric depth with its own focal estimate (fov head); slow (1536x1536)"

    @classmethod
    def fixed_size_reason(cls) -> str:
        return "Depth Pro runs at its fixed size (1536x1536 for apple/DepthPro-hf)"

    def has_fov(self) -> bool:
        return bool(getattr(self.config, "use_fov_model", False))

    def kind(self) -> MapKind:
        return "depth" if self.has_fov() else "disparity"

    def convention(self) -> str:
        if self.has_fov():
            return "metric depth (m) from canonical inverse depth and the estimated field of view"
        return "relative disparity (canonical inverse depth; no field-of-view head)"

    def prepare(self, image: np.ndarray, input_size: int) -> Prepared:
        """Normalise first, then bilinear resize without antialiasing (DepthProImageProcessor)."""
        import torch

        size = processor_size(self.processor, (1536, 1536))
        mean = np.asarray(self.processor.image_mean, dtype=np.float32)
        std = np.asarray(self.processor.image_std, dtype=np.float32)
        normalised = (image.astype(np.float32) * np.float32(self.processor.rescale_factor) - mean) / std
        tensor = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))[None]
        resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
        return Prepared(resized[0].numpy())

    def extras(self, output: Any, index: int) -> dict[str, float]:
        fov = getattr(output, "field_of_view", None)
        return {} if fov is None else {"field_of_view_deg": float(fov[index])}

    def values(self, resized: np.ndarray, extras: dict[str, float], width: int) -> np.ndarray:
        """Metres as post_process_depth_estimation: 1 / clamp(raw * width / focal, 1e-4, 1e4)."""
        if "field_of_view_deg" not in extras:
            return resized
        if not 0 < extras["field_of_view_deg"] < 180:
            raise ValueError(f"Depth Pro estimated an impossible field of view "
                             f"({extras['field_of_view_deg']:.3g} degrees): no metric depth for this image")
        fov = math.radians(extras["field_of_view_deg"])
        focal = 0.5 * width / math.tan(0.5 * fov)
        extras["focal_px"] = focal
        return (1.0 / np.clip(resized * np.float32(width / focal), 1e-4, 1e4)).astype(np.float32)

    def preprocessing(self, input_size: int) -> str:
        height, width = processor_size(self.processor, (1536, 1536))
        return (f"DepthProImageProcessor: RGB/255, mean {list(self.processor.image_mean)}, std "
                f"{list(self.processor.image_std)}, then bilinear to fixed {height}x{width}; map resized back bilinear")


class Tipsv2Dpt(Architecture):
    """Google's TIPSv2 DPT head: metric depth as the expectation over its depth bins."""

    model_type = "tipsv2_dpt"
    recommended = "metric depth (m) from TIPSv2's depth bins; fixed 448x448"

    @classmethod
    def fixed_size_reason(cls) -> str:
        return "TIPSv2 DPT runs at its processor's fixed size (448x448 for google/tipsv2-b14-dpt)"

    def convention(self) -> str:
        return (f"metric depth (m): expectation over {self.config.num_depth_bins} bins from "
                f"{self.config.min_depth:g} to {self.config.max_depth:g} m")

    def prepare(self, image: np.ndarray, input_size: int) -> Prepared:
        """Tipsv2DptImageProcessor without torchvision: antialiased bilinear resize of the uint8
        image (to uint8, as torchvision's resize of a uint8 tensor), then RGB/255."""
        import torch

        size = processor_size(self.processor, (448, 448))
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True,
                                                  align_corners=False)[0].numpy()
        pixels = resized.astype(np.float32) * np.float32(self.processor.rescale_factor)
        if self.processor.do_normalize:
            mean = np.asarray(self.processor.image_mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.processor.image_std, dtype=np.float32)[:, None, None]
            pixels = (pixels - mean) / std
        return Prepared(pixels)

    def preprocessing(self, input_size: int) -> str:
        height, width = processor_size(self.processor, (448, 448))
        normalised = (f", mean {list(self.processor.image_mean)}, std {list(self.processor.image_std)}"
                      if self.processor.do_normalize else "")
        return (f"Tipsv2DptImageProcessor: antialiased bilinear to fixed {height}x{width} on uint8, "
                f"RGB/255{normalised}; map resized back bilinear")


def processor_size(processor: Any, default: tuple[int, int]) -> tuple[int, int]:
    size = getattr(processor, "size", None) or {}
    return int(size.get("height", default[0])), int(size.get("width", default[1]))


ARCHITECTURES: dict[str, type[Architecture]] = {
    cls.model_type: cls for cls in (DepthAnything, DPT, PromptDepthAnything, GLPN, ZoeDepth, DepthPro, Tipsv2Dpt)
}

#: depth-estimation architectures depthprior refuses, and why (one line each)
REFUSED = {
    "chmv2": "predicts canopy height from aerial images, not depth from the camera",
}


def architecture_class(model_type: str | None, model: str) -> type[Architecture]:
    """The entry for a checkpoint's model_type, or a ModelLoadError in one line."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    supported = ", ".join(ARCHITECTURES)
    if model_type in REFUSED:
        raise ModelLoadError(f"model {model!r} is a {model_type} checkpoint, which depthprior cannot run: "
                             f"{REFUSED[model_type]}; choose one of: {supported}")
    raise ModelLoadError(f"model {model!r} is a {model_type or 'unknown'!r} checkpoint, not a depth-estimation "
                         f"model; choose a checkpoint of one of: {supported}")


def cached_model_type(model: str, revision: str | None = None) -> str | None:
    """The model_type in a checkpoint's config.json when it is on this machine (a folder, or
    the Hugging Face cache), without loading anything; None when it is not known here."""
    path = Path(model) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json", revision=revision)
        except Exception:  # noqa: BLE001 - not a repo id, no hub library: unknown until load
            return None
        if not isinstance(found, str):
            return None
        path = Path(found)
    data = read_json(path, check=expect_object,
                     hint="the checkpoint's config is damaged: save or download it again")
    return data.get("model_type")
