"""Arguments shared by several commands, derived from BackendSettings and the backend registry:
the shared fields are written here once, each backend's own options come from its Options."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..priors.backends import DEFAULT_BACKEND, BackendSettings, backend_class, backend_names, option_fields
from ..priors.backends import option_owners
from ..priors.backends.base import DTYPES, option_flag
from ..priors.backends.torch_hf import DEVICES

_DEFAULTS = BackendSettings()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def refuse_without(switch: str, switched_on: bool, options: dict[str, Any]) -> None:
    """Options that apply only with `switch` (--ray-workers with --ray), refused in one line when
    given without it rather than ignored: each defaults to None, so one that is not None was given."""
    from ..errors import UsageError

    given = [flag for flag, value in options.items() if value is not None]
    if given and not switched_on:
        raise UsageError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} with {switch}")


def add_extension_argument(parser: Any) -> None:
    """--ext, for every command that finds frames in a folder (generate, exclude, verify)."""
    parser.add_argument("--ext", action="append", default=[], metavar="EXT",
                        help="also read files with this extension (repeatable), e.g. --ext .tif")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", default=DEFAULT_BACKEND, choices=backend_names(),
                       help=f"inference backend (default {DEFAULT_BACKEND})")
    group.add_argument("--model", default=_DEFAULTS.model,
                       help="hub id or local folder of a transformers depth-estimation checkpoint "
                            "(Depth Anything V1/V2, DPT, GLPN, ZoeDepth, Depth Pro, Prompt Depth Anything), or a .onnx "
                            "file for --backend onnx "
                            f"(default {_DEFAULTS.model})")
    group.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    group.add_argument("--device", default=_DEFAULTS.device,
                       help=f"{'|'.join(DEVICES)} (default auto: cuda, then mps, then cpu); "
                            "--backend onnx also takes tensorrt[:N]")
    group.add_argument("--dtype", default=_DEFAULTS.dtype, choices=DTYPES,
                       help="auto: fp16 on CUDA, fp32 elsewhere (--exclude's segmentation: bf16 on a "
                            "CPU with native bf16)")
    group.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size,
                       help="images per forward pass; only same-size frames share a batch")
    group.add_argument("--input-size", type=positive_int, default=_DEFAULTS.input_size,
                       help="shorter side the network sees, multiple of 14 (default 518)")
    group.add_argument("--max-pixels", type=positive_int, default=_DEFAULTS.max_pixels,
                       help="refuse pictures above this many pixels before decoding them: "
                            "inputs, and what a remote server returns "
                            f"(default {_DEFAULTS.max_pixels:_d} = {_DEFAULTS.max_pixels / 1e6:g} MP)")
    owners = option_owners()
    for name in backend_names():
        _add_options(parser, name, owners)


def _add_options(parser: argparse.ArgumentParser, backend: str, owners: dict[str, list[str]]) -> None:
    """A group with the backend's own options (an option several backends take: in the first
    one's group); unset ones stay out of the namespace (SUPPRESS), so only options given on the
    command line reach settings_for."""
    fields = [option for option in option_fields(backend) if owners[option.name][0] == backend]
    if not fields:
        return
    group = parser.add_argument_group(f"{backend} backend (--backend {backend})")
    for option in fields:
        help_text = option.metadata.get("help", "")
        if len(owners[option.name]) > 1:
            help_text += f" (--backend {' or '.join(owners[option.name])})"
        if option.type in (bool, "bool"):
            group.add_argument(option_flag(option.name), action="store_true",
                               default=argparse.SUPPRESS, help=help_text)
            continue
        if option.default is not None and "default" not in help_text:
            help_text += f" (default {option.default})"
        group.add_argument(option_flag(option.name), type=_parser_of(option),
                           default=argparse.SUPPRESS, help=help_text)


def _parser_of(option: dataclasses.Field) -> Any:
    kind = option.type if isinstance(option.type, str) else getattr(option.type, "__name__", "str")
    return {"int": positive_int, "float": float}.get(kind, str)


def shared_settings(args: argparse.Namespace) -> BackendSettings:
    """The shared fields from the command line, no backend options yet."""
    return BackendSettings(
        model=args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        input_size=args.input_size,
        batch_size=args.batch_size,
        max_pixels=args.max_pixels,
    )


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """Backend options given on the command line, by field name."""
    names = {option.name for backend in backend_names() for option in option_fields(backend)}
    return {name: getattr(args, name) for name in sorted(names) if hasattr(args, name)}


def backend_settings(args: argparse.Namespace) -> BackendSettings:
    """The checked settings of --backend (a UsageError before anything loads)."""
    from ..priors.backends import settings_for

    return settings_for(backend_class(args.backend), shared_settings(args), **given_options(args))


@contextmanager
def image_progress(desc: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress(done, total) callback drawing one tqdm bar on a terminal (none when quiet)."""
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="image", desc=desc, leave=False, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
