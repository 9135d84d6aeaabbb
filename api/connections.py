"""HTTP/1.1 connections: uvicorn's httptools protocol, bounded in what a client may send before the app sees it.

`uvicorn.Config(http=bounded_protocol(limits))` serves with it. Every bound is checked by the connection itself,
before any application code and before authentication, and every refusal is problem+json (api/problems.py) on a
connection that then closes:

- 414 for a URL longer than `max_url_bytes`; 431 for one header line longer than `max_header_bytes`, more than
  `max_headers` lines, or a request head (request line and header lines) longer than `max_head_bytes`. The bytes
  of the head are counted as they arrive, before the parser keeps them, so a 32 MB header costs 64 KiB, not 32 MB.
- 400 for what the parser refuses (control bytes in a header value, a broken request line or chunked body).
- 408 for a head that has not fully arrived `head_timeout_s` after the connection opened or its first byte came,
  and for a body that arrives slower than `min_body_bytes_per_s` on average once `body_grace_s` has passed (time
  while the app is not reading, or the client waits for `100 Continue`, does not count). A connection that sent
  nothing by then is closed without an answer.
- 503 with Retry-After when the server has `max_connections` open; 429 with Retry-After when the client's address
  has `max_connections_per_client` open (0: no cap). Behind a proxy every client has the proxy's address.

After a refusal the connection closes its writing side and reads and drops what the client is still sending for
at most `LINGER_S`, so that a client writing a large request can read the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.problems import (
    MALFORMED_REQUEST,
    PROBLEM_MEDIA_TYPE,
    REQUEST_HEADERS_TOO_LARGE,
    REQUEST_TIMEOUT,
    SERVER_BUSY,
    TOO_MANY_CONNECTIONS,
    URI_TOO_LONG,
    ProblemKind,
    problem_body,
)

__all__ = ["LINGER_S", "ClientConnections", "ConnectionLimits", "bounded_protocol"]

logger = logging.getLogger(__name__)

# How long a refused connection still reads (and drops) what its client sends, so the client can read the answer.
LINGER_S = 2.0
# How often a body's average rate is checked.
_BODY_CHECK_S = 1.0
_SHOWN_NAME_CHARS = 64


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """What one connection may send and how fast, and how many connections the server and each client may hold."""

    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024  # one header line, name and value
    max_head_bytes: int = 64 * 1024  # the request line and every header line
    max_headers: int = 100
    head_timeout_s: float = 20.0  # from the connection, or a request's first byte, to the end of its headers
    min_body_bytes_per_s: float = 1024.0  # 0: a body may be as slow as it likes
    body_grace_s: float = 10.0  # a body's first seconds are not held to the rate
    keep_alive_s: float = 15.0  # an idle connection between requests is closed after this long
    max_connections: int = 2048  # open at once, from every client
    max_connections_per_client: int = 256  # open at once from one address; 0: no cap
    retry_after_s: int = 5  # what a 429 or 503 for too many connections asks the client to wait

    def __post_init__(self) -> None:
        for name in ("max_url_bytes", "max_header_bytes", "max_head_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("head_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.min_body_bytes_per_s < 0 or self.body_grace_s < 0 or self.max_connections_per_client < 0:
            raise ValueError("min_body_bytes_per_s, body_grace_s and max_connections_per_client cannot be negative")


class ClientConnections:
    """How many connections each client address has open to one server."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def admit(self, host: str, *, cap: int) -> bool:
        """Count one more connection from `host`, unless it already has `cap` (0: no cap)."""
        if cap and self._open[host] >= cap:
            return False
        self._open[host] += 1
        return True

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]

    def open_from(self, host: str) -> int:
        return self._open[host]


