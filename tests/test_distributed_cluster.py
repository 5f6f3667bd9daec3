"""generate on a two-node Ray cluster on 127.0.0.1 (`ray start --head` and a second node with
its own resources), with a model replica killed mid-run: Ray retries its images, every image is
done once, and the outputs are the local pipeline's, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from depthprior import generate
from synth import make_frames

ray = pytest.importorskip("ray")

#: the Ray modules share one xdist worker: one Ray instance on the machine at a time
pytestmark = pytest.mark.xdist_group("ray")

FRAMES = 24
REPLICA_TITLE = b"MapBatches(_Replica)"
#: a throwaway cluster on 127.0.0.1: no token to share between its nodes and the driver
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node(*args: str) -> subprocess.Popen:
    """One `ray start --block` node: it stops its processes when it is terminated."""
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **CLUSTER_ENV}
    return subprocess.Popen([str(ray_cli), "start", "--block", "--num-cpus=2", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def cluster(monkeypatch):
    """The address of a head node and a second node, both alive."""
    for key, value in CLUSTER_ENV.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_node("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false")]
    try:
        _wait(lambda: _accepts(port), "the head node")
        nodes.append(_node(f"--address={address}", "--node-ip-address=127.0.0.1"))
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            _wait(lambda: sum(node["Alive"] for node in ray.nodes()) == 2, "the second node")
        finally:
            ray.shutdown()
        yield address
    finally:
        for node in reversed(nodes):  # a throwaway cluster: its processes share the node's group
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        _forget(address)


def _forget(address: str) -> None:
    """Remove the record `ray start --head` left of the killed cluster (Ray's own would hang on it)."""
    record = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        if address in record.read_text():
            record.unlink()
    except OSError:
        pass


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _wait(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout} s")
        time.sleep(0.2)


def _replica_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if REPLICA_TITLE in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _recorded(out: Path) -> int:
    try:
        return len(json.loads((out / "depthprior.json").read_text())["images"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_replica_killed_mid_run_loses_nothing(tmp_path, tiny_model, cluster):
    frames = tmp_path / "frames"
    make_frames(frames, FRAMES, size=(120, 160))
    args = ["--model", str(tiny_model), "--input-size", "266", "--no-progress"]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "depthprior", "generate", str(frames), str(out), *args,
               "--ray", cluster, "--ray-workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _wait(lambda: _recorded(out) > 0 or driver.poll() is not None, "the first records", timeout=120)
    killed = _replica_pids()[:1]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=240)
    assert killed, "no replica process was found to kill"
    assert driver.returncode == 0, stdout + stderr
    assert f"done {FRAMES}, skipped 0, failed 0 of {FRAMES}" in stdout
    assert "on 2 node(s)" in stdout
    local = generate(frames, tmp_path / "local", model=str(tiny_model), input_size=266, progress=False)
    assert local.exit_code == 0
    pngs = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert len(pngs) == FRAMES
    for name in pngs:
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    records = json.loads((out / "depthprior.json").read_text())["images"]
    assert sorted(records) == [f"frame_{i:04d}.jpg" for i in range(FRAMES)]
    assert all(record["status"] == "ok" for record in records.values())
