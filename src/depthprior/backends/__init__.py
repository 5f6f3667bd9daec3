"""Backend registry: name -> class, imported lazily so heavy dependencies load only when used."""

from __future__ import annotations

import importlib

from ..errors import UsageError
from .base import Backend, BackendSettings, DepthMap

_REGISTRY: dict[str, str] = {
    "torch": "depthprior.backends.torch_hf:TorchBackend",
    "onnx": "depthprior.backends.onnx:OnnxBackend",
    "space": "depthprior.backends.space:SpaceBackend",
}

DEFAULT_BACKEND = "torch"


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown backend {name!r}: choose one of {', '.join(backend_names())}"
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(name: str, settings: BackendSettings) -> Backend:
    return backend_class(name)(settings)


__all__ = [
    "Backend",
    "BackendSettings",
    "DepthMap",
    "DEFAULT_BACKEND",
    "backend_class",
    "backend_names",
    "create_backend",
]
