"""problem+json rendering: the error table, and the handlers installed on a real Starlette app."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from api.problems import PROBLEM_MEDIA_TYPE, exception_handlers, problem_kind_for, problem_response
from kernel.errors import (
    Conflict,
    FieldError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TurnlogError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

PROBLEMS = "https://turnlog.dev/problems/"


class RunAlreadyFinished(Conflict):
    """A leaf defined elsewhere must inherit its parent's mapping."""


ERRORS_RAISED_BY_ROUTE: dict[str, TurnlogError] = {
    "unauthenticated": Unauthenticated(detail="bearer token has expired"),
    "forbidden": Forbidden(detail="workspace ws_9 is not yours"),
    "not-found": NotFound(detail="conversation conv_1 not found"),
    "conflict": Conflict(detail="run run_1 is still active", extra={"runId": "run_1"}),
    "finished": RunAlreadyFinished(detail="run run_1 already finished"),
    "reused": IdempotencyKeyReused(detail="key reused with another body", idempotency_key="k1"),
    "invalid": InvalidRequest(
        detail="request body is invalid",
        errors=[FieldError(field="input[0].text", message="must not be empty")],
    ),
    "too-large": PayloadTooLarge(detail="too big", max_bytes=1024),
    "media": UnsupportedMediaType(detail="Content-Type must be application/json"),
    "unavailable": Unavailable(detail="log is overloaded", retry_after_s=7),
    "bare-root": TurnlogError(detail="someone forgot to pick a leaf"),
}


async def raise_named_error(request: Request) -> Response:
    raise ERRORS_RAISED_BY_ROUTE[request.path_params["name"]]


async def crash(request: Request) -> Response:
    raise ZeroDivisionError("secret internal state")


async def teapot(request: Request) -> Response:
    raise HTTPException(status_code=418, detail="short and stout")


async def listing(request: Request) -> Response:
    return JSONResponse({"ok": True})


class RejectEverythingMiddleware(BaseHTTPMiddleware):
    """Raises outside ExceptionMiddleware: only the last-resort handler sees this."""

    async def dispatch(self, request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path == "/from-middleware":
            raise Unauthenticated(detail="rejected by middleware")
        return await call_next(request)


@pytest.fixture
def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/errors/{name}", raise_named_error),
            Route("/crash", crash),
            Route("/teapot", teapot),
            Route("/v1/conversations", listing, methods=["GET", "POST"]),
        ],
        middleware=[Middleware(RejectEverythingMiddleware)],
        exception_handlers=exception_handlers,
    )
    # The 500 handler runs inside ServerErrorMiddleware, which re-raises for the server to log.
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("name", "status", "slug", "title"),
    [
        ("unauthenticated", 401, "unauthenticated", "Authentication required"),
        ("forbidden", 403, "forbidden", "Forbidden"),
        ("not-found", 404, "not-found", "Not found"),
        ("conflict", 409, "conflict", "Conflict"),
        ("finished", 409, "conflict", "Conflict"),
        ("reused", 422, "idempotency-key-reused", "Idempotency key reused"),
        ("invalid", 400, "invalid-request", "Invalid request"),
        ("too-large", 413, "payload-too-large", "Payload too large"),
        ("media", 415, "unsupported-media-type", "Unsupported media type"),
        ("unavailable", 503, "unavailable", "Service unavailable"),
        ("bare-root", 500, "internal-error", "Internal server error"),
    ],
)
def test_each_turnlog_error_renders_its_problem(
    client: TestClient, name: str, status: int, slug: str, title: str
) -> None:
    response = client.get(f"/errors/{name}")

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEMS + slug
    assert body["title"] == title
    assert body["status"] == status
    assert body["detail"] == ERRORS_RAISED_BY_ROUTE[name].detail
    assert body["instance"] == f"/errors/{name}"


def test_invalid_request_lists_field_errors(client: TestClient) -> None:
    body = client.get("/errors/invalid").json()

    assert body["errors"] == [{"field": "input[0].text", "message": "must not be empty"}]


def test_unauthenticated_carries_a_bearer_challenge(client: TestClient) -> None:
    response = client.get("/errors/unauthenticated")

    assert response.headers["www-authenticate"].startswith("Bearer")


def test_unavailable_sets_retry_after_header_and_member(client: TestClient) -> None:
    response = client.get("/errors/unavailable")

    assert response.headers["retry-after"] == "7"
    assert response.json()["retryAfter"] == 7


def test_typed_data_and_extra_members_reach_the_body(client: TestClient) -> None:
    assert client.get("/errors/conflict").json()["runId"] == "run_1"
    assert client.get("/errors/too-large").json()["maxBytes"] == 1024
    assert client.get("/errors/reused").json()["idempotencyKey"] == "k1"


def test_unknown_route_is_a_404_problem_naming_the_path(client: TestClient) -> None:
    response = client.get("/v1/nowhere")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json() == {
        "type": PROBLEMS + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "No route matches GET /v1/nowhere",
        "instance": "/v1/nowhere",
    }


def test_wrong_method_is_a_405_problem_listing_allowed_methods(client: TestClient) -> None:
    response = client.delete("/v1/conversations")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]
    body = response.json()
    assert body["type"] == PROBLEMS + "method-not-allowed"
    assert body["detail"].startswith("Method DELETE is not allowed on /v1/conversations; allowed: ")
    assert "POST" in body["detail"]


def test_http_exception_with_own_detail_keeps_it(client: TestClient) -> None:
    response = client.get("/teapot")

    assert response.status_code == 418
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == "I'm a Teapot"
    assert body["detail"] == "short and stout"


def test_unexpected_exception_is_a_generic_500_and_is_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="api.problems"):
        response = client.get("/crash")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEMS + "internal-error"
    assert "secret internal state" not in response.text
    records = [record for record in caplog.records if record.name == "api.problems"]
    assert len(records) == 1
    assert "GET /crash" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[0] is ZeroDivisionError


def test_turnlog_error_raised_in_middleware_keeps_its_status(client: TestClient) -> None:
    response = client.get("/from-middleware")

    assert response.status_code == 401
    assert response.json()["detail"] == "rejected by middleware"


def test_problem_response_without_request_omits_instance() -> None:
    response = problem_response(NotFound(detail="gone"))

    assert response.status_code == 404
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert b'"instance"' not in response.body


def test_extra_members_cannot_override_standard_ones() -> None:
    error = Conflict(detail="real detail", extra={"status": 200, "detail": "fake"})

    response = problem_response(error)

    assert response.status_code == 409
    assert b'"status":409' in response.body
    assert b'"detail":"real detail"' in response.body


def test_lookup_walks_the_class_hierarchy() -> None:
    assert problem_kind_for(RunAlreadyFinished(detail="x")).status == 409


def test_a_405_allows_every_method_of_the_path_not_only_its_first_routes() -> None:
    """Starlette's 405 names the methods of the first route whose path matched; a path of two routes has both."""
    app = Starlette(
        routes=[
            Route("/v1/things", listing, methods=["POST"]),
            Route("/v1/things", listing, methods=["GET"]),
            Mount("/mounted", routes=[
                Route("/things/{thing_id}", listing, methods=["GET"]),
                Route("/things/{thing_id}", listing, methods=["DELETE"]),
            ]),
        ],
        exception_handlers=exception_handlers,
    )
    client = TestClient(app, raise_server_exceptions=False)
    response = client.put("/v1/things")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert set(client.patch("/mounted/things/t1").headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD"}
