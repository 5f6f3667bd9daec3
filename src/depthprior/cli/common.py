"""Arguments shared by several commands, derived from BackendSettings and the backend registry."""

from __future__ import annotations

import argparse
import os

from ..backends import DEFAULT_BACKEND, BackendSettings, backend_names
from ..backends.torch_hf import DEVICES, DTYPES

_DEFAULTS = BackendSettings()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", default=DEFAULT_BACKEND, choices=backend_names(),
                       help=f"inference backend (default {DEFAULT_BACKEND})")
    group.add_argument("--model", default=_DEFAULTS.model,
                       help="hub id or local folder of a Depth Anything V1/V2 checkpoint "
                            "(transformers format), or a .onnx file for --backend onnx "
                            f"(default {_DEFAULTS.model})")
    group.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    group.add_argument("--device", default=_DEFAULTS.device,
                       help=f"{'|'.join(DEVICES)} (default auto: cuda, then mps, then cpu); "
                            "--backend onnx also takes tensorrt[:N]")
    group.add_argument("--dtype", default=_DEFAULTS.dtype, choices=DTYPES,
                       help="auto: fp16 on CUDA, fp32 elsewhere")
    group.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size,
                       help="images per forward pass; only same-size frames share a batch")
    group.add_argument("--input-size", type=positive_int, default=_DEFAULTS.input_size,
                       help="shorter side the network sees, multiple of 14 (default 518)")
    group.add_argument("--compile", action="store_true",
                       help="torch backend: compile the model with torch.compile; each new input "
                            "shape first compiles (about a minute on a small CPU), then runs faster "
                            "(V2-Small on 2 CPU cores: 1.05-1.2x). Worth it for many same-size frames")
    group.add_argument("--max-pixels", type=positive_int, default=_DEFAULTS.max_pixels,
                       help="refuse pictures above this many pixels before decoding them: "
                            "inputs, and what a remote server returns "
                            f"(default {_DEFAULTS.max_pixels:_d} = {_DEFAULTS.max_pixels / 1e6:g} MP)")
    remote = parser.add_argument_group("remote Space backend (--backend space)")
    remote.add_argument("--space", default=_DEFAULTS.space,
                        help="Space id or URL of a Gradio server with the /on_submit endpoint")
    remote.add_argument("--hf-token", default=None,
                        help="Hugging Face token (default: the HF_TOKEN environment variable)")
    remote.add_argument("--retries", type=positive_int, default=_DEFAULTS.retries,
                        help="attempts per image, the first included (1 = no retry)")
    remote.add_argument("--min-interval", type=float, default=_DEFAULTS.min_interval,
                        help="seconds between requests (pacing for a shared Space)")
    remote.add_argument("--concurrency", type=positive_int, default=_DEFAULTS.concurrency,
                        help="requests in flight (for your own server; default sequential)")
    remote.add_argument("--timeout", type=float, default=_DEFAULTS.timeout,
                        help="seconds per attempt, a hard deadline; queue time aside (<= 30 min); replies > 256 MiB refused")


def backend_settings(args: argparse.Namespace) -> BackendSettings:
    return BackendSettings(
        model=args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        input_size=args.input_size,
        batch_size=args.batch_size,
        compile=args.compile,
        max_pixels=args.max_pixels,
        space=args.space,
        hf_token=args.hf_token or os.environ.get("HF_TOKEN") or None,
        retries=args.retries,
        min_interval=args.min_interval,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
