"""The `space` backend against a real local Gradio server with the demo Space's contract.

tests/fake_space.py runs as a subprocess on 127.0.0.1 (a free port); the backend reaches it
through the real gradio_client, in process and through the CLI. Clients run with the Hub
offline and telemetry off and are only given 127.0.0.1 URLs; the server gets a proxy that
refuses every connection except to loopback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio_client")
if importlib.util.find_spec("gradio") is None:  # the server's package: importing it here costs ~5 s
    pytest.skip("the fake Space server needs gradio (the test extra installs it)", allow_module_level=True)

import httpx  # noqa: E402  (a gradio_client dependency)

from conftest import run_cli  # noqa: E402
from fake_space import known_disparity  # noqa: E402
from synth import make_frames, scene_rgb  # noqa: E402

from depthprior.priors.backends import settings_for  # noqa: E402
from depthprior.priors.backends.space import SpaceBackend  # noqa: E402
from depthprior.priors.backends.space_faults import parse_wait  # noqa: E402
from depthprior.priors.backends.space_output import choose_depth  # noqa: E402
from depthprior.errors import BackendUnavailable, ImageError, UsageError  # noqa: E402
from depthprior.images import decode_rgb  # noqa: E402
from depthprior.priors.store import TMP_MARK, count_levels, read_png16  # noqa: E402

#: one xdist worker runs the module, so that its server starts once (~4 s)
pytestmark = pytest.mark.xdist_group("space")

REPO = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).resolve().parent / "fake_space.py"
#: clients (in process and CLI subprocesses): no Hub lookups, no telemetry
LOOPBACK_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}
#: the server also gets a proxy that refuses everything but loopback (httpx honours it)
BLACKHOLE = "http://127.0.0.1:9"
SERVER_ENV = {
    **LOOPBACK_ENV,
    "HTTP_PROXY": BLACKHOLE, "HTTPS_PROXY": BLACKHOLE, "ALL_PROXY": BLACKHOLE,
    "http_proxy": BLACKHOLE, "https_proxy": BLACKHOLE, "all_proxy": BLACKHOLE,
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}
FAST = ("--min-interval", "0", "--no-progress")


class FakeSpace:
    """tests/fake_space.py as a server process on 127.0.0.1."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tmp").mkdir(exist_ok=True)
        env = {**os.environ, **SERVER_ENV, "GRADIO_TEMP_DIR": str(folder / "gradio"),
               "TMPDIR": str(folder / "tmp")}
        self.stdout = folder / "stdout.txt"
        with open(self.stdout, "wb") as out, open(folder / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen([sys.executable, str(FAKE), "--port", "0"],
                                            stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = self.stdout.read_text()
            if "FAKE_SPACE_READY" in text:
                self.url = text.split("FAKE_SPACE_READY", 1)[1].split()[0]
                assert self.url.startswith("http://127.0.0.1:")
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake Space did not start: {(folder / 'stderr.txt').read_text()[-2000:]}")

    def configure(self, **behaviour) -> None:
        httpx.post(self.url + "_fake/config", json=behaviour, timeout=10).raise_for_status()

    def log(self) -> list[dict]:
        return httpx.get(self.url + "_fake/log", timeout=10).json()

    def outcomes(self) -> list[str]:
        return [record["outcome"] for record in sorted(self.log(), key=lambda r: r["start"])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    saved = {key: os.environ.get(key) for key in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def space(tmp_path_factory, loopback_only) -> FakeSpace:
    server = FakeSpace(tmp_path_factory.mktemp("fake-space"))
    yield server
    server.stop()


@pytest.fixture
def fake(space: FakeSpace) -> FakeSpace:
    space.configure()  # defaults, counters and log reset
    return space


def backend(url: str, **settings) -> SpaceBackend:
    engine = SpaceBackend(settings_for("space", space=url, **{"min_interval": 0, **settings}))
    engine.backoff_base = 0.2
    return engine


def cli(*args, env: dict | None = None, timeout: float = 120):
    """The CLI with LOOPBACK_ENV (set in os.environ by `loopback_only` for in-process runs and
    the processes started from here): in this process unless `env` needs a process of its own."""
    assert all(os.environ.get(key) == value for key, value in LOOPBACK_ENV.items())
    return run_cli(*args, env=env, timeout=timeout)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x.ravel(), kind="stable")).astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def manifest(out: Path) -> dict:
    return json.loads((out / "depthprior.json").read_text())


# ---------------------------------------------------------------- pure functions


def test_parse_wait_reads_zerogpu_messages():
    assert parse_wait("You have exceeded your GPU quota (60s requested vs. 43s left). "
                      "Try again in 0:00:02") == 2
    assert parse_wait("... Try again in 1:02:03") == 3723
    assert parse_wait("try again in 12:34") == 754
    assert parse_wait("Retry in 30 seconds") == 30
    assert parse_wait("You have exceeded your GPU quota. Sign up for more.") is None


def test_choose_depth_by_levels_and_guards_against_wrapped_raw():
    disparity = np.linspace(0.3, 7.9, 64 * 48, dtype=np.float32).reshape(48, 64)
    gray = ((disparity - disparity.min()) / np.ptp(disparity) * 255).astype(np.uint8)
    few = choose_depth(gray, disparity.astype(np.uint16))
    assert few.source == "space:gray8" and few.levels == 256 and few.raw_levels == 8
    assert abs(few.values.min() - 0.5) < 1e-6 and abs(few.values.max() - 7.5) < 1e-4  # raw units
    many = choose_depth(gray, (disparity * 1000).astype(np.uint16))
    assert many.source == "space:raw16" and many.levels == 64 * 48
    wrapped = (disparity * 1000).astype(np.uint16)
    wrapped[:10] = 65000  # negative disparities cast to uint16 would wrap like this
    guarded = choose_depth(gray, wrapped)
    assert guarded.source == "space:gray8" and any("inconsistent" in n for n in guarded.notes)


# ---------------------------------------------------------------- in process, real client


@pytest.mark.parametrize("scale, source", [(10.0, "space:gray8"), (4000.0, "space:raw16")])
def test_precision_choice_values_and_diagnostics(fake, scale, source):
    fake.configure(scale=scale)
    rgb = scene_rgb(48, 64, seed=3)
    with backend(fake.url) as engine:
        depth = engine.predict([rgb])[0]
        facts = engine.diagnostics()
    expected = known_disparity(rgb, scale)
    assert depth.source == source and depth.kind == "disparity"
    assert depth.values.shape == (48, 64) and depth.values.dtype == np.float32
    assert np.corrcoef(depth.values.ravel(), expected.ravel())[0, 1] > 0.999
    # in the Space's disparity units either way (gray levels mapped onto the raw file's range)
    assert abs(float(depth.values.max()) - float(expected.max())) < 1.0
    if source == "space:gray8":
        assert depth.levels <= 256
        assert "8-bit data" in facts["file used"] and "only" in facts["file used"]
    else:
        assert depth.levels > 1000
    assert "/on_submit" in facts["api"] and "[File]" in facts["api"]
    assert "WEBP" in facts["output 1"] and "uint8" in facts["output 2"] and "uint16" in facts["output 3"]
    assert "uploaded to" in facts["upload"]


def test_quota_wait_is_honoured(fake):
    fake.configure(quota_times=1, quota_wait="0:00:01")
    with backend(fake.url) as engine:
        depth = engine.predict([scene_rgb(48, 64)])[0]
    first, second = sorted(fake.log(), key=lambda r: r["start"])
    assert (first["outcome"], second["outcome"]) == ("quota", "ok")
    assert second["start"] - first["start"] >= 1.0
    assert "2 attempts" in depth.notes


def test_blank_maps_are_retried_never_returned(fake):
    fake.configure(blank_times=1)
    with backend(fake.url) as engine:
        depth = engine.predict([scene_rgb(48, 64)])[0]
    assert fake.outcomes() == ["blank", "ok"] and np.ptp(depth.values) > 0
    fake.configure(blank_times=10)
    with backend(fake.url, retries=2) as engine, pytest.raises(ImageError, match="blank"):
        engine.predict([scene_rgb(48, 64)])


def test_attempts_are_capped_and_hidden_errors_reported(fake):
    fake.configure(fail_every=1, fail_kind="crash")
    with backend(fake.url, retries=3) as engine:
        with pytest.raises(ImageError, match="gave up after 3 attempts"):
            engine.predict([scene_rgb(48, 64)])
    assert fake.outcomes() == ["crash"] * 3


def test_slow_answers_time_out(fake):
    fake.configure(slow=2.0)
    with backend(fake.url, retries=2, timeout=0.4) as engine:
        started = time.monotonic()
        with pytest.raises(ImageError, match=r"no answer within 0.4 s \(--timeout\)"):
            engine.predict([scene_rgb(48, 64)])
        assert time.monotonic() - started < 2.0  # did not wait for the slow answers
    assert len(fake.log()) <= 2


@pytest.mark.parametrize("mode", ["stall", "drip"])
@pytest.mark.hostile
def test_timeout_bounds_connecting_to_a_silent_or_trickling_server(fake, mode):
    fake.configure(**{mode: "/config"})  # no answer, or one byte every 0.5 s for 40 s
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"after 2 attempts: no answer within 1 s"):
        backend(fake.url, timeout=1, retries=2)
    expected = 2 * 1 + 1.0  # two attempts of --timeout, one backoff of at most 1 s
    assert time.monotonic() - started < 3 * expected


@pytest.mark.parametrize("mode", ["stall", "drip"])
@pytest.mark.hostile
def test_timeout_bounds_a_silent_or_trickling_download(fake, mode):
    with backend(fake.url, timeout=1, retries=2) as engine:
        fake.configure(**{mode: "/gradio_api/file="})
        started = time.monotonic()
        with pytest.raises(ImageError, match=r"no answer within 1 s \(--timeout\)"):
            engine.predict([scene_rgb(48, 64)])
        expected = 2 * 1 + 0.4  # two attempts of --timeout, one backoff of at most 0.4 s
        assert time.monotonic() - started < 3 * expected
    assert len(fake.log()) == 2


@pytest.mark.hostile
def test_replies_above_the_byte_cap_fail_the_image(fake, monkeypatch):
    monkeypatch.setattr(SpaceBackend, "max_reply_bytes", 1_000_000)
    fake.configure(pad_bytes=2_000_000)
    with backend(fake.url) as engine, pytest.raises(ImageError, match="cap of 1_000_000 bytes"):
        engine.predict([scene_rgb(48, 64)])
    assert len(fake.log()) == 1  # refused, not retried


@pytest.mark.hostile
def test_returned_pictures_above_max_pixels_fail_before_decoding(fake):
    fake.configure(resize=4.0)  # 256x192 maps for a 64x48 image
    with backend(fake.url, max_pixels=20_000) as engine:
        with pytest.raises(ImageError, match=r"gray file: image is 256x192.*--max-pixels"):
            engine.predict([scene_rgb(48, 64)])
    assert len(fake.log()) == 1


def test_concurrency_and_pacing(fake):
    fake.configure(slow=0.4)
    with backend(fake.url, concurrency=3) as engine:
        assert engine.preferred_batch_size == 3
        images = [scene_rgb(48, 64, seed=i) for i in range(6)]
        outcomes = engine.infer_each([engine.prepare(image, f"{index}.png") for index, image in enumerate(images)])
    assert all(not isinstance(o, Exception) for o in outcomes)
    spans = [(r["start"], r["end"]) for r in fake.log()]
    overlap = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert overlap >= 2
    fake.configure()
    with backend(fake.url, concurrency=3, min_interval=0.5) as engine:
        engine.infer_each([engine.prepare(scene_rgb(48, 64, seed=i), f"{i}.png") for i in range(3)])
    starts = sorted(r["start"] for r in fake.log())
    # 0.5 s apart at the client (1.0 s from first to last); unpaced, the three start together. The
    # server sees them later by each upload's delay, which on loaded cores compressed one gap to 0.26 s
    assert starts[-1] - starts[0] >= 0.6 and len(starts) == 3


def test_connection_faults_are_one_clear_error(fake):
    with pytest.raises(UsageError, match="has no /on_submit endpoint"):
        backend(fake.url + "other/")
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        backend("someone/not-a-space")
    with pytest.raises(BackendUnavailable, match="cannot reach http://127.0.0.1:9/"):
        backend("http://127.0.0.1:9/")  # the discard port: nothing listens there


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("scale", [4000.0, 10.0])
def test_generate_writes_the_contract_near_bright(fake, tmp_path, scale):
    fake.configure(scale=scale)
    frames = make_frames(tmp_path / "frames", count=3)
    out, system_tmp = tmp_path / "out", tmp_path / "system-tmp"
    system_tmp.mkdir()
    result = cli("generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url,
                 "--verify", *FAST, env={"TMPDIR": str(system_tmp)})
    assert result.returncode == 0, result.stdout + result.stderr
    records = manifest(out)["images"]
    for frame in frames:
        png = read_png16(out / (frame.stem + ".png"))
        assert png.dtype == np.uint16 and png.shape == (48, 64)
        expected = known_disparity(decode_rgb(frame), scale)
        assert rank_correlation(png, expected) > 0.99  # near = bright, no flip or transpose
        assert png[-8:].mean() > png[:8].mean()  # the fake puts near at the bottom
        record = records[frame.name]
        if scale > 256:
            assert record["source"] == "space:raw16" and record["precision_bits"] > 10
        else:
            assert record["source"] == "space:gray8" and record["precision_bits"] <= 8
    assert ("space:raw16" if scale > 256 else "space:gray8") in result.stdout  # verify's table
    if scale <= 256:
        assert "distinct levels" in result.stdout or "8-bit source" in result.stdout
    assert list(system_tmp.iterdir()) == []  # nothing left in the system temp folder


def test_intermittent_faults_with_concurrency_finish(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(SpaceBackend, "backoff_base", 0.2)  # as backend() has it: retries, sooner
    fake.configure(fail_every=3, fail_kind="gpu", http429_every=5, http503_every=7)
    make_frames(tmp_path / "frames", count=6)
    out = tmp_path / "out"
    result = cli("generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url,
                 "--retries", "5", "--concurrency", "3", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done 6" in result.stdout
    outcomes = fake.outcomes()
    assert outcomes.count("ok") == 6 and "gpu" in outcomes and "http429" in outcomes
    assert "GPU task aborted" in result.stderr  # each retry is reported


def test_other_size_is_resized_and_noted(fake, tmp_path):
    fake.configure(resize=0.5, scale=10.0)
    frames = make_frames(tmp_path / "frames", count=1)
    out = tmp_path / "out"
    result = cli("generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url,
                 "--verify", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    png = read_png16(out / "frame_0000.png")
    assert png.shape == (48, 64)
    record = manifest(out)["images"][frames[0].name]
    assert any("returned 32x24; resized to 64x48" in note for note in record["notes"])
    # interpolation adds PNG levels, not information: verify still says the data is 8-bit
    assert record["source"] == "space:gray8" and record["source_levels"] <= 256
    expected = "8-bit source data" if count_levels(png) >= 256 else "distinct levels"
    assert expected in result.stdout


def test_long_quota_wait_stops_with_the_time_to_come_back(fake, tmp_path):
    fake.configure(quota_times=100, quota_wait="3:00:00")
    make_frames(tmp_path / "frames", count=2)
    out = tmp_path / "out"
    result = cli("generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url, *FAST)
    assert result.returncode == 1
    assert "stopped early" in result.stdout and "3:00:00" in result.stdout
    assert not list(out.glob("*.png"))
    assert len(fake.log()) == 1  # no hammering of an exhausted quota


def test_unreachable_server_stops_before_any_work(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    make_frames(tmp_path / "frames", count=2)
    result = cli("generate", tmp_path / "frames", tmp_path / "out", "--backend", "space",
                 "--space", f"http://127.0.0.1:{port}/", *FAST)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and "cannot reach" in errors[0]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*.png"))


def test_tokens_never_appear(fake, tmp_path, monkeypatch):
    fake.configure(fail_every=2)
    make_frames(tmp_path / "frames", count=2)
    out = tmp_path / "out"
    secret, env_secret = "hf_SECRETflag123456789", "hf_ENVsecret987654321"
    # HF_TOKEN is read when a backend starts, not at import: the runs stay in this process
    monkeypatch.setenv("HF_TOKEN", env_secret)
    result = cli("generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url,
                 "--hf-token", secret, *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = cli("check", "--backend", "space", "--space", fake.url, "--min-interval", "0")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for text in (result.stdout, result.stderr, checked.stdout, checked.stderr,
                 (out / "depthprior.json").read_text()):
        assert secret not in text and env_secret not in text
    assert "third" in checked.stdout and "check: OK" in checked.stdout
    # a server that is not a Hugging Face host never receives Hugging Face credentials
    assert httpx.get(fake.url + "_fake/credentials", timeout=10).json() == {"requests": 0}


class DoomedRoute:
    """The server on a port of its own through a TCP relay in this process: kill() resets every
    connection and stops listening, which is what a client sees of a server process killed
    mid-run (a second server process would cost its ~5 CPU-s start)."""

    def __init__(self, url: str):
        host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.sockets: list[socket.socket] = []
        self.lock, self.killed = threading.Lock(), False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
                if self.killed:  # accepted while kill() ran: reset too
                    self._reset([client, upstream])
                    return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def kill(self) -> None:
        with self.lock:
            self.killed = True
            self.listener.close()
            self._reset(self.sockets)

    @staticmethod
    def _reset(sockets: list[socket.socket]) -> None:
        for sock in sockets:
            try:  # RST, not FIN: the peer's next read or write fails at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass


def test_server_killed_mid_run_then_resume_elsewhere(space, tmp_path):
    space.configure(slow=0.5)
    doomed = DoomedRoute(space.url)
    try:
        make_frames(tmp_path / "frames", count=12)
        out = tmp_path / "out"
        # one attempt per image: the run stops after the breaker's consecutive failed images
        # without a backoff before each second attempt
        args = ["generate", tmp_path / "frames", out, "--backend", "space", "--retries", "1",
                "--timeout", "10", *FAST]
        env = {**os.environ, **LOOPBACK_ENV}
        run = subprocess.Popen([sys.executable, "-m", "depthprior", *map(str, args),
                                "--space", doomed.url], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.png"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        doomed.kill()
        stdout, stderr = run.communicate(timeout=90)
    finally:
        doomed.kill()
        space.configure()
    assert run.returncode == 1, stdout + stderr
    assert "stopped early" in stdout and "consecutive" in stdout
    records = manifest(out)["images"]
    done = {name for name, record in records.items() if record["status"] == "ok"}
    assert 3 <= len(done) < 12
    for name in done:  # every output present is complete
        png = read_png16(out / records[name]["outputs"][0])
        assert png.dtype == np.uint16 and png.shape == (48, 64) and np.ptp(png) > 0
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    # the server comes back elsewhere (another port): same model, so the folder resumes
    again = cli(*args, "--space", space.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"skipped {len(done)}" in again.stdout
    assert len(list(out.glob("*.png"))) == 12


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
@pytest.mark.hostile
def test_no_frame_copies_outlive_a_killed_run(fake, tmp_path, signal_name):
    import signal

    fake.configure(slow=1.0)
    make_frames(tmp_path / "frames", count=6)
    out, system_tmp = tmp_path / "out", tmp_path / "system-tmp"
    system_tmp.mkdir()
    args = ["generate", tmp_path / "frames", out, "--backend", "space", "--space", fake.url, *FAST]
    env = {**os.environ, **LOOPBACK_ENV, "TMPDIR": str(system_tmp)}
    run = subprocess.Popen([sys.executable, "-m", "depthprior", *map(str, args)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the next request is in flight
    run.send_signal(getattr(signal, signal_name))
    run.wait(30)
    assert list(out.glob("*.png")) and run.returncode != 0
    assert [p.name for p in system_tmp.rglob("*") if p.is_file()] == []
    if signal_name == "SIGKILL":  # and nothing is left after the next start either
        fake.configure()
        again = cli(*args, env={"TMPDIR": str(system_tmp)})
        assert again.returncode == 0, again.stdout + again.stderr
        assert [p.name for p in system_tmp.rglob("*") if p.is_file()] == []


def test_seed_scripts_against_the_server(fake, tmp_path):
    make_frames(tmp_path / "frames", count=2)
    env = {**os.environ, **LOOPBACK_ENV}
    api = subprocess.run([sys.executable, "preprocessing/test_depth_api.py",
                          str(tmp_path / "frames" / "frame_0000.jpg"), "--space", fake.url,
                          "--min-interval", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert api.returncode == 0, api.stdout + api.stderr
    assert "/on_submit" in api.stdout and "check: OK" in api.stdout and "uploaded" in api.stdout
    out = tmp_path / "depth"
    gen = subprocess.run([sys.executable, "preprocessing/generate_depth.py", str(tmp_path / "frames"),
                          str(out), "--verify", "--num_samples", "2", "--backend", "space",
                          "--space", fake.url, "--min-interval", "0", "--no-progress"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    assert "verify: OK" in gen.stdout and len(list(out.glob("frame_*.png"))) == 2
    assert fake.outcomes().count("ok") == 3
