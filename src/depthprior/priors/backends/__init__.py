"""Backend registry: name -> class, imported lazily so heavy dependencies load only when used.

settings_for is the one way from (settings, keyword overrides) to a backend's checked settings;
generate, check and bench all go through it before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ...errors import UsageError
from .base import Backend, BackendSettings, DepthMap, option_flag
from .local import LocalBackend

_REGISTRY: dict[str, str] = {
    "torch": "depthprior.priors.backends.torch_hf:TorchBackend",
    "onnx": "depthprior.priors.backends.onnx:OnnxBackend",
    "space": "depthprior.priors.backends.space:SpaceBackend",
}

DEFAULT_BACKEND = "torch"
#: the fields every backend shares (BackendSettings less its options)
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(BackendSettings) if f.name != "options")


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


def option_fields(name: str) -> tuple[dataclasses.Field, ...]:
    """The fields of a backend's own options (its Options dataclass)."""
    return dataclasses.fields(backend_class(name).Options)


def option_owners() -> dict[str, list[str]]:
    """Each backend option's name -> the backends that take it."""
    owners: dict[str, list[str]] = {}
    for name in backend_names():
        for option in option_fields(name):
            owners.setdefault(option.name, []).append(name)
    return owners


def settings_for(backend: str | type[Backend], settings: BackendSettings | None = None,
                 **overrides: Any) -> BackendSettings:
    """`settings` (default BackendSettings()) with keyword overrides of shared fields or of the
    backend's own options, checked by the backend (Backend.check_settings); a UsageError names
    what is wrong. Overrides of another backend's options are refused, unknown names too."""
    backend_type = backend_class(backend) if isinstance(backend, str) else backend
    settings = settings or BackendSettings()
    own = {f.name for f in dataclasses.fields(backend_type.Options)}
    _refuse_foreign(backend_type.name, set(overrides) - set(SHARED_FIELDS) - own)
    shared = {key: value for key, value in overrides.items() if key in SHARED_FIELDS}
    options = {key: value for key, value in overrides.items() if key in own}
    settings = dataclasses.replace(settings, **shared)
    base = settings.options if settings.options is not None else backend_type.Options()
    if options and isinstance(base, backend_type.Options):  # another type: check_settings says so
        settings = dataclasses.replace(settings, options=dataclasses.replace(base, **options))
    return backend_type.check_settings(settings)


def _refuse_foreign(backend: str, names: set[str]) -> None:
    if not names:
        return
    owners = option_owners()
    foreign = sorted(name for name in names if name in owners)
    if foreign:
        raise UsageError("; ".join(
            f"{option_flag(name)} applies to --backend {' or '.join(owners[name])}, not {backend}"
            for name in foreign))
    known = sorted([*SHARED_FIELDS, *owners])
    raise UsageError(f"unknown option(s) {', '.join(sorted(names))}; known: {', '.join(known)}")


def create_backend(name: str, settings: BackendSettings) -> Backend:
    """A loaded backend (its settings are checked first, before anything loads)."""
    return backend_class(name)(settings)


__all__ = [
    "Backend",
    "BackendSettings",
    "DepthMap",
    "DEFAULT_BACKEND",
    "LocalBackend",
    "SHARED_FIELDS",
    "backend_class",
    "backend_names",
    "create_backend",
    "option_fields",
    "settings_for",
]
