"""The remote Depth-Anything-V2 demo Space (endpoint /on_submit) through gradio_client.

One request per image: upload a lossless PNG of the image's stored pixels, wait for the Space,
fetch its two depth files into memory, keep the one with more distinct levels, and hand the
pipeline a disparity map at the image's size.

In the pipeline's stages: prepare is the submit stage (encode the upload, queue the request in
the backend's own pool of --concurrency threads), infer_each waits for the submitted requests'
outcomes, finish turns one response into the map.

Shared ZeroGPU Spaces fail often and mostly for a while only, so every request is paced
(--min-interval), retried with exponential backoff and jitter (--retries attempts), honours the
wait a quota message names, and a run of consecutive failed images stops the run early (the
rerun resumes). Permanent faults (unknown Space, missing endpoint, rejected token) end it at
once with one line. The fault kinds, pacing and stopping live in space_faults.py; the caps on
replies and reading the two returned files as one map in space_output.py; the client, its
endpoint check, reconnecting and token scrubbing in space_connection.py.

--timeout is a hard deadline per attempt (connecting, or upload + processing + download), not
counting time in the Space's queue (up to max_queue_wait); every HTTP request also ends by it,
whatever trickles in (ReplyGuard). Replies are capped at MAX_REPLY_BYTES, returned pictures at
--max-pixels before decoding; either fails that image with its reason.

Nothing touches the local disk: the upload PNG is encoded and posted from memory (the server
gets a reference to its own copy), the client runs with download_files=False (its own download
path leaves an empty folder in the system temp dir per file) and the two depth files are read
into memory; the slider's two pictures are not fetched at all during generate.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import threading
import time
import urllib.parse
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Sequence

import cv2
import numpy as np

from ...errors import BackendUnavailable, ImageError, MissingDependencyError, UsageError, first_line
from ...files.raster import decode_stored
from .base import Backend, BackendSettings, DepthMap, require_number
from .space_connection import (DEFAULT_SPACE, ENDPOINT, Clock, SpaceAddress, SpaceConnection,
                               render_api)
from .space_faults import Breaker, Fault, ImageFault, Pacer, format_wait, parse_wait, retry_after
from .space_output import (MAX_REPLY_BYTES, ReplyGuard, check_declared_size, choose_depth,
                           describe_array, format_of, read_capped, single_channel)

log = logging.getLogger(__name__)

#: what the public Space runs (its app.py): Depth-Anything-V2-Large at input size 518
SPACE_MODEL = "depth-anything/Depth-Anything-V2-Large"
SPACE_INPUT_SIZE = 518
#: the name the upload carries (the server keeps its suffix)
UPLOAD_NAME = "upload.png"


def _gradio_client() -> SimpleNamespace:
    """gradio_client and the pieces of it this backend uses, imported on first use."""
    try:
        import httpx
        from gradio_client import Client
        from gradio_client import exceptions, utils
    except ImportError:
        raise MissingDependencyError("gradio_client", "space", "the space backend") from None
    return SimpleNamespace(Client=Client, httpx=httpx,
                           errors=exceptions, utils=utils)


# ---------------------------------------------------------------- requests and responses

@dataclass
class SpaceResponse:
    """One answer of /on_submit, decoded in memory."""

    gray: np.ndarray  # the "Grayscale depth map" file (uint8 in the Space)
    raw: np.ndarray  # the "16-bit raw output" file (uint16 in the Space)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file facts for check
    slider: Any = None  # the slider's file references, not fetched
    attempts: int = 1
    seconds: float = 0.0


def encode_upload(image: np.ndarray) -> bytes:
    """A lossless PNG of the stored pixels, in memory (no EXIF: the Space sees the same array)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB image, got shape {image.shape}")
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ImageError("PNG encoding for the upload failed")
    return buffer.tobytes()


@dataclass
class _Pending:
    """A prepared input: its queued request (the upload PNG lives in memory only)."""

    future: concurrent.futures.Future


