"""Object storage attacked: no credentials, a silent endpoint, an endpoint dying mid-run, keys
no file name can hold, an OUT that is an object, "s3:/" with one slash, local-only commands
given a URL. A real S3 server on 127.0.0.1 (moto), the CLI as a subprocess."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from conftest import TEST_INPUT_SIZE, run_cli
from object_store import flaky_proxy, list_keys, s3_client, s3_environment, s3_server
from synth import make_frames

pytest.importorskip("s3fs")
pytest.importorskip("moto")

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint, request):
    client = s3_client(endpoint)
    name = "h-" + request.node.name.replace("_", "-")[:50].strip("-").lower()
    client.create_bucket(Bucket=name)
    return client, name


def _run(*args, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with only the storage settings given (none of this shell's AWS_* variables)."""
    full = {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", **env}
    return run_cli(*args, env=full, unset=("AWS_",), timeout=timeout)


def _model_args(model) -> list[str]:
    return ["--model", str(model), "--input-size", str(TEST_INPUT_SIZE), "--no-progress"]


def _one_line(result: subprocess.CompletedProcess, command: str = "generate") -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if f"depthprior {command}: error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _upload(client, bucket: str, folder, prefix: str) -> None:
    for path in sorted(folder.rglob("*.*")):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                          Body=path.read_bytes())


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


