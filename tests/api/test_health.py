"""Liveness, readiness and metrics endpoints: what a worker's metrics port and the API answer."""

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.health import Check, Readiness, health_app


def client(readiness: Readiness) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=health_app(readiness)), base_url="http://test")


async def fine() -> None:
    return None


async def test_ready_when_every_check_passes() -> None:
    async with client(Readiness([Check(name="log", probe=fine), Check(name="roles", probe=fine)])) as http:
        response = await http.get("/readyz")
        alive = await http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert [(check["name"], check["ok"], check["detail"]) for check in body["checks"]] == [("log", True, "ok"), ("roles", True, "ok")]
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


async def test_not_ready_names_each_failed_check_in_a_problem() -> None:
    async def stopped() -> str:
        return "stopped: inference-worker-interactive"

    async def unreachable() -> None:
        raise ConnectionError("broker kafka:9092 is down")

    async def hangs() -> None:
        await asyncio.Event().wait()

    checks = [
        Check(name="log", probe=unreachable), Check(name="store", probe=fine), Check(name="roles", probe=stopped),
        Check(name="projector-lag", probe=hangs, timeout_s=0.05),
    ]
    async with client(Readiness(checks)) as http:
        response = await http.get("/readyz")
        alive = await http.get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/not-ready") and problem["status"] == 503
    assert problem["failedChecks"] == ["log", "roles", "projector-lag"]
    details = {check["name"]: check["detail"] for check in problem["checks"]}
    assert details == {
        "log": "ConnectionError: broker kafka:9092 is down", "store": "ok", "roles": "stopped: inference-worker-interactive",
        "projector-lag": "no answer within 0.05 s",
    }
    assert "roles: stopped: inference-worker-interactive" in problem["detail"]
    assert alive.status_code == 200, "liveness checks nothing else"


async def test_metrics_are_served_in_prometheus_text() -> None:
    async with client(Readiness()) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "turnlog_role_up" in names and "process_cpu_seconds" in names
