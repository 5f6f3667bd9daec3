#!/usr/bin/env python
"""Depth priors for a folder of frames: the seed script, now a thin wrapper over the package.

Usage:
    python preprocessing/generate_depth.py IMAGES_DIR OUTPUT_DIR [--verify] [--num_samples N]
        [--backend torch|onnx|space] [--space ID_OR_URL] [--hf-token TOKEN] [--model ID] ...

Runs `depthprior generate IMAGES_DIR OUTPUT_DIR ...`: one 16-bit inverse-depth PNG per frame
(near = bright, 3DGS convention), resumable, with a manifest. The original script sent every
frame to the public Depth-Anything-V2 demo Space; this one uses the package's default local
backend (faster, offline) unless `--backend space` is given, which uploads the frames to that
Space (or to the server named by --space). `--num_samples` is `--num-samples`; every other
option of `depthprior generate --help` is accepted as is.
"""

from __future__ import annotations

import sys

from _depthprior import run  # the scripts' own folder is first on sys.path

SEED_SPELLINGS = {"--num_samples": "--num-samples"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    translated = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        translated.append(SEED_SPELLINGS.get(name, name) + sep + value)
    return run(["generate", *translated])


if __name__ == "__main__":
    sys.exit(main())