@contextmanager
def dying_proxy(endpoint: str, png_puts: int) -> Iterator[str]:
    """A proxy to `endpoint` that dies (closes every connection, then refuses new ones) after
    forwarding `png_puts` PUTs of .png objects: a store that goes away mid-run."""
    target = endpoint.split("://", 1)[1]
    state = {"puts": 0, "dead": False}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                if state["dead"]:
                    self.close_connection = True
                    return
            connection = http.client.HTTPConnection(target, timeout=30)
            headers = {key: value for key, value in self.headers.items() if key.lower() != "expect"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "server", "date", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else
                                                   response.getheader("Content-Length") or 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            connection.close()
            if self.command == "PUT" and self.path.split("?")[0].endswith(".png"):
                with lock:
                    state["puts"] += 1
                    if state["puts"] >= png_puts and not state["dead"]:
                        state["dead"] = True
                        threading.Thread(target=server.shutdown, daemon=True).start()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_endpoint_is_one_line_within_its_deadline(tmp_path, tiny_model):
    make_frames(tmp_path / "frames", 2, size=(40, 52))
    with silent_endpoint() as url:  # nothing answers: a short deadline is enough
        env = {**s3_environment(url), "DEPTHPRIOR_STORAGE_TIMEOUT": "0.5"}
        started = time.monotonic()
        as_out = _run("generate", tmp_path / "frames", "s3://bucket/depths", *_model_args(tiny_model),
                      env=env, timeout=60)
        as_in = _run("generate", "s3://bucket/images", tmp_path / "out", *_model_args(tiny_model),
                     env=env, timeout=60)
        elapsed = time.monotonic() - started
    for result in (as_out, as_in):
        assert result.returncode == 2
        line = _one_line(result)
        assert f"the storage endpoint {url} did not answer" in line and "DEPTHPRIOR_STORAGE_TIMEOUT" in line
    assert elapsed < 30
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_missing_credentials_are_one_line_before_the_run(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 2, size=(40, 52))
    _upload(client, name, tmp_path / "frames", "images")
    no_credentials = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    as_in = _run("generate", f"s3://{name}/images", tmp_path / "out", *_model_args(tiny_model),
                 env=no_credentials)
    as_out = _run("generate", tmp_path / "frames", f"s3://{name}/depths", *_model_args(tiny_model),
                  env=no_credentials)
    assert (as_in.returncode, as_out.returncode) == (2, 2)
    assert f"no credentials to list s3://{name}/images: set AWS_ACCESS_KEY_ID" in _one_line(as_in)
    assert f"no credentials to read s3://{name}/depths: set AWS_ACCESS_KEY_ID" in _one_line(as_out)
    assert list_keys(client, name, "depths") == []


def test_an_endpoint_dying_mid_run_stops_with_a_summary_and_resumes(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 6, size=(40, 52))
    out = f"s3://{name}/depths"
    with dying_proxy(endpoint, png_puts=2) as proxy:
        env = {**s3_environment(proxy), "DEPTHPRIOR_STORAGE_TIMEOUT": "2"}
        result = _run("generate", tmp_path / "frames", out, *_model_args(tiny_model), "--workers", "1",
                      "--batch-size", "1", env=env, timeout=90)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "stopped early: the storage endpoint" in result.stdout, result.stdout
    assert "rerun the same command to resume" in result.stdout
    assert "FAILED" not in result.stdout  # the images not written are not failures: a rerun does them
    assert len([key for key in list_keys(client, name, "depths/") if key.endswith(".png")]) >= 2
    again = _run("generate", tmp_path / "frames", out, *_model_args(tiny_model), env=s3_environment(endpoint))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len([key for key in list_keys(client, name, "depths/") if key.endswith(".png")]) == 6


def test_an_endpoint_answering_server_errors_stops_the_run_instead_of_failing_every_image(
        tmp_path, tiny_model, endpoint, bucket):
    """Before: every image failed one by one (each after its retries) with exit 1 at the end."""
    client, name = bucket
    make_frames(tmp_path / "frames", 4, size=(40, 52))
    out = f"s3://{name}/depths"
    # once the objects a run writes before its images are stored, every image's PUT is 503;
    # the manifest's are not (its failing save would add a second round of every retry layer,
    # ~8 s, and guard nothing more: test_an_endpoint_dying_mid_run covers a save that fails)
    with flaky_proxy(endpoint, broken_after=2, broken_suffix=".png") as (proxy, counts):
        # the default deadline: s3fs's retries end in its "retry" error well within it
        result = _run("generate", tmp_path / "frames", out, *_model_args(tiny_model), "--workers", "1",
                      "--batch-size", "1", env=s3_environment(proxy), timeout=300)
    assert result.returncode == 1, result.stderr
    # the writes queued behind the first that found the store failing are not tried (each would
    # wait through every retry layer again, ~4 s here)
    assert counts["broken"] == 1, counts
    assert "Traceback" not in result.stderr
    assert "stopped early: the storage" in result.stdout and "rerun the same command" in result.stdout
    assert "FAILED" not in result.stdout, result.stdout  # not done is not failed: a rerun does them
    again = _run("generate", tmp_path / "frames", out, *_model_args(tiny_model), env=s3_environment(endpoint))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len([key for key in list_keys(client, name, "depths/") if key.endswith(".png")]) == 4


def test_keys_no_file_name_can_hold_are_listed_as_refused(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 1, size=(40, 52))
    frame = (tmp_path / "frames" / "frame_0000.jpg").read_bytes()
    for key in ("images/a.jpg", "images/../escape.jpg", "images/./alias.jpg", "images/x\\y.jpg",
                "images/.cache/b.jpg"):
        client.put_object(Bucket=name, Key=key, Body=frame)
    result = _run("generate", f"s3://{name}/images", tmp_path / "out", *_model_args(tiny_model),
                  env=s3_environment(endpoint))
    assert result.returncode == 0, result.stderr
    assert "done 1, skipped 0, failed 0 of 1" in result.stdout
    assert "IGNORED ../escape.jpg: refused: its key has a '..' segment" in result.stdout
    assert "IGNORED ./alias.jpg: refused: its key has a '.' segment" in result.stdout
    assert "IGNORED x\\y.jpg: refused: its key holds a backslash" in result.stdout
    assert "IGNORED .cache/b.jpg: hidden" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["a.png"]


def test_an_out_url_that_is_an_object_is_refused(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 1, size=(40, 52))
    client.put_object(Bucket=name, Key="depths", Body=b"an object, not a folder")
    result = _run("generate", tmp_path / "frames", f"s3://{name}/depths", *_model_args(tiny_model),
                  env=s3_environment(endpoint))
    assert result.returncode == 2
    assert f"output s3://{name}/depths is an object, not a folder" in _one_line(result)
    assert list_keys(client, name) == ["depths"]


def test_one_slash_is_not_a_local_folder(tmp_path, tiny_model):
    make_frames(tmp_path / "frames", 1, size=(40, 52))
    as_out = _run("generate", tmp_path / "frames", "s3:/bkt/depths", *_model_args(tiny_model), env={})
    as_in = _run("generate", "s3:/bkt/images", tmp_path / "out", *_model_args(tiny_model), env={})
    assert (as_out.returncode, as_in.returncode) == (2, 2)
    assert "did you mean s3://bkt/depths?" in _one_line(as_out)
    assert "did you mean s3://bkt/images?" in _one_line(as_in)
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [
    ["verify", "{url}"],
    ["align", "--sparse", "{tmp}", "--depths", "{url}"],
    ["consistency", "--sparse", "{tmp}", "--depths", "{url}"],
    ["report", "{url}"],
    ["export", "nerfstudio", "--depths", "{url}", "--sparse", "{tmp}", "--transforms", "{tmp}/t.json"],
])
def test_a_local_only_command_given_a_url_says_so(tmp_path, command):
    args = [part.format(url="s3://bkt/depths", tmp=tmp_path) for part in command]
    result = _run(*args, env={})
    assert result.returncode == 2
    line = _one_line(result, command[0])
    assert f"{command[0]} reads " in line and "on this machine" in line
    assert "s3://bkt/depths is object storage: download it first" in line


