"""Depth Anything checkpoint -> ONNX file for the onnx backend (`depthprior export-onnx`).

The graph takes `pixel_values` (batch x 3 x H x W, float32, ImageNet-normalised, H and W
multiples of 14) and returns `predicted_depth` (batch x H x W). Batch, height and width are
dynamic axes, so one file serves every aspect ratio: transformers' depth head turns the
output size into Python ints (`int(patch_height * patch_size)`), which bakes the example
shape into a traced graph (a 518x924 input would come back 518x518). The export runs the head
through an equivalent forward without that cast, and then checks the written file against the
PyTorch model on several aspect ratios before it replaces `output`.

Two more changes during export make the graph faster in ONNX Runtime without changing values
(the same check covers them): DINOv2's bicubic position-embedding resize (the reference rule,
as in the torch backend) becomes two small matmuls (ORT's cubic Resize spent ~10% of a CPU
forward on it), and the all-zero attention mask that transformers materialises under
torch.export is dropped.

What the file came from (source model and revision, input size, value convention, ...) is
stored in the ONNX metadata_props under `depthprior.*` keys; the backend reads its value
convention from there and the manifest records the rest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .backends.onnx import INPUT_NAME, META_PREFIX, OUTPUT_NAME, import_onnx
from .backends.preprocess import PATCH
from ..errors import DepthpriorError, MissingDependencyError, UsageError, first_line

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

    def format(self) -> str:
        if not self.shape_ok:
            return f"{self.height}x{self.width}: WRONG OUTPUT SHAPE"
        return f"{self.height}x{self.width}: {self.rel:.1e}"


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
            f"fixed {self.metadata.get(META_PREFIX + 'static_shape')} (batch dynamic)")
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
    """Export a Depth Anything checkpoint (hub id or local folder) to an ONNX file.

    input_size: the size the graph is checked at and the default the file records; the graph
        itself takes any multiple of 14 unless static_shape is given.
    exporter: "dynamo" (torch.export based, the default) or "torchscript" (the older tracer,
        faster to run, deprecated in recent PyTorch).
    static_shape: (height, width) to fix the spatial size (batch stays dynamic); inputs of any
        other size are refused by the backend.
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
    from .backends.torch_hf import import_torch, load_depth_model, map_kind

    torch = import_torch()
    output = Path(output)
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name such as {output / 'model.onnx'}")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"output {output} should end in .onnx")
    opset = opset or DEFAULT_OPSET[exporter]
    if exporter == "dynamo" and opset < 18:
        raise UsageError("the dynamo exporter writes opset 18 or newer; use --exporter torchscript for older opsets")

    start = time.perf_counter()
    network = load_depth_model(model, revision, torch.float32)
    config = network.config
    patch = int(getattr(config, "patch_size", PATCH))
    if input_size < patch or input_size % patch:
        raise UsageError(f"--input-size must be a positive multiple of {patch}, e.g. 518")
    if static_shape is not None and any(side < patch or side % patch for side in static_shape):
        raise UsageError(f"--static-shape sides must be multiples of {patch}, e.g. 518x784")
    _use_eager_attention(network)
    metadata = _metadata(model, revision, network, input_size, patch, exporter, opset,
                         static_shape, map_kind(config))

    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.parent / f".{output.name}.depthprior-tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        example = _example_input(torch, input_size, patch, static_shape)
        wrapper = _graph_module(network)
        with _dynamic_head(network), _matmul_position_embedding(network), _no_attention_mask():
            proto = _export(torch, onnx, wrapper, example, exporter, opset, static_shape, scratch, patch)
        proto.doc_string = (f"Depth Anything ({metadata[META_PREFIX + 'source_model']}) exported by "
                            f"depthprior {__version__}: pixel_values NCHW float32 -> predicted_depth NHW")
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
        tolerance = TOLERANCE
        if verify:
            verify_start = time.perf_counter()
            try:
                checks = verify_parity(network, staged, _verify_shapes(input_size, patch, static_shape))
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as error:  # noqa: BLE001 - ONNX Runtime's own exception types
                raise ExportError(f"the exported graph does not run in ONNX Runtime ({first_line(error)}); "
                                  f"{output} was not written") from error
            verify_s = time.perf_counter() - verify_start
            bad = [c for c in checks if not c.shape_ok or c.rel > tolerance]
            if bad:
                raise ExportError(
                    f"the exported graph does not match the PyTorch model ({', '.join(c.format() for c in bad)}; "
                    f"tolerance {tolerance:.0e} of the map range); {output} was not written. "
                    + ("Try --exporter torchscript." if exporter == "dynamo" else "Try --exporter dynamo.")
                )
        data_path = output.parent / data_name
        if external:
            os.replace(scratch / data_name, data_path)
        os.replace(staged, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(
        path=output, size_bytes=output.stat().st_size, seconds=exported_s, exporter=exporter,
        opset=opset, dtype="fp32", dynamic=static_shape is None,
        metadata=metadata, external_data=data_path if external else None, checks=checks,
        tolerance=tolerance, verify_seconds=verify_s,
    )


def verify_parity(network: Any, path: Path, shapes: list[tuple[int, int, int]]) -> list[ParityCheck]:
    """Run `path` (ONNX Runtime, CPU) and `network` (PyTorch) on the same inputs of each shape."""
    _, ort = import_onnx()
    from .backends.torch_hf import import_torch

    torch = import_torch()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(0)
    checks = []
    for batch, height, width in shapes:
        pixels = generator.standard_normal((batch, 3, height, width), dtype=np.float32)
        with torch.inference_mode():
            expected = network(pixel_values=torch.from_numpy(pixels)).predicted_depth.float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0].astype(np.float32)
        if got.shape != expected.shape:
            checks.append(ParityCheck(batch, height, width, float("inf"), float("inf"), False))
            continue
        max_abs = float(np.abs(got - expected).max())
        value_range = float(expected.max() - expected.min())
        rel = max_abs / value_range if value_range > 0 else (0.0 if max_abs == 0 else float("inf"))
        checks.append(ParityCheck(batch, height, width, max_abs, rel, True))
    return checks


