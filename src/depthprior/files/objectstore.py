"""Object storage through fsspec: one filesystem per protocol and settings, every call within
its deadline, and the store's own failures (credentials, a silent endpoint) told apart from
an object's.

Every storage call has a deadline (DEPTHPRIOR_STORAGE_TIMEOUT seconds, default 20: connect and
read timeouts, bounded retries, and a wall-clock limit on the whole call). Missing credentials,
refused credentials and an endpoint that does not answer are `StorageUnavailable` (one line; a
run stops, keeps what it finished and says how to resume); before a run, `UsageError`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, TypeVar

from ..errors import MissingDependencyError, StorageUnavailable, UsageError, first_line

PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
                      "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
PUT_ATTEMPTS = 4
#: environment variable: seconds one storage call may take (connect, read, the whole call)
TIMEOUT_VARIABLE = "DEPTHPRIOR_STORAGE_TIMEOUT"
DEFAULT_TIMEOUT = 20.0
#: a write's wall-clock limit grows by a second per this many bytes (a slow link, a big file)
BYTES_PER_SECOND = 1 << 20

#: what s3fs makes of a store's server errors (503 SlowDown/ServiceUnavailable, 500), once
#: botocore's and its own retries are spent: the store, not one object, is failing
SERVER_ERRNOS = frozenset({errno.EBUSY, getattr(errno, "EREMOTEIO", errno.EIO)})
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Listing:
    """What is under a folder of object storage: files by relative name, and the keys refused
    (relative key -> why) because no file name can hold them."""

    files: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    #: each file's version as the listing gives it (object_version)
    versions: dict[str, str] = field(default_factory=dict)


#: what a listing says of an object's contents, by store: a new object gets a new value
VERSION_FIELDS = ("ETag", "etag", "md5Hash", "generation", "version_id", "LastModified",
                  "last_modified", "updated", "mtime")


def object_version(info: dict[str, Any]) -> str:
    """An object's version from its listing: its size and the first of VERSION_FIELDS the store
    gives ("1234:ETag=9b2c..."), so one replaced by another of the same size has another version."""
    size = int(info.get("size") or 0)
    field_name = next((name for name in VERSION_FIELDS if info.get(name)), None)
    if field_name is None:
        return str(size)
    tag = str(info[field_name]).strip('"')  # S3 lists an ETag within quotes
    return f"{size}:{field_name}={tag}"


def key_problem(relative: str) -> str:
    """Why an object key (relative to a listed folder) cannot be a file name, or ""."""
    parts = relative.split("/")
    if "\\" in relative:
        return "refused: its key holds a backslash, which names another path on some systems"
    if "\x00" in relative:
        return "refused: its key holds a NUL character"
    if any(part == ".." for part in parts):
        return "refused: its key has a '..' segment, which would climb out of the folder"
    if any(part == "." for part in parts):
        return "refused: its key has a '.' segment, an alias of its folder"
    if any(part == "" for part in parts):
        return "refused: its key has an empty segment ('//')"
    return ""


def timeout() -> float:
    """Seconds one storage call may take (DEPTHPRIOR_STORAGE_TIMEOUT, default 20)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise UsageError(f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise UsageError(f"{TIMEOUT_VARIABLE}={text!r} must be between 0 and 3600 seconds")
    return value


#: the storage settings of a process (endpoint, region, profile, credentials): Ray's workers
#: get the driver's, and a filesystem object is made anew when they change
STORAGE_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE",
    "AWS_EC2_METADATA_DISABLED", "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN", TIMEOUT_VARIABLE,
)


