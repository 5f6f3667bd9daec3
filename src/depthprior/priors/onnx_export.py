"""Depth checkpoint -> ONNX file for the onnx backend (`depthprior export-onnx`): the generic
exporter (trace, metadata, parity check, putting the file in place); Depth Anything's graph parts
in onnx_depth_anything, the other architectures' in onnx_architectures.

A Depth Anything graph takes `pixel_values` (batch x 3 x H x W, float32, ImageNet-normalised, H and W
multiples of 14) and returns `predicted_depth` (batch x H x W). Batch, height and width are
dynamic axes, so one file serves every aspect ratio (onnx_depth_anything keeps the depth head
from fixing the example's size). The export checks the written file against the PyTorch model
on several aspect ratios before it replaces `output`.

What the file came from (source model and revision, input size, value convention, ...) is
stored in the ONNX metadata_props under `depthprior.*` keys; the backend reads its value
convention from there and the manifest records the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from .backends.onnx import INPUT_NAME, META_PREFIX, OUTPUT_NAME, import_onnx
from .backends.architectures import architecture_class
from .backends.base import MAX_INPUT_SIZE
from .backends.preprocess import PATCH
from .onnx_architectures import Signature, check_exportable
from ..errors import DepthpriorError, MissingDependencyError, UsageError, WriteError, first_line
from ..files.outputs import TMP_MARK, check_writable
from .onnx_depth_anything import (_check_patch_sizes, _dynamic_head, _example_input, _graph_module,
    _matmul_position_embedding, _no_attention_mask, _verify_shapes)

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
#: max |onnx - torch| / range of the torch map that the check accepts
TOLERANCE = 1e-3
#: weights above this go to an external data file (protobuf cannot hold more than 2 GiB)
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ExportError(DepthpriorError):
    """The export failed, or the exported graph does not reproduce the PyTorch model."""


@dataclass
class ParityCheck:
    """One verification run: the same random input through torch and through the ONNX file."""

    batch: int
    height: int
    width: int
    max_abs: float
    rel: float  # max_abs / range of the torch output
    shape_ok: bool
    output: str = OUTPUT_NAME

    def format(self) -> str:
        where = f"{self.height}x{self.width}" + ("" if self.output == OUTPUT_NAME else f" {self.output}")
        if not self.shape_ok:
            return f"{where}: WRONG OUTPUT SHAPE"
        return f"{where}: {self.rel:.1e}"


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    seconds: float
    exporter: str
    opset: int
    dtype: str
    dynamic: bool
    metadata: dict[str, str]
    external_data: Path | None = None
    checks: list[ParityCheck] = field(default_factory=list)
    tolerance: float = TOLERANCE
    verify_seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.shape_ok and c.rel <= self.tolerance for c in self.checks)

    @property
    def max_rel_error(self) -> float | None:
        return max((c.rel for c in self.checks), default=None)

    def format(self) -> str:
        size = self.size_bytes + (self.external_data.stat().st_size if self.external_data else 0)
        shapes = "dynamic batch, height and width" if self.dynamic else (
            f"fixed {self.metadata.get(META_PREFIX + 'static_shape')} "
            + ("(batch dynamic)" if self.metadata.get(META_PREFIX + "dynamic_axes") else "(batch 1)"))
        lines = [
            f"wrote {self.path} ({size / 2**20:.1f} MiB) in {self.seconds:.1f} s",
            f"  source: {self.metadata.get(META_PREFIX + 'source_model')}"
            + (f" @ {self.metadata[META_PREFIX + 'source_revision']}"
               if self.metadata.get(META_PREFIX + "source_revision") else ""),
            f"  graph: {self.exporter} exporter, opset {self.opset}, {self.dtype}, {shapes}; "
            f"output {self.metadata.get(META_PREFIX + 'model_output')}",
        ]
        if self.external_data:
            lines.append(f"  weights: {self.external_data} (external data; keep it next to the .onnx)")
        if self.checks:
            status = "OK" if self.verified else "FAILED"
            lines.append(
                f"  verified against PyTorch (max |onnx - torch| / map range, tolerance "
                f"{self.tolerance:.0e}): {', '.join(c.format() for c in self.checks)} -> {status}"
                f" ({self.verify_seconds:.1f} s)"
            )
        else:
            lines.append("  not verified (--no-verify)")
        return "\n".join(lines)


def parse_shape(text: str) -> tuple[int, int]:
    """'518x784' -> (518, 784): height x width."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"shape {text!r} is not HEIGHTxWIDTH, e.g. 518x784") from None
    return height, width