# ----------------------------------------------------------------------------- internals


def _graph_module(network: Any) -> Any:
    """pixel_values -> predicted_depth as a plain module (the exporters want tensors out)."""
    import torch

    class DepthAnythingGraph(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any) -> Any:
            return self.inner(pixel_values=pixel_values).predicted_depth

    return DepthAnythingGraph(network).eval()


_HEAD_PARTS = ("conv1", "conv2", "conv3", "activation1", "activation2", "max_depth",
               "head_in_index", "patch_size")


class _dynamic_head:
    """Within the block, the depth head computes its output size from the input's symbolic
    shape instead of Python ints, so the traced graph follows the input size.

    Same operations as transformers' DepthAnythingDepthEstimationHead.forward. A head without
    the expected parts is left alone; the parity check then reports a fixed-shape graph.
    """

    def __init__(self, network: Any):
        self.head = getattr(network, "head", None)
        self.patched = self.head is not None and all(hasattr(self.head, part) for part in _HEAD_PARTS)

    def __enter__(self) -> None:
        if self.patched:
            self.head.forward = types.MethodType(_head_forward, self.head)
        else:
            log.warning("unfamiliar depth head: exporting it unchanged (the graph may fix the input size)")

    def __exit__(self, *exc: object) -> None:
        if self.patched:
            del self.head.forward  # back to the class's forward


def _head_forward(self: Any, hidden_states: list, patch_height: Any, patch_width: Any) -> Any:
    from torch import nn

    hidden_states = hidden_states[self.head_in_index]
    predicted_depth = self.conv1(hidden_states)
    predicted_depth = nn.functional.interpolate(
        predicted_depth,
        (patch_height * self.patch_size, patch_width * self.patch_size),
        mode="bilinear",
        align_corners=True,
    )
    predicted_depth = self.conv2(predicted_depth)
    predicted_depth = self.activation1(predicted_depth)
    predicted_depth = self.conv3(predicted_depth)
    predicted_depth = self.activation2(predicted_depth) * self.max_depth
    return predicted_depth.squeeze(dim=1)


