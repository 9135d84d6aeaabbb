"""Run endpoints: status, cancel, and the SSE stream of a run's events, read straight from the log.

Deltas are provisional. When a safety stage stops a run while it streams, the stream says so
(`safety.stopped`, with the reason for the user) before its end; whenever the stored answer is not what
streamed (refused, redacted, replaced, stopped), the terminal event carries `replaced: true` and the stored
`text`, which a client shows instead of the deltas.

A run older than the retention period of its deltas (`--run-events-retention-s`, events/retention.py) has no stream
any more: 410 problem+json naming where its answer is.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from api.access import (
    actor_of, authenticate, context_of, expired_run, find_run, run_records, scope_of, started_run_actor, started_run_at,
)
from api.context import ApiContext
from api.presenters import iso, run_finished_json, run_json
from kernel.sse import SSE_MEDIA_TYPE, encode_comment, encode_event, parse_last_event_id
from commands.catalog import CancelRun
from api.bodies import ToolApprovalBody, read_json_body
from kernel.envelope import Envelope, utc_now
from kernel.errors import Conflict, Gone, NotFound
from kernel.runtime import encode
from kernel.codec import UndecodableMessage
from events.runs import (
    AssistantDelta, PromptAssembled, RunBackgrounded, RunFinished, RunStarted, ToolCalled, ToolReturned,
)
from events.tools import (
    TOOL_CALL_STATUSES,
    ToolApprovalDecided,
    ToolApprovalRequested,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallsProposed,
)
from events.safety import SafetyDecision
from events.retention import stream_expired
from events.topics import RUN_EVENTS


async def get_run(request: Request) -> JSONResponse:
    """The run's status; while it runs, its progress from the log; once completed, its answer.

    This is how a background run (`responseMode: "background"`) is followed without a stream.
    """
    principal = authenticate(request)
    run = await find_run(request, principal, request.path_params["run_id"])
    shape = run_json(run)
    context = context_of(request)
    progress, route, prompt, tool_calls, backgrounded = await _from_events(context, run.run_id)
    if backgrounded is not None:  # it became long work on the way
        shape["mode"] = "background"
        shape["backgroundedReason"] = backgrounded
    if route is not None:
        shape["route"] = route
    if prompt is not None:
        shape["prompt"] = prompt
    if tool_calls:
        shape["toolCalls"] = tool_calls
    if run.status == "in_progress":
        shape["progress"] = progress
    else:
        turns = await context.read_models.turns(scope_of(principal), run.conversation_id, after_seq=run.turn_seq - 1, limit=1)
        turn = turns[0] if turns else None
        if turn is not None and turn.turn_seq == run.turn_seq:
            shape["result"] = {"turnSeq": turn.turn_seq, "content": turn.content, "citations": turn.citations}
    return JSONResponse(shape)


async def _from_events(context: ApiContext, run_id: str) -> tuple[dict, dict | None, dict | None, list[dict], str | None]:
    """From the run's events on the log: what it has streamed so far, where the router sent it, what its prompt
    held (passages fenced or dropped, turns redacted), its tool calls, and why it moved to the background (if it did)."""
    deltas = characters = tool_calls = 0
    route = prompt = backgrounded = None
    calls: dict[str, dict] = {}
    for record in await run_records(context, run_id):
        try:
            event = context.codec.decode(record.value).payload
        except UndecodableMessage:
            continue
        if isinstance(event, AssistantDelta):
            deltas += 1
            characters += len(event.text)
        elif isinstance(event, ToolCalled):
            tool_calls += 1
        elif isinstance(event, ToolCallsProposed):
            tool_calls += len(event.calls)
            for call in event.calls:
                calls[call.call_id] = {
                    "callId": call.call_id, "toolName": call.name, "step": event.step, "status": "proposed",
                    "attempts": 0, "durationMs": None,
                }
        elif isinstance(event, (ToolCallRequested, ToolApprovalRequested, ToolCallFinished)) and event.call_id in calls:
            calls[event.call_id].update(_call_progress(event, calls[event.call_id]))
        elif isinstance(event, RunBackgrounded):
            backgrounded = event.reason
        elif isinstance(event, PromptAssembled):
            route = {
                "pool": event.pool or None, "sizeClass": event.size_class or None, "fallbackFrom": event.fallback_from,
                "reason": event.route_reason, "promptTokens": event.prompt_tokens, "toolTokens": event.tool_tokens,
            }
            # The passages that went in, and what the safety stages changed in the prompt.
            prompt = {
                "chunkIds": list(event.chunk_ids), "fencedChunkIds": list(event.fenced_chunk_ids),
                "droppedChunkIds": list(event.dropped_chunk_ids), "redactedTurnSeqs": list(event.redacted_turn_seqs),
            }
    return {"deltas": deltas, "characters": characters, "toolCalls": tool_calls}, route, prompt, list(calls.values()), backgrounded


def _call_progress(event: object, call: dict) -> dict:
    match event:
        case ToolApprovalRequested():
            return {"status": "awaiting_approval"}
        case ToolCallRequested():
            return {"status": "running", "attempts": max(call["attempts"], event.attempt)}
        case ToolCallFinished() if call["status"] not in _FINISHED:
            return {"status": event.status, "attempts": max(call["attempts"], event.attempt), "durationMs": event.duration_ms}
    return {}


_FINISHED = frozenset(TOOL_CALL_STATUSES)


def _summary(arguments: str, limit: int = 200) -> str:
    """The arguments as the model wrote them, shortened for a status line."""
    return arguments if len(arguments) <= limit else arguments[: limit - 1] + "…"


async def cancel_run(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    # The decider knows whether the run is the caller's and still running; the log's first event of the run names its
    # conversation and scope, so a cancel waits for no read model (and the projector's progress) before it is sent.
    started, actor = await started_run_actor(context, principal, request.path_params["run_id"])
    await context.bus.send(CancelRun(conversation_id=started.conversation_id, run_id=started.run_id), actor=actor)
    return JSONResponse({"runId": started.run_id, "status": "cancelling"}, status_code=202)


async def decide_tool_approval(request: Request) -> JSONResponse:
    """The run's owner approves or declines a call that waits for it; the tool loop acts on the answer in log order."""
    principal = authenticate(request)
    context = context_of(request)
    body = await read_json_body(request, ToolApprovalBody, max_bytes=context.limits.max_small_body_bytes)
    run = await find_run(request, principal, request.path_params["run_id"])
    call_id = request.path_params["call_id"]
    waiting = await _awaiting_approval(context, run.run_id, call_id)
    if waiting is None:
        raise NotFound(detail=f"run {run.run_id} has no tool call {call_id}")
    if not waiting:
        raise Conflict(
            detail=f"tool call {call_id} is not waiting for approval (answered, expired or never asked)",
            extra={"callId": call_id},
        )
    decided = ToolApprovalDecided(
        run_id=run.run_id, call_id=call_id, approved=body.approve, reason=body.reason, decided_by=principal.user_id,
        decided_at=utc_now(),
    )
    envelope = Envelope.wrap(decided, key=run.run_id, actor=actor_of(principal, run.workspace_id))
    await context.log.append([encode(context.codec, envelope, topic=RUN_EVENTS)])
    return JSONResponse({"runId": run.run_id, "callId": call_id, "approved": body.approve}, status_code=202)


