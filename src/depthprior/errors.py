"""Typed errors. Library code raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations

from typing import Iterable


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its `message` attribute if it has one), or its type."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(text: object) -> str:
    """A name (or a reason naming one) for one line of output: as it is when printable, else with
    its newlines, control characters and undecodable bytes escaped as repr writes them."""
    text = str(text)
    return text if text.isprintable() else repr(text)[1:-1]


def listing(items: Iterable[object], limit: int = 5, *, quote: bool = False) -> str:
    """The first `limit` items joined by commas, then " and N more": names in one-line messages."""
    items = [repr(item) if quote else one_line(item) for item in items]
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


class StorageUnavailable(BackendUnavailable):
    """Object storage cannot be used at all: no credentials, credentials refused, or an
    endpoint that does not answer within its deadline. Before a run it is a usage error; during
    one the run stops as for a lost backend (finished outputs kept, a rerun resumes)."""


class ImageError(DepthpriorError):
    """One image could not be processed; the batch goes on."""


class FileFormatError(UsageError):
    """A file depthprior reads is not what it should be (not JSON, too deep, too big, wrong
    shape, a picture of the wrong size or kind). The message names the file."""

    def __init__(self, path: object, problem: str, hint: str = ""):
        self.path, self.problem, self.hint = path, problem, hint
        super().__init__(f"{path} {problem}" + (f"; {hint}" if hint else ""))


class WriteError(DepthpriorError, OSError):
    """A file could not be written (disk full, read-only, permission, name too long).

    An OSError too, so per-image code that catches OSError fails that image and goes on; at the
    top it is one line naming the file (exit 1), and what was finished before it is kept.
    """

    def __init__(self, path: object, error: OSError):
        self.path = path
        code = getattr(error, "errno", None)
        reason = error.strerror or first_line(error)
        hint = _WRITE_HINTS.get(code, "check the folder and try again")
        OSError.__init__(self, code, f"cannot write {path}: {reason}; {hint}")
        self.message = f"cannot write {path}: {reason}; {hint}"

    def __str__(self) -> str:
        return self.message

    @property
    def ends_run(self) -> bool:
        """Every later file would fail the same way (disk full, read-only, quota): a run stops
        there, keeping what is written; other errors (a name too long) fail one image."""
        import errno

        return self.errno in {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _write_hints() -> dict[int, str]:
    import errno

    hints = {
        errno.ENOSPC: "the disk is full: free space or choose another folder",
        errno.EROFS: "the file system is read-only: choose another folder",
        errno.EACCES: "permission denied: fix the folder's permissions or choose another folder",
        errno.EPERM: "not permitted: fix the folder's permissions or choose another folder",
        errno.ENAMETOOLONG: "the name is too long for the file system: shorten it",
        errno.EFBIG: "the file is too large for this file system or its limits",
    }
    if hasattr(errno, "EDQUOT"):
        hints[errno.EDQUOT] = "the disk quota is exhausted: free space or choose another folder"
    return hints


_WRITE_HINTS = _write_hints()