def export_onnx(
    model: str,
    output: str | os.PathLike[str],
    *,
    input_size: int = 518,
    revision: str | None = None,
    opset: int | None = None,
    exporter: str = "dynamo",
    static_shape: tuple[int, int] | None = None,
    verify: bool = True,
    external_data: bool | None = None,
) -> ExportResult:
    """Export a depth checkpoint (hub id or local folder) to an ONNX file.

    Depth Anything graphs take any multiple of 14 unless static_shape is given; the other
    architectures (onnx_architectures) take what their image processor makes.
    input_size: the size the graph is checked at and the default the file records.
    exporter: "dynamo" (torch.export based, the default) or "torchscript" (the older tracer,
        faster to run, deprecated in recent PyTorch).
    static_shape: (height, width) to fix a Depth Anything graph's spatial size (batch stays
        dynamic); inputs of any other size are refused by the backend.
    verify: run the written graph and the PyTorch model on the same inputs at three aspect
        ratios; the file is only put in place if they agree.
    external_data: store weights in `<output>.data`; default only above ~1.8 GB.
    """
    onnx, _ = import_onnx("depthprior export-onnx")
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter builds graphs with it
        except ImportError:
            raise MissingDependencyError("onnxscript", "onnx", "export-onnx (dynamo exporter)") from None
    from .backends.torch_hf import import_torch, load_config
    from .backends.video_checkpoints import is_video_model

    torch = import_torch()
    output = Path(output)
    _check_target(output, exporter)
    _check_sizes(input_size, static_shape)
    opset = opset or DEFAULT_OPSET[exporter]
    if exporter == "dynamo" and opset < 18:
        raise UsageError("the dynamo exporter writes opset 18 or newer; use --exporter torchscript for older opsets")
    if is_video_model(model):
        raise UsageError(f"model {model!r} is a Video Depth Anything checkpoint: a temporal model that "
                         "runs windows of frames with the torch backend (`depthprior generate`); "
                         "export-onnx exports frame-by-frame models")
    config = load_config(model, revision)
    model_type = getattr(config, "model_type", None)
    architecture_class(model_type, model)
    if model_type == "depth_anything":
        _check_patch_sizes(int(getattr(config, "patch_size", PATCH)), input_size, static_shape)
    else:
        check_exportable(model_type, static_shape)
        architecture_class(model_type, model).check_input_size(input_size)

    start = time.perf_counter()
    if model_type == "depth_anything":
        job = _depth_anything_job(torch, model, revision, input_size, exporter, opset, static_shape)
    else:
        job = _architecture_job(torch, model, revision, input_size, exporter, opset)
    return _write(torch, onnx, job, output, exporter, opset, verify, external_data, start)


def _check_sizes(input_size: int, static_shape: tuple[int, int] | None) -> None:
    """The sizes generate would take, refused before the model loads (a 14000 input asked for
    470 GB at the first example input)."""
    for side in (input_size, *(static_shape or ())):
        if side > MAX_INPUT_SIZE:
            raise UsageError(f"a network input side of {side} is above {MAX_INPUT_SIZE}: choose a "
                             "smaller --input-size or --static-shape, e.g. 518")


