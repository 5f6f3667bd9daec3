from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth import build_tiny_model

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: small input size keeps the tiny model fast; a multiple of 14
TEST_INPUT_SIZE = 56


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-relative"))


@pytest.fixture(scope="session")
def tiny_metric_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-metric"), metric=True, seed=1)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a subprocess, text output captured."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "depthprior", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line a refused command prints, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def cli():
    return run_cli
