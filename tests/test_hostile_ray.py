"""--ray attacked through its storage and its cluster: a cluster started before the storage
settings were set, a worker that cannot reach the storage, a cluster that wants a token."""

from __future__ import annotations

import os
import socket

import pytest

from conftest import TEST_INPUT_SIZE
from depthprior import generate
from depthprior.errors import UsageError
from depthprior.priors import distributed
from depthprior.priors.distributed import RaySettings
from object_store import list_keys, restore_environment, s3_client, s3_environment, s3_server, set_environment
from synth import make_frames

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs")

pytestmark = pytest.mark.hostile

#: the driver's secret key (moto takes any): the workers get it, nothing prints or logs it
SECRET = "s3cr3t-that-is-never-printed"


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def cluster_without_storage_settings():
    """A local Ray instance whose workers were started with no AWS_* settings at all; the
    driver gets them afterwards (the test sets them), as a user who exports them too late."""
    # RAY_AUTH_MODE explicit: an earlier module's instance in this process leaves Ray's cached
    # mode and the variable disagreeing (test_distributed_cluster disables it, Ray's default is on)
    previous = set_environment({"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
                                "AWS_EC2_METADATA_DISABLED": "true", "RAY_AUTH_MODE": "disabled"})
    removed = {key: os.environ.pop(key) for key in list(os.environ)
               if key.startswith("AWS_") and key not in previous}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()
    restore_environment(previous)
    os.environ.update(removed)


@pytest.fixture
def storage(endpoint, cluster_without_storage_settings, request):
    client = s3_client(endpoint)
    name = "r-" + request.node.name.replace("_", "-")[:40].strip("-").lower()
    client.create_bucket(Bucket=name)
    previous = set_environment({**s3_environment(endpoint), "AWS_SECRET_ACCESS_KEY": SECRET})
    yield client, name
    restore_environment(previous)


def _upload(client, bucket, folder, prefix):
    for path in sorted(folder.rglob("*.*")):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                          Body=path.read_bytes())


def _generate(images, out, model, **options):
    return generate(images, out, model=str(model), input_size=TEST_INPUT_SIZE, progress=False,
                    ray=RaySettings(workers=(1, 1)), **options)


def test_workers_get_the_drivers_storage_settings(tmp_path, tiny_model, storage, capfd, caplog):
    client, name = storage
    make_frames(tmp_path / "frames", 3, size=(40, 52))
    _upload(client, name, tmp_path / "frames", "images")
    caplog.set_level("DEBUG", logger="depthprior")
    summary = _generate(f"s3://{name}/images", f"s3://{name}/depths", tiny_model)
    assert (summary.done, summary.failed, summary.exit_code) == (3, {}, 0)
    printed = capfd.readouterr()
    assert SECRET not in printed.out + printed.err + caplog.text + summary.format()
    assert [key for key in list_keys(client, name, "depths/") if key.endswith(".png")] == \
        [f"depths/frame_{i:04d}.png" for i in range(3)]


def test_a_worker_that_cannot_reach_the_storage_stops_the_run_before_any_image(
        tmp_path, tiny_model, storage, monkeypatch):
    client, name = storage
    make_frames(tmp_path / "frames", 3, size=(40, 52))
    _upload(client, name, tmp_path / "frames", "images")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    worker_settings = {**s3_environment(dead), "DEPTHPRIOR_STORAGE_TIMEOUT": "2"}
    monkeypatch.setattr(distributed, "storage_environment", lambda: worker_settings)
    with pytest.raises(UsageError, match=r"a Ray worker on .* cannot (read|write) s3://"):
        _generate(f"s3://{name}/images", f"s3://{name}/depths", tiny_model)
    assert list_keys(client, name, "depths/") == []


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