class _Refusal(Exception):
    """Raised from a parser callback to stop parsing; the connection answers it."""

    def __init__(self, kind: ProblemKind, detail: str, members: Mapping[str, object]) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.members = members


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedHttpProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`: these limits, and one count of connections per client."""
    return type(
        "BoundedHttpProtocol", (BoundedHttpProtocol,), {"limits": limits, "clients": ClientConnections()}
    )


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `limits`; made by `bounded_protocol`, which sets both below."""

    limits: ClassVar[ConnectionLimits]
    clients: ClassVar[ClientConnections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # `max_connections` is checked here, answered as problem+json
        self._counted_host: str | None = None  # the address this connection is counted under
        self._refused = False
        # The request whose head is arriving: its bytes so far, of them the URL's, and its header lines.
        self._reading_head = True
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None
        # The body arriving: its bytes, and the seconds it was the client's turn to send.
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0
        self._body_seconds = 0.0
        self._body_checked_at = 0.0
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- the connection -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        host = self.client[0] if self.client else None
        if len(self.connections) > limits.max_connections:
            self._refuse(
                SERVER_BUSY,
                f"the server has {limits.max_connections} connections open, the most it takes: retry in"
                f" {limits.retry_after_s} s",
                members={"retryAfter": limits.retry_after_s},
                headers={"Retry-After": str(limits.retry_after_s)},
            )
            return
        if host is not None:
            if not self.clients.admit(host, cap=limits.max_connections_per_client):
                self._refuse(
                    TOO_MANY_CONNECTIONS,
                    f"your address already has {limits.max_connections_per_client} connections open to this server,"
                    " the most one client may hold: reuse them (HTTP keep-alive) or close idle ones, and retry in"
                    f" {limits.retry_after_s} s",
                    members={"maxConnections": limits.max_connections_per_client, "retryAfter": limits.retry_after_s},
                    headers={"Retry-After": str(limits.retry_after_s)},
                )
                return
            self._counted_host = host
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._cancel(self._linger_timer)
        self._release_client()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol takes the transport over: this one is never told the connection is lost.
        self._cancel_timers()
        self._release_client()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: read and dropped
        self._unset_keepalive_if_required()
        rest = memoryview(data)
        while rest:
            if self._reading_head:
                # Fed no more than the head may still grow by, so a head over the limit is never held whole.
                self._arm_head_timer()
                allowance = self.limits.max_head_bytes - self._head_bytes
                if allowance <= 0:
                    self._refuse_head_too_large()
                    return
                piece, rest = rest[:allowance], rest[allowance:]
                self._head_bytes += len(piece)
            else:
                piece, rest = rest, rest[len(rest):]
            if not self._feed(piece):
                return

    def _feed(self, piece: memoryview) -> bool:
        """Parse `piece`; False when the connection is done with what it received (refused, or upgraded)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as error:
            refusal = error.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.kind, refusal.detail, members=refusal.members)
            else:
                reason = str(error) or type(error).__name__
                self._refuse(
                    MALFORMED_REQUEST,
                    f"the request is not valid HTTP/1.1 ({reason}): header values may not hold control characters,"
                    " and names only letters, digits and !#$%&'*+-.^_`|~",
                )
            return False
        return True

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own refusals of a malformed request, as problem+json."""
        self._refuse(MALFORMED_REQUEST, f"the request is not valid HTTP/1.1: {msg}")

    # --- the parser's callbacks -----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_lines = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise _Refusal(
                URI_TOO_LONG,
                f"the URL is longer than {self.limits.max_url_bytes} bytes, the most this server reads: send long"
                " parameters in a request body instead",
                {"maxBytes": self.limits.max_url_bytes},
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.limits.max_headers:
            raise _Refusal(
                REQUEST_HEADERS_TOO_LARGE,
                f"the request has more than {self.limits.max_headers} header lines, the most this server reads:"
                " send fewer headers",
                {"maxHeaders": self.limits.max_headers},
            )
        if len(name) + len(value) > self.limits.max_header_bytes:
            shown = name[:_SHOWN_NAME_CHARS].decode("ascii", "replace")
            raise _Refusal(
                REQUEST_HEADERS_TOO_LARGE,
                f"the header {shown!r} is longer than {self.limits.max_header_bytes} bytes, the most one header line"
                " may be: send a shorter value (large data goes in the request body)",
                {"maxBytes": self.limits.max_header_bytes, "header": shown},
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel(self._head_timer)
        self._head_timer = None
        super().on_headers_complete()
        if self.limits.min_body_bytes_per_s > 0 and self.cycle is not None and not self.cycle.response_complete:
            self._body_bytes = 0
            self._body_seconds = 0.0
            self._body_checked_at = self.loop.time()
            self._body_timer = self.loop.call_later(_BODY_CHECK_S, self._check_body_rate)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        self._reading_head = True  # whatever comes next is the next request's head
        self._head_bytes = 0
        super().on_message_complete()

    # --- timing ---------------------------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self._refused:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or not self._reading_head:
            return
        if self._head_bytes == 0:  # nothing of a request came: no one to answer (a browser's unused preconnection)
            self.transport.close()
            return
        self._refuse(
            REQUEST_TIMEOUT,
            f"the request line and headers did not all arrive within {self.limits.head_timeout_s:g} s: send the"
            " request head at once",
            members={"timeoutS": self.limits.head_timeout_s},
        )

    def _check_body_rate(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self._refused or cycle is None:
            return
        now = self.loop.time()
        # Only the time it was the client's turn counts: not while the app leaves the body unread (reading is then
        # paused), nor while the client waits for `100 Continue`, which the app sends when it starts reading.
        if not (self.flow.read_paused or cycle.waiting_for_100_continue):
            self._body_seconds += now - self._body_checked_at
        self._body_checked_at = now
        limits = self.limits
        slow = self._body_bytes < limits.min_body_bytes_per_s * self._body_seconds
        if self._body_seconds > limits.body_grace_s and slow:
            if cycle.response_started:  # answered without the whole body: a second answer would answer nothing asked
                logger.warning("closed a connection whose request body kept trickling in after its answer")
                self.transport.close()
                return
            self._refuse(
                REQUEST_TIMEOUT,
                f"the request body arrived at {self._body_bytes / self._body_seconds:.0f} bytes/s, slower than the"
                f" {limits.min_body_bytes_per_s:g} bytes/s this server waits for: send it faster",
                members={"minBytesPerS": limits.min_body_bytes_per_s},
            )
            return
        self._body_timer = self.loop.call_later(_BODY_CHECK_S, self._check_body_rate)

    # --- refusing -------------------------------------------------------------------------------------------------

    def _refuse_head_too_large(self) -> None:
        self._refuse(
            REQUEST_HEADERS_TOO_LARGE,
            f"the request line and headers are longer than {self.limits.max_head_bytes} bytes in all, the most this"
            " server reads: send fewer or smaller headers",
            members={"maxBytes": self.limits.max_head_bytes},
        )

    def _refuse(
        self, kind: ProblemKind, detail: str, *, members: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer problem+json and close; a request whose answer has begun can only be cut off."""
        if self._refused:
            return
        self._refused = True
        self._cancel_timers()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning("refused %s with %d: %s", client, kind.status, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()
                return
            # The app may still be reading this request's body: it now hears the client is gone, and answers no one.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(self._problem_message(kind, detail, members or {}, headers or {}))
        self._linger()

    def _problem_message(
        self, kind: ProblemKind, detail: str, members: Mapping[str, object], headers: Mapping[str, str]
    ) -> bytes:
        body = problem_body(kind=kind, detail=detail, extension_members=members)
        lines = [STATUS_LINE[kind.status]]
        for name, value in self.server_state.default_headers:
            lines += [name, b": ", value, b"\r\n"]
        extra = {"content-type": PROBLEM_MEDIA_TYPE, "content-length": str(len(body)), "connection": "close", **headers}
        for name, text in extra.items():
            lines += [name.lower().encode("ascii"), b": ", text.encode("ascii"), b"\r\n"]
        lines += [b"\r\n", body]
        return b"".join(lines)

    def _linger(self) -> None:
        """Stop writing, and read and drop what the client still sends for a moment, so it reads the answer."""
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        if self.flow is not None:
            self.flow.resume_reading()
        self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _release_client(self) -> None:
        if self._counted_host is not None:
            self.clients.release(self._counted_host)
            self._counted_host = None

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            self._cancel(timer)
        self._head_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
