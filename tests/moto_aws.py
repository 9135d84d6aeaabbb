"""A real `moto_server` process (AWS S3 and KMS over HTTP, in memory) for the adapters that speak to AWS."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True, kw_only=True)
class MotoServer:
    endpoint_url: str

    def client(self, service: str = "s3"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )


@contextmanager
def running_moto(log_path: Path) -> Iterator[MotoServer]:
    """`moto_server` on a free port, with dummy credentials in the environment (this machine's own AWS files and
    instance metadata kept out) until the block ends."""
    port = free_port()
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("AWS_ACCESS_KEY_ID", "turnlog-test")
        environment.setenv("AWS_SECRET_ACCESS_KEY", "turnlog-test-secret")
        environment.delenv("AWS_SESSION_TOKEN", raising=False)
        environment.delenv("AWS_PROFILE", raising=False)
        environment.setenv("AWS_CONFIG_FILE", str(log_path.with_name("no-aws-config")))
        environment.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log_path.with_name("no-aws-credentials")))
        environment.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            endpoint_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {process.returncode}:\n{log_path.read_text()}")
                try:
                    with urllib.request.urlopen(endpoint_url, timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"moto_server did not answer in 30 s:\n{log_path.read_text()}") from None
                    time.sleep(0.1)
            yield MotoServer(endpoint_url=endpoint_url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