def _check_target(output: Path, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name such as {output / 'model.onnx'}")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"output {output} should end in .onnx")
    check_writable(output.parent)  # before the model loads: minutes of export for nothing
    longest = len((output.name + ".data").encode())
    try:
        name_max = os.pathconf(output.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest > name_max:
        raise UsageError(f"output name {output.name!r} is too long for this file system "
                         f"({longest} bytes with .data, at most {name_max}); shorten it")


@dataclass
class _GraphJob:
    """One export: the module to trace, its example inputs, its signature, the patches the
    trace runs under, the parity check (path -> checks) and the metadata."""

    wrapper: Any
    examples: tuple[Any, ...]
    signature: Signature
    patches: Callable[[], list[Any]]
    check: Callable[[Path], list[ParityCheck]]
    metadata: dict[str, str]
    title: str


def _depth_anything_job(torch: Any, model: str, revision: str | None, input_size: int, exporter: str,
                        opset: int, static_shape: tuple[int, int] | None) -> _GraphJob:
    from .backends.torch_hf import load_depth_model, map_kind

    network = load_depth_model(model, revision, torch.float32)
    patch = int(getattr(network.config, "patch_size", PATCH))
    _use_eager_attention(network)
    axes = {0: ("batch", 1)} if static_shape else {0: ("batch", 1), 2: ("patches_h", patch), 3: ("patches_w", patch)}
    out_axes = {0: "batch"} if static_shape else {0: "batch", 1: "height", 2: "width"}
    return _GraphJob(
        wrapper=_graph_module(network),
        examples=(_example_input(torch, input_size, patch, static_shape),),
        signature=Signature([INPUT_NAME], [OUTPUT_NAME], [axes], [out_axes]),
        patches=lambda: [_dynamic_head(network), _matmul_position_embedding(network), _no_attention_mask()],
        check=lambda staged: verify_parity(network, staged, _verify_shapes(input_size, patch, static_shape)),
        metadata=_metadata(model, revision, network, input_size, patch, exporter, opset, static_shape,
                           map_kind(network.config)),
        title="Depth Anything",
    )


def _architecture_job(torch: Any, model: str, revision: str | None, input_size: int, exporter: str,
                      opset: int) -> _GraphJob:
    from . import onnx_architectures as graphs
    from .backends.torch_hf import load_network, load_processor, processor_settings

    network = load_network(model, revision, torch.float32)
    model_type = network.config.model_type
    processor = load_processor(model_type, model, revision)
    architecture = architecture_class(model_type, model)(network.config, processor)
    _use_eager_attention(network)
    signature = graphs.signature(architecture)
    metadata = _metadata(model, revision, network, input_size, 0, exporter, opset, None, architecture.kind())
    fixed = not signature.axes[0]
    metadata.update({
        META_PREFIX + key: value for key, value in {
            **graphs.metadata(architecture, processor_settings(processor), signature.outputs),
            "patch_size": "", "dynamic_axes": "" if fixed else "batch,height,width",
            "static_shape": "x".join(map(str, graphs.example_inputs(architecture, input_size)[0].shape[2:]))
            if fixed else "",
            "input": ", ".join(signature.inputs) + f": as {type(processor).__name__} makes them",
            "output": ", ".join(signature.outputs) + f": {architecture.convention()}",
        }.items()})
    batches = graphs.check_inputs(architecture, input_size)
    return _GraphJob(
        wrapper=graphs.graph_module(network, signature.outputs),
        examples=tuple(torch.from_numpy(array) for array in graphs.example_inputs(architecture, input_size)),
        signature=signature,
        patches=lambda: [_dynamic_head(network)] if model_type == "prompt_depth_anything" else [],
        check=lambda staged: compare_outputs(network, staged, batches, signature.outputs),
        metadata=metadata,
        title=type(network).__name__,
    )


def _write(torch: Any, onnx: Any, job: _GraphJob, output: Path, exporter: str, opset: int, verify: bool,
           external_data: bool | None, start: float) -> ExportResult:
    """Export, check and put the file in place (only when it passed the check)."""
    metadata = job.metadata
    scratch = output.parent / f"{TMP_MARK}{os.getpid()}-export"  # short: any output name fits
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.mkdir(parents=True)
    except OSError as error:
        raise WriteError(output, error) from None
    try:
        with contextlib.ExitStack() as patches:
            for patch in job.patches():
                patches.enter_context(patch)
            proto = _export_graph(torch, onnx, job.wrapper, job.examples, job.signature, exporter, opset, scratch)
        proto.doc_string = (f"{job.title} ({metadata[META_PREFIX + 'source_model']}) exported by depthprior "
                            f"{__version__}: {', '.join(job.signature.inputs)} -> {', '.join(job.signature.outputs)}")
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        external = external_data if external_data is not None else _weight_bytes(proto) > EXTERNAL_DATA_THRESHOLD
        staged = scratch / output.name
        data_name = output.name + ".data"
        onnx.save_model(proto, str(staged), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        del proto
        exported_s = time.perf_counter() - start
        checks: list[ParityCheck] = []
        verify_s = 0.0
        if verify:
            verify_start = time.perf_counter()
            checks = _checked(job, staged, output, exporter)
            verify_s = time.perf_counter() - verify_start
        data_path = output.parent / data_name
        if external:
            os.replace(scratch / data_name, data_path)
        os.replace(staged, output)
    except WriteError:
        raise
    except OSError as error:  # the disk filled or the folder went read-only during the export
        raise WriteError(output, error) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(
        path=output, size_bytes=output.stat().st_size, seconds=exported_s, exporter=exporter,
        opset=opset, dtype="fp32", dynamic=bool(job.signature.axes[0].keys() - {0}),
        metadata=metadata, external_data=data_path if external else None, checks=checks,
        tolerance=TOLERANCE, verify_seconds=verify_s,
    )


def _checked(job: _GraphJob, staged: Path, output: Path, exporter: str) -> list[ParityCheck]:
    """The parity checks of the staged file, or an ExportError in one line."""
    try:
        checks = job.check(staged)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's own exception types
        raise ExportError(f"the exported graph does not run in ONNX Runtime ({first_line(error)}); "
                          f"{output} was not written") from error
    bad = [c for c in checks if not c.shape_ok or c.rel > TOLERANCE]
    if bad:
        raise ExportError(
            f"the exported graph does not match the PyTorch model ({', '.join(c.format() for c in bad)}; "
            f"tolerance {TOLERANCE:.0e} of the map range); {output} was not written. "
            + ("Try --exporter torchscript." if exporter == "dynamo" else "Try --exporter dynamo.")
        )
    return checks


def verify_parity(network: Any, path: Path, shapes: list[tuple[int, int, int]]) -> list[ParityCheck]:
    """Run `path` (ONNX Runtime, CPU) and `network` (PyTorch) on the same random inputs of each shape."""
    generator = np.random.default_rng(0)
    batches = [{INPUT_NAME: generator.standard_normal((batch, 3, height, width), dtype=np.float32)}
               for batch, height, width in shapes]
    return compare_outputs(network, path, batches, [OUTPUT_NAME])


def compare_outputs(network: Any, path: Path, batches: list[dict[str, np.ndarray]],
                    outputs: list[str]) -> list[ParityCheck]:
    """Each batch of named inputs through `path` (ONNX Runtime, CPU) and `network` (PyTorch):
    one ParityCheck per output and batch."""
    _, ort = import_onnx()
    from .backends.torch_hf import import_torch

    torch = import_torch()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    checks = []
    for batch in batches:
        with torch.inference_mode():
            result = network(**{name: torch.from_numpy(array) for name, array in batch.items()})
        got = session.run(outputs, batch)
        count, _, height, width = batch[INPUT_NAME].shape
        for name, values in zip(outputs, got):
            expected = getattr(result, name).float().numpy()
            checks.append(_parity(expected, values.astype(np.float32), (count, height, width), name))
    return checks


def _parity(expected: np.ndarray, got: np.ndarray, shape: tuple[int, int, int], output: str) -> ParityCheck:
    if got.shape != expected.shape:
        return ParityCheck(*shape, float("inf"), float("inf"), False, output)
    max_abs = float(np.abs(got - expected).max())
    # the map's range; a per-image scalar (Depth Pro's field of view) has none: its magnitude
    scale = float(expected.max() - expected.min()) if expected[0].size > 1 else float(np.abs(expected).max())
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return ParityCheck(*shape, max_abs, rel, True, output)


def _use_eager_attention(network: Any) -> None:
    """Plain matmul-softmax attention: the dynamo exporter turns SDPA into extra NaN guards
    (IsNaN/Where over every attention matrix) that cost time in ONNX Runtime. Same values."""
    try:
        network.set_attn_implementation("eager")
    except (AttributeError, ValueError, TypeError) as error:  # older transformers
        log.debug("keeping the default attention for export: %s", error)


class _quiet_exporters:
    """torch.onnx, onnxscript and onnx_ir log every rewrite at INFO and print progress lines;
    the CLI runs at INFO, so hush them (warnings too) for the export's duration."""

    LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo",
               "onnxscript", "onnx_ir")

    def __enter__(self) -> None:
        import contextlib
        import io
        import warnings

        self._levels = {name: logging.getLogger(name).level for name in self.LOGGERS}
        for name in self.LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._stdout.__exit__(*exc)
        self._warnings.__exit__(*exc)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)


def _export(torch: Any, onnx: Any, wrapper: Any, example: Any, exporter: str, opset: int,
            static_shape: tuple[int, int] | None, scratch: Path, patch: int = PATCH) -> Any:
    """A Depth Anything-shaped graph: pixel_values -> predicted_depth, dynamic unless static_shape."""
    axes = {0: ("batch", 1)} if static_shape else {0: ("batch", 1), 2: ("patches_h", patch), 3: ("patches_w", patch)}
    out_axes = {0: "batch"} if static_shape else {0: "batch", 1: "height", 2: "width"}
    signature = Signature([INPUT_NAME], [OUTPUT_NAME], [axes], [out_axes])
    return _export_graph(torch, onnx, wrapper, (example,), signature, exporter, opset, scratch)


def _export_graph(torch: Any, onnx: Any, wrapper: Any, examples: tuple[Any, ...], signature: Signature,
                  exporter: str, opset: int, scratch: Path) -> Any:
    try:
        with _quiet_exporters():
            if exporter == "dynamo":
                program = torch.onnx.export(
                    wrapper, examples, dynamo=True, opset_version=opset,
                    input_names=signature.inputs, output_names=signature.outputs,
                    dynamic_shapes=_dynamo_shapes(torch, signature), optimize=True, verbose=False,
                )
                return program.model_proto
            path = scratch / "torchscript.onnx"
            named = {name: {axis: dim for axis, (dim, _) in axes.items()}
                     for name, axes in zip(signature.inputs, signature.axes)}
            named.update(zip(signature.outputs, signature.output_axes))
            torch.onnx.export(
                wrapper, examples, str(path), dynamo=False, opset_version=opset,
                input_names=signature.inputs, output_names=signature.outputs,
                dynamic_axes={name: axes for name, axes in named.items() if axes}, do_constant_folding=True,
            )
            return onnx.load(str(path))
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - torch.onnx raises many types
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"torch.onnx ({exporter} exporter) failed: {first_line(error)}; "
                          f"try --exporter {other}") from error


