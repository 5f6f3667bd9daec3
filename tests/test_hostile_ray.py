"""--ray attacked through its storage and its cluster: a cluster started before the storage
settings were set, a worker that cannot reach the storage, a cluster that wants a token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TEST_INPUT_SIZE
from depthprior.errors import UsageError
from depthprior.priors import distributed
from object_store import list_keys, s3_client, s3_environment, s3_server
from synth import make_frames

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs")

#: the Ray modules share one xdist worker: one Ray instance on the machine at a time
pytestmark = [pytest.mark.hostile, pytest.mark.xdist_group("ray")]

#: the driver's secret key (moto takes any): the workers get it, nothing prints or logs it
SECRET = "s3cr3t-that-is-never-printed"


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


#: a throwaway head node on 127.0.0.1: no token to share between it and the driver
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def head_without_storage_settings():
    """The address of a `ray start --head` node started with no AWS_* settings at all, as a
    cluster started before the user exported them (the driver gets them later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(CLUSTER_ENV, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    ray_cli = Path(sys.executable).with_name("ray")
    node = subprocess.Popen([str(ray_cli), "start", "--block", "--head", "--num-cpus=2", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the head node did not come up in 60 s"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(node.pid, signal.SIGKILL)  # its own process group: the node's processes only
        node.wait()
        record = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
        try:
            if str(port) in record.read_text():
                record.unlink()
        except OSError:
            pass


def _upload(client, bucket, folder, prefix):
    for path in sorted(folder.rglob("*.*")):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                          Body=path.read_bytes())


def test_workers_get_the_drivers_storage_settings(tmp_path, tiny_model, endpoint, head_without_storage_settings, cli):
    client = s3_client(endpoint)
    name = "ray-late-settings"
    client.create_bucket(Bucket=name)
    make_frames(tmp_path / "frames", 3, size=(40, 52))
    _upload(client, name, tmp_path / "frames", "images")
    env = {**s3_environment(endpoint), "AWS_SECRET_ACCESS_KEY": SECRET, **CLUSTER_ENV}
    result = cli("generate", f"s3://{name}/images", f"s3://{name}/depths", "--model", tiny_model,
                 "--input-size", str(TEST_INPUT_SIZE), "--no-progress", "--ray", head_without_storage_settings,
                 "--ray-workers", "1", env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done 3, skipped 0, failed 0 of 3" in result.stdout
    assert [key for key in list_keys(client, name, "depths/") if key.endswith(".png")] == \
        [f"depths/frame_{i:04d}.png" for i in range(3)]
    assert SECRET not in result.stdout + result.stderr


def test_a_worker_that_cannot_reach_the_storage_says_so_in_one_line(monkeypatch):
    """What the check a worker runs before the dataset answers (here in this process, with the
    storage settings a worker would have had: an endpoint where nothing listens)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    for key, value in {**s3_environment(dead), "DEPTHPRIOR_STORAGE_TIMEOUT": "2"}.items():
        monkeypatch.setenv(key, value)
    problem = distributed._storage_probe("s3://bkt/images/a.jpg", "s3://bkt/depths")
    assert problem.startswith("on ") and "cannot read s3://bkt/images/a.jpg" in problem
    assert f"the storage endpoint {dead} did not answer" in problem
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert "cannot write" in distributed._storage_probe(__file__, __file__)  # OUT is a file there


def test_a_cluster_that_wants_a_token_is_one_line(monkeypatch):
    """The text Ray 2.60 raises when the cluster runs RAY_AUTH_MODE=token and the client has
    no token (seen against `ray start --head` with a token; ray.init prints it 20 times first)."""
    from ray.exceptions import AuthenticationError

    class RefusingGcsClient:
        def __init__(self, **_kwargs):
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")

    monkeypatch.setattr(ray._raylet, "GcsClient", RefusingGcsClient)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(UsageError) as raised:
            distributed._reachable_cluster(address)
    finally:
        listener.close()
    message = str(raised.value)
    assert message.startswith(f"the Ray cluster at {address} requires an authentication token and "
                              "this client sends none: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN")
    assert "\n" not in message


def test_a_write_task_meeting_dead_storage_stops_the_run_instead_of_failing_the_image(monkeypatch):
    """What a Ray write task returns when the store is gone: a stop for the driver (the local
    pipeline's rule), not one more failed image."""
    import json

    import numpy as np

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    for key, value in {**s3_environment(dead), "DEPTHPRIOR_STORAGE_TIMEOUT": "2"}.items():
        monkeypatch.setenv(key, value)
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    row = {"name": "a.jpg", "path": "s3://bkt/images/a.jpg", "error": "", "values": values.tobytes(),
           "height": 3, "width": 4, "backend": "", "replica": "r", "fatal": "", "stopped": "",
           "depth": json.dumps({"kind": "disparity", "source": "model", "levels": None, "notes": [],
                                "extras": {}})}
    written = distributed._write_row(row, "s3://bkt/depths", "png")
    assert f"the storage endpoint {dead} did not answer" in written["stopped"]


def test_an_address_that_listens_but_is_no_ray_cluster_is_one_line_in_seconds(monkeypatch):
    """Before: Ray's client waited 40 s per try and ray.init retried for minutes."""
    import time

    monkeypatch.setattr(distributed, "CLUSTER_ANSWER_SECONDS", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (the kernel does) and never speaks
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(UsageError, match=f"something listens at {address} but does not answer as a Ray cluster"):
            distributed._reachable_cluster(address)
        assert time.monotonic() - started < 10
    finally:
        listener.close()
