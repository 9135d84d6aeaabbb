"""`POST /chat/completions`: each call is a new conversation and one run, started and followed as the REST API does."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator

from pydantic import RootModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.access import actor_of, authenticate, context_of, require_workspace
from api.auth import Principal
from api.bodies import read_json_body
from api.context import ApiContext
from api.conversations import _start_run
from api.openai import completions
from api.openai.chat_request import parse_chat_request
from api.openai.completions import Completion
from api.openai.errors import UnsupportedParameter, error_sse, in_openai_shape
from api.openai.models import find_model
from api.openai.run_log import follow_run, with_keepalives
from api.scoped_ids import new_scoped_id, run_scope
from commands.catalog import CreateConversation, SubmitTurn
from events.runs import AssistantDelta, RunFinished, RunStarted
from events.values import ContentPart
from kernel.envelope import new_id
from kernel.errors import Conflict, TurnlogError, Unavailable

# Where a client names the workspace its call is billed to and stored in; without either, the token's only one.
WORKSPACE_HEADERS = ("x-turnlog-workspace", "openai-project")
# The REST API's 202 headers not passed on; the rest are the admission's rate-limit fields (docs/governance.md).
_DROPPED_HEADERS = frozenset({"content-type", "content-length", "location"})


class RawObject(RootModel[dict[str, object]]):
    """Any JSON object: the fields are checked one by one (chat_request.py), to name the one refused."""


@in_openai_shape
async def create_chat_completion(request: Request) -> Response:
    principal = authenticate(request)
    context = context_of(request)
    document = await read_json_body(request, RawObject, max_bytes=context.limits.max_turn_body_bytes)
    chat = parse_chat_request(document.root)
    find_model(request, chat.model)
    workspace_id = workspace_of(request, principal)
    conversation_id, run_id, headers = await start_turn(
        request, principal, parts=chat.parts, fingerprint="openai-chat", title=chat.title, workspace_id=workspace_id
    )
    headers.update({"X-Turnlog-Conversation-Id": conversation_id, "X-Turnlog-Run-Id": run_id})
    completion = Completion(completion_id=completions.completion_id_for(run_id), created=int(time.time()), model=chat.model)
    if chat.stream:
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return StreamingResponse(
            _chunks(context, run_id, completion, include_usage=chat.include_usage),
            media_type="text/event-stream",
            headers=headers,
        )
    deltas: list[str] = []
    async for event in follow_run(context, run_id):
        if isinstance(event, AssistantDelta):
            deltas.append(event.text)
        elif isinstance(event, RunFinished):
            raise_unless_completed(event)
            text = completions.answer_text(deltas, event)
            return JSONResponse(completions.chat_completion(completion, text=text, finished=event), headers=headers)
    raise Unavailable(detail=f"run {run_id} ended without finishing; follow it at /v1/runs/{run_id}")


def workspace_of(request: Request, principal: Principal) -> str:
    """The workspace a header names (it must be one of the token's), else the token's only workspace."""
    for header in WORKSPACE_HEADERS:
        workspace_id = request.headers.get(header)
        if workspace_id:
            require_workspace(principal, workspace_id)
            return workspace_id
    if len(principal.workspace_ids) == 1:
        return principal.workspace_ids[0]
    raise UnsupportedParameter(
        param="X-Turnlog-Workspace", code="workspace_required",
        detail=(
            f"your token grants {len(principal.workspace_ids)} workspaces: name one in the X-Turnlog-Workspace "
            "(or OpenAI-Project) header"
        ),
    )


async def start_turn(
    request: Request,
    principal: Principal,
    *,
    parts: tuple[str, ...],
    fingerprint: str,
    title: str = "",
    workspace_id: str | None = None,
    conversation_id: str | None = None,
) -> tuple[str, str, dict[str, str]]:
    """A turn through the REST API's own path (admission, quotas, routing, safety): in `conversation_id`, or in a new
    conversation in `workspace_id`. Returns the conversation, the run and the headers of the REST API's 202."""
    context = context_of(request)
    if conversation_id is None:
        assert workspace_id is not None
        conversation_id = new_id("conv")
        create = CreateConversation(conversation_id=conversation_id, workspace_id=workspace_id, title=title or None)
        await context.bus.send(create, actor=actor_of(principal, workspace_id))
    text = "".join(parts)
    command = SubmitTurn(
        conversation_id=conversation_id,
        run_id=new_scoped_id(context.secret, "run", run_scope(principal.org_id, principal.user_id)),
        content=tuple(ContentPart(type="text", text=part) for part in parts),
        request_fingerprint=f"{fingerprint}:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
    accepted = await _start_run(request, principal, command)
    run_id = json.loads(bytes(accepted.body))["runId"]
    headers = {name: value for name, value in accepted.headers.items() if name.lower() not in _DROPPED_HEADERS}
    return conversation_id, run_id, headers


async def _chunks(context: ApiContext, run_id: str, completion: Completion, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The run as `chat.completion.chunk` SSE lines: the role, each delta, the finish reason, the usage, `[DONE]`."""
    events = with_keepalives(follow_run(context, run_id), every_s=context.limits.keepalive_s)
    try:
        async for event in events:
            match event:
                case None:
                    yield completions.KEEPALIVE
                case RunStarted():
                    delta = {"role": "assistant", "content": ""}
                    yield completions.sse_data(completions.chunk(completion, delta=delta, include_usage=include_usage))
                case AssistantDelta():
                    delta = {"content": event.text}
                    yield completions.sse_data(completions.chunk(completion, delta=delta, include_usage=include_usage))
                case RunFinished():
                    try:
                        raise_unless_completed(event)
                    except TurnlogError as error:
                        yield error_sse(error)
                        return
                    finish_reason = completions.finish_reason_of(event)
                    last = completions.chunk(completion, delta={}, finish_reason=finish_reason, include_usage=include_usage)
                    yield completions.sse_data(last)
                    if include_usage:
                        yield completions.sse_data(completions.usage_chunk(completion, event.usage))
                    yield completions.DONE
                    return
    finally:
        await events.aclose()


def raise_unless_completed(finished: RunFinished) -> None:
    """A cancelled run is a 409 (someone cancelled it at /v1/runs/{id}/cancel); a failed one, a 503 saying why."""
    reason = f": {finished.reason}" if finished.reason else ""
    if finished.status == "cancelled":
        raise Conflict(detail=f"run {finished.run_id} was cancelled{reason}", extra={"runId": finished.run_id})
    if finished.status != "completed":
        raise Unavailable(detail=f"run {finished.run_id} failed{reason}")
