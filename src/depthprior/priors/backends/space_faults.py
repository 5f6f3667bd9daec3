"""How the space backend reads a failure: retry, wait, skip the image, or stop the run.

Shared ZeroGPU Spaces fail often and mostly for a while only. A Fault is one failed attempt
worth repeating (with the wait the server named, if any); an ImageFault fails one image and
the run goes on. The Pacer spaces requests out and holds them all during a quota wait; the
Breaker stops a run after a streak of failed images or once the Space is found unusable.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any

from ...errors import BackendUnavailable

_QUOTA_WAIT = re.compile(
    r"(?:try again|retry)(?: after| in)?\s+(?:(\d+):)?(\d{1,2}):(\d{2})\b", re.IGNORECASE)
_QUOTA_WAIT_WORDS = re.compile(
    r"(?:try again|retry)(?: after| in)?\s+(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|hours?|h)\b",
    re.IGNORECASE)


class Fault(Exception):
    """One failed attempt that may succeed when repeated.

    wait: seconds the server asked for (quota message, Retry-After); floor: the least backoff;
    reconnect: build a new client before the next attempt; quota: the wait holds every request.
    """

    def __init__(self, message: str, *, wait: float | None = None, floor: float = 0.0,
                 reconnect: bool = False, quota: bool = False):
        super().__init__(message)
        self.wait = wait
        self.floor = floor
        self.reconnect = reconnect
        self.quota = quota


class ImageFault(Exception):
    """A fault that repeating will not fix, for this image only (the run goes on)."""


def parse_wait(message: str) -> float | None:
    """Seconds named by 'Try again in H:MM:SS' / 'in MM:SS' / 'in 30 seconds', else None."""
    match = _QUOTA_WAIT.search(message)
    if match:
        hours, minutes, seconds = match.groups()
        if hours is None:  # "MM:SS"
            return float(int(minutes) * 60 + int(seconds))
        return float(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
    match = _QUOTA_WAIT_WORDS.search(message)
    if match:
        value, unit = float(match.group(1)), match.group(2).lower()
        return value * (3600 if unit.startswith("h") else 60 if unit.startswith("m") else 1)
    return None


def format_wait(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class Pacer:
    """Request starts at least min_interval apart, across threads; a quota wait holds all."""

    def __init__(self, min_interval: float, stop: threading.Event):
        self.min_interval = max(0.0, min_interval)
        self._next = 0.0
        self._lock = threading.Lock()
        self._stop = stop

    def hold_until(self, moment: float) -> None:
        with self._lock:
            self._next = max(self._next, moment)

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.min_interval
        if start > now and self._stop.wait(start - now):
            raise BackendUnavailable("the space backend was closed")


class Breaker:
    """Opens after `limit` consecutive images failed for transient reasons (the Space is down),
    or for good once a request found the Space unusable (quota gone, token refused)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._failures = 0
        self._last = ""
        self._stopped: BackendUnavailable | None = None
        self._lock = threading.Lock()

    def stop(self, error: BackendUnavailable) -> None:
        with self._lock:
            self._stopped = self._stopped or error

    def check(self) -> None:
        with self._lock:
            if self._stopped is not None:
                raise BackendUnavailable(str(self._stopped))
            if self._failures >= self.limit:
                raise BackendUnavailable(
                    f"stopped after {self._failures} consecutive images failed on the Space "
                    f"(last: {self._last}); it looks down or overloaded"
                )

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def failure(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self._last = reason


def status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
