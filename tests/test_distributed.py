"""generate on Ray: a local Ray instance (workers are separate processes) and the same outputs,
manifest and resume as the local pipeline. Ray over object storage is test_distributed_cluster.py's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_INPUT_SIZE, run_cli, torch_threads
from depthprior import generate
from depthprior.errors import ModelLoadError, UsageError
from depthprior.priors.distributed import RaySettings, _sizing, parse_workers
from depthprior.priors.manifest import Manifest
from synth import make_frames, scene_rgb, write_image

ray = pytest.importorskip("ray")


#: the Ray modules share one xdist worker: one Ray instance on the machine at a time
pytestmark = pytest.mark.xdist_group("ray")

@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module, started here."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _frames(folder, count=5):
    make_frames(folder, count, size=(40, 52))
    write_image(folder / "cam1" / "tall.png", scene_rgb(61, 29, seed=7))
    return folder


def _generate(images, out, model, **options):
    return generate(images, out, model=str(model), input_size=TEST_INPUT_SIZE, progress=False, **options)


def _outputs(folder) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*.png"))}


def _records(manifest: Manifest) -> dict[str, dict]:
    return {name: record.to_json() for name, record in manifest.images.items()}


@pytest.mark.hostile
def test_gpus_the_cluster_lacks_are_refused(tmp_path, tiny_model):
    """On an instance the run starts for itself (--ray local) and stops, refused or not: the
    module's instance starts after this test."""
    assert not ray.is_initialized(), "this test runs before its module's Ray instance starts"
    with pytest.raises(UsageError, match="the cluster has 0 GPUs"):
        _generate(_frames(tmp_path / "frames", 1), tmp_path / "out", tiny_model,
                  ray=RaySettings(address="local", gpus_per_worker=1))
    assert not ray.is_initialized()  # the instance it started is gone with the run


@pytest.mark.hostile
def test_a_model_the_replicas_cannot_load_is_one_error(tmp_path, tiny_model, local_ray):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    frames = _frames(tmp_path / "frames", count=2)
    with pytest.raises(ModelLoadError, match="cannot load weights of .*broken-model"):
        _generate(frames, tmp_path / "local", broken)
    with pytest.raises(ModelLoadError, match="a model replica could not start on .*cannot load weights"):
        _generate(frames, tmp_path / "ray", broken, ray=RaySettings())
    assert not list((tmp_path / "ray").rglob("*.png"))


class _Cluster:
    """What the sizing asks of Ray: the cluster's resources and nodes."""

    def __init__(self, cpus: float, gpus: float, nodes: int):
        self.resources, self.alive = {"CPU": cpus, "GPU": gpus}, nodes

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def nodes(self) -> list[dict]:
        return [{"Alive": True}] * self.alive + [{"Alive": False}]


@pytest.mark.parametrize("cpus,gpus,nodes,wanted,expected", [
    (2, 0, 1, RaySettings(workers=(2, 2)), "2 model replicas (CPU, 1 threads each) on 1 node(s) with 2 CPUs, 0 GPUs"),
    (2, 0, 1, RaySettings(), "1 model replicas (CPU, 2 threads each) on 1 node(s) with 2 CPUs, 0 GPUs"),
    (16, 0, 2, RaySettings(), "2 model replicas (CPU, 8 threads each) on 2 node(s) with 16 CPUs, 0 GPUs"),
    (16, 0, 2, RaySettings(workers=(1, 3)),
     "1-3 model replicas (CPU, 4 threads each) on 2 node(s) with 16 CPUs, 0 GPUs"),
    (8, 4, 2, RaySettings(), "4 model replicas (1 GPU each) on 2 node(s) with 8 CPUs, 4 GPUs"),
    (8, 4, 2, RaySettings(gpus_per_worker=0.5), "8 model replicas (0.5 GPU each) on 2 node(s) with 8 CPUs, 4 GPUs"),
])
def test_replicas_are_sized_to_the_cluster(cpus, gpus, nodes, wanted, expected):
    """A CPU replica's threads are its node's CPUs over the replicas that share the node; one
    replica per GPU (or per node without GPUs) unless --ray-workers says otherwise."""
    assert _sizing(_Cluster(cpus, gpus, nodes), wanted).describe() == expected


