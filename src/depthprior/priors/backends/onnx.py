"""A depth model as an ONNX file (made by `depthprior export-onnx`) through ONNX Runtime.

Preprocessing and the resize back are the torch backend's (backends.preprocess for Depth
Anything; for the other architectures their architectures entry, rebuilt from the config and
processor settings the file records), so both backends see the same network input and differ
only by the runtime's arithmetic.

Providers (--device): auto = TensorRT, then CUDA, when onnxruntime has them, CPU as the
fallback; cuda[:N] = CUDA without TensorRT (no engine builds); tensorrt[:N]; cpu = CPU alone. On CPU the session uses
every core for the model's operators: the pipeline's reader and writer threads (decode,
resize, PNG encode) are short and release the GIL, and the OS shares the cores; inter-op
parallelism stays off (one chain of large operators gains nothing from it).

Graphs exported by depthprior take any height and width (multiples of 14). A graph with a
fixed spatial size (someone's own export, or `export-onnx --static-shape`) runs the images
whose network input has that size and fails the others with a message saying how to
re-export: a session cannot change a fixed graph's shape, and squeezing the image to fit
would give maps that no longer match the torch backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ImageError, MissingDependencyError, ModelLoadError, UsageError, first_line
from ...files.jsonfile import expect_object, parse_json
from .architectures import Architecture, Prediction, Prepared, architecture_class
from .base import BackendSettings
from .local import LocalBackend
from .preprocess import PREPROCESSING, PREPROCESSING_VERSION
from .prompt import check_sparse_option, prompt_identity

log = logging.getLogger(__name__)

#: the graph's input and output as `depthprior export-onnx` names them
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "predicted_depth"
#: Prompt Depth Anything's second input
PROMPT_NAME = "prompt_depth"
#: metadata_props keys depthprior writes start with this
META_PREFIX = "depthprior."
#: --device values (kind before an optional :N)
DEVICES = ("auto", "cpu", "cuda", "tensorrt")

_INFO_CACHE: dict[tuple[str, int, int], "OnnxFileInfo"] = {}
_INFO_LOCK = threading.Lock()


def import_onnx(purpose: str = "the onnx backend") -> tuple[Any, Any]:
    """(onnx, onnxruntime), or a one-line MissingDependencyError naming the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError(error.name or "onnxruntime", "onnx", purpose) from None
    return onnx, onnxruntime


def onnx_model_path(model: str) -> Path:
    """The --model of the onnx backend as an existing .onnx file, or a UsageError saying what to do."""
    path = Path(model).expanduser()
    hint = (f"export one first: depthprior export-onnx --model {_source_hint(model)} -o model.onnx, "
            "then pass --model model.onnx")
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"--backend onnx needs --model to be a .onnx file, got {model!r}; {hint}")
    if not path.exists():
        raise UsageError(f"--model {model}: no such file; {hint}")
    if not path.is_file():
        raise UsageError(f"--model {model} is not a file; {hint}")
    return path


def _source_hint(model: str) -> str:
    return "depth-anything/Depth-Anything-V2-Small-hf" if model.lower().endswith(".onnx") else model


@dataclass(frozen=True)
class OnnxFileInfo:
    """What the backend needs to know about an ONNX file before opening a session."""

    metadata: dict[str, str]  # depthprior.* metadata_props, prefix removed
    sha256: str  # of the .onnx file and its external data files
    data_files: tuple[Path, ...]


def inspect_onnx(path: Path) -> OnnxFileInfo:
    """Metadata and content hash of an ONNX file; cached per (path, size, mtime) of its files."""
    onnx, _ = import_onnx()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _INFO_LOCK:
        cached = _INFO_CACHE.get(key)
    if cached is not None and all(f.exists() for f in cached.data_files):
        return cached
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelLoadError(f"cannot read ONNX file {path}: {first_line(error)}") from None
    metadata = {e.key[len(META_PREFIX):]: e.value for e in proto.metadata_props if e.key.startswith(META_PREFIX)}
    locations = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    del proto
    data_files = tuple(path.parent / location for location in sorted(locations))
    missing = [str(f) for f in data_files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{path.name} keeps its weights in {', '.join(missing)}, which is missing: "
                             "keep the .data file next to the .onnx file")
    digest = hashlib.sha256()
    for file in (path, *data_files):
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    info = OnnxFileInfo(metadata, digest.hexdigest(), data_files)
    with _INFO_LOCK:
        _INFO_CACHE[key] = info
    return info


