"""RFC 9457 problem+json: the one table from error class to HTTP status, and the handlers."""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from kernel.errors import (
    Conflict,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Suspended,
    TurnlogError,
    Unauthenticated,
    Unavailable,
    UnprocessableContent,
    UnsupportedMediaType,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_KINDS",
    "ProblemKind",
    "exception_handlers",
    "problem_body",
    "problem_kind_for",
    "problem_response",
    "render_problem",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://turnlog.dev/problems/"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProblemKind:
    """How one class of error looks on the wire."""

    status: int
    type: str
    title: str


def _kind(status: int, slug: str, title: str) -> ProblemKind:
    return ProblemKind(status=status, type=PROBLEM_TYPE_BASE + slug, title=title)


INTERNAL_ERROR = _kind(500, "internal-error", "Internal server error")
METHOD_NOT_ALLOWED = _kind(405, "method-not-allowed", "Method not allowed")
# Answered by the connection itself, before any application code runs (api/connections.py).
MALFORMED_REQUEST = _kind(400, "malformed-request", "Malformed request")
REQUEST_TIMEOUT = _kind(408, "request-timeout", "Request timeout")
URI_TOO_LONG = _kind(414, "uri-too-long", "URI too long")
TOO_MANY_CONNECTIONS = _kind(429, "too-many-connections", "Too many connections")
REQUEST_HEADERS_TOO_LARGE = _kind(431, "request-header-fields-too-large", "Request header fields too large")
SERVER_BUSY = _kind(503, "server-busy", "Server busy")

# The one table. Lookup walks the exception's MRO, so a new leaf such as
# `class RunAlreadyFinished(Conflict)` inherits 409 without touching this module.
PROBLEM_KINDS: Mapping[type[TurnlogError], ProblemKind] = {
    InvalidRequest: _kind(400, "invalid-request", "Invalid request"),
    Unauthenticated: _kind(401, "unauthenticated", "Authentication required"),
    Forbidden: _kind(403, "forbidden", "Forbidden"),
    Suspended: _kind(403, "suspended", "Suspended"),
    NotFound: _kind(404, "not-found", "Not found"),
    Conflict: _kind(409, "conflict", "Conflict"),
    Gone: _kind(410, "gone", "Gone"),
    # 422 as in the IETF Idempotency-Key draft: 409 is kept for "same key, still in flight".
    IdempotencyKeyReused: _kind(422, "idempotency-key-reused", "Idempotency key reused"),
    UnprocessableContent: _kind(422, "unprocessable-content", "Unprocessable content"),
    PayloadTooLarge: _kind(413, "payload-too-large", "Payload too large"),
    UnsupportedMediaType: _kind(415, "unsupported-media-type", "Unsupported media type"),
    Unavailable: _kind(503, "unavailable", "Service unavailable"),
    # Credits, a monthly budget, a rate or runs in progress (docs/governance.md): `reason` says which.
    QuotaExceeded: _kind(429, "quota-exceeded", "Quota exceeded"),
    # A bare root error is a programming mistake: someone forgot to pick a leaf.
    TurnlogError: INTERNAL_ERROR,
}


def problem_kind_for(error: TurnlogError) -> ProblemKind:
    for cls in type(error).__mro__:
        kind = PROBLEM_KINDS.get(cls)  # type: ignore[call-overload]
        if kind is not None:
            return kind
    raise AssertionError("unreachable: TurnlogError is in the table")  # pragma: no cover


def _extension_members(error: TurnlogError) -> dict[str, object]:
    """The typed data a leaf carries, as camelCase problem members."""
    members: dict[str, object] = dict(error.extra)
    match error:
        case InvalidRequest(errors=errors) if errors:
            members["errors"] = [field_error.as_json() for field_error in errors]
        case PayloadTooLarge(max_bytes=max_bytes):
            members["maxBytes"] = max_bytes
        case Unavailable(retry_after_s=retry_after_s) if retry_after_s is not None:
            members["retryAfter"] = retry_after_s
        case IdempotencyKeyReused(idempotency_key=idempotency_key):
            members["idempotencyKey"] = idempotency_key
    return members


def _headers_for(error: TurnlogError) -> dict[str, str]:
    headers: dict[str, str] = {}
    match error:
        case Unauthenticated():
            # RFC 9110 requires a challenge on every 401; error="invalid_token" (RFC 6750)
            # is left out because we cannot tell "no token" from "bad token" here cheaply.
            headers["WWW-Authenticate"] = 'Bearer realm="turnlog"'
        case Unavailable(retry_after_s=retry_after_s) if retry_after_s is not None:
            headers["Retry-After"] = str(retry_after_s)
        case QuotaExceeded() | Suspended():  # Retry-After and the rate-limit fields
            headers.update(error.headers)
    return headers


def render_problem(
    *,
    kind: ProblemKind,
    detail: str,
    instance: str | None = None,
    extension_members: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build a problem+json response; the standard members always win over extensions."""
    return Response(
        content=problem_body(kind=kind, detail=detail, instance=instance, extension_members=extension_members),
        status_code=kind.status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_body(
    *, kind: ProblemKind, detail: str, instance: str | None = None, extension_members: Mapping[str, object] | None = None
) -> bytes:
    """The UTF-8 JSON of a problem; the standard members always win over extensions."""
    body: dict[str, object] = dict(extension_members or {})
    body.update(type=kind.type, title=kind.title, status=kind.status, detail=detail)
    if instance is not None:
        body["instance"] = instance
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def problem_response(error: TurnlogError, *, instance: str | None = None) -> Response:
    """Render a TurnlogError as problem+json with its status, extension members and headers."""
    return render_problem(
        kind=problem_kind_for(error),
        detail=error.detail,
        instance=instance,
        extension_members=_extension_members(error),
        headers=_headers_for(error),
    )


def _http_exception_detail(request: Request, exc: HTTPException) -> str:
    """Starlette's router raises with the bare reason phrase; say what actually went wrong."""
    default_detail = http.client.responses.get(exc.status_code, "")
    if exc.detail and exc.detail != default_detail:
        return exc.detail
    if exc.status_code == 404:
        return f"No route matches {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow")
        suffix = f"; allowed: {allowed}" if allowed else ""
        return f"Method {request.method} is not allowed on {request.url.path}{suffix}"
    return default_detail or f"HTTP {exc.status_code}"


def _http_exception_kind(status_code: int) -> ProblemKind:
    if status_code == 404:
        return PROBLEM_KINDS[NotFound]
    if status_code == 405:
        return METHOD_NOT_ALLOWED
    for kind in PROBLEM_KINDS.values():
        if kind.status == status_code:
            return kind
    try:
        title = http.HTTPStatus(status_code).phrase
    except ValueError:
        title = f"HTTP {status_code}"
    # RFC 9457 section 4.2.1: "about:blank" means "nothing beyond the status code".
    return ProblemKind(status=status_code, type="about:blank", title=title)


async def handle_turnlog_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TurnlogError)
    if problem_kind_for(exc).status >= 500 and not isinstance(exc, Unavailable):
        logger.error(
            "unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path,
            exc_info=exc,
        )
    return problem_response(exc, instance=request.url.path)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        # These statuses must not carry a body.
        return Response(status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 405:
        exc = _allowing_every_method(request, exc)
    return render_problem(
        kind=_http_exception_kind(exc.status_code),
        detail=_http_exception_detail(request, exc),
        instance=request.url.path,
        headers=exc.headers,
    )


def _allowing_every_method(request: Request, exc: HTTPException) -> HTTPException:
    """Starlette's 405 lists the methods of the first route whose path matched; RFC 9110 wants all of the resource's
    (`/v1/conversations` is two routes, POST and GET)."""
    router = getattr(request.app, "router", None)
    # The routers have narrowed the scope to the route that raised (a mount's `root_path`): walk from the top.
    scope = {**request.scope, "root_path": request.scope.get("app_root_path", ""), "path_params": {}}
    methods = _methods_of_path(getattr(router, "routes", ()), scope)
    if not methods:
        return exc
    headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return HTTPException(status_code=405, detail=exc.detail, headers=headers)


def _methods_of_path(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        match, child_scope = route.matches(scope)
        if isinstance(route, Mount) and match != Match.NONE:
            methods |= _methods_of_path(route.routes, {**scope, **child_scope})
        elif isinstance(route, Route) and match != Match.NONE:
            methods |= set(route.methods or ())
    return methods


async def handle_unexpected_exception(request: Request, exc: Exception) -> Response:
    """Last resort, run by Starlette's ServerErrorMiddleware outside every other middleware.

    Starlette re-raises after this handler so the server logs it too; we log here as well
    because only here do we know the request line. TurnlogError and HTTPException can land
    here when raised from a user middleware (outside ExceptionMiddleware), so they keep
    their own rendering instead of turning into a 500.
    """
    if isinstance(exc, TurnlogError):
        return await handle_turnlog_error(request, exc)
    if isinstance(exc, HTTPException):
        return await handle_http_exception(request, exc)
    logger.error(
        "unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path,
        exc_info=exc,
    )
    return render_problem(
        kind=INTERNAL_ERROR,
        detail="An unexpected error occurred; it has been logged.",
        instance=request.url.path,
    )


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away, or its connection was cut (a body too slow, api/connections.py), while the body was read.

    Nobody is left to read an answer: it is not an error of the server, so it is neither logged as one nor re-raised.
    """
    logger.info("the client disconnected while sending the body of %s %s", request.method, request.url.path)
    return render_problem(
        kind=MALFORMED_REQUEST, detail="the connection closed before the whole request body arrived",
        instance=request.url.path,
    )


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

# Ready for `Starlette(exception_handlers=exception_handlers)`. The `Exception` key is what
# makes Starlette install the 500 handler in ServerErrorMiddleware.
exception_handlers: dict[type[Exception] | int, ExceptionHandler] = {
    TurnlogError: handle_turnlog_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected_exception,
}
