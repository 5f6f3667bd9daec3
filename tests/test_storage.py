"""URLs as IMAGES and OUT on the local pipeline, against a real S3 server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_INPUT_SIZE
from object_store import flaky_proxy, list_keys, s3_client, s3_environment, s3_server
from synth import make_frames, scene_rgb, write_image

pytest.importorskip("s3fs")
pytest.importorskip("moto")


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def buckets(endpoint, request):
    """A fresh input and output bucket per test (names from the test's name)."""
    client = s3_client(endpoint)
    tag = request.node.name.replace("_", "-")[:40].strip("-").lower()
    names = (f"in-{tag}", f"out-{tag}")
    for name in names:
        client.create_bucket(Bucket=name)
    return client, names


def _upload(client, bucket: str, folder, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                              Body=path.read_bytes())


def _frames(tmp_path):
    frames = tmp_path / "frames"
    make_frames(frames, 3, size=(40, 52))
    write_image(frames / "cam1" / "tall.png", scene_rgb(60, 30, seed=3))
    return frames


def _args(model):
    return ["--model", str(model), "--input-size", str(TEST_INPUT_SIZE), "--no-progress"]


def test_s3_in_and_out_match_a_local_run_and_resume(tmp_path, tiny_model, cli, endpoint, buckets):
    client, (inputs, outputs) = buckets
    frames = _frames(tmp_path)
    (frames / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    _upload(client, inputs, frames, "scene/images")
    env = s3_environment(endpoint)
    local = cli("generate", frames, tmp_path / "local", *_args(tiny_model))
    remote = cli("generate", f"s3://{inputs}/scene/images", f"s3://{outputs}/scene/depths",
                 *_args(tiny_model), env=env)
    assert local.returncode == remote.returncode == 1, remote.stderr
    assert "FAILED broken.jpg" in remote.stdout and "done 4," in remote.stdout
    for png in sorted((tmp_path / "local").rglob("*.png")):
        key = f"scene/depths/{png.relative_to(tmp_path / 'local').as_posix()}"
        stored = client.get_object(Bucket=outputs, Key=key)["Body"].read()
        assert stored == png.read_bytes(), key
    manifest = json.loads(client.get_object(Bucket=outputs, Key="scene/depths/depthprior.json")["Body"].read())
    assert sorted(manifest["images"]) == sorted(json.loads((tmp_path / "local" / "depthprior.json").read_text())["images"])
    assert manifest["inputs"] == f"s3://{inputs}/scene/images"
    assert not [key for key in list_keys(client, outputs) if "tmp" in key or "probe" in key]

    client.delete_object(Bucket=outputs, Key="scene/depths/cam1/tall.png")
    with flaky_proxy(endpoint) as (proxy, counts):  # every object's first PUT is refused
        again = cli("generate", f"s3://{inputs}/scene/images", f"s3://{outputs}/scene/depths",
                    *_args(tiny_model), env=s3_environment(proxy))
    assert "done 1, skipped 3, failed 1" in again.stdout, again.stdout  # tall redone, broken retried
    assert counts["failed"] >= 2  # tall.png and the manifest, each retried
    assert client.get_object(Bucket=outputs, Key="scene/depths/cam1/tall.png")["Body"].read() == \
        (tmp_path / "local" / "cam1" / "tall.png").read_bytes()
    assert not [key for key in list_keys(client, outputs) if "tmp" in key or "probe" in key]


@pytest.mark.hostile
def test_a_url_out_refuses_the_steps_that_read_it_locally(tmp_path, tiny_model, cli, endpoint, buckets):
    client, (inputs, outputs) = buckets
    result = cli("generate", _frames(tmp_path), f"s3://{outputs}/depths", *_args(tiny_model), "--verify",
                 env=s3_environment(endpoint))
    assert result.returncode == 2
    assert "--verify read the priors from a local folder" in result.stderr
    assert list_keys(client, outputs) == []  # refused before anything was written


@pytest.mark.hostile
def test_an_unknown_protocol_is_one_line(tmp_path, tiny_model, cli):
    result = cli("generate", "nosuchproto://bucket/images", tmp_path / "out", *_args(tiny_model))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "unknown URL protocol nosuchproto://" in lines[-1] and "Traceback" not in result.stderr


@pytest.mark.hostile
def test_a_missing_bucket_is_one_line(tmp_path, tiny_model, cli, endpoint):
    result = cli("generate", _frames(tmp_path), "s3://no-such-bucket-here/depths", *_args(tiny_model),
                 env=s3_environment(endpoint))
    assert result.returncode == 2
    assert "s3://no-such-bucket-here/depths is not writable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.hostile
def test_an_object_replaced_by_one_of_the_same_size_is_redone(tmp_path, tiny_model, cli, endpoint, buckets):
    """An object's version is its listing's size and ETag (before: its size alone, so a frame
    replaced by another of the same size, e.g. an uncompressed PNG of the same shape, kept its
    old prior); a manifest recording sizes alone (older runs) still resumes as done, and so do
    the same frames from a local folder (before: each redone as "changed")."""
    import cv2

    def stored_png(path, seed):  # uncompressed: its size follows its shape, not its picture
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cv2.imencode(".png", scene_rgb(40, 52, seed=seed), [cv2.IMWRITE_PNG_COMPRESSION, 0])[1])
        return path

    client, (inputs, _) = buckets
    frames = tmp_path / "frames"
    for seed in (0, 1):
        stored_png(frames / f"f{seed}.png", seed)
    _upload(client, inputs, frames, "images")
    env, out, url = s3_environment(endpoint), tmp_path / "out", f"s3://{inputs}/images"
    assert cli("generate", url, out, *_args(tiny_model), env=env).returncode == 0
    replacement = stored_png(tmp_path / "other.png", 9)
    assert replacement.stat().st_size == (frames / "f0.png").stat().st_size
    client.put_object(Bucket=inputs, Key="images/f0.png", Body=replacement.read_bytes())
    again = cli("generate", url, out, *_args(tiny_model), env=env)
    assert "REDONE f0.png: its frame changed since the prior was made" in again.stdout, again.stdout
    assert "done 1, skipped 1" in again.stdout
    manifest = json.loads((out / "depthprior.json").read_text())
    for record in manifest["images"].values():  # as a run before versions held ETags recorded them
        record["frame_version"] = record["frame_version"].split(":", 1)[0]
    (out / "depthprior.json").write_text(json.dumps(manifest))
    old = cli("generate", url, out, *_args(tiny_model), env=env)
    assert "nothing to do: all 2 images already have outputs" in old.stderr, old.stdout + old.stderr
    # the same frames from a local folder: a file's version is read another way, its size agrees
    (frames / "f0.png").write_bytes(replacement.read_bytes())
    moved = cli("generate", frames, out, *_args(tiny_model))
    assert "nothing to do: all 2 images already have outputs" in moved.stderr, moved.stdout + moved.stderr
