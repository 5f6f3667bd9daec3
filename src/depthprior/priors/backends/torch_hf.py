"""Depth models through transformers (architectures.ARCHITECTURES), by hub id or local folder."""

from __future__ import annotations

import inspect
import logging
import types
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from ...errors import MissingDependencyError, ModelLoadError, UsageError, first_line
from ...files.jsonfile import expect_object, parse_json, read_json
from .base import BackendSettings
from .local import LocalBackend, crop_frame  # noqa: F401 - crop_frame: where it used to live
from .architectures import DEFAULT_INPUT_SIZE, Architecture, Prediction, Prepared, architecture_class, cached_model_type
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING, PREPROCESSING_VERSION
from .video_checkpoints import TEMPORAL_VERSION, is_video_model
from .prompt import PROMPT_LONG_SIDE, SparsePrompts, check_sparse_option, network_prompt, prompt_identity

log = logging.getLogger(__name__)

#: Depth Anything's DINOv2 adds this to the patch grid before deriving the bicubic scale factor
#: of its position-embedding resize (transformers resizes to the grid size instead)
POSITION_OFFSET = 0.1
DEVICES = ("auto", "cpu", "cuda", "mps")


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "all", "the torch backend") from None
    return torch


def check_device(requested: str) -> str:
    if requested.split(":")[0] not in DEVICES:
        raise UsageError(f"unknown device {requested!r}: choose one of {', '.join(DEVICES)}")
    return requested


def resolve_device(requested: str) -> str:
    """The device to run on: auto picks cuda, then mps, then cpu; others must be available."""
    torch = import_torch()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = check_device(requested).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but CUDA is not available; use --device cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device 'mps' requested but MPS is not available; use --device cpu")
    return requested


def resolve_dtype(requested: str, device: str) -> str:
    """The dtype a checked --dtype means on `device`: auto is fp16 on CUDA, fp32 elsewhere."""
    if requested != "auto":
        return requested
    return "fp16" if device.startswith("cuda") else "fp32"


def torch_dtype(name: str) -> Any:
    torch = import_torch()
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_depth_model(model: str, revision: str | None = None, dtype: Any = None) -> Any:
    """A transformers Depth Anything model from a hub id or a local folder, in eval mode
    (export-onnx's Depth Anything path, with its reference position-embedding resize)."""
    network = load_network(model, revision, dtype)
    if network.config.model_type != "depth_anything":
        raise ModelLoadError(f"model {model!r} is a {network.config.model_type} checkpoint; ONNX export "
                             "supports Depth Anything checkpoints only (run it with --backend torch)")
    return network


#: how long the hub may take to accept a connection before it counts as unreachable
HUB_CHECK_SECONDS = 2.5


def check_model_reference(model: str) -> None:
    """ModelLoadError in one line for a model that is neither something on disk nor a hub id
    (/models/mine/, ./mine, a/b/c: a path where nothing lies); nothing is read or fetched."""
    if Path(model).expanduser().exists():
        return
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        return
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ModelLoadError(f"cannot load model {model!r}: no such folder or file, and not a hub id (name or "
                             "namespace/name); give a local checkpoint folder saved with save_pretrained, "
                             "or a hub id") from None


def check_hub_access(model: str, revision: str | None = None) -> None:
    """For a hub id on a machine that cannot reach the hub: use the cached copy at once (offline
    mode for this process), or say in one line that it is not cached, instead of the hub
    client's five retries (~30 s, each printed twice)."""
    if Path(model).expanduser().exists():
        return
    check_model_reference(model)
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return
    if constants.HF_HUB_OFFLINE:
        return
    problem = unreachable(constants.ENDPOINT, HUB_CHECK_SECONDS)
    if problem is None:
        return
    constants.HF_HUB_OFFLINE = True  # read at each call by huggingface_hub and transformers
    if not isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str):
        raise ModelLoadError(
            f"model {model!r} is not in the Hugging Face cache and the hub {constants.ENDPOINT} "
            f"cannot be reached ({problem}): connect to the network once to download it, or pass "
            "--model with a local folder saved with save_pretrained")
    log.warning("the hub %s cannot be reached (%s): using the cached copy of %s",
                constants.ENDPOINT, problem, model)


