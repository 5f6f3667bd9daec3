"""A real S3 server on 127.0.0.1 for the tests (moto's ThreadedMotoServer), and a proxy in
front of it that fails the first PUT of every object, as a flaky store does."""

from __future__ import annotations

import http.client
import logging
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def s3_server() -> Iterator[str]:
    """The endpoint URL of a fresh in-memory S3 server."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a process (and the Ray workers it starts) needs to reach the test server."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **{
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]})


def list_keys(client, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    return sorted(keys)


@contextmanager
def flaky_proxy(endpoint: str, broken_after: int | None = None,
                broken_suffix: str = "") -> Iterator[tuple[str, dict[str, int]]]:
    """(proxy URL, counts): the proxy answers the first PUT of each object 503 SlowDown without
    storing it, and forwards everything else to `endpoint`. counts["failed"] says how many.
    broken_after: once that many objects were put, every PUT (of a key ending in
    `broken_suffix`) is answered 503 (a store that keeps failing); counts["broken"] says how
    many objects were tried meanwhile."""
    target = endpoint.split("://", 1)[1]
    counts = {"failed": 0, "broken": 0}
    seen: set[str] = set()
    tried_broken: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue"

        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "PUT" and "?" not in self.path:
                with lock:
                    broken = broken_after is not None and len(seen) >= broken_after and \
                        self.path.endswith(broken_suffix)
                    first = self.path not in seen or broken
                    seen.add(self.path)
                    counts["failed"] += first
                    if broken:
                        tried_broken.add(self.path)
                        counts["broken"] = len(tried_broken)
                if first:
                    self._reply(503, {"Content-Type": "application/xml"},
                                b"<Error><Code>SlowDown</Code><Message>retry</Message></Error>")
                    return
            connection = http.client.HTTPConnection(target, timeout=30)
            headers = {key: value for key, value in self.headers.items() if key.lower() != "expect"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            self._reply(response.status, dict(response.getheaders()), response.read())
            connection.close()

        def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "server", "date") and \
                        (key.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


def set_environment(values: dict[str, str]) -> dict[str, str | None]:
    """Set variables in this process; returns what to restore_environment with."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
