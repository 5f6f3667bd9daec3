"""Run the depthprior CLI from the seed scripts; a checkout whose package is not installed uses its src/."""

from __future__ import annotations

import sys
from pathlib import Path


def run(argv: list[str]) -> int:
    """`depthprior *argv` in this process; returns the exit code."""
    try:
        from depthprior.cli import main
    except ImportError:
        src = Path(__file__).resolve().parent.parent / "src"
        if not (src / "depthprior").is_dir():
            raise
        sys.path.insert(0, str(src))
        from depthprior.cli import main
    return main(argv)
