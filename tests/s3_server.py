"""A real S3-compatible server on 127.0.0.1 for the remote-store tests and benchmark.

moto's standalone server speaks the S3 HTTP API, conditional writes included
(``If-None-Match: *`` and ``If-Match`` on PutObject), and is what zarr's and
s3fs's own test suites start. It runs on 127.0.0.1 on a free port, with dummy
credentials; nothing outside this machine is contacted. In this process on a
thread (``ThreadedMotoServer``, the tests), or as a subprocess
(``python -m moto.server``, the benchmark: a server in the client's process
would compete with the client for the interpreter lock and slow both). :func:`s3_env` is the environment a
subprocess (a ``kdcache`` command) needs to reach it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server: its endpoint, and how to make buckets on it."""

    endpoint: str

    def env(self) -> dict[str, str]:
        """Environment variables pointing a client (obstore, boto3, a subprocess) at this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def make_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials()).create_bucket(Bucket=name)
        return name


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], "region_name": CREDENTIALS["AWS_REGION"]}


@contextmanager
def _threaded(port: int) -> Iterator[None]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield
    finally:
        server.stop()


@contextmanager
def _subprocess(port: int) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:  # wait until it answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def s3_server(subprocess_server: bool = False) -> Iterator[S3Server]:
    """Start moto's server on 127.0.0.1 (a free port), set the environment to reach it, stop it after."""
    port = free_port()
    running = S3Server(endpoint=f"http://127.0.0.1:{port}")
    with (_subprocess if subprocess_server else _threaded)(port):
        yield from _with_env(running)


def _with_env(running: S3Server) -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in running.env()}
    os.environ.update(running.env())
    try:
        yield running
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def s3_env(server: S3Server) -> dict[str, str]:
    """The full environment for a ``kdcache`` subprocess that must reach ``server``."""
    return {**os.environ, **server.env()}
