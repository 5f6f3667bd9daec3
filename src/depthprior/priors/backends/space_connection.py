"""The space backend's connection: where the server is, whether it gets the token, the client
and its endpoint check, reconnecting after a broken exchange, and keeping tokens out of messages.

One client serves every request. An exchange that fails in a way that may have left the
client broken marks it stale; the next request then builds a new one (a "generation"), and
requests of an older generation cannot mark the new client stale.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import BackendUnavailable, UsageError, first_line
from .space_faults import Fault, ImageFault, status_code
from .space_output import ReplyGuard

log = logging.getLogger(__name__)

ENDPOINT = "/on_submit"
DEFAULT_SPACE = "depth-anything/Depth-Anything-V2"


class Clock:
    """One attempt's --timeout: a deadline that time in the Space's queue moves on."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def pause(self, seconds: float) -> None:
        self.deadline += seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def fault(self) -> Fault:
        return Fault(f"no answer within {self.seconds:g} s (--timeout)", reconnect=True)


@dataclass(frozen=True)
class SpaceAddress:
    """--space: a Hugging Face Space id, or the URL of a Gradio server."""

    location: str

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    @property
    def public(self) -> str:
        """The Space id or URL, without credentials or query."""
        if not self.is_url:
            return self.location
        parts = urllib.parse.urlsplit(self.location)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))

    @property
    def sends_token(self) -> bool:
        """Hugging Face credentials go to Hugging Face hosts only, never to another server."""
        if not self.is_url:
            return True
        host = (urllib.parse.urlsplit(self.location).hostname or "").lower()
        return host in ("huggingface.co", "hf.space") or host.endswith((".hf.space", ".huggingface.co"))