class _matmul_position_embedding:
    """Within the block, DINOv2's bicubic position-embedding resize (37x37 grid -> the input's
    patch grid, by the reference rule of backends.torch_hf) is computed as two small matmuls
    with bicubic weight matrices.

    Same values as torch's upsample_bicubic2d with the reference scale factor (align_corners=False,
    A=-0.75, border clamp), but ONNX Runtime's cubic Resize is pathologically slow on this tensor
    (384x37x37 -> 384x37x56 took 138 ms of a 1.25 s forward on 2 cores; the matmuls take well
    under 1 ms). An embeddings module load_depth_model left alone is left alone here too.
    """

    def __init__(self, network: Any):
        from .backends.torch_hf import position_embeddings_module

        self.embeddings = position_embeddings_module(network)
        self.patched = self.embeddings is not None

    def __enter__(self) -> None:
        if self.patched:
            self.previous = vars(self.embeddings).get("interpolate_pos_encoding")
            self.embeddings.interpolate_pos_encoding = types.MethodType(_interpolate_pos_encoding, self.embeddings)

    def __exit__(self, *exc: object) -> None:
        if not self.patched:
            return
        if self.previous is None:
            del self.embeddings.interpolate_pos_encoding
        else:
            self.embeddings.interpolate_pos_encoding = self.previous


def _interpolate_pos_encoding(self: Any, embeddings: Any, height: Any, width: Any) -> Any:
    import torch

    from .backends.torch_hf import position_grid

    position = self.position_embeddings  # 1 x (1 + side^2) x dim, a fixed-size parameter
    side, dim, patch_height, patch_width = position_grid(self)
    grid = position[:, 1:].reshape(side, side, dim).permute(2, 0, 1).to(torch.float32)  # dim x side x side
    row_steps = torch.arange(height // patch_height, dtype=torch.float32)
    col_steps = torch.arange(width // patch_width, dtype=torch.float32)
    offset = _position_offset(torch, row_steps, col_steps, side)
    rows = _bicubic_matrix(torch, row_steps, side, offset)  # new_h x side
    cols = _bicubic_matrix(torch, col_steps, side, offset)  # new_w x side
    resized = torch.matmul(torch.matmul(rows, grid), cols.transpose(0, 1))  # dim x new_h x new_w
    resized = resized.to(position.dtype).permute(1, 2, 0).reshape(1, -1, dim)
    return torch.cat((position[:, :1], resized), dim=1)


def _position_offset(torch: Any, row_steps: Any, col_steps: Any, side: int) -> Any:
    """The reference rule's grid offset as a graph value: 0 on the trained side x side grid
    (embeddings used as they are), POSITION_OFFSET on any other grid."""
    from .backends.torch_hf import POSITION_OFFSET

    rows = torch.ones_like(row_steps).sum()
    cols = torch.ones_like(col_steps).sum()
    trained = (rows == float(side)) & (cols == float(side))
    return torch.where(trained, torch.zeros_like(rows), torch.full_like(rows, POSITION_OFFSET))


def _bicubic_matrix(torch: Any, steps: Any, in_size: int, offset: Any = 0.0) -> Any:
    """(len(steps) x in_size) weights of torch's 1-D bicubic resize, align_corners=False, with
    scale_factor (len(steps) + offset) / in_size; steps = arange(len(steps)) as float32."""
    a = -0.75
    count = torch.ones_like(steps).sum()
    src = (steps + 0.5) * (float(in_size) / (count + offset)) - 0.5
    base = torch.floor(src)
    t = src - base
    near, far = t, 1.0 - t
    weights = [
        ((a * (near + 1.0) - 5.0 * a) * (near + 1.0) + 8.0 * a) * (near + 1.0) - 4.0 * a,
        ((a + 2.0) * near - (a + 3.0)) * near * near + 1.0,
        ((a + 2.0) * far - (a + 3.0)) * far * far + 1.0,
        ((a * (far + 1.0) - 5.0 * a) * (far + 1.0) + 8.0 * a) * (far + 1.0) - 4.0 * a,
    ]
    columns = torch.arange(in_size, dtype=torch.float32)
    matrix = torch.zeros_like(src)[:, None] * columns[None, :]
    for tap_offset, weight in zip((-1.0, 0.0, 1.0, 2.0), weights):
        tap = torch.clamp(base + tap_offset, 0.0, float(in_size - 1))
        matrix = matrix + (tap[:, None] == columns[None, :]).to(torch.float32) * weight[:, None]
    return matrix


class _no_attention_mask:
    """DINOv2 attends from every patch to every patch, but under torch.export transformers
    materialises an all-zero bidirectional mask and adds it to every attention matrix (one
    extra pass over batch x heads x tokens^2 per layer). Within the block the mask is None,
    as in eager inference; the parity check confirms the values."""

    def __enter__(self) -> None:
        try:
            from transformers.models.dinov2 import modeling_dinov2 as module
        except ImportError:
            module = None
        self.module = module if hasattr(module, "create_bidirectional_mask") else None
        if self.module is not None:
            self.original = self.module.create_bidirectional_mask
            self.module.create_bidirectional_mask = _no_mask

    def __exit__(self, *exc: object) -> None:
        if self.module is not None:
            self.module.create_bidirectional_mask = self.original


def _no_mask(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    return attention_mask


def _use_eager_attention(network: Any) -> None:
    """Plain matmul-softmax attention: the dynamo exporter turns SDPA into extra NaN guards
    (IsNaN/Where over every attention matrix) that cost time in ONNX Runtime. Same values."""
    try:
        network.set_attn_implementation("eager")
    except (AttributeError, ValueError, TypeError) as error:  # older transformers
        log.debug("keeping the default attention for export: %s", error)


def _example_input(torch: Any, input_size: int, patch: int, static_shape: tuple[int, int] | None) -> Any:
    # batch 2 and height != width: torch.export specialises sizes 0/1 and equal dimensions
    height, width = static_shape or (input_size, input_size + 2 * patch)
    return torch.randn(2, 3, height, width)


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
    try:
        with _quiet_exporters():
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=1024)
                shapes: dict[int, Any] = {0: batch}
                if static_shape is None:
                    shapes[2] = patch * torch.export.Dim("patches_h", min=1, max=1024)
                    shapes[3] = patch * torch.export.Dim("patches_w", min=1, max=1024)
                program = torch.onnx.export(
                    wrapper, (example,), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=(shapes,), optimize=True, verbose=False,
                )
                return program.model_proto
            axes = {0: "batch"} if static_shape else {0: "batch", 2: "height", 3: "width"}
            out_axes = {0: "batch"} if static_shape else {0: "batch", 1: "height", 2: "width"}
            path = scratch / "torchscript.onnx"
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes}, do_constant_folding=True,
            )
            return onnx.load(str(path))
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - torch.onnx raises many types
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"torch.onnx ({exporter} exporter) failed: {first_line(error)}; "
                          f"try --exporter {other}") from error


def _weight_bytes(proto: Any) -> int:
    return sum(len(t.raw_data) or 4 * len(t.float_data) for t in proto.graph.initializer)


def _verify_shapes(input_size: int, patch: int, static_shape: tuple[int, int] | None) -> list[tuple[int, int, int]]:
    """Square, landscape 16:9 and portrait 7:10 at input_size (batch 2 for one of them)."""
    if static_shape:
        return [(1, *static_shape), (2, *static_shape)]

    def side(value: float) -> int:
        return max(patch, int(round(value / patch)) * patch)

    return [
        (1, input_size, input_size),
        (2, input_size, side(input_size * 16 / 9)),
        (1, side(input_size * 10 / 7), input_size),
    ]


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