def _dynamo_shapes(torch: Any, signature: Signature) -> tuple[Any, ...]:
    """torch.export dimensions per input (shared by name: inputs of one batch share its Dim)."""
    dims: dict[str, Any] = {}
    shapes = []
    for axes in signature.axes:
        shape = {}
        for axis, (name, multiple) in axes.items():
            dim = dims.setdefault(name, torch.export.Dim(name, min=1, max=1024 if multiple > 1 or name == "batch" else 8192))
            shape[axis] = dim * multiple if multiple > 1 else dim
        shapes.append(shape or None)
    return tuple(shapes) if any(shapes) else None


def _weight_bytes(proto: Any) -> int:
    return sum(len(t.raw_data) or 4 * len(t.float_data) for t in proto.graph.initializer)


def _metadata(model: str, revision: str | None, network: Any, input_size: int, patch: int,
              exporter: str, opset: int, static_shape: tuple[int, int] | None,
              kind: str) -> dict[str, str]:
    import torch

    config = network.config
    local = Path(model)
    source = str(local.resolve()) if local.is_dir() else model
    values = {
        "format": "1",
        "version": __version__,
        "source_model": source,
        "source_revision": getattr(config, "_commit_hash", None) or revision or "",
        "architecture": type(network).__name__,
        "depth_estimation_type": getattr(config, "depth_estimation_type", "relative") or "relative",
        "model_output": kind,
        "max_depth": str(getattr(config, "max_depth", "") or ""),
        "input_size": str(input_size),
        "patch_size": str(patch),
        "dtype": "fp32",
        "dynamic_axes": "batch" if static_shape else "batch,height,width",
        "static_shape": f"{static_shape[0]}x{static_shape[1]}" if static_shape else "",
        "input": f"{INPUT_NAME}: Nx3xHxW float32, RGB/255 then ImageNet mean/std, H and W multiples of {patch}",
        "output": f"{OUTPUT_NAME}: NxHxW float32, {kind}",
        "exporter": f"torch {torch.__version__} {exporter}, opset {opset}",
    }
    return {META_PREFIX + key: value for key, value in values.items()}