def storage_settings() -> dict[str, str]:
    """This process's storage settings (never printed or logged: they hold credentials)."""
    return {name: os.environ[name] for name in STORAGE_VARIABLES if os.environ.get(name)}


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL; one filesystem object per protocol and
    storage settings."""
    protocol = url.split("://", 1)[0].lower()
    fs = _filesystem_for(protocol, timeout(), tuple(sorted(storage_settings().items())))
    return fs, fs._strip_protocol(url)


@lru_cache(maxsize=16)
def _filesystem_for(protocol: str, seconds: float, _settings: tuple[tuple[str, str], ...]) -> Any:
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("fsspec", "s3", "reading and writing URLs") from None
    s3 = PROTOCOL_PACKAGES.get(protocol) == "s3fs"
    # bounded: botocore's own retries of a silent endpoint, then s3fs's, took 420 s
    options = {"config_kwargs": {"connect_timeout": seconds / 2, "read_timeout": seconds / 2,
                                 "retries": {"max_attempts": 2, "mode": "standard"}}} if s3 else {}
    try:
        fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
        if s3:
            fs.retries = 2
        return fs
    except ImportError:
        package = PROTOCOL_PACKAGES.get(protocol)
        if package == "s3fs":
            raise MissingDependencyError("s3fs", "s3", f"{protocol}:// URLs") from None
        raise UsageError(f"{protocol}:// URLs need fsspec's package for that protocol "
                         f"({package or 'see fsspec known_implementations'}): pip install "
                         f"{package or 'it'}") from None
    except ValueError:
        raise UsageError(f"unknown URL protocol {protocol}://: give a local folder or a URL "
                         "fsspec knows (s3://, gs://, az://, http://, ...)") from None


def call(url: str, action: str, method: Callable[..., T], *args: Any,
          extra_seconds: float = 0.0, **kwargs: Any) -> T:
    """One storage call within its deadline; the store's own failures (no credentials, refused
    credentials, no answer) become StorageUnavailable, one line naming the URL."""
    seconds = timeout()
    if getattr(filesystem(url)[0], "async_impl", False):
        kwargs["timeout"] = seconds + extra_seconds  # fsspec's wall clock on the whole call
    try:
        return method(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - classified below, else raised as it was
        unavailable = classify(error, url, action, seconds)
        if unavailable is None:
            raise
        raise unavailable from None


def classify(error: BaseException, url: str, action: str = "read",
             seconds: float | None = None) -> StorageUnavailable | None:
    """StorageUnavailable for a failure of the store itself (credentials, endpoint), with what
    to do; None for an error of one object (not found, a bad name...)."""
    seconds = timeout() if seconds is None else seconds
    names = {cls.__name__ for cls in type(error).__mro__}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"the storage endpoint {endpoint}" if endpoint else f"the storage behind {url}"
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "NoAuthTokenError"}:
        return StorageUnavailable(
            f"no credentials to {action} {url}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in this shell and, with --ray, where the "
            "cluster's workers run")
    if "ProfileNotFound" in names:
        return StorageUnavailable(f"cannot {action} {url}: {first_line(error)}; check AWS_PROFILE")
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "FSTimeoutError", "TimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ConnectionRefusedError", "ConnectionResetError",
                "ClientOSError"}:
        return StorageUnavailable(
            f"{where} did not answer ({type(error).__name__}, {seconds:g} s per call, "
            f"{TIMEOUT_VARIABLE} to change it) while trying to {action} {url}; check the "
            "endpoint and the network")
    message = str(error)
    if isinstance(error, PermissionError) and re.search(
            r"InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken", message):
        return StorageUnavailable(f"the credentials were refused to {action} {url} "
                                  f"({first_line(error)}): check AWS_ACCESS_KEY_ID, "
                                  "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN")
    if isinstance(error, OSError) and error.errno in SERVER_ERRNOS:
        return StorageUnavailable(f"{where} keeps failing ({first_line(error)}: a server error, "
                                  f"after its retries) while trying to {action} {url}; wait, then "
                                  "rerun the same command to resume")
    if isinstance(error, asyncio.TimeoutError):
        return StorageUnavailable(f"{where} did not answer within {seconds:g} s while trying to "
                                  f"{action} {url}")
    return None


def before_run(step: Callable[[], T]) -> T:
    """A step before any work: the store being unavailable is a usage error (exit 2)."""
    try:
        return step()
    except StorageUnavailable as error:
        raise UsageError(str(error)) from None