def unreachable(url: str, timeout: float) -> str | None:
    """Why a TCP connection to url's host (or the proxy for it) cannot be made within timeout,
    or None when it can; name resolution is bounded by the same timeout."""
    import socket
    import threading
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    if not parsed.hostname:
        return None
    address = (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or first_line(error))

    worker = threading.Thread(target=connect, daemon=True, name="depthprior-hub-check")
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def load_config(model: str, revision: str | None = None, task: str = "depth-estimation") -> Any:
    """A checkpoint's config (hub id or local folder); ModelLoadError in one line naming the
    `task` a checkpoint must be for."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise MissingDependencyError("transformers", "all", "the torch backend") from None
    check_hub_access(model, revision)
    cached_model_type(model, revision)  # a config.json on this machine read through files.jsonfile
    try:
        return AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError, KeyError, RecursionError) as error:
        raise ModelLoadError(
            f"cannot load model {model!r}: {first_line(error)} "
            f"(give a {task} hub id, or a local folder saved with save_pretrained; "
            "offline machines need a local folder or a filled Hugging Face cache)"
        ) from None


def load_network(model: str, revision: str | None = None, dtype: Any = None) -> Any:
    """Any supported depth model (architectures.ARCHITECTURES) from a hub id or local folder,
    in eval mode; other checkpoints are refused with one line (ModelLoadError)."""
    from transformers import AutoModelForDepthEstimation

    config = load_config(model, revision)
    architecture_class(getattr(config, "model_type", None), model)
    _quiet_transformers()
    try:
        network = AutoModelForDepthEstimation.from_pretrained(
            model, revision=revision, config=config, dtype=dtype
        )
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - OSError, a truncated safetensors file, ...
        raise ModelLoadError(f"cannot load weights of {model!r}: {first_line(error)}") from None
    if config.model_type == "depth_anything":
        follow_reference_position_resize(network)
    return network.eval()


#: architectures whose transformers image processor needs torchvision: their saved settings
#: (preprocessor_config.json) over these defaults, applied by their architectures entry
SAVED_PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "depth_pro": {"size": {"height": 1536, "width": 1536}, "image_mean": [0.5, 0.5, 0.5],
                  "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255},
    "tipsv2_dpt": {"size": {"height": 448, "width": 448}, "rescale_factor": 1 / 255, "do_normalize": False,
                   "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)},
}


def load_processor(model_type: str, model: str, revision: str | None = None) -> Any:
    """The checkpoint's own image processor (transformers' PIL/numpy implementation), or for
    architectures whose processor needs torchvision, its saved settings."""
    if model_type == "depth_anything":
        return None
    if model_type in SAVED_PROCESSOR_DEFAULTS:
        return _saved_processor_settings(model_type, model, revision)
    try:
        return processor_class(model_type).from_pretrained(model, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the image processor of {model!r}: {first_line(error)}") from None


def processor_class(model_type: str) -> Any:
    """transformers' PIL/numpy image processor class of an architecture."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    found = getattr(transformers, names.get("pil") or "", None)
    if found is None:
        raise ModelLoadError(f"no image processor for {model_type} checkpoints in this transformers")
    return found


def processor_settings(processor: Any) -> dict[str, Any]:
    """What rebuilds a processor (processor_from_settings): its settings as plain JSON values."""
    if isinstance(processor, types.SimpleNamespace):
        return dict(vars(processor))
    return parse_json(processor.to_json_string(), "the image processor settings", check=expect_object)


def processor_from_settings(model_type: str, settings: dict[str, Any]) -> Any:
    if model_type in SAVED_PROCESSOR_DEFAULTS:
        return types.SimpleNamespace(**{**SAVED_PROCESSOR_DEFAULTS[model_type], **settings})
    return processor_class(model_type).from_dict(settings)


