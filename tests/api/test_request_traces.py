"""A request's span: it continues the caller's `traceparent` (a new trace when there is none or it is malformed), and
every envelope the request makes carries it; the access log names its trace id (a small app behind the real
middleware, over httpx)."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

import trace_collector
from api.observability import ObservedRequests
from events.runs import RunHeartbeat
from kernel import log_context, tracing
from kernel.envelope import Actor, Envelope

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACE_PARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"


async def append_something(request):
    """What a handler that appends does: wrap an envelope (no cause) while the request is in hand."""
    envelope = Envelope.wrap(RunHeartbeat(run_id="run_1", worker_id="api"), key="run_1", actor=Actor(user_id="u", org_id="o", workspace_id="w"))
    return JSONResponse({"traceParent": envelope.trace_parent, "traceId": log_context.current().get("trace_id")})


async def boom(request):
    raise RuntimeError("a bug")


def client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/v1/runs/{run_id}/things", append_something, methods=["POST"]), Route("/boom", boom)],
        middleware=[Middleware(ObservedRequests, access_log=False)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test")


async def appended(headers: dict[str, str]) -> dict:
    async with client() as http:
        response = await http.post("/v1/runs/run_1/things", headers=headers)
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("sdk", [False, True], ids=["tracing-off", "tracing-on"])
async def test_a_valid_traceparent_is_continued_on_what_the_request_appends(sdk: bool) -> None:
    if sdk:
        with trace_collector.recorded_spans() as spans:
            answer = await appended({"traceparent": TRACE_PARENT})
        [server] = spans.get_finished_spans()
        context = server.get_span_context()
        assert server.parent.span_id == int(CALLER_SPAN_ID, 16) and context.trace_id == int(TRACE_ID, 16)
        assert answer["traceParent"] == tracing.format_trace_parent(context)  # the request's span is the parent
        assert server.name == "POST /v1/runs/{run_id}/things"
        assert server.attributes["http.route"] == "/v1/runs/{run_id}/things"
        assert server.attributes["http.response.status_code"] == 200
    else:
        answer = await appended({"traceparent": TRACE_PARENT})
        assert answer["traceParent"] == TRACE_PARENT  # nothing records a span: the caller's context travels as it is
    assert answer["traceId"] == TRACE_ID


@pytest.mark.parametrize("given", [None, "garbage", f"00-{'0' * 32}-{CALLER_SPAN_ID}-01", f"00-{TRACE_ID}-{CALLER_SPAN_ID}"])
@pytest.mark.parametrize("sdk", [False, True], ids=["tracing-off", "tracing-on"])
async def test_a_missing_or_malformed_traceparent_is_replaced_by_a_new_trace(given: str | None, sdk: bool) -> None:
    headers = {"traceparent": given} if given is not None else {}
    if sdk:
        with trace_collector.recorded_spans() as spans:
            first, second = await appended(headers), await appended(headers)
        assert all(span.parent is None for span in spans.get_finished_spans())  # each request is a root
    else:
        first, second = await appended(headers), await appended(headers)
    for answer in (first, second):
        context = tracing.parse(answer["traceParent"])
        assert context is not None and f"{context.trace_id:032x}" == answer["traceId"] != TRACE_ID
    assert first["traceId"] != second["traceId"]


async def test_a_request_that_fails_marks_its_span() -> None:
    with trace_collector.recorded_spans() as spans:
        async with client() as http:
            assert (await http.get("/boom")).status_code == 500
    [server] = spans.get_finished_spans()
    assert server.name == "GET /boom" and not server.status.is_ok
