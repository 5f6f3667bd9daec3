"""What the demo Space returns, read within caps and as one disparity map.

Every HTTP exchange with the server (gradio_client's and the backend's own) goes through a
ReplyGuard: at most MAX_REPLY_BYTES per reply (per event on the event streams) and, outside
the long-lived event streams, a hard deadline that no byte trickle extends. A returned picture
is sized from its header and held to --max-pixels before it is decoded.

/on_submit answers with an 8-bit gray file and a "16-bit raw" file of the same disparity;
choose_depth keeps whichever holds more distinct levels and says why.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ...errors import ImageError
from ...files.raster import check_pixels, read_header
from ..store import count_levels
from .space_faults import Fault, ImageFault

try:
    import httpx
except ImportError:  # the backend reports the missing gradio_client (and httpx) on use
    httpx = None

#: the most bytes read from one reply of the server: a file, a page, one event of a stream
MAX_REPLY_BYTES = 256 * 1024 * 1024
#: silence allowed on the event streams that span the queue (the server beats every ~15 s)
STREAM_SILENCE = 60.0
#: GET paths of the long-lived event streams: their time is the queue's, bounded elsewhere
_STREAM_PATHS = ("/queue/data", "/heartbeat/")


@dataclass
class Choice:
    source: str  # "space:raw16" or "space:gray8"
    values: np.ndarray  # float32 disparity (near = large) at the returned size
    levels: int
    gray_levels: int
    raw_levels: int
    reason: str
    notes: list[str] = field(default_factory=list)


def choose_depth(gray: np.ndarray, raw: np.ndarray) -> Choice:
    """Build the disparity map from whichever returned file holds more distinct levels.

    Both files are disparity, near = bright. The raw file is the float disparity truncated to
    integers (only as many levels as the disparity spans units); the gray file is the same
    disparity min-max normalised to 0..255 (at most 256 levels). Ties go to the gray file,
    which cannot wrap. When the gray file is used and the raw file spans a range, the gray
    levels are mapped onto that range, so raw_min/raw_max in the manifest are in the Space's
    disparity units (to about one unit) whichever file an image used.
    """
    gray_levels, raw_levels = count_levels(_as_index(gray)), count_levels(_as_index(raw))
    consistent = _consistent(gray, raw)
    notes: list[str] = []
    if raw_levels > gray_levels and consistent:
        return Choice("space:raw16", raw.astype(np.float32), raw_levels, gray_levels, raw_levels,
                      f"the 16-bit raw file holds {raw_levels} distinct levels, "
                      f"the 8-bit gray file {gray_levels}", notes)
    if raw_levels > gray_levels:
        reason = (f"the 16-bit raw file holds more levels ({raw_levels}) but does not match the "
                  f"gray file (negative or wrapped values?), so the gray file ({gray_levels}) is used")
        notes.append("raw16 file inconsistent with gray8 file; gray8 used")
    else:
        reason = (f"the 16-bit raw file holds only {raw_levels} distinct levels "
                  f"(disparity truncated to integers), the 8-bit gray file {gray_levels}")
    gray_f = gray.astype(np.float32)
    low, high = float(raw.min()), float(raw.max())
    g_low, g_high = float(gray_f.min()), float(gray_f.max())
    if consistent and high > low and g_high > g_low:
        values = np.float32(low + 0.5) + (gray_f - np.float32(g_low)) * np.float32(
            (high - low) / (g_high - g_low))
    else:
        values = gray_f
        notes.append("values in gray levels (0..255), not disparity units")
    return Choice("space:gray8", values.astype(np.float32, copy=False), gray_levels, gray_levels,
                  raw_levels, reason, notes)


def _as_index(array: np.ndarray) -> np.ndarray:
    if array.dtype in (np.uint8, np.uint16):
        return array
    _, inverse = np.unique(array, return_inverse=True)
    return inverse.reshape(array.shape).astype(np.uint32)


def _consistent(gray: np.ndarray, raw: np.ndarray) -> bool:
    """True unless the raw file's values cannot be the gray file's disparity, truncated.

    gray = trunc(255 * t) and raw = trunc(d) for t = (d - min) / (max - min): normalised alike,
    they differ by at most one gray step plus about two raw units.
    """
    g_low, g_high = float(gray.min()), float(gray.max())
    r_low, r_high = float(raw.min()), float(raw.max())
    if r_high - r_low < 2 or g_high <= g_low:
        return True  # too few levels to judge; nothing to gain from the raw file anyway
    g = (gray[::2, ::2].astype(np.float32) - g_low) / (g_high - g_low)
    r = (raw[::2, ::2].astype(np.float32) - r_low) / (r_high - r_low)
    tolerance = 1.5 / (g_high - g_low) + 2.5 / (r_high - r_low)
    return float(np.quantile(np.abs(g - r), 0.999)) <= tolerance


def describe_array(array: np.ndarray) -> dict[str, Any]:
    return {
        "size": f"{array.shape[1]}x{array.shape[0]}",
        "channels": 1 if array.ndim == 2 else array.shape[2],
        "dtype": str(array.dtype),
        "range": f"{array.min()}..{array.max()}",
        "levels": count_levels(_as_index(array if array.ndim == 2 else array[..., 0])),
    }


def single_channel(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] >= 3 and np.array_equal(array[..., 0], array[..., 1]) \
            and np.array_equal(array[..., 1], array[..., 2]):
        return array[..., 0]
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[..., 0]
    raise Fault(f"expected a single-channel depth file, got shape {array.shape}")


def format_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    return "unknown format"


# ---------------------------------------------------------------- caps on every reply


class ReplyTooLarge(ImageFault):
    """A reply above MAX_REPLY_BYTES: this image fails, nothing more is read."""


class ReplyGuard(httpx.Auth if httpx is not None else object):
    """Byte cap and hard deadline for every request made with auth=guard.

    Not authentication: the auth hook is the one httpx extension point that both the module
    functions and httpx.Client take, so gradio_client's requests pass through it too. Each
    request gets `seconds` (or less, up to `deadline`) from its start to its last byte; at that
    moment its socket is shut down, which ends a silent or drip-feeding reply. abort_all()
    ends every open connection (close()).
    """

    def __init__(self, seconds: float, max_bytes: int, deadline: float | None = None,
                 sockets: "weakref.WeakSet[socket.socket] | None" = None):
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.deadline = deadline  # absolute time.monotonic(), for a whole exchange
        self._sockets = sockets if sockets is not None else weakref.WeakSet()

    def until(self, deadline: float) -> "ReplyGuard":
        """The same caps, every request also ending by `deadline`."""
        return ReplyGuard(self.seconds, self.max_bytes, deadline, self._sockets)

    def abort_all(self) -> None:
        for sock in list(self._sockets):
            _shut(sock)

    def auth_flow(self, request: Any) -> Iterator[Any]:
        streaming = request.method == "GET" and any(p in request.url.path for p in _STREAM_PATHS)
        limit = None if streaming else self._limit()
        watch = _Watch(limit, self._sockets)
        silence = max(self.seconds, STREAM_SILENCE) if streaming else limit
        request.extensions = {**request.extensions, "trace": watch.trace, "timeout": {
            "connect": silence, "read": silence, "write": silence, "pool": silence}}
        response = yield request
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            watch.release()
            raise ReplyTooLarge(f"the server's reply declares {int(declared):_d} bytes, above the "
                                f"cap of {self.max_bytes:_d} bytes")
        response.stream = _CappedStream(response.stream, self.max_bytes, streaming, watch)

    def _limit(self) -> float:
        limit = self.seconds
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
        return max(limit, 0.001)


class _Watch:
    """One request's socket: shut down at its deadline, released when the reply is read."""

    def __init__(self, limit: float | None, sockets: "weakref.WeakSet[socket.socket]"):
        self.limit = limit
        self.expired = False
        self._sockets = sockets
        self._socket: socket.socket | None = None
        self._timer: threading.Timer | None = None
        if limit is not None:
            self._timer = threading.Timer(limit, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self._socket = sock
                self._sockets.add(sock)

    def _expire(self) -> None:
        self.expired = True
        if self._socket is not None:
            _shut(self._socket)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._socket is not None:
            self._sockets.discard(self._socket)


class _CappedStream(httpx.SyncByteStream if httpx is not None else object):
    """A response body that stops at max_bytes (per event on an event stream)."""

    def __init__(self, inner: Any, max_bytes: int, per_event: bool, watch: _Watch):
        self._inner, self._max, self._per_event, self._watch = inner, max_bytes, per_event, watch

    def __iter__(self) -> Iterator[bytes]:
        held = 0
        try:
            for chunk in self._inner:
                boundary = chunk.rfind(b"\n\n") if self._per_event else -1
                held = len(chunk) - boundary - 2 if boundary >= 0 else held + len(chunk)
                if held > self._max:
                    raise self._too_large()
                yield chunk
        except httpx.TransportError:
            if self._watch.expired:
                raise httpx.ReadTimeout(f"no complete reply within {self._watch.limit:g} s") from None
            raise

    def _too_large(self) -> Exception:
        if self._per_event:  # gradio_client ends a broken event stream quietly: the job fails
            return httpx.RemoteProtocolError(f"an event above {self._max:_d} bytes")
        return ReplyTooLarge(f"the server's reply exceeds the cap of {self._max:_d} bytes")

    def close(self) -> None:
        self._watch.release()
        self._inner.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def read_capped(response: Any, max_bytes: int) -> bytearray:
    """The body of a streamed response, refused beyond max_bytes (one copy in memory)."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise ReplyTooLarge(f"the server's reply exceeds the cap of {max_bytes:_d} bytes")
    return data


def check_declared_size(data: bytes | bytearray, label: str, max_pixels: int | None) -> None:
    """ImageFault when the picture's header declares more than max_pixels (nothing decoded)."""
    try:
        width, height = declared_size(data)
        check_pixels(width, height, max_pixels)
    except ImageError as error:
        raise ImageFault(f"the Space's {label} file: {error}") from None


def declared_size(data: bytes | bytearray) -> tuple[int, int]:
    """Width and height the picture's header declares (files.raster.read_header)."""
    header = read_header(bytes(data))
    if header is None:
        raise ImageError("unreadable picture header")
    return header.width, header.height
