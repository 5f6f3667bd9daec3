"""generate on a two-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py: `ray start --head` and a
second node, both started before any storage settings existed), from a driver process given the
settings of a real S3 server, with a model replica killed mid-run: Ray retries its images, every
image is done once, the outputs (a subfolder and another size among them) and the records (a
broken image's failure among them) are the local pipeline's byte for byte, no temporary or probe
object is left, and the secret key the workers got from the driver is printed nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import torch_threads
from depthprior import generate
from object_store import list_keys, s3_client, s3_environment, s3_server
from ray_cluster import replica_pids, two_node_cluster, wait_for
from synth import make_frames, scene_rgb, write_image

pytest.importorskip("ray")
pytest.importorskip("s3fs")

#: the Ray modules share one xdist worker: one Ray cluster on the machine at a time
pytestmark = [pytest.mark.hostile, pytest.mark.xdist_group("ray")]

FRAMES = 24
BUCKET = "ray-cluster"
#: the driver's secret key (moto takes any): the workers get it, nothing prints or logs it
SECRET = "s3cr3t-that-is-never-printed"


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster() as address:
        yield address


def _written(client) -> int:
    return sum(key.endswith(".png") for key in list_keys(client, BUCKET, "depths/"))


def _unversioned(records: dict[str, dict]) -> dict[str, dict]:
    return {name: {key: value for key, value in record.items() if key != "frame_version"}
            for name, record in records.items()}


def test_a_replica_killed_mid_run_loses_nothing(tmp_path, tiny_model, cluster, endpoint):
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    frames = tmp_path / "frames"
    make_frames(frames, FRAMES - 1, size=(120, 160))
    write_image(frames / "cam1" / "tall.png", scene_rgb(161, 79, seed=7))  # another size, a subfolder
    (frames / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # fails as in a local run
    names = sorted(path.relative_to(frames).as_posix() for path in frames.rglob("*.*"))
    for name in names:
        client.put_object(Bucket=BUCKET, Key=f"images/{name}", Body=(frames / name).read_bytes())
    command = [sys.executable, "-m", "depthprior", "generate", f"s3://{BUCKET}/images", f"s3://{BUCKET}/depths",
               "--model", str(tiny_model), "--input-size", "266", "--no-progress", "--ray", cluster,
               "--ray-workers", "2"]
    env = {**os.environ, **s3_environment(endpoint), "AWS_SECRET_ACCESS_KEY": SECRET, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: _written(client) > 0 or driver.poll() is not None, "the first outputs", timeout=120)
    killed = replica_pids()[:1]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    written_by_then = _written(client)
    stdout, stderr = driver.communicate(timeout=240)
    assert killed, "no replica process was found to kill"
    assert written_by_then < FRAMES, "the replica was killed after the last output: nothing was retried"
    assert driver.returncode == 1, stdout + stderr  # broken.png
    assert f"done {FRAMES}, skipped 0, failed 1 of {FRAMES + 1}" in stdout
    assert "on 2 node(s)" in stdout
    assert SECRET not in stdout + stderr
    with torch_threads(2):  # as each replica's, one per node of 2 CPUs
        local = generate(frames, tmp_path / "local", model=str(tiny_model), input_size=266, progress=False)
    assert list(local.failed) == ["broken.png"] and "FAILED broken.png" in stdout
    expected = sorted(path.relative_to(tmp_path / "local").as_posix() for path in (tmp_path / "local").rglob("*.png"))
    assert len(expected) == FRAMES
    assert sorted(key for key in list_keys(client, BUCKET, "depths/") if key.endswith(".png")) == [
        f"depths/{name}" for name in expected]
    assert not [key for key in list_keys(client, BUCKET) if "tmp" in key or "probe" in key]
    for name in expected:
        written = client.get_object(Bucket=BUCKET, Key=f"depths/{name}")["Body"].read()
        assert written == (tmp_path / "local" / name).read_bytes(), name
    manifest = client.get_object(Bucket=BUCKET, Key="depths/depthprior.json")["Body"].read()
    records = json.loads(manifest)["images"]
    assert sorted(records) == names
    local_records = json.loads((tmp_path / "local" / "depthprior.json").read_text())["images"]
    # a frame's version is its listing's for an object, its contents' for a local file
    assert _unversioned(records) == _unversioned(local_records)
