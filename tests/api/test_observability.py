"""Every request observed: its request id taken or made and echoed, its duration by route template, its access log
line, an event stream counted while open (a small Starlette app behind the real middleware, over httpx)."""

import logging

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from api.observability import ObservedRequests, request_id_from
from kernel import log_context

seen_during_stream: dict[str, float] = {}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def show_run(request):
    log_context.bind(org_id="org_1", run_id=request.path_params["run_id"])  # as api/access.py does once authenticated
    return JSONResponse({"runId": request.path_params["run_id"], "context": dict(log_context.current())})


async def show_response(request):
    return JSONResponse({"id": request.path_params["response_id"]})


async def stream(request):
    async def events():
        seen_during_stream["open"] = sample("turnlog_sse_streams_open", http_route="/v1/runs/{run_id}/stream")
        yield b"data: one\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def boom(request):
    raise RuntimeError("a bug")


def app(*, access_log: bool = True) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/runs/{run_id}", show_run),
            Route("/v1/runs/{run_id}/stream", stream),
            Route("/boom", boom),
            Mount("/openai/v1", routes=[Route("/responses/{response_id}", show_response)]),
            Mount("/static", app=PlainTextResponse("a file")),
        ],
        middleware=[Middleware(ObservedRequests, access_log=access_log)],
    )


def client(application: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application, raise_app_exceptions=False), base_url="http://test")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 128, True), ("trace:1.2_3", True), ("a" * 129, False), ("bad id", False), ("ünï", False), ("", False)],
)
def test_a_sane_request_id_is_kept_and_anything_else_replaced(given: str, kept: bool) -> None:
    made = request_id_from({"x-request-id": given})
    assert (made == given) == kept
    if not kept:
        assert made.startswith("req_")
    assert request_id_from({}).startswith("req_")


async def test_the_request_id_is_echoed_and_bound_while_the_handler_runs(caplog) -> None:
    caplog.set_level(logging.INFO, logger="turnlog.access")
    async with client(app()) as http:
        response = await http.get("/v1/runs/run_42", headers={"X-Request-ID": "my-request-1"})
        made = await http.get("/v1/runs/run_43")
    assert response.headers["x-request-id"] == "my-request-1"
    context = response.json()["context"]
    assert len(context.pop("trace_id")) == 32  # every request has a trace: a new one without a `traceparent`
    assert context == {"request_id": "my-request-1", "org_id": "org_1", "run_id": "run_42"}
    assert made.headers["x-request-id"].startswith("req_")
    [line] = [record for record in caplog.records if getattr(record, "path", None) == "/v1/runs/run_42"]
    assert (line.method, line.route, line.status) == ("GET", "/v1/runs/{run_id}", 200)
    assert line.getMessage().startswith("GET /v1/runs/run_42 200 ")
    assert line.duration_ms >= 0


async def test_durations_are_counted_by_route_template_never_by_path() -> None:
    labels = {"http_request_method": "GET", "http_response_status_code": "200"}
    before = {
        route: sample("http_server_request_duration_seconds_count", http_route=route, **labels)
        for route in ("/v1/runs/{run_id}", "/openai/v1/responses/{response_id}", "/static/{path}")
    }
    missing_before = sample(
        "http_server_request_duration_seconds_count", http_route="unmatched", http_request_method="GET",
        http_response_status_code="404",
    )
    async with client(app(access_log=False)) as http:
        for run_id in ("run_1", "run_2", "run_3"):
            assert (await http.get(f"/v1/runs/{run_id}")).status_code == 200
        assert (await http.get("/openai/v1/responses/resp_1")).status_code == 200
        assert (await http.get("/static/app.js")).status_code == 200
        assert (await http.get("/no/such/path/xyz")).status_code == 404
    assert sample("http_server_request_duration_seconds_count", http_route="/v1/runs/{run_id}", **labels) == before["/v1/runs/{run_id}"] + 3
    assert sample(
        "http_server_request_duration_seconds_count", http_route="/openai/v1/responses/{response_id}", **labels
    ) == before["/openai/v1/responses/{response_id}"] + 1
    assert sample("http_server_request_duration_seconds_count", http_route="/static/{path}", **labels) == before["/static/{path}"] + 1
    assert sample(
        "http_server_request_duration_seconds_count", http_route="unmatched", http_request_method="GET",
        http_response_status_code="404",
    ) == missing_before + 1
    assert REGISTRY.get_sample_value(
        "http_server_request_duration_seconds_count", {"http_route": "/v1/runs/run_1", **labels}
    ) is None


async def test_an_event_stream_counts_as_open_while_it_lasts() -> None:
    async with client(app()) as http:
        response = await http.get("/v1/runs/run_1/stream")
    assert response.text == "data: one\n\n"
    after = sample("turnlog_sse_streams_open", http_route="/v1/runs/{run_id}/stream")
    assert seen_during_stream["open"] == after + 1


async def test_a_request_that_raises_is_counted_and_logged_as_a_500(caplog) -> None:
    caplog.set_level(logging.INFO, logger="turnlog.access")
    before = sample("http_server_request_duration_seconds_count", http_route="/boom", http_request_method="GET", http_response_status_code="500")
    async with client(app()) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert sample(
        "http_server_request_duration_seconds_count", http_route="/boom", http_request_method="GET", http_response_status_code="500"
    ) == before + 1
    assert [record.status for record in caplog.records if getattr(record, "route", None) == "/boom"] == [500]


async def test_the_access_log_can_be_turned_off(caplog) -> None:
    caplog.set_level(logging.INFO, logger="turnlog.access")
    async with client(app(access_log=False)) as http:
        response = await http.get("/v1/runs/run_7", headers={"X-Request-ID": "quiet-1"})
    assert response.headers["x-request-id"] == "quiet-1"
    assert not [record for record in caplog.records if record.name == "turnlog.access"]
