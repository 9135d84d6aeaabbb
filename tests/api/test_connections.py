"""The bounded connection protocol under a plain ASGI app, over real sockets: HTTP/1.1 still works within the limits.

Each test runs uvicorn with `bounded_protocol` in a thread on a port of its own; the app echoes what it received.
The same limits against `turnlog serve` itself are in test_e2e_connection_limits.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from api.connections import ClientConnections, ConnectionLimits, bounded_protocol
from tests.conftest import load_test_module

raw = load_test_module("raw_http", beside=Path(__file__))


async def echo(scope, receive, send) -> None:
    """Answers what it received: the path, the body's length and the number of headers; `/slow` reads after 2 s."""
    assert scope["type"] == "http"
    if scope["path"] == "/slow":
        await asyncio.sleep(2.0)  # an app busy before it reads the body: not the client's fault
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    payload = json.dumps({"path": scope["path"], "bodyBytes": received, "headers": len(scope["headers"])}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@contextmanager
def serving(limits: ConnectionLimits) -> Iterator[int]:
    """uvicorn with the bounded protocol on a free port; yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        echo, lifespan="off", log_level="warning", log_config=None, http=bounded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + raw.DEADLINE_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=raw.DEADLINE_S)
        listener.close()


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving(ConnectionLimits()) as port, raw.connect(port) as connection:
        connection.sendall(raw.request(target="/first") + raw.request("POST", "/second", body=b"x" * 1000))
        first, second = connection.read_response(), connection.read_response()
    assert json.loads(first.body)["path"] == "/first"
    assert json.loads(second.body) == {"path": "/second", "bodyBytes": 1000, "headers": 2}


def test_a_large_chunked_body_sent_at_once_is_received_whole() -> None:
    body = b"y" * (3 * 1024 * 1024)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:1_000_000], body[1_000_000:])) + b"0\r\n\r\n"
    with serving(ConnectionLimits()) as port, raw.connect(port) as connection:
        connection.sendall(raw.request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]) + chunked)
        assert json.loads(connection.read_response().body)["bodyBytes"] == len(body)


def test_a_body_the_app_has_not_asked_for_yet_is_not_timed() -> None:
    """With `Expect: 100-continue` the client sends the body once the app reads: its wait is not a slow body."""
    # The grace is shorter than the app's 2 s before it reads (so a clock started with the request would run out),
    # and long enough for this client to answer `100 Continue` on a loaded machine (0.2 s was not, once in CI).
    limits = ConnectionLimits(body_grace_s=1.5, min_body_bytes_per_s=10_000)
    with serving(limits) as port, raw.connect(port) as connection:
        body = b"z" * 5000
        connection.sendall(raw.request("POST", "/slow", headers=[("Expect", "100-continue")], body=body)[: -len(body)])
        assert connection.read_head() == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(body)
        response = connection.read_response()
    assert response.status == 200 and json.loads(response.body)["bodyBytes"] == len(body)


def test_connections_over_the_server_limit_are_503_with_retry_after() -> None:
    with serving(ConnectionLimits(max_connections=3)) as port:
        held = [raw.connect(port, source=f"127.0.0.{10 + index}") for index in range(3)]
        try:
            for connection in held:
                connection.sendall(raw.request())
                assert connection.read_response().status == 200
            response = raw.exchange(port, raw.request(), source="127.0.0.20")
        finally:
            for connection in held:
                connection.close()
    problem = response.problem(503, "server-busy")
    assert response.headers["retry-after"] == "5" and problem["retryAfter"] == 5


def test_the_head_limit_counts_each_request_of_a_connection_alone() -> None:
    limits = ConnectionLimits(max_head_bytes=4096, max_header_bytes=4096)
    with serving(limits) as port, raw.connect(port) as connection:
        for _ in range(20):
            connection.sendall(raw.request(headers=[("X-Fill", "f" * 3000)]))
            assert connection.read_response().status == 200
        connection.sendall(raw.request(headers=[("X-Fill", "f" * 3000), ("X-More", "m" * 1100)]))
        connection.read_response().problem(431, "request-header-fields-too-large")


def test_a_client_is_counted_once_per_open_connection() -> None:
    clients = ClientConnections()
    assert clients.admit("10.0.0.1", cap=2) and clients.admit("10.0.0.1", cap=2)
    assert not clients.admit("10.0.0.1", cap=2)
    assert clients.admit("10.0.0.2", cap=2)
    clients.release("10.0.0.1")
    assert clients.open_from("10.0.0.1") == 1 and clients.admit("10.0.0.1", cap=2)
    assert clients.admit("10.0.0.3", cap=0) and clients.admit("10.0.0.3", cap=0)  # 0: no cap


@pytest.mark.parametrize(
    "bad", [{"max_headers": 0}, {"head_timeout_s": 0}, {"min_body_bytes_per_s": -1}, {"max_connections_per_client": -1}]
)
def test_limits_that_could_not_serve_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(**bad)