def test_an_object_larger_than_any_image_within_the_pixel_cap_is_not_downloaded(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 1, size=(40, 52))
    client.put_object(Bucket=name, Key="images/a.jpg", Body=(tmp_path / "frames" / "frame_0000.jpg").read_bytes())
    client.put_object(Bucket=name, Key="images/huge.jpg", Body=b"\xff\xd8" + bytes(17 << 20))
    result = _run("generate", f"s3://{name}/images", tmp_path / "out", *_model_args(tiny_model),
                  "--max-pixels", "10000", env=s3_environment(endpoint))
    assert result.returncode == 1
    assert "FAILED huge.jpg: object is 17 MiB, above the 16 MiB cap" in result.stdout, result.stdout
    assert "done 1," in result.stdout


def test_no_module_outside_files_place_branches_on_urls():
    """One owner of "is this a URL" and of fsspec: files.place and files.objectstore (the remote backend's server address aside)."""
    import re
    from pathlib import Path

    import depthprior

    root = Path(depthprior.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative in ("files/place.py", "files/objectstore.py") or relative.startswith("priors/backends/space"):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bis_url\(|\bimport fsspec\b|from \.+ import storage\b|from \.+storage import", text):
            offenders.append(relative)
    assert offenders == []
    assert not (root / "storage.py").exists()


def test_a_url_without_a_bucket_is_refused(tmp_path, tiny_model):
    empty = _run("generate", "s3://", tmp_path / "out", *_model_args(tiny_model), env={})
    rooted = _run("generate", tmp_path, "s3:///depths", *_model_args(tiny_model), env={})
    assert (empty.returncode, rooted.returncode) == (2, 2)
    assert "'s3://' names no bucket: give s3://BUCKET/PREFIX" in _one_line(empty)
    assert "'s3:///depths' names no bucket" in _one_line(rooted)


def test_images_in_object_storage_then_verify_and_report_a_local_out(tmp_path, tiny_model, endpoint, bucket):
    client, name = bucket
    make_frames(tmp_path / "frames", 2, size=(40, 52))
    _upload(client, name, tmp_path / "frames", "images")
    env = s3_environment(endpoint)
    out = tmp_path / "out"
    result = _run("generate", f"s3://{name}/images", out, *_model_args(tiny_model), "--verify", "--report",
                  "--num-samples", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "verify: OK" in result.stdout and (out / "report.html").is_file()
    again = _run("verify", out, "--num-samples", "2", env=env)  # the frames, read from the recorded URL
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not found" not in again.stdout
