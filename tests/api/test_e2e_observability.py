"""Observability end to end, on a real `turnlog serve` over real HTTP: after a turn, /metrics holds the GenAI and
turnlog metrics with bounded labels only; the access log line carries the request id the answer echoed; /readyz
says ready; and every metric the Grafana dashboard queries is one this server exposes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import e2e_server as e2e
from e2e_server import create_conversation, read_stream

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "turnlog.json"
# Label names that would make a series per tenant or per request: never on a metric.
ID_LABELS = {"user", "user_id", "org", "org_id", "conversation", "conversation_id", "run", "run_id", "request_id", "workspace_id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> e2e.TurnlogServer:
    running = e2e.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("observed") / "data", token_delay_ms=2, answer_tokens=12,
        extra_args=("--log-level", "info", "--log-format", "json"),
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def turn(server) -> dict:
    """One turn, streamed to its end, posted with our own request id (once for the module)."""
    return asyncio.run(_turn(server))


async def _turn(server) -> dict:
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns", json={"input": e2e.text_input("how are the pools doing")},
            headers={"X-Request-ID": "e2e-observed-turn-1"},
        )
        assert response.status_code == 202, response.text
        events = await read_stream(client, response.json()["runId"])
        assert events[-1].event == "assistant.completed"
    return {"response": response, "conversation_id": conversation_id, "user": user}


async def scrape(server) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15.0) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(families: dict, name: str) -> list:
    return [sample for sample in families[name].samples]


async def test_a_turn_shows_in_the_genai_metrics_by_pool_and_model_without_ids(server, turn) -> None:
    families = await scrape(server)
    ttft = [s for s in samples(families, "gen_ai_server_time_to_first_token_seconds") if s.name.endswith("_count")]
    assert ttft and all(s.labels.keys() == {"pool", "model"} for s in ttft)
    assert {(s.labels["pool"], s.labels["model"]) for s in ttft if s.value >= 1} == {("interactive", "scripted")}
    durations = [s for s in samples(families, "gen_ai_server_request_duration_seconds") if s.name.endswith("_count")]
    assert any(s.labels == {"pool": "interactive", "model": "scripted", "outcome": "completed"} and s.value >= 1 for s in durations)
    usage = {
        s.labels["gen_ai_token_type"]: s.value for s in samples(families, "gen_ai_client_token_usage")
        if s.name.endswith("_sum") and s.labels["pool"] == "interactive"
    }
    assert usage["output"] >= 12 and usage["input"] > 0
    waits = [s for s in samples(families, "turnlog_inference_admission_wait_seconds") if s.name.endswith("_count")]
    assert any(s.labels == {"pool": "interactive", "size_class": "short"} and s.value >= 1 for s in waits)
    # Turnlog's own, from this turn: the route's template, the log's appends, the projector's batches.
    routes = {s.labels["http_route"] for s in samples(families, "http_server_request_duration_seconds") if s.name.endswith("_count")}
    assert {"/v1/conversations", "/v1/conversations/{conversation_id}/turns", "/v1/runs/{run_id}/stream"} <= routes
    assert not any(turn["conversation_id"] in route for route in routes)
    assert any(s.value >= 1 for s in samples(families, "turnlog_log_append_duration_seconds") if s.name.endswith("_count"))
    assert {s.labels["role"]: s.value for s in samples(families, "turnlog_role_up")}["inference-worker-interactive"] == 1
    assert {s.labels["pool"]: s.value for s in samples(families, "turnlog_pool_breaker_state")} == {"interactive": 0}
    # No series anywhere is labelled by a tenant, a conversation, a run or a request.
    for family in families.values():
        for sample in family.samples:
            assert not ID_LABELS & set(sample.labels), (sample.name, sample.labels)
            assert not any(value.startswith(("run_", "conv_", "req_")) for value in sample.labels.values()), sample


async def test_the_access_log_line_names_the_request_id_the_answer_echoed(server, turn) -> None:
    response = turn["response"]
    assert response.headers["x-request-id"] == "e2e-observed-turn-1"
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("logger") == "turnlog.access" and line.get("request_id") == "e2e-observed-turn-1"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(access) == 1, server.output()
    [line] = access
    assert line["route"] == "/v1/conversations/{conversation_id}/turns" and line["status"] == 202 and line["method"] == "POST"
    assert line["org_id"] == turn["user"].org_id and line["conversation_id"] == turn["conversation_id"]
    assert line["level"] == "info" and line["timestamp"].endswith("Z") and line["duration_ms"] > 0


async def test_a_healthy_server_is_ready_with_every_check_passing(server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15.0) as client:
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert ready.status_code == 200, ready.text
    checks = {check["name"]: check for check in ready.json()["checks"]}
    assert set(checks) == {"log", "store", "roles", "projector-lag"}
    assert all(check["ok"] for check in checks.values())
    assert alive.status_code == 200


def metric_names_in(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels, ranges and numbers left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("("):
            continue  # a function or an aggregation
        if match.group() in {"bool", "offset", "and", "or", "unless", "inf", "nan", "le"}:
            continue
        names.add(match.group())
    return names


def test_the_promql_parser_finds_the_metric_names() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le, pool) (rate(gen_ai_server_time_to_first_token_seconds_bucket{pool!~"a|b"}[$__rate_interval])))'
        ' / sum without (pool) (turnlog_role_up == 0) * 3600'
    )
    assert metric_names_in(expression) == {"gen_ai_server_time_to_first_token_seconds_bucket", "turnlog_role_up"}


async def test_every_metric_the_dashboard_queries_is_one_this_server_exposes(server, turn) -> None:
    families = await scrape(server)
    exposed: set[str] = set()
    for family in families.values():
        exposed.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 20
    used = set().union(*(metric_names_in(expression) for expression in expressions))
    assert used, "the dashboard queries nothing"
    assert used <= exposed, f"the dashboard queries metrics turnlog does not expose: {sorted(used - exposed)}"
