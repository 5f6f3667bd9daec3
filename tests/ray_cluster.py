"""One throwaway Ray cluster on 127.0.0.1 for the Ray tests: a head node and a second node
(`ray start --block`, 2 CPUs each), started with no AWS_* settings at all, as a cluster started
before the user exported them: its drivers hand theirs to the workers.

test_distributed_cluster.py starts it for its module; a driver process joins it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

#: no token to share between the nodes and the drivers of a cluster nobody else can reach
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: the title Ray gives a model replica's process (`ray::MapWorker(MapBatches(_Replica))`)
REPLICA_TITLE = b"MapBatches(_Replica)"


@contextlib.contextmanager
def two_node_cluster() -> Iterator[str]:
    """The address of a head node and a second node, both alive until the block ends; this
    process (and what it starts) has CLUSTER_ENV meanwhile, so its drivers may join."""
    import ray

    saved = {key: os.environ.get(key) for key in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_node("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false")]
    try:
        wait_for(lambda: _accepts(port), "the head node")
        nodes.append(_node(f"--address={address}", "--node-ip-address=127.0.0.1"))
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            wait_for(lambda: sum(node["Alive"] for node in ray.nodes()) == 2, "the second node")
        finally:
            ray.shutdown()
        yield address
    finally:
        for node in reversed(nodes):  # a throwaway cluster: its processes share the node's group
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        _forget(address)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _node(*args: str) -> subprocess.Popen:
    """One `ray start --block` node, with no AWS_* settings: it stops its processes when killed."""
    ray_cli = Path(sys.executable).with_name("ray")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(CLUSTER_ENV, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen([str(ray_cli), "start", "--block", "--num-cpus=2", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _forget(address: str) -> None:
    """Remove the record `ray start --head` left of the killed cluster (Ray's own would hang on it)."""
    record = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        if address in record.read_text():
            record.unlink()
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout} s")
        time.sleep(0.2)


def replica_pids() -> list[int]:
    """The processes of the model replicas running on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if REPLICA_TITLE in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
