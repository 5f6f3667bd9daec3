#!/usr/bin/env python
"""Connection test for the Depth-Anything-V2 demo Space: the seed script, now over the package.

Usage:
    python preprocessing/test_depth_api.py [IMAGE] [--space ID_OR_URL] [--hf-token TOKEN]
        [--backend space|torch|onnx] ...

Runs `depthprior check [IMAGE] --backend space`: reaches the Space (default
depth-anything/Depth-Anything-V2, or any Gradio server with its /on_submit endpoint given by
URL), prints the endpoint's API, the three outputs it returned (types, sizes, dtypes, value
ranges, distinct levels), which depth file is used and why, and a verdict. Without IMAGE a
built-in synthetic picture is sent. The image is uploaded to that third-party server. Give
--backend to test a local backend instead; other options: `depthprior check --help`.
"""

from __future__ import annotations

import sys

from _depthprior import run  # the scripts' own folder is first on sys.path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg == "--backend" or arg.startswith("--backend=") for arg in argv):
        argv += ["--backend", "space"]
    return run(["check", *argv])


if __name__ == "__main__":
    sys.exit(main())