def _saved_processor_settings(model_type: str, model: str, revision: str | None) -> Any:
    from transformers.utils import cached_file

    settings = dict(SAVED_PROCESSOR_DEFAULTS[model_type])
    try:
        path = cached_file(model, "preprocessor_config.json", revision=revision,
                           _raise_exceptions_for_missing_entries=False)
    except OSError:
        path = None
    if path:
        saved = read_json(path, check=expect_object, hint=f"the image processor settings of "
                          f"{model!r} are damaged: save the checkpoint again")
        settings.update({key: saved[key] for key in settings if key in saved})
    return types.SimpleNamespace(**settings)


def position_embeddings_module(network: Any) -> Any:
    """The DINOv2 embeddings module whose position-embedding resize we know, or None."""
    embeddings = getattr(getattr(network, "backbone", None), "embeddings", None)
    method = getattr(embeddings, "interpolate_pos_encoding", None)
    if (
        method is None
        or getattr(embeddings, "position_embeddings", None) is None
        or not hasattr(getattr(embeddings, "patch_embeddings", None), "patch_size")
    ):
        return None
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return None
    return embeddings if parameters == ["embeddings", "height", "width"] else None


def follow_reference_position_resize(network: Any) -> bool:
    """Resize DINOv2's position embeddings as Depth Anything's own code does (scale factor
    (grid + 0.1) / 37 per axis, none at a 37x37 grid), on this model instance only.

    transformers resizes to the grid size, which shifts the embeddings of a non-square input
    by up to ~1% of the map range. An unfamiliar embeddings module is left alone (warned).
    """
    embeddings = position_embeddings_module(network)
    if embeddings is None:
        log.warning("unfamiliar DINOv2 embeddings: keeping transformers' position-embedding resize "
                    "(maps may differ from the reference implementation by ~1% of their range)")
        return False
    embeddings.interpolate_pos_encoding = types.MethodType(_reference_interpolate_pos_encoding, embeddings)
    return True


def position_grid(embeddings: Any) -> tuple[int, int, int, int]:
    """(side of the trained square grid, embedding dim, patch height, patch width)."""
    position = embeddings.position_embeddings
    side = int(round((int(position.shape[1]) - 1) ** 0.5))
    patch = embeddings.patch_embeddings.patch_size
    patch_height, patch_width = patch if isinstance(patch, (tuple, list)) else (patch, patch)
    return side, int(position.shape[2]), patch_height, patch_width