async def _awaiting_approval(context: ApiContext, run_id: str, call_id: str) -> bool | None:
    """Whether the call waits for its owner's answer now; None when the run never proposed it."""
    asked = known = False
    for record in await run_records(context, run_id):
        try:
            event = context.codec.decode(record.value).payload
        except UndecodableMessage:
            continue
        if isinstance(event, ToolCallsProposed) and any(call.call_id == call_id for call in event.calls):
            known = True
        elif isinstance(event, ToolApprovalRequested) and event.call_id == call_id:
            asked = True
        elif isinstance(event, (ToolApprovalDecided, ToolCallFinished)) and event.call_id == call_id:
            asked = False
    return asked if known else None


async def stream_run(request: Request) -> StreamingResponse:
    principal = authenticate(request)
    # EventSource sends Last-Event-ID on reconnect; `?lastEventId=` serves clients that cannot set headers.
    last_event_id = parse_last_event_id(
        request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    )
    run_id = request.path_params["run_id"]
    context = context_of(request)
    try:
        started, first_offset = await started_run_at(context, principal, run_id)
    except NotFound:
        expired = await expired_run(context, principal, run_id)
        if expired is None:
            raise
        raise _stream_gone(
            run_id, conversation_id=expired.conversation_id, turn_seq=expired.turn_seq, started_at=expired.created_at,
            retention=context.limits.run_events_retention,
        ) from None
    await refuse_expired_run(context, started)
    events = run_events(context, run_id, start_offset=first_offset, already_sent=last_event_id or 0)
    return StreamingResponse(
        events,
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def refuse_expired_run(context: ApiContext, started: RunStarted) -> None:
    """410 for a run older than the retention period: its deltas are trimmed (events/retention.py), and with them the
    text and the numbering of its stream, so a replay or a resume would be a wrong answer that looks right."""
    retention = context.limits.run_events_retention
    if retention is None:
        return
    [first] = await context.log.read(RUN_EVENTS, key=started.run_id, limit=1)
    if not stream_expired(first.timestamp, now=utc_now(), retention=retention):
        return
    raise _stream_gone(
        started.run_id, conversation_id=started.conversation_id, turn_seq=started.turn_seq, started_at=first.timestamp,
        retention=retention,
    )


def _stream_gone(run_id: str, *, conversation_id: str, turn_seq: int, started_at: datetime, retention: timedelta) -> Gone:
    return Gone(
        detail=f"run {run_id} started more than {_days(retention)} ago, so its stream has expired: its"
        f" token deltas are kept only that long. Its answer is durable: GET /v1/runs/{run_id} (result) or"
        f" GET /v1/conversations/{conversation_id}/turns",
        extra={
            "runId": run_id, "conversationId": conversation_id, "turnSeq": turn_seq,
            "startedAt": iso(started_at), "retentionSeconds": int(retention.total_seconds()),
        },
    )


def _days(period: timedelta) -> str:
    days = period.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{period.total_seconds():g} s"


async def run_events(context: ApiContext, run_id: str, *, start_offset: int, already_sent: int = 0) -> AsyncIterator[bytes]:
    """SSE bytes for a run's events, from its first record at `start_offset`, ending with its terminal event.

    Each SSE `id:` is the event's number in this run's stream (1, 2, ...), not a log offset: it says nothing
    about other tenants' traffic, and a record that makes several events (a step proposing several tool calls)
    gives each its own id. A resume regenerates the run's events and sends those after `already_sent`; a client
    resuming after the terminal event gets an empty stream that closes (EventSource reconnects whenever a
    stream closes, so it must not be left open). The run goes on whether or not anyone listens.
    """
    follower = context.log.follow(RUN_EVENTS, key=run_id, after=start_offset - 1)
    next_record: asyncio.Task | None = None
    sequence = 0
    try:
        while True:
            if next_record is None:
                next_record = asyncio.ensure_future(anext(follower))
            done, _ = await asyncio.wait({next_record}, timeout=context.limits.keepalive_s)
            if not done:
                if sequence >= already_sent:
                    yield encode_comment("ping")  # keeps proxies from closing an idle stream
                continue
            record, next_record = next_record.result(), None
            try:
                event = context.codec.decode(record.value).payload
            except UndecodableMessage:
                continue
            for event_type, data in stream_events_of(run_id, event):
                sequence += 1
                if sequence > already_sent:
                    yield encode_event(event_id=sequence, event_type=event_type, data=data)
            if isinstance(event, RunFinished):
                return
    finally:
        if next_record is not None:
            next_record.cancel()
            await asyncio.gather(next_record, return_exceptions=True)
        await follower.aclose()


def stream_events_of(run_id: str, event: object) -> list[tuple[str, dict]]:
    """The SSE events (type and data) one run event makes: none for those a client need not see."""
    match event:
        case RunStarted():
            return [("run.started", {"type": "run.started", "runId": run_id, "turnSeq": event.turn_seq})]
        case AssistantDelta():
            return [("assistant.delta", {"type": "assistant.delta", "runId": run_id, "text": event.text})]
        case ToolCalled():
            return [("tool.call", {"type": "tool.call", "runId": run_id, "toolName": event.tool_name, "callId": event.call_id})]
        case ToolReturned():
            data = {"type": "tool.result", "runId": run_id, "callId": event.call_id, "status": event.status}
            if event.summary:
                data["summary"] = event.summary
            return [("tool.result", data)]
        case ToolCallsProposed():
            return [
                ("tool.call", {
                    "type": "tool.call", "runId": run_id, "toolName": call.name, "callId": call.call_id,
                    "arguments": _summary(call.arguments),
                })
                for call in event.calls
            ]
        case ToolApprovalRequested():
            return [("tool.approval_required", {
                "type": "tool.approval_required", "runId": run_id, "callId": event.call_id,
                "toolName": event.tool_name, "arguments": event.arguments, "expiresAt": iso(event.expires_at),
            })]
        case ToolCallFinished():
            return [("tool.result", {
                "type": "tool.result", "runId": run_id, "callId": event.call_id, "toolName": event.tool_name,
                "status": event.status, "durationMs": event.duration_ms,
            })]
        case RunBackgrounded():
            return [("run.backgrounded", {"type": "run.backgrounded", "runId": run_id, "reason": event.reason})]
        case SafetyDecision(action="stop"):
            # What streamed so far is withdrawn: the terminal event that follows carries the stored answer.
            return [("safety.stopped", {"type": "safety.stopped", "runId": run_id, "stage": event.stage, "reason": event.reason})]
        case RunFinished():
            return [run_finished_json(event)]
    return []
