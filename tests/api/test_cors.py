"""CORS: off unless origins are given; then preflights from those origins alone are answered, without credentials."""

from __future__ import annotations

import contextlib

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.cors import checked_origin


@contextlib.asynccontextmanager
async def never_started():
    raise AssertionError("a preflight needs no system behind the API")
    yield  # pragma: no cover


def preflight(client: TestClient, origin: str):
    return client.options(
        "/v1/conversations",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"},
    )


def test_without_origins_no_cors_headers_are_sent() -> None:
    client = TestClient(create_app(never_started))  # no `with`: the lifespan never runs
    assert "access-control-allow-origin" not in preflight(client, "https://chat.example.com").headers


def test_a_configured_origin_is_answered_and_another_is_not() -> None:
    client = TestClient(create_app(never_started, cors_origins=["https://chat.example.com"]))
    allowed = preflight(client, "https://chat.example.com")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers  # cookies stay with the page of this origin
    refused = preflight(client, "https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("origin", ["https://chat.example.com", "http://localhost:5173", "*"])
def test_origins_are_scheme_host_and_port(origin: str) -> None:
    assert checked_origin(origin) == origin


@pytest.mark.parametrize("origin", ["chat.example.com", "https://chat.example.com/", "ftp://x.example", "https://x.example:99999", "https://u@x.example"])
def test_anything_else_is_refused(origin: str) -> None:
    with pytest.raises(ValueError):
        checked_origin(origin)