def _reference_interpolate_pos_encoding(self: Any, embeddings: Any, height: int, width: int) -> Any:
    torch = import_torch()
    position = self.position_embeddings
    side, dim, patch_height, patch_width = position_grid(self)
    rows, cols = height // patch_height, width // patch_width
    if rows == side and cols == side:
        return position
    grid = position[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2).to(torch.float32)
    # the reference passes scale_factor, so torch maps output to source pixels with 1 / scale
    scale = ((rows + POSITION_OFFSET) / side, (cols + POSITION_OFFSET) / side)
    resized = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    resized = resized.to(position.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((position[:, :1], resized), dim=1)


def _quiet_transformers() -> None:
    """Our own progress bar is the only one: silence the per-shard loading bars."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - very old transformers
        pass


def map_kind(config: Any) -> str:
    """'depth' for metric checkpoints (metres), 'disparity' for relative ones."""
    return "depth" if getattr(config, "depth_estimation_type", "relative") == "metric" else "disparity"


def _compile(torch: Any, model: Any) -> Any:
    """The model through TorchInductor with frozen weights (constants folded, weights prepacked
    for oneDNN on CPU); one static graph per input shape, compiled on its first use."""
    return torch.compile(model, dynamic=False, options={"freezing": True})


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a failed compile raises (no C++ compiler, an unsupported operator, ...)."""
    from torch._dynamo.exc import TorchDynamoException

    errors: tuple[type[BaseException], ...] = (TorchDynamoException,)
    try:
        from torch._inductor.exc import InductorError

        errors += (InductorError,)
    except ImportError:  # older torch
        pass
    return errors


@dataclass(frozen=True)
class TorchOptions:
    """The torch backend's own options."""

    compile: bool = field(default=False, metadata={"help": (
        "compile the model with torch.compile; each new input shape first compiles (about a "
        "minute on a small CPU), then runs faster (V2-Small on 2 CPU cores: 1.05-1.2x). Worth it "
        "for many same-size frames")})
    prompt_sparse: str | None = field(default=None, metadata={"help": (
        "COLMAP sparse model folder (SCENE/sparse/0) of these images: Prompt Depth Anything "
        "checkpoints are prompted with the depth of the SfM points each image sees, and predict "
        "depth in the model's units; required by them, refused by other checkpoints")})


class TorchBackend(LocalBackend):
    name = "torch"
    Options = TorchOptions
    temporal_models = True  # generate runs them by sequences (priors.sequences), not through this class

    @classmethod
    def check_settings(cls, settings: BackendSettings) -> BackendSettings:
        check_device(settings.device)
        settings = super().check_settings(settings)
        check_prompt(settings, cached_model_type(settings.model, settings.revision))
        return settings

    @classmethod
    def check_options(cls, options: TorchOptions) -> TorchOptions:
        return check_sparse_option(options)

    @classmethod
    def check_input_size(cls, settings: BackendSettings) -> None:
        """The rule of the checkpoint's architecture when its config is on this machine
        (Depth Anything's otherwise; a fixed-size model found only at load is refused there)."""
        model_type = cached_model_type(settings.model, settings.revision)
        if model_type is None or model_type == "depth_anything":
            return super().check_input_size(settings)
        architecture_class(model_type, settings.model).check_input_size(settings.input_size)

    @classmethod
    def identity(cls, settings: BackendSettings) -> dict[str, Any]:
        check_model_reference(settings.model)  # before a resume blames the output folder for it
        device = resolve_device(settings.device)
        identity = {**super().identity(settings), "dtype": resolve_dtype(settings.dtype, device),
                    "preprocessing": PREPROCESSING_VERSION}
        if Path(settings.model).is_dir():  # a local folder: its name does not pin its weights
            from ..fingerprint import folder_digest

            identity["weights"] = folder_digest(settings.model)
        elif is_video_model(settings.model):
            identity["temporal"] = TEMPORAL_VERSION
            if Path(settings.model).is_file():  # a local .pth: its content, not its name
                from ..fingerprint import files_digest

                identity["weights"] = files_digest([Path(settings.model).resolve()])
        return {**identity, **prompt_identity(settings.options)}

    def __init__(self, settings: BackendSettings):
        super().__init__(settings)
        if is_video_model(settings.model):
            raise UsageError(f"model {settings.model!r} is a Video Depth Anything checkpoint: it runs "
                             "sequences of frames, which `depthprior generate` does; this command runs "
                             "frames one by one")
        torch = import_torch()
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self._torch_dtype = torch_dtype(self.dtype)
        check_prompt(self.settings, load_config(settings.model, settings.revision).model_type)
        self.prompts = None if self.options.prompt_sparse is None else \
            SparsePrompts.read(self.options.prompt_sparse, self.settings.max_pixels)
        self.model = load_network(settings.model, settings.revision, self._torch_dtype)
        config = self.model.config
        architecture = architecture_class(config.model_type, settings.model)
        architecture.check_input_size(settings.input_size)
        processor = load_processor(config.model_type, settings.model, settings.revision)
        self.architecture: Architecture = architecture(config, processor)
        # NHWC weights for the DPT neck and head convolutions (oneDNN on CPU, tensor cores on
        # GPU): on 2 CPU cores V2-Small steady state 1050-1170 -> 1010-1120 ms, and less time on
        # each new input shape; results equal NCHW to ~1e-6 of the range.
        self.model.to(self.device, memory_format=torch.channels_last)
        self.kind = self.architecture.kind()
        self._pin = self.device.startswith("cuda")
        self._forward = _compile(torch, self.model) if self.options.compile else self.model
        self._compiled_shapes: set[tuple[int, ...]] = set()

    @property
    def reference_path(self) -> bool:
        """Depth Anything: depthprior's reference preprocessing, raw arrays between stages."""
        return self.architecture.model_type == "depth_anything"

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        described = {
            "backend": self.name,
            "model": self.settings.model,
            "revision": getattr(config, "_commit_hash", None) or self.settings.revision,
            "architecture": type(self.model).__name__,
            "depth_estimation_type": getattr(config, "depth_estimation_type", "relative"),
            "model_output": self.kind,
            "device": self.device,
            "dtype": self.dtype,
            "input_size": self.settings.input_size,
            "compiled": self._forward is not self.model,
            "preprocessing": PREPROCESSING,
        }
        described.update(self.architecture.describe(self.settings.input_size))
        if self.prompts is not None:
            described["prompt_sparse"] = str(self.prompts.path)
            described["prompt"] = (f"depth of the SfM points each image sees, nearest per cell, holes filled "
                                   f"from the nearest point; longer side {PROMPT_LONG_SIDE} cells")
        if self.reference_path:
            described["preprocessing"] = PREPROCESSING
        else:
            described["input_size"] = "checkpoint default" if self.settings.input_size == DEFAULT_INPUT_SIZE \
                else self.settings.input_size
        return described

    def prepare(self, image: np.ndarray, name: str) -> Any:
        if self.reference_path:
            return super().prepare(image, name)
        prepared = self.architecture.prepare(image, self.settings.input_size)
        if self.prompts is not None:
            prepared.prompt = network_prompt(self.prompts.depth(name, *image.shape[:2]))
        return prepared

    def batch_key(self, prepared: Any) -> Hashable:
        prompt = getattr(prepared, "prompt", None)
        return prepared.shape, None if prompt is None else prompt.shape

    def infer(self, batch: Sequence[Any]) -> list[Any]:
        torch = import_torch()
        frames = [getattr(prepared, "frame", None) for prepared in batch]
        arrays = [prepared.pixels if isinstance(prepared, Prepared) else prepared for prepared in batch]
        pixels = torch.from_numpy(np.stack(arrays))
        if self._pin:
            pixels = pixels.pin_memory()
        pixels = pixels.to(self.device, non_blocking=True).to(self._torch_dtype)
        inputs = {"pixel_values": pixels}
        if self.prompts is not None:
            prompt = torch.from_numpy(np.stack([prepared.prompt for prepared in batch]))
            inputs["prompt_depth"] = prompt.to(self.device).to(self._torch_dtype)
        with torch.inference_mode():
            output = self._run(inputs)
        predicted = list(output.predicted_depth.float().cpu().numpy())
        if self.reference_path:
            return predicted
        return [Prediction(values, frame, self.architecture.extras(output, index))
                for index, (values, frame) in enumerate(zip(predicted, frames))]

    def _run(self, inputs: dict[str, Any]) -> Any:
        """The model's output (predicted_depth and, for some models, more) for a batch."""
        if self._forward is self.model:
            return self.model(**inputs)
        shape = tuple(inputs["pixel_values"].shape)
        if shape not in self._compiled_shapes:
            log.info("compiling the model for input %s (once per input shape)", "x".join(map(str, shape)))
        try:
            output = self._forward(**inputs)
        except _compile_errors() as error:
            log.warning("torch.compile failed, running the model uncompiled: %s", first_line(error))
            self._forward = self.model
            return self.model(**inputs)
        self._compiled_shapes.add(shape)
        return output


def check_prompt(settings: BackendSettings, model_type: str | None) -> None:
    """--prompt-sparse is given exactly when the checkpoint is Prompt Depth Anything (a
    UsageError otherwise; nothing is said while the model type is unknown)."""
    prompt = settings.options.prompt_sparse if settings.options is not None else None
    if model_type is None or (model_type == "prompt_depth_anything") == (prompt is not None):
        return
    if prompt is None:
        raise UsageError(f"model {settings.model!r} is a Prompt Depth Anything checkpoint, which needs a prompt "
                         "depth per image: pass --prompt-sparse SCENE/sparse/0 (the COLMAP model of these images)")
    raise UsageError(f"--prompt-sparse applies to Prompt Depth Anything checkpoints only; model "
                     f"{settings.model!r} is a {model_type} checkpoint: leave --prompt-sparse out")

