"""Every request observed once: its request id (taken or made, and echoed), its span, its duration by route, its
access log line.

`ObservedRequests` is a plain ASGI middleware (event streams pass through it unbuffered). It takes the caller's
`X-Request-ID` when it is sane (1-128 of letters, digits and `._:-`), or makes one, binds it to the log context
(with the trace id of the request's span, which continues a valid `traceparent`: kernel/tracing.py), and echoes it
on the answer. Handlers add the org and the ids in the path (`api/access.py`), so the access log line, written when
the answer ends, names them too. The duration goes to `http_server_request_duration_seconds` under the route's
template; an event stream also counts as open while it lasts.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

from opentelemetry.trace import Span
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import HTTP_REQUEST_DURATION, SSE_STREAMS_OPEN, UNMATCHED_ROUTE
from kernel import log_context, tracing
from kernel.envelope import new_id

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_logger = logging.getLogger("turnlog.access")


def request_id_from(headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> str:
    """The caller's request id when it is sane, else a new one (`req_<ULID>`)."""
    given = _header(headers, REQUEST_ID_HEADER)
    return given if given is not None and _SANE_REQUEST_ID.match(given) else new_id("req")


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (`/v1/runs/{run_id}`), `unmatched` when none did."""
    route = scope.get("route")
    if route is None:
        return _template_from_params(scope) if scope.get("endpoint") is not None else UNMATCHED_ROUTE
    # Inside a Mount, `root_path` has grown by the mount's prefix (beyond the application's own root path).
    prefix = scope.get("root_path", "")[len(scope.get("app_root_path", "")):]
    if isinstance(route, Mount):  # an application mounted whole (static files): its prefix stands for all under it
        return f"{prefix}/{{path}}"
    return prefix + getattr(route, "path", "")


def _template_from_params(scope: Scope) -> str:
    """For a router that does not name its route in the scope: the path with each parameter's value as its name."""
    path = scope.get("path", "")
    for name, value in (scope.get("path_params") or {}).items():
        text = str(value)
        if text:
            path = path.replace(text, f"{{{name}}}", 1)
    return path


class ObservedRequests:
    """The middleware; `access_log=False` keeps the metrics and the request id but writes no access log lines."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The request's span continues the caller's `traceparent` (a new trace when it has none, or a malformed one);
        # every envelope the request appends carries it (kernel/tracing.py).
        method = scope.get("method", "")
        given = _header(scope.get("headers") or [], tracing.TRACEPARENT_HEADER)
        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with tracing.continued(given, method, attributes=attributes) as span:
            await self._observe(scope, receive, send, span)

    async def _observe(self, scope: Scope, receive: Receive, send: Send, span: Span) -> None:
        started = time.perf_counter()
        headers = scope.get("headers") or []
        request_id = request_id_from(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        token = log_context.bind(request_id=request_id, trace_id=tracing.trace_id_hex(span.get_span_context()))
        status = 500  # unless an answer starts
        stream_gauge = None

        async def send_observed(message: Message) -> None:
            nonlocal status, stream_gauge
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if _is_event_stream(message):
                    stream_gauge = SSE_STREAMS_OPEN.labels(http_route=route_template(scope))
                    stream_gauge.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if stream_gauge is not None:
                stream_gauge.dec()
            duration_s = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "")
            HTTP_REQUEST_DURATION.labels(
                http_request_method=method, http_route=route, http_response_status_code=str(status)
            ).observe(duration_s)
            if span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {"http.route": route, "http.response.status_code": status, "turnlog.request_id": request_id}
                )
                if status >= 500:
                    tracing.failed(span, f"answered {status}")
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %d %.1f ms", method, scope.get("path", ""), status, duration_s * 1000,
                    extra={
                        "method": method, "path": scope.get("path", ""), "route": route, "status": status,
                        "duration_ms": round(duration_s * 1000, 3),
                    },
                )
            log_context.reset(token)


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", []):
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


def _header(headers: Mapping[str, str] | list[tuple[bytes, bytes]], name: str) -> str | None:
    if isinstance(headers, Mapping):
        return headers.get(name)
    wanted = name.encode()
    for key, value in headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None