@dataclass(frozen=True)
class SpaceOptions:
    """Where the server is and how requests to it are paced, retried and bounded."""

    space: str = field(default=DEFAULT_SPACE, metadata={
        "help": "Space id or URL of a Gradio server with the /on_submit endpoint"})
    hf_token: str | None = field(default=None, repr=False, metadata={
        "help": "Hugging Face token (default: the HF_TOKEN environment variable)"})
    retries: int = field(default=5, metadata={
        "help": "attempts per image, the first included (1 = no retry)"})
    min_interval: float = field(default=1.0, metadata={
        "help": "seconds between requests (pacing for a shared Space)"})
    concurrency: int = field(default=1, metadata={
        "help": "requests in flight (for your own server; default sequential)"})
    timeout: float = field(default=120.0, metadata={
        "help": "seconds per attempt, a hard deadline; queue time aside (<= 30 min); "
                "replies > 256 MiB refused"})


# ---------------------------------------------------------------- the backend

class SpaceBackend(Backend):
    """Depth from the Depth-Anything-V2 demo Space (or any Gradio server with its /on_submit)."""

    name = "space"
    Options = SpaceOptions
    uploads = True
    #: consecutive failed images (each after all its attempts) that stop the run
    max_consecutive_failures = 3
    #: longest quota / Retry-After wait honoured in place; longer ones stop the run
    max_wait = 600.0
    #: longest wait in the Space's queue for one request (the --timeout counts processing only)
    max_queue_wait = 1800.0
    #: first backoff and its ceiling, seconds (doubled per attempt, with jitter)
    backoff_base = 1.0
    backoff_max = 60.0
    #: the most bytes read from one reply (space_output.MAX_REPLY_BYTES)
    max_reply_bytes = MAX_REPLY_BYTES

    @classmethod
    def identity(cls, settings: BackendSettings) -> dict[str, Any]:
        # The Space fixes model and input size; where it is served from (Space id, duplicate,
        # local URL, port) does not change the values, so a moved server resumes the folder.
        return {"backend": cls.name, "model": SPACE_MODEL, "input_size": SPACE_INPUT_SIZE}

    @classmethod
    def check_options(cls, options: SpaceOptions) -> SpaceOptions:
        for name, kind in (("timeout", float), ("min_interval", float), ("retries", int),
                           ("concurrency", int)):
            require_number(name, getattr(options, name), kind)
        if options.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if options.min_interval < 0:
            raise UsageError("--min-interval must be 0 or more")
        if options.retries < 1:
            raise UsageError("--retries must be at least 1")
        if options.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        return dataclasses.replace(options, space=options.space.strip() or DEFAULT_SPACE,
                                   hf_token=options.hf_token or os.environ.get("HF_TOKEN") or None)

    def __init__(self, settings: BackendSettings):
        super().__init__(settings)
        options = self.options
        self._gc = _gradio_client()
        for noisy in ("httpx", "httpcore"):  # one INFO line per HTTP request otherwise
            if logging.getLogger(noisy).level == logging.NOTSET:
                logging.getLogger(noisy).setLevel(logging.WARNING)
        self.address = SpaceAddress(options.space)
        self.attempts = options.retries
        self._closing = threading.Event()
        self._pacer = Pacer(options.min_interval, self._closing)
        self._breaker = Breaker(self.max_consecutive_failures)
        self._lock = threading.Lock()
        self._last: SpaceResponse | None = None
        self._guard = ReplyGuard(options.timeout, self.max_reply_bytes)
        secrets = [s for s in (options.hf_token, os.environ.get("HF_TOKEN")) if s]
        self._connection = SpaceConnection(self.address, gc=self._gc, timeout=options.timeout,
                                           token=options.hf_token, secrets=secrets, guard=self._guard)
        # requests run here, queued by prepare() in input order: --concurrency N keeps N in
        # flight whatever the pipeline's batch size (the reader pool prepares ahead)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            options.concurrency, thread_name_prefix="depthprior-space")
        if options.hf_token and not self.address.sends_token:
            log.info("space: the Hugging Face token is not sent to %s (not a Hugging Face host)",
                     self.public_location)
        try:
            self._connection.open(self.attempts, self._classify, self._delay, self._sleep)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ description

    @property
    def preferred_batch_size(self) -> int:
        # prepare() already keeps --concurrency requests in flight; batches of that size let
        # the pipeline collect them together
        return max(self.settings.batch_size, self.options.concurrency)

    def describe(self) -> dict[str, Any]:
        options = self.options
        return {
            "backend": self.name,
            "space": self.public_location,
            "endpoint": ENDPOINT,
            "model": f"{SPACE_MODEL} (fixed by the Space)",
            "input_size": SPACE_INPUT_SIZE,
            "model_output": "disparity",
            "precision": "per image, the 16-bit raw or the 8-bit gray file, whichever holds more "
                         "levels (source, source_levels)",
            "requests": f"{self.attempts} attempts, min interval {options.min_interval:g} s, "
                        f"concurrency {options.concurrency}, timeout {options.timeout:g} s",
            "privacy": f"images are uploaded to {self.public_location}",
        }

    @property
    def public_location(self) -> str:
        """The Space id or URL, without credentials or query."""
        return self.address.public

    def _scrub(self, text: str) -> str:
        return self._connection.scrub(text)

    # ------------------------------------------------------------ pipeline stages

    def prepare(self, image: np.ndarray, name: str) -> "_Pending":
        """The submit stage: encode the upload and queue its request (see submit)."""
        return self.submit(encode_upload(image))

    def submit(self, png: bytes) -> "_Pending":
        """Queue one request (with its retries) in the backend's pool; infer_each collects it.

        The pipeline calls this from its reader pool, through prepare: that is what lets
        --concurrency N keep N requests in flight with any batch size; with the default of 1
        they run one by one, in input order, each while the previous image is being written.
        """
        try:
            return _Pending(self._pool.submit(self._outcome, png))
        except RuntimeError:  # the pool is shut down: the backend was closed
            raise BackendUnavailable("the space backend was closed") from None

    def batch_key(self, prepared: Any) -> Any:
        return None  # requests are independent: any inputs share a batch

    def infer_each(self, batch: Sequence["_Pending"]) -> list[Any]:
        """The outcomes of the submitted requests, in order (waits for them).

        Raises BackendUnavailable when the Space became unusable before any input of the
        batch was tried; inputs that were tried keep their outcome (and the next call raises).
        """
        outcomes: list[Any] = []
        for pending in batch:
            try:
                outcomes.append(pending.future.result())
            except concurrent.futures.CancelledError:
                outcomes.append(BackendUnavailable("the space backend was closed"))
        if outcomes and all(isinstance(o, BackendUnavailable) for o in outcomes):
            raise outcomes[0]
        return [ImageError(f"not processed: {o}") if isinstance(o, BackendUnavailable) else o
                for o in outcomes]

    def finish(self, raw: SpaceResponse, height: int, width: int) -> DepthMap:
        choice = choose_depth(raw.gray, raw.raw)
        values, notes = choice.values, list(choice.notes)
        got_h, got_w = values.shape
        if (got_h, got_w) != (height, width):
            if abs((width / got_w) / (height / got_h) - 1) > 0.02 + 1.0 / min(got_w, got_h):
                raise ImageError(f"the Space returned a {got_w}x{got_h} map for a {width}x{height} "
                                 "image (another aspect ratio): not used")
            values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
            notes.append(f"the Space returned {got_w}x{got_h}; resized to {width}x{height} (bilinear)")
        if raw.attempts > 1:
            notes.append(f"{raw.attempts} attempts")
        return DepthMap(values, kind="disparity", source=choice.source, levels=choice.levels,
                        notes=notes)

    # ------------------------------------------------------------ one request, retried

    def _outcome(self, png: bytes) -> SpaceResponse | Exception:
        """One image's request with its retries, as a response or the error to report."""
        try:
            return self._request(png)
        except BackendUnavailable as error:
            self._breaker.stop(error)  # queued requests fail at once instead of trying again
            return error
        except ImageError as error:
            return error
        except Exception as error:  # noqa: BLE001 - never lose an outcome in the pool
            return ImageError(self._scrub(f"{type(error).__name__}: {first_line(error)}"))

    def _request(self, png: bytes) -> SpaceResponse:
        last: Fault | None = None
        for attempt in range(1, self.attempts + 1):
            self._breaker.check()
            self._pacer.wait()
            started = time.monotonic()
            generation = -1
            try:
                client, generation = self._connection.current()
                response = self._attempt(client, png, Clock(self.options.timeout))
            except (BackendUnavailable, MissingDependencyError, UsageError) as error:
                if isinstance(error, UsageError):  # the server changed under us
                    raise BackendUnavailable(str(error)) from None
                raise
            except Exception as error:  # noqa: BLE001 - sorted below
                fault = self._classify(error)
                if isinstance(fault, ImageFault):
                    raise ImageError(str(fault)) from None
                last = fault
                if fault.reconnect:
                    self._connection.mark_stale(generation)
                if attempt == self.attempts:
                    break
                delay = self._delay(fault, attempt)
                log.warning("space: %s; attempt %d/%d, next in %.1f s",
                            fault, attempt, self.attempts, delay)
                if fault.quota:
                    self._pacer.hold_until(time.monotonic() + delay)
                else:
                    self._sleep(delay)
                continue
            response.attempts, response.seconds = attempt, time.monotonic() - started
            self._breaker.success()
            with self._lock:
                self._last = response
            return response
        reason = f"{last} (gave up after {self.attempts} attempts)"
        self._breaker.failure(str(last))
        raise ImageError(reason)

    def _attempt(self, client: Any, png: bytes, clock: Clock) -> SpaceResponse:
        """Upload, process and download within one --timeout (queue time aside)."""
        try:
            return self._exchange(client, png, clock)
        except (Fault, ImageFault, BackendUnavailable):
            raise
        except Exception:
            if clock.expired():  # a request cut off at the deadline fails in its own words
                raise clock.fault() from None
            raise

    def _exchange(self, client: Any, png: bytes, clock: Clock) -> SpaceResponse:
        job = client.submit(self._upload(client, png, clock), api_name=ENDPOINT)
        try:
            result = self._wait_for(job, clock)
        except BaseException:
            try:
                job.cancel()
            except Exception:  # noqa: BLE001 - the job is abandoned either way
                pass
            raise
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise BackendUnavailable(f"{ENDPOINT} of {self.public_location} answered "
                                     f"{type(result).__name__} instead of (slider, gray file, raw file)")
        slider, gray_ref, raw_ref = result
        files: dict[str, dict[str, Any]] = {}
        gray = self._fetch(client, gray_ref, "gray", files, clock)
        raw = self._fetch(client, raw_ref, "raw", files, clock)
        gray, raw = single_channel(gray), single_channel(raw)
        if gray.shape != raw.shape:
            raise Fault(f"the gray ({gray.shape[1]}x{gray.shape[0]}) and raw "
                         f"({raw.shape[1]}x{raw.shape[0]}) files differ in size")
        if gray.max() == gray.min() and raw.max() == raw.min():
            raise Fault(f"the Space returned a blank map (constant {gray.max()})")
        return SpaceResponse(gray, raw, files, slider)

    def _upload(self, client: Any, png: bytes, clock: Clock) -> dict[str, Any]:
        """Post the PNG from memory; the reference to the server's copy goes into the job.

        The reference carries no "meta" key on purpose: gradio_client would take it for a local
        file and upload it again.
        """
        response = self._gc.httpx.post(
            client.upload_url, files=[("files", (UPLOAD_NAME, png, "image/png"))],
            headers=client.headers, cookies=client.cookies,
            verify=getattr(client, "ssl_verify", True), auth=self._guard.until(clock.deadline))
        response.raise_for_status()
        paths = response.json()
        if not isinstance(paths, list) or not paths or not isinstance(paths[0], str):
            raise Fault(f"the Space's upload answered {first_line(str(paths))[:80]!r}, not a file path")
        return {"path": paths[0], "orig_name": UPLOAD_NAME}

    def _wait_for(self, job: Any, clock: Clock) -> Any:
        """The job's result; the --timeout clock stops while the job waits in the queue."""
        status_enum = self._gc.utils.Status
        queued = 0.0
        last = time.monotonic()
        reported = 0.0
        while True:
            try:
                return job.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                pass
            if self._closing.is_set():
                raise BackendUnavailable("the space backend was closed")
            now = time.monotonic()
            step, last = now - last, now
            status = job.status()
            if status.code == status_enum.IN_QUEUE:
                queued += step
                clock.pause(step)
                if queued - reported >= 30:
                    reported = queued
                    log.info("space: waiting in the Space's queue (position %s, eta %s s)",
                             status.rank, None if status.eta is None else round(status.eta))
            if clock.expired():
                raise clock.fault()
            if queued > self.max_queue_wait:
                raise Fault(f"waited {queued:.0f} s in the Space's queue")

    def _fetch(self, client: Any, ref: Any, label: str, files: dict[str, dict[str, Any]],
               clock: Clock) -> np.ndarray:
        """One returned file, read into memory within the caps and decoded (nothing on disk)."""
        path = ref.get("path") if isinstance(ref, dict) else ref
        if not path or not isinstance(path, str):
            raise Fault(f"the Space returned no {label} file")
        # download_files=False: references are the server's; fetch like gradio_client does
        if path.startswith(("http://", "https://")):
            url = path
            own = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(client.src).netloc
        else:
            url = client.src_prefixed + "file=" + urllib.parse.quote(path, safe="/")
            own = True
        with self._gc.httpx.stream(  # credentials only to the server itself
                "GET", url, headers=client.headers if own else {},
                cookies=client.cookies if own else {}, follow_redirects=True,
                verify=getattr(client, "ssl_verify", True),
                auth=self._guard.until(clock.deadline)) as response:
            response.raise_for_status()
            data = read_capped(response, self.max_reply_bytes)
        check_declared_size(data, label, self.settings.max_pixels)
        array = decode_stored(data)
        if array is None:
            raise Fault(f"the {label} file could not be decoded ({len(data)} bytes)")
        files[label] = {"name": os.path.basename(str(path)), "bytes": len(data),
                        "format": format_of(data), **describe_array(array)}
        return array

    # ------------------------------------------------------------ fault handling

    def _classify(self, error: BaseException) -> Fault | ImageFault:
        """Transient faults -> Fault, image-only ones -> ImageFault; run-ending ones raise."""
        gc = self._gc
        text = self._scrub(first_line(error))
        if isinstance(error, (Fault, ImageFault)):
            return error
        if isinstance(error, gc.errors.AppError):
            return self._app_fault(error)
        if isinstance(error, gc.utils.QueueError):
            return Fault("the Space's queue is full", floor=2.0)
        if isinstance(error, gc.utils.TooManyRequestsError):
            return Fault("rate limited by the Space (HTTP 429)", floor=10.0)
        if isinstance(error, gc.httpx.HTTPStatusError):
            code = error.response.status_code
            if code in (401, 403):
                raise BackendUnavailable(f"{self.public_location} refused the request (HTTP {code}): "
                                         "check --hf-token / HF_TOKEN and access to the Space")
            if code == 429:
                wait = retry_after(error.response)
                return Fault("rate limited by the Space (HTTP 429)", wait=wait,
                              floor=0.0 if wait is not None else 10.0)
            if code >= 500 or code in (404, 408, 409, 425):
                return Fault(f"HTTP {code} from the Space", reconnect=code != 404)
            return ImageFault(f"the Space rejected the request (HTTP {code})")
        if isinstance(error, gc.httpx.TimeoutException):
            return Fault(f"timed out talking to the Space ({type(error).__name__})", reconnect=True)
        if isinstance(error, gc.httpx.TransportError):
            return Fault(f"connection to the Space failed ({type(error).__name__}: {text})",
                          reconnect=True)
        if isinstance(error, concurrent.futures.CancelledError):
            return Fault("the Space closed the connection", reconnect=True)
        if isinstance(error, gc.errors.ValidationError):
            return ImageFault(f"the Space refused the input: {text}")
        if isinstance(error, FileNotFoundError):
            return ImageFault(f"upload file missing: {text}")
        if isinstance(error, ValueError) and text.startswith("Cannot find a function"):
            raise BackendUnavailable(f"{self.public_location} no longer offers {ENDPOINT}")
        return Fault(f"{type(error).__name__}: {text}", reconnect=True)

    def _app_fault(self, error: BaseException) -> Fault:
        """An error raised inside the Space's app: ZeroGPU quota, GPU aborts, crashes."""
        message = self._scrub(first_line(error))
        title = str(getattr(error, "title", "") or "")
        if "quota" in (message + title).lower():
            wait = parse_wait(message)
            hint = "" if self.options.hf_token else "; a logged-in token (--hf-token) gets more quota"
            if wait is None:
                raise BackendUnavailable(f"the Space's GPU quota is used up: {message}{hint}")
            if wait > self.max_wait:
                back = (datetime.now() + timedelta(seconds=wait)).strftime("%Y-%m-%d %H:%M")
                raise BackendUnavailable(
                    f"the Space's GPU quota is used up: it asks to wait {format_wait(wait)} "
                    f"(until about {back}); rerun then to resume{hint}")
            return Fault(f"GPU quota exceeded, the Space asks to wait {format_wait(wait)}",
                          wait=wait + 0.5, quota=True)
        if "verbose error reporting" in message:
            return Fault("the Space's app raised an error (it shows no details)")
        return Fault(f"the Space's app raised an error: {message}")

    def _delay(self, fault: Fault, attempt: int) -> float:
        if fault.wait is not None:
            if fault.wait > self.max_wait:
                raise BackendUnavailable(f"the Space asks to wait {format_wait(fault.wait)}; "
                                         "rerun later to resume")
            return max(fault.wait, fault.floor)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return max(fault.floor, ceiling / 2 + random.uniform(0, ceiling / 2))

    def _sleep(self, seconds: float) -> None:
        if self._closing.wait(seconds):
            raise BackendUnavailable("the space backend was closed")

    # ------------------------------------------------------------ check and cleanup

    def diagnostics(self) -> dict[str, Any]:
        with self._lock:
            last = self._last
        client = self._connection.peek()
        facts: dict[str, Any] = {"api": render_api(self._connection.api)}
        if last is None:
            return facts
        if client is not None and last.slider:
            facts["output 1"] = self._slider_facts(client, last.slider)
        labels = {"gray": "output 2", "raw": "output 3"}
        titles = {"gray": "Grayscale depth map (8-bit)", "raw": "16-bit raw output"}
        for key in ("gray", "raw"):
            info = last.files.get(key, {})
            facts[labels[key]] = (f"{titles[key]}: {info.get('format', '?')} {info.get('size')}, "
                                  f"{info.get('channels')} channel(s), {info.get('dtype')}, values "
                                  f"{info.get('range')}, {info.get('levels')} distinct levels, "
                                  f"{info.get('bytes')} bytes")
        choice = choose_depth(last.gray, last.raw)
        facts["file used"] = f"{choice.source}: {choice.reason}"
        if choice.source == "space:gray8":
            facts["file used"] += "; 8-bit data stored in the 16-bit PNG"
        facts["request"] = f"{last.seconds:.2f} s, {last.attempts} attempt(s)"
        facts["upload"] = (
            f"the image was uploaded to {self.public_location}: a third party's server unless it "
            "is your own" if self.address.is_url else
            f"the image was uploaded to the Hugging Face Space {self.public_location}, "
            "a third-party service")
        facts["verdict"] = (f"{ENDPOINT} of {self.public_location} answered with the demo "
                            "Space's three outputs")
        return facts

    def _slider_facts(self, client: Any, slider: Any) -> str:
        refs = slider if isinstance(slider, (list, tuple)) else [slider]
        parts = []
        for name, ref in zip(("image", "coloured depth"), refs):
            facts: dict[str, dict[str, Any]] = {}
            try:
                self._fetch(client, ref, name, facts, Clock(self.options.timeout))
                info = facts[name]
                parts.append(f"{name}: {info['format']} {info['size']}, {info['channels']} "
                             f"channel(s), {info['dtype']}")
            except Exception as error:  # noqa: BLE001 - a report line, not a failure
                parts.append(f"{name}: not fetched ({self._scrub(first_line(error))})")
        return f"slider, pair of {len(refs)} files: " + "; ".join(parts)

    def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._connection.close()
        self._guard.abort_all()  # no request of ours or gradio_client's outlives the backend