class SpaceConnection:
    """The current gradio_client Client of one backend, and how to (re)build it.

    classify sorts a failed exchange into Fault / ImageFault (or raises); delay and sleep are
    the backend's backoff, so connecting retries like requests do.
    """

    def __init__(self, address: SpaceAddress, *, gc: Any, timeout: float, token: str | None,
                 secrets: list[str], guard: ReplyGuard):
        self.address = address
        self.timeout = timeout
        self.token = token
        self.api: dict[str, Any] = {}
        self._gc = gc
        self._secrets = secrets
        self._guard = guard
        self._lock = threading.Lock()
        self._client: Any = None
        self._generation = 0
        self._stale = False

    def scrub(self, text: str) -> str:
        """`text` without any token this backend knows of."""
        for secret in self._secrets:
            text = text.replace(secret, "<token>")
        return text

    # ------------------------------------------------------------ connecting

    def open(self, attempts: int, classify: Callable[[BaseException], Fault | ImageFault],
             delay: Callable[[Fault, int], float], sleep: Callable[[float], None]) -> None:
        """The first client, retried like a request; permanent faults raise at once."""
        last: Fault | None = None
        where = self.address.public
        for attempt in range(1, attempts + 1):
            try:
                client, self.api = self._connect()
                with self._lock:
                    self._client = client
                return
            except (UsageError, BackendUnavailable):  # the endpoint check's verdicts
                raise
            except Exception as error:  # noqa: BLE001 - sorted into permanent and transient
                fault = self._connect_fault(error, classify)
            last = fault
            if attempt < attempts:
                wait = delay(fault, attempt)
                log.warning(
                    "space: cannot connect to %s yet (%s); attempt %d/%d, next in %.1f s",
                    where, fault, attempt, attempts, wait)
                sleep(wait)
        raise BackendUnavailable(f"cannot connect to {where} after {attempts} attempts: {last}")

    def _connect(self) -> tuple[Any, dict[str, Any]]:
        """A new client and its /on_submit description, within one --timeout."""
        clock = Clock(self.timeout)
        guard = self._guard.until(clock.deadline)
        client = None
        try:
            client = self._new_client(guard)
            api = check_endpoint(client, self.address.public)
        except Exception:
            if client is not None:
                close_quietly(client)
            if clock.expired():
                raise clock.fault() from None
            raise
        guard.deadline = None  # from now on each request has its own --timeout
        return client, api

    def _new_client(self, guard: ReplyGuard) -> Any:
        gc = self._gc
        parameters = inspect.signature(gc.Client.__init__).parameters
        kwargs: dict[str, Any] = {"verbose": False, "download_files": False}
        if "analytics_enabled" in parameters:
            kwargs["analytics_enabled"] = False
        if "httpx_kwargs" in parameters:
            kwargs["httpx_kwargs"] = {"timeout": self.timeout, "auth": guard}
        token_parameter = "token" if "token" in parameters else "hf_token"
        if not self.address.sends_token:
            kwargs[token_parameter] = False  # not even the saved or HF_TOKEN one
        elif self.token:
            kwargs[token_parameter] = self.token
        return gc.Client(self.address.location, **kwargs)

    def _connect_fault(self, error: BaseException,
                       classify: Callable[[BaseException], Fault | ImageFault]) -> Fault:
        """Permanent connection faults raise (UsageError or BackendUnavailable); others return."""
        import huggingface_hub.errors as hub_errors

        gc, where = self._gc, self.address.public
        text = self.scrub(first_line(error))
        if isinstance(error, hub_errors.OfflineModeIsEnabled):
            raise UsageError(f"Space id {where!r} needs the Hugging Face Hub, but HF_HUB_OFFLINE is "
                             "set; unset it, or give the server's URL with --space http://...")
        if isinstance(error, hub_errors.RepositoryNotFoundError) or (
                isinstance(error, ValueError) and text.startswith("Could not find Space")):
            raise UsageError(f"Space {where!r} not found on the Hugging Face Hub (a private Space "
                             "needs --hf-token or HF_TOKEN with access; a local or duplicated "
                             "server is given by its URL, http://...)")
        status = status_code(error)
        if status in (401, 403) or isinstance(error, gc.errors.AuthenticationError):
            raise UsageError(f"{where} refused access (HTTP {status or 401}): a private Space needs "
                             "--hf-token or HF_TOKEN with access (password-protected Gradio apps "
                             "are not supported)")
        if isinstance(error, ValueError) and "invalid state" in text:
            raise BackendUnavailable(f"the Space {where} is not running ({text}); try later or use "
                                     "a duplicate of it (--space)")
        if isinstance(error, gc.httpx.ConnectError) or isinstance(error, ConnectionError):
            raise BackendUnavailable(f"cannot reach {where}: {text}")
        if isinstance(error, ValueError) and text.startswith("Could not fetch"):
            # a sleeping Space answers with an error page until it has woken up (a minute or so)
            return Fault(f"{text} (not a Gradio app, or a Space still waking up)",
                         floor=0.0 if self.address.is_url else 10.0)
        fault = classify(error)
        if isinstance(fault, ImageFault):
            raise BackendUnavailable(f"cannot connect to {where}: {fault}")
        return fault

    # ------------------------------------------------------------ the current client

    def current(self) -> tuple[Any, int]:
        """The client to use and its generation; a new one when the last was marked stale."""
        with self._lock:
            if self._stale or self._client is None:
                old = self._client
                self._client = None
                if old is not None:
                    close_quietly(old)
                self._client, _ = self._connect()  # faults here count as a failed attempt
                self._generation += 1
                self._stale = False
            return self._client, self._generation

    def peek(self) -> Any:
        """The client as it is (None once closed), without reconnecting."""
        with self._lock:
            return self._client

    def mark_stale(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._stale = True

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            close_quietly(client)


def check_endpoint(client: Any, where: str) -> dict[str, Any]:
    """The server's /on_submit description, or a UsageError when it is not the demo's contract."""
    info = client.view_api(print_info=False, return_format="dict") or {}
    named = info.get("named_endpoints", {})
    if ENDPOINT not in named:
        offered = ", ".join(named) or "no named endpoints"
        raise UsageError(f"{where} has no {ENDPOINT} endpoint (it offers {offered}); --space "
                         "must be the Depth-Anything-V2 demo Space or a copy of it")
    api = named[ENDPOINT]
    returns = api.get("returns", [])
    if (len(api.get("parameters", [])) != 1 or len(returns) != 3
            or any(item.get("component") != "File" for item in returns[1:])):
        raise UsageError(f"{ENDPOINT} of {where} does not match the demo Space's contract (one "
                         f"image in; slider, gray file, raw file out): {render_api(api)}")
    return api


def render_api(api: dict[str, Any]) -> str:
    def item(entry: dict[str, Any]) -> str:
        kind = entry.get("python_type", {}).get("type", "?")
        name = entry.get("parameter_name") or entry.get("label", "?")
        return f"{name}: {kind} [{entry.get('component', '?')}]"

    params = ", ".join(item(p) for p in api.get("parameters", []))
    lines = [f"predict({params}, api_name=\"{ENDPOINT}\") returns:"]
    lines += [f"  {i}. {item(r)}" for i, r in enumerate(api.get("returns", []), 1)]
    return "\n".join(lines)


def close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass
