from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from synth import build_tiny_model

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One compute thread per process (set before torch is imported; the CLI's processes inherit it):
# the xdist workers share the cores and the models are tiny, so torch's default of one thread
# per core spent about half its CPU in OpenMP's spinning. A test that compares outputs with a
# process of more threads (a Ray replica) runs its side with as many (torch_threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: small input size keeps the tiny model fast; a multiple of 14
TEST_INPUT_SIZE = 56


#: the longest chains of tests (xdist groups), started first: pytest-xdist hands out work in
#: collection order (its own reordering by test count is off in pyproject's addopts), and a chain
#: handed out last runs on alone while the other workers idle
FIRST_GROUPS = ("ray", "compile", "onnx", "space", "device_check")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: FIRST_GROUPS.index(group) if (group := xdist_group(item)) in FIRST_GROUPS
               else len(FIRST_GROUPS))


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's compute threads in this process meanwhile (outputs depend on them in their last
    bits: a comparison with a Ray replica of `count` threads runs with as many)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def xdist_group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("name")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-relative"))


@pytest.fixture(scope="session")
def tiny_metric_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-metric"), metric=True, seed=1)


#: environment variables read when a module is imported (hub, torch, Ray, the interpreter):
#: a run that sets one gets a process of its own
IMPORT_TIME_VARIABLES = ("HF_", "TRANSFORMERS_", "TORCH", "CXX", "CC", "RAY_", "PYTHON", "OMP_",
                         "CUDA", "TMPDIR")
#: options whose run starts or joins a Ray cluster: never inside the test process
OWN_PROCESS_OPTIONS = ("--ray",)


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 120, env: dict | None = None,
            unset: tuple[str, ...] = (), subprocess_only: bool = False, joined_ray: bool = False,
            ) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, text output captured: `depthprior.cli.main` in this process
    (an import of torch and transformers costs ~5 CPU-s per process), or a subprocess when the
    run needs one: `subprocess_only`, --ray, or an environment variable read at import time.

    env: variables set for the run; unset: prefixes of variables removed for it (e.g. "AWS_").
    joined_ray: this process is connected to the Ray cluster a --ray run names, so the run may
    join it here (it leaves the connection open; a new process would pay a new Ray job's start)."""
    argv = [str(arg) for arg in args]
    env = dict(env or {})
    ray_here = joined_ray and _ray_connected()
    joins_ray = any(option in argv for option in OWN_PROCESS_OPTIONS) and not ray_here
    own_process = subprocess_only or joins_ray or any(
        name.startswith(IMPORT_TIME_VARIABLES) for name in env)
    if own_process:
        base = {k: v for k, v in os.environ.items() if not k.startswith(unset or ("\0",))}
        full_env = {**base, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
        return subprocess.run([sys.executable, "-m", "depthprior", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, env=full_env)
    if ray_here:  # a run that hangs fails the test, as a subprocess past its timeout does
        return _within(timeout, _run_in_process, argv, cwd, env, unset)
    return _run_in_process(argv, cwd, env, unset)


def run_main_in_process(main: Callable[[list[str]], int | None], *args: object,
                        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Another entry point (a seed script's main(argv)) run as run_cli runs the CLI in this
    process: text output captured, logging as in a fresh process, SystemExit as an exit code."""
    return _run_in_process([str(arg) for arg in args], cwd, {}, (), main=main)


def _within(seconds: float, work, *args):
    """work(*args) on a thread; an AssertionError when it has not returned within `seconds`."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(work(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the run did not finish in {seconds:g} s"
    return outcome[0]


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _run_in_process(argv: list[str], cwd: Path | None, env: dict[str, str],
                    unset: tuple[str, ...], main: Callable[[list[str]], int | None] | None = None,
                    ) -> subprocess.CompletedProcess:
    if main is None:
        from depthprior.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []  # main() configures logging as in a fresh process
    try:
        for name in [name for name in os.environ if unset and name.startswith(unset)]:
            del os.environ[name]
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse: --help, --version, a usage error
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - what a user would see: a traceback, exit 1
                traceback.print_exc(file=sys.stderr)
                code = 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved_handlers, saved_level
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["depthprior", *argv], code, out.getvalue(), err.getvalue())


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line a refused command prints, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def cli():
    return run_cli