@dataclass(frozen=True)
class OnnxOptions:
    """The onnx backend's own options."""

    prompt_sparse: str | None = field(default=None, metadata={"help": (
        "COLMAP sparse model folder (SCENE/sparse/0) of these images: Prompt Depth Anything "
        "checkpoints are prompted with the depth of the SfM points each image sees, and predict "
        "depth in the model's units; required by them, refused by other checkpoints")})


def file_model_type(model: str) -> str | None:
    """The architecture an exported file records (None: Depth Anything, or not known yet: a
    missing or unreadable file is reported when the backend opens it)."""
    path = Path(model).expanduser()
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    try:
        return inspect_onnx(path).metadata.get("architecture_type")
    except (ModelLoadError, MissingDependencyError):
        return None


class OnnxBackend(LocalBackend):
    name = "onnx"
    Options = OnnxOptions

    @classmethod
    def check_settings(cls, settings: BackendSettings) -> BackendSettings:
        from .torch_hf import check_prompt

        if settings.device.partition(":")[0] not in DEVICES:
            raise UsageError(f"--backend onnx runs on auto, cpu, cuda[:N] or tensorrt[:N], not {settings.device!r}")
        if settings.revision:
            raise UsageError("--revision applies to hub checkpoints; pass it to `depthprior export-onnx`, "
                             "the .onnx file records its source revision")
        settings = super().check_settings(settings)
        check_prompt(settings, file_model_type(settings.model))
        return settings

    @classmethod
    def check_options(cls, options: OnnxOptions) -> OnnxOptions:
        return check_sparse_option(options)

    @classmethod
    def check_input_size(cls, settings: BackendSettings) -> None:
        """The rule of the architecture the file records (Depth Anything's otherwise)."""
        model_type = file_model_type(settings.model)
        if model_type in (None, "depth_anything"):
            return super().check_input_size(settings)
        architecture_class(model_type, settings.model).check_input_size(settings.input_size)

    @classmethod
    def identity(cls, settings: BackendSettings) -> dict[str, Any]:
        path = onnx_model_path(settings.model)
        info = inspect_onnx(path)
        return {
            "backend": cls.name,
            # what the file holds, not where it lies: moving or copying it keeps the outputs
            "model": info.metadata.get("source_model") or path.name,
            "onnx_sha256": info.sha256,
            "input_size": settings.input_size,
            "preprocessing": PREPROCESSING_VERSION,
            **prompt_identity(settings.options),
        }

    def __init__(self, settings: BackendSettings):
        super().__init__(settings)
        _, ort = import_onnx()
        self.path = onnx_model_path(settings.model)
        info = inspect_onnx(self.path)
        self.metadata, self.sha256 = info.metadata, info.sha256
        self.providers_requested = _providers(ort, settings.device)
        options = _session_options(ort)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers_requested)
        except Exception as error:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelLoadError(f"cannot load ONNX model {self.path}: {first_line(error)}") from None
        self.providers = self.session.get_providers()
        if settings.device.startswith(("cuda", "tensorrt")) and self.providers == ["CPUExecutionProvider"]:
            raise UsageError(f"--device {settings.device}: onnxruntime could not start its GPU provider "
                             "(CUDA/cuDNN libraries missing or mismatched?); use --device cpu, or install the "
                             "onnxruntime-gpu build matching your CUDA")
        inputs = self.session.get_inputs()
        self.input_name = INPUT_NAME if any(i.name == INPUT_NAME for i in inputs) else inputs[0].name
        graph_input = next(i for i in inputs if i.name == self.input_name)
        self.input_dtype = np.float16 if "float16" in graph_input.type else np.float32
        self.fixed_batch, self.fixed_hw = _fixed_dims(graph_input.shape)
        self.output_name = self.session.get_outputs()[0].name
        self.dtype = self.metadata.get("dtype") or ("fp16" if self.input_dtype == np.float16 else "fp32")
        if settings.dtype not in ("auto", self.dtype):
            raise UsageError(
                f"{self.path.name} computes in {self.dtype} (the onnx backend runs a graph in the precision "
                f"it was exported in); use --dtype auto, or --backend torch for --dtype {settings.dtype}"
            )
        kind = self.metadata.get("model_output")
        if kind not in ("disparity", "depth"):
            log.warning("%s has no depthprior metadata: assuming it outputs relative disparity "
                        "(export it with `depthprior export-onnx` to record its convention)", self.path.name)
            kind = "disparity"
        self.architecture = file_architecture(self.metadata, self.path)
        self.kind = kind if self.architecture is None else self.architecture.kind()
        self.outputs = self.metadata.get("outputs", self.output_name).split(",")
        self.prompts = None
        if self.options.prompt_sparse is not None:
            from .prompt import SparsePrompts

            self.prompts = SparsePrompts.read(self.options.prompt_sparse, settings.max_pixels)
        exported = self.metadata.get("input_size")
        if exported and exported != str(settings.input_size) and self.fixed_hw is None and self.architecture is None:
            log.info("%s was exported and checked at input size %s; running at %d (the graph takes any size)",
                     self.path.name, exported, settings.input_size)

    def describe(self) -> dict[str, Any]:
        described = self._describe_file()
        if self.architecture is not None:
            described.update(self.architecture.describe(self.settings.input_size))
        if self.prompts is not None:
            described["prompt_sparse"] = str(self.prompts.path)
        return described

    def _describe_file(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "backend": self.name,
            "model": meta.get("source_model") or str(self.settings.model),
            "revision": meta.get("source_revision") or None,
            "onnx_file": str(self.path.resolve()),
            "onnx_sha256": self.sha256,
            "onnx_exporter": meta.get("exporter"),
            "architecture": meta.get("architecture"),
            "depth_estimation_type": meta.get("depth_estimation_type"),
            "model_output": self.kind,
            "device": _device_name(self.providers),
            "providers": self.providers,
            "dtype": self.dtype,
            "input_size": self.settings.input_size,
            "exported_input_size": int(meta["input_size"]) if meta.get("input_size") else None,
            "graph_input": ("dynamic" if self.fixed_hw is None else
                            f"fixed {self.fixed_hw[0]}x{self.fixed_hw[1]}"),
            "preprocessing": PREPROCESSING,
        }

    def prepare(self, image: np.ndarray, name: str) -> Any:
        if self.architecture is None:
            return super().prepare(image, name)
        prepared = self.architecture.prepare(image, self.settings.input_size)
        if self.prompts is not None:
            from .prompt import network_prompt

            prepared.prompt = network_prompt(self.prompts.depth(name, *image.shape[:2]))
        return prepared

    def batch_key(self, prepared: Any) -> Any:
        prompt = getattr(prepared, "prompt", None)
        return prepared.shape, None if prompt is None else prompt.shape

    def infer(self, batch: Sequence[Any]) -> list[Any]:
        arrays = [prepared.pixels if isinstance(prepared, Prepared) else prepared for prepared in batch]
        if self.fixed_hw is not None and arrays[0].shape[1:] != self.fixed_hw:
            height, width = arrays[0].shape[1:]
            raise ImageError(
                f"{self.path.name} takes only {self.fixed_hw[0]}x{self.fixed_hw[1]} network inputs "
                f"(fixed-shape graph); this image needs {height}x{width} at --input-size "
                f"{self.settings.input_size}: re-export with `depthprior export-onnx` (dynamic shapes)"
            )
        feeds = {self.input_name: np.stack(arrays).astype(self.input_dtype, copy=False)}
        if self.prompts is not None:
            feeds[PROMPT_NAME] = np.stack([prepared.prompt for prepared in batch]).astype(self.input_dtype, copy=False)
        if self.fixed_batch is not None and self.fixed_batch != len(batch):
            if self.fixed_batch != 1:
                raise ImageError(f"{self.path.name} takes batches of exactly {self.fixed_batch}; "
                                 "re-export with `depthprior export-onnx`")
            runs = [self._run({name: array[i:i + 1] for name, array in feeds.items()}) for i in range(len(batch))]
            outputs = [np.concatenate(parts) for parts in zip(*runs)]
        else:
            outputs = self._run(feeds)
        if self.architecture is None:
            return list(outputs[0])
        named = types.SimpleNamespace(**dict(zip(self.outputs, outputs)))
        return [Prediction(values, getattr(prepared, "frame", None), self.architecture.extras(named, index))
                for index, (values, prepared) in enumerate(zip(outputs[0], batch))]

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The map (N x H x W float32) and the file's other outputs, in self.outputs order."""
        names = [self.output_name] + [name for name in self.outputs if name != self.output_name]
        predicted, *others = self.session.run(names, feeds)
        if predicted.ndim == 4 and predicted.shape[1] == 1:  # N x 1 x H x W from other exporters
            predicted = predicted[:, 0]
        if predicted.ndim != 3:
            raise ModelLoadError(f"{self.path.name} returned shape {predicted.shape}; expected N x H x W")
        return [predicted.astype(np.float32, copy=False), *others]

    def close(self) -> None:
        self.session = None