@pytest.mark.hostile
def test_ray_settings_are_checked_before_ray_starts(tmp_path, tiny_model, cli):
    frames = _frames(tmp_path / "frames", count=2)
    write_image(frames / "frame_0000.png", scene_rgb(40, 52))  # same output as frame_0000.jpg
    args = ["--model", str(tiny_model), "--input-size", str(TEST_INPUT_SIZE), "--no-progress"]
    collision = cli("generate", frames, tmp_path / "out", *args, "--ray")
    assert collision.returncode == 2 and "name collision" in collision.stderr
    assert "Ray" not in collision.stderr  # refused on the driver, before Ray was started
    workers = cli("generate", frames, tmp_path / "w", *args, "--ray", "--ray-workers", "3-1")
    assert workers.returncode == 2 and "--ray-workers" in workers.stderr
    alone = cli("generate", frames, tmp_path / "a", *args, "--ray-workers", "2")
    assert alone.returncode == 2 and "--ray-workers applies with --ray" in alone.stderr
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{unused.getsockname()[1]}"
    (frames / "frame_0000.png").unlink()
    gone = cli("generate", frames, tmp_path / "g", *args, "--ray", nobody, timeout=60)
    assert gone.returncode == 2 and f"cannot reach the Ray cluster at {nobody}" in gone.stderr


@pytest.mark.hostile
def test_other_settings_and_remote_backends_are_refused_before_ray_starts(tmp_path, tiny_model):
    frames = _frames(tmp_path / "frames", count=2)
    assert _generate(frames, tmp_path / "out", tiny_model).exit_code == 0
    with pytest.raises(UsageError, match="holds outputs made with other settings"):
        generate(frames, tmp_path / "out", model=str(tiny_model), input_size=70, progress=False,
                 ray=RaySettings())
    with pytest.raises(UsageError, match="--ray runs local models"):
        generate(frames, tmp_path / "space", backend="space", progress=False, ray=RaySettings())


def test_worker_counts_parse_or_say_what_is_wrong():
    assert parse_workers("4") == (4, 4) and parse_workers("2-8") == (2, 8)
    for text in ("0", "x", "5-2", "-3"):
        with pytest.raises(UsageError, match="--ray-workers"):
            parse_workers(text)


def _start(command: list[str], **options) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


def _recorded(out) -> int:
    try:
        return len(json.loads((out / "depthprior.json").read_text())["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def test_the_same_command_resumes_after_the_driver_is_killed(tmp_path, tiny_model, local_ray):
    """...and the run on Ray, resumed or not, writes what the local pipeline writes: the same
    PNGs byte for byte (a subfolder and another size among them) and records. A failed image
    on Ray is test_distributed_cluster.py's."""
    frames = tmp_path / "frames"
    make_frames(frames, 23, size=(120, 160))
    write_image(frames / "cam1" / "tall.png", scene_rgb(161, 79, seed=7))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "depthprior", "generate", str(frames), str(out), "--model",
               str(tiny_model), "--input-size", "266", "--no-progress", "--ray", local_ray]
    driver = _start(command)
    deadline = time.monotonic() + 90
    while _recorded(out) == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done_before = _recorded(out)
    assert 0 < done_before < 24, "the driver was not killed mid-run"
    damaged = sorted(Manifest.load(out).images)[0]
    (out / Path(damaged).with_suffix(".png")).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    # the same command again, here: this process is a driver of the same instance already
    rerun = run_cli(*command[3:], joined_ray=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"skipped {done_before - 1}" in rerun.stdout and f"REDONE {damaged}: damaged output" in rerun.stdout
    assert "on Ray: 1 model replicas (CPU, 2 threads each) on 1 node(s)" in rerun.stdout
    assert re.search(rf"per replica: \S+/pid \d+: {24 - done_before + 1} images", rerun.stdout), rerun.stdout
    with torch_threads(2):  # as the replica's
        generate(frames, tmp_path / "local", model=str(tiny_model), input_size=266, progress=False)
    reference = _outputs(tmp_path / "local")
    assert _outputs(out) == reference and len(reference) == 24
    local_manifest, ray_manifest = Manifest.load(tmp_path / "local"), Manifest.load(out)
    assert _records(ray_manifest) == _records(local_manifest)
    assert ray_manifest.identity == local_manifest.identity
    assert ray_manifest.backend["model"] == str(tiny_model)
    assert not list(out.rglob("*depthprior-tmp*"))
