"""--ray attacked through its storage and its cluster: a worker that cannot reach the storage, a
write task meeting dead storage, a cluster that wants a token, an address that is no cluster.
These start no Ray; a cluster started before the storage settings were set is
test_distributed_cluster.py's."""

from __future__ import annotations

import socket
import time

import pytest

from depthprior.errors import UsageError
from depthprior.priors import distributed
from object_store import s3_environment

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs")

pytestmark = pytest.mark.hostile

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