def file_architecture(metadata: dict[str, str], path: Path) -> Architecture | None:
    """The architecture entry a file exported from a non-Depth-Anything checkpoint records,
    rebuilt from its config and processor settings (needs transformers); None for Depth Anything."""
    model_type = metadata.get("architecture_type")
    if model_type in (None, "depth_anything"):
        return None
    entry = architecture_class(model_type, str(path))
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        raise MissingDependencyError("transformers", "all", f"ONNX files of {model_type} checkpoints") from None
    from .torch_hf import processor_from_settings

    try:
        config = CONFIG_MAPPING[model_type].from_dict(_recorded_json(metadata, "config", path))
        processor = processor_from_settings(model_type, _recorded_json(metadata, "processor", path))
    except (KeyError, ValueError, TypeError, AttributeError) as error:  # metadata written by someone else
        raise ModelLoadError(f"{path.name} records a {model_type} model but not its config and processor "
                             f"({first_line(error)}): re-export it with `depthprior export-onnx`") from None
    return entry(config, processor)


def _recorded_json(metadata: dict[str, str], key: str, path: Path) -> dict[str, Any]:
    """A JSON object the file's metadata records (files.jsonfile: nesting limit, shape)."""
    return parse_json(metadata[key], f"the {key} recorded in {path}", check=expect_object,
                      hint="re-export it with `depthprior export-onnx`")


