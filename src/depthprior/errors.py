"""Typed errors. Library code raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations

from typing import Iterable


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its `message` attribute if it has one), or its type."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def listing(items: Iterable[object], limit: int = 5, *, quote: bool = False) -> str:
    """The first `limit` items joined by commas, then " and N more": names in one-line messages."""
    items = [repr(item) if quote else str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class DepthpriorError(Exception):
    """A job that could not be done. Exit code 1 unless a subclass says otherwise."""

    exit_code = 1


class UsageError(DepthpriorError):
    """Bad arguments or inputs found before any work started (missing folder, collision, ...)."""

    exit_code = 2


class MissingDependencyError(UsageError):
    """An optional dependency is not installed; the message carries the install command."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed: "
            f"pip install 'depthprior[{extra}]'"
        )


class UnsafePathError(UsageError):
    """A name that would be written outside its output folder (absolute, "..", a link out)."""


class ModelLoadError(UsageError):
    """The model could not be found or loaded (bad hub id, bad folder, wrong architecture)."""


class BackendUnavailable(DepthpriorError):
    """The backend cannot serve requests any more (remote down, quota exhausted, device lost).

    The pipeline stops early, keeps every finished output, and reports; a rerun resumes.
    """


class ImageError(DepthpriorError):
    """One image could not be processed; the batch goes on."""
