"""Real MCP servers for the adapter's tests: `mcp_test_server.py` over Streamable HTTP (a subprocess on
127.0.0.1) and over stdio (run by the adapter itself), an address that refuses connections, and one that
takes them and never answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")
START_DEADLINE_S = 60.0  # a loaded two-core machine takes seconds to import the SDK


@dataclass(frozen=True, kw_only=True)
class HttpMcpServer:
    url: str
    events: Path  # what its tools recorded, one line each


@pytest.fixture(scope="module")
def http_mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpMcpServer]:
    events = tmp_path_factory.mktemp("mcp_http") / "events.log"
    events.touch()
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "http", "--events", str(events)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        # It prints its port once uvicorn listens; a crash ends the output instead.
        line = process.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the test MCP server did not start (exit code {process.poll()}, said {line!r})")
        url = f"http://127.0.0.1:{int(line.split()[1])}/mcp"
        _wait_until_answering(url, process)
        yield HttpMcpServer(url=url, events=events)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        try:
            httpx.get(url, timeout=2.0)  # any HTTP answer (a GET without a session is refused) means it serves
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test MCP server at {url} never answered") from None
            time.sleep(0.05)


@pytest.fixture
def dead_url() -> Iterator[str]:
    """An address where nothing listens: the port is held (bound, never listening), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}/mcp"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An address that takes connections (the kernel completes them) and never answers a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