def _providers(ort: Any, device: str) -> list[Any]:
    """Execution providers for --device: auto = TensorRT, CUDA, CPU (those installed); cuda[:N] =
    CUDA then CPU (no TensorRT engine builds); tensorrt[:N] = TensorRT, CUDA, CPU; cpu = CPU."""
    available = set(ort.get_available_providers())
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    options = {"device_id": int(index)} if index.isdigit() else {}
    gpu = []
    if "TensorrtExecutionProvider" in available and kind in ("auto", "tensorrt"):
        cache = Path(os.environ.get("DEPTHPRIOR_TRT_CACHE", Path.home() / ".cache" / "depthprior" / "tensorrt"))
        gpu.append(("TensorrtExecutionProvider", {
            **options, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        }))
    if kind == "tensorrt" and not gpu:
        raise UsageError("--device tensorrt: this onnxruntime has no TensorRT provider "
                         "(onnxruntime-gpu built with TensorRT, and TensorRT libraries); use --device cuda or cpu")
    if "CUDAExecutionProvider" in available:
        gpu.append(("CUDAExecutionProvider", options))
    if kind == "cuda" and not gpu:
        raise UsageError("--device cuda: this onnxruntime has no CUDA provider "
                         "(pip install onnxruntime-gpu instead of onnxruntime), or use --device cpu")
    return [*gpu, "CPUExecutionProvider"]


def _session_options(ort: Any) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = _physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # denormal floats (e.g. tiny softmax probabilities of peaky attention) are slow on x86;
    # flushing them to zero changes values below 1e-38 only
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def _physical_cores() -> int:
    """Physical cores this process may run on (affinity mask; hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _fixed_dims(shape: list[Any]) -> tuple[int | None, tuple[int, int] | None]:
    """(fixed batch or None, fixed (height, width) or None) of an N x 3 x H x W input."""
    if len(shape) != 4:
        return None, None
    batch = shape[0] if isinstance(shape[0], int) else None
    height, width = shape[2], shape[3]
    fixed = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    return batch, fixed


def _device_name(providers: list[str]) -> str:
    if providers and providers[0] == "TensorrtExecutionProvider":
        return "cuda (tensorrt)"
    if providers and providers[0] == "CUDAExecutionProvider":
        return "cuda"
    return "cpu"
