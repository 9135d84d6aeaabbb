"""The Responses API: `POST /responses`, `GET /responses/{id}` (whole, or streamed from the log), `POST .../cancel`.

A response is a run: its id is the run id. Without `previous_response_id` a response starts a new conversation;
with it, it is the next turn of that response's conversation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.access import actor_of, authenticate, context_of, find_run, int_query, started_run
from api.bodies import read_json_body
from api.context import ApiContext
from api.openai.chat import RawObject, start_turn, workspace_of
from api.openai.completions import KEEPALIVE
from api.openai.errors import UnsupportedParameter, in_openai_shape
from api.openai.models import find_model
from api.openai.response_objects import ResponseEvents, ResponseState, sse_event
from api.openai.response_request import parse_response_request
from api.openai.run_log import follow_run, read_run, with_keepalives
from api.runs import refuse_expired_run
from commands.catalog import CancelRun
from events.runs import GenerationStarted, RunStarted

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRIEVE_QUERY = ("stream", "starting_after", "include_obfuscation")


@in_openai_shape
async def create_response(request: Request) -> Response:
    principal = authenticate(request)
    context = context_of(request)
    document = await read_json_body(request, RawObject, max_bytes=context.limits.max_turn_body_bytes)
    ask = parse_response_request(document.root)
    find_model(request, ask.model)
    if ask.previous_response_id is not None:
        previous = await started_run(context, principal, ask.previous_response_id)
        conversation_id, run_id, headers = await start_turn(
            request, principal, parts=ask.parts, fingerprint="openai-response", conversation_id=previous.conversation_id
        )
    else:
        conversation_id, run_id, headers = await start_turn(
            request, principal, parts=ask.parts, fingerprint="openai-response", title=ask.title,
            workspace_id=workspace_of(request, principal),
        )
    headers.update({"X-Turnlog-Conversation-Id": conversation_id, "X-Turnlog-Run-Id": run_id})
    state = ResponseState(
        response_id=run_id, model=ask.model, created_at=int(time.time()), background=ask.background,
        instructions=ask.instructions, previous_response_id=ask.previous_response_id,
    )
    if ask.background:
        return JSONResponse(state.json(), headers=headers)
    if ask.stream:
        return StreamingResponse(
            _stream(context, run_id, state, after=-1), media_type="text/event-stream", headers={**headers, **SSE_HEADERS}
        )
    await _fold(context, run_id, state)
    return JSONResponse(state.json(), headers=headers)


@in_openai_shape
async def get_response(request: Request) -> Response:
    """The response as the log has it now; `?stream=true` replays its events, after `starting_after` if given."""
    principal = authenticate(request)
    context = context_of(request)
    for name, value in request.query_params.items():
        if name not in RETRIEVE_QUERY or (name == "include_obfuscation" and value != "false"):
            raise UnsupportedParameter(param=name, detail=f"query parameter '{name}={value}' is not supported (docs/openai.md)")
    stream = request.query_params.get("stream", "false")
    if stream not in ("true", "false"):
        raise UnsupportedParameter(param="stream", code="invalid_value", detail="query parameter 'stream' must be true or false")
    starting_after = int_query(request, "starting_after", default=-1, minimum=-1, maximum=2**31 - 1)
    run_id = request.path_params["response_id"]
    started = await started_run(context, principal, run_id)  # 404 unless the caller owns it
    await refuse_expired_run(context, started)  # its deltas, and so its text here, are trimmed
    state = await _state_from_log(context, run_id)
    if stream == "true":
        return StreamingResponse(_stream(context, run_id, state, after=starting_after), media_type="text/event-stream", headers=SSE_HEADERS)
    builder = ResponseEvents(state)
    for envelope in await read_run(context, run_id):
        builder.on(envelope.payload)
    return JSONResponse(state.json())


@in_openai_shape
async def cancel_response(request: Request) -> Response:
    """Cancel the run (as `POST /v1/runs/{id}/cancel` does), then answer the response once the run has stopped."""
    principal = authenticate(request)
    context = context_of(request)
    run = await find_run(request, principal, request.path_params["response_id"])
    await context.bus.send(CancelRun(conversation_id=run.conversation_id, run_id=run.run_id), actor=actor_of(principal, run.workspace_id))
    state = await _state_from_log(context, run.run_id)
    await _fold(context, run.run_id, state)
    return JSONResponse(state.json())


async def _state_from_log(context: ApiContext, run_id: str) -> ResponseState:
    """A response's header as the log says it: created when its run started, on the pool the run went to."""
    envelopes = await read_run(context, run_id)
    created_at = next((envelope.occurred_at for envelope in envelopes if isinstance(envelope.payload, RunStarted)), None)
    pool = next((envelope.payload.pool for envelope in envelopes if isinstance(envelope.payload, GenerationStarted)), "")
    return ResponseState(
        response_id=run_id, model=pool, created_at=int(created_at.timestamp()) if created_at else int(time.time())
    )


async def _fold(context: ApiContext, run_id: str, state: ResponseState) -> None:
    """Follow the run to its end, folding its events into `state`."""
    builder = ResponseEvents(state)
    async for event in follow_run(context, run_id):
        builder.on(event)


async def _stream(context: ApiContext, run_id: str, state: ResponseState, *, after: int) -> AsyncIterator[bytes]:
    """The response's stream events with a sequence number above `after`, as SSE, to the run's end."""
    builder = ResponseEvents(state)
    events = with_keepalives(follow_run(context, run_id), every_s=context.limits.keepalive_s)
    try:
        async for event in events:
            if event is None:
                yield KEEPALIVE
                continue
            for stream_event in builder.on(event):
                if stream_event["sequence_number"] > after:
                    yield sse_event(stream_event)
    finally:
        await events.aclose()
