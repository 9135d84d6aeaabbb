"""HTTP/1.1 over a plain socket, for the requests no HTTP client sends: oversized, malformed, slow, many at once.

Loaded by the tests that use it with `tests.conftest.load_test_module("raw_http", beside=Path(__file__))`.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

DEADLINE_S = 15.0
PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, kw_only=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def problem(self, status: int, slug: str) -> dict:
        """The problem+json body, checked: this status, the type ending in `slug`, a detail, and `Connection: close`."""
        assert self.status == status, f"expected {status}, got {self.status}: {self.body[:500]!r}"
        assert self.headers.get("content-type") == PROBLEM_MEDIA_TYPE, self.headers
        assert self.headers.get("connection") == "close", self.headers
        problem = json.loads(self.body)
        assert problem["status"] == status, problem
        assert problem["type"].endswith(f"/{slug}"), problem
        assert isinstance(problem["title"], str) and problem["title"], problem
        assert isinstance(problem["detail"], str) and len(problem["detail"]) > 20, problem
        return problem


class RawConnection:
    """A client socket and what it has received but not yet read (responses can arrive together)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._received = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def sendall(self, payload: bytes) -> None:
        self.sock.sendall(payload)

    def readable(self, timeout_s: float) -> bool:
        """Whether the server has sent something (or closed) within `timeout_s`."""
        readable, _, _ = select.select([self.sock], [], [], timeout_s)
        return bool(self._received or readable)

    def _receive(self, deadline: float) -> bytes:
        """The next bytes the server sends; b"" once it has closed (or reset) the connection."""
        readable, _, _ = select.select([self.sock], [], [], max(deadline - time.monotonic(), 0))
        if not readable:
            raise AssertionError("the server sent nothing more before the deadline")
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        while marker not in self._received:
            chunk = self._receive(deadline)
            if not chunk:
                raise AssertionError(f"the connection closed before {marker!r}: {self._received[:300]!r}")
            self._received += chunk
        found, _, self._received = self._received.partition(marker)
        return found + marker

    def read_head(self, *, deadline_s: float = DEADLINE_S) -> bytes:
        """What the server sends up to the first blank line, e.g. an interim `100 Continue`."""
        return self._read_until(b"\r\n\r\n", time.monotonic() + deadline_s)

    def read_response(self, *, deadline_s: float = DEADLINE_S) -> RawResponse:
        """One response: its head, then the body its Content-Length announces."""
        deadline = time.monotonic() + deadline_s
        head = self._read_until(b"\r\n\r\n", deadline)
        status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self._received) < length:
            chunk = self._receive(deadline)
            if not chunk:
                raise AssertionError(f"the connection closed {length - len(self._received)} bytes before the body's end")
            self._received += chunk
        body, self._received = self._received[:length], self._received[length:]
        return RawResponse(status=int(status_line.split(" ")[1]), headers=headers, body=body)

    def closes(self, *, deadline_s: float = DEADLINE_S) -> bytes:
        """Wait until the server closes the connection; what it sent meanwhile."""
        deadline = time.monotonic() + deadline_s
        received, self._received = self._received, b""
        while chunk := self._receive(deadline):
            received += chunk
        return received


def connect(port: int, *, source: str = "127.0.0.1") -> RawConnection:
    """A connection to 127.0.0.1:`port` from `source`, any address of 127.0.0.0/8: each is a client of its own."""
    return RawConnection(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S, source_address=(source, 0)))


def request(
    method: str = "GET", target: str = "/healthz", *, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(port: int, payload: bytes, *, source: str = "127.0.0.1") -> RawResponse:
    """Send `payload` on a fresh connection and read one response."""
    with connect(port, source=source) as connection:
        connection.sendall(payload)
        return connection.read_response()


def send_while_reading(port: int, payload: bytes, *, source: str = "127.0.0.1") -> RawResponse:
    """Send a large `payload` from a thread while reading the answer, which may come before it is all sent.

    The server stops reading what it refuses, so sending may fail with a reset or a broken pipe: that is expected.
    """
    with connect(port, source=source) as connection:
        sock = connection.sock

        def send() -> None:
            view = memoryview(payload)
            try:
                while view:
                    sent = sock.send(view[: 1 << 20])
                    view = view[sent:]
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            response = connection.read_response()
            connection.closes()
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender, if it is still sending
            except OSError:
                pass  # already reset
            sender.join(timeout=DEADLINE_S)
        return response


def serves(port: int, *, source: str = "127.0.0.1", target: str = "/healthz") -> bool:
    """Whether a plain GET on a fresh connection is answered 200."""
    return exchange(port, request(target=target), source=source).status == 200
