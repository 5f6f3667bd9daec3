"""Command line: each command is a module with register(subparsers); errors map to exit codes here.

Exit codes: 0 every image done or skipped, 1 some work failed, 2 usage errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys

from .. import __version__
from ..errors import DepthpriorError, first_line, one_line

#: command modules under depthprior.cli, in the order `--help` lists them
COMMANDS = ("generate", "check", "verify", "exclude", "align", "consistency", "report", "export", "export_onnx", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthprior",
        description="Monocular depth priors (Depth Anything) for 3D Gaussian Splatting.",
    )
    parser.add_argument("--version", action="version", version=f"depthprior {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    _unblock_interrupt()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    # their INFO is not ours (httpx: one line per hub request)
    for chatty in ("botocore", "aiobotocore", "s3fs", "fsspec", "ray", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except DepthpriorError as error:
        print(f"depthprior {args.command}: error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"depthprior {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a path the system refuses (too long, through a file, a loop)
        print(f"depthprior {args.command}: error: {one_line(_os_error(error))}", file=sys.stderr)
        return 2 if error.errno in _PATH_ERRORS else 1


def _unblock_interrupt() -> None:
    """Ctrl-C stops a run even when the parent process had SIGINT blocked (a blocked signal is
    inherited: some libraries block it on the thread that later starts us, and the run then
    ignored Ctrl-C to the end). An ignored SIGINT (a background job) stays ignored."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


#: errors of a path given on the command line: usage errors (exit 2)
_PATH_ERRORS = frozenset({errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.ELOOP,
                          errno.EISDIR})


def _os_error(error: OSError) -> str:
    """One line for an OSError: the file, what the system said, and what to do."""
    reason = error.strerror or first_line(error)
    where = f"{error.filename}: " if error.filename else ""
    hint = {errno.ENAMETOOLONG: "shorten the path", errno.ENOTDIR: "a part of the path is a file",
            errno.ELOOP: "the path loops through links"}.get(error.errno, "check the path")
    return f"{where}{reason}; {hint}"
