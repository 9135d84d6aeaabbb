"""Conversation and turn endpoints: create, list, read, rename, submit a turn, regenerate, page through turns."""

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import (
    ConversationDirectory,
    actor_of,
    authenticate,
    context_of,
    idempotency_key_of,
    int_query,
    require_workspace,
    scope_of,
)
from api.admission import admit_run, estimated_tokens, withdraw_run
from api.auth import Principal
from api.bodies import (
    CreateConversationBody,
    RegenerateBody,
    RenameConversationBody,
    SubmitTurnBody,
    read_json_body,
    request_fingerprint,
)
from api.files import check_attachments
from api.scoped_ids import conversation_scope, new_scoped_id, run_scope
from api.presenters import conversation_json, iso, turn_json
from commands.catalog import CreateConversation, RegenerateTurn, RenameConversation, SubmitTurn
from commands.governance.rate_limits import rate_limit_headers
from events.values import ContentPart
from kernel.errors import Conflict, IdempotencyKeyReused, InvalidRequest, NotFound
from projections.read_models import ConversationRow


async def create_conversation(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    body = await read_json_body(request, CreateConversationBody, max_bytes=context.limits.max_small_body_bytes)
    require_workspace(principal, body.workspace_id)
    conversation_id = new_scoped_id(
        context.secret, "conv", conversation_scope(principal.org_id, principal.user_id, body.workspace_id)
    )
    command = CreateConversation(conversation_id=conversation_id, workspace_id=body.workspace_id, title=body.title)
    accepted = await context.bus.send(command, actor=actor_of(principal, body.workspace_id))
    # The decider accepted it as this caller's: what the first turn's lookup would find, known already.
    request.app.state.conversations.remember(
        ConversationRow(
            org_id=principal.org_id,
            workspace_id=body.workspace_id,
            owner_id=principal.user_id,
            conversation_id=conversation_id,
            title=body.title or "",
            created_at=accepted.created_at,
            version=accepted.conversation_offset or 0,
        )
    )
    return JSONResponse(
        {"conversationId": conversation_id, "createdAt": iso(accepted.created_at)},
        status_code=201,
        headers={"Location": f"/v1/conversations/{conversation_id}"},
    )


async def list_conversations(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    workspace_id = request.query_params.get("workspaceId") or None
    if workspace_id is not None:
        require_workspace(principal, workspace_id)
    limit = int_query(request, "limit", default=context.limits.default_page_size, minimum=1, maximum=context.limits.max_page_size)
    before = request.query_params.get("before") or None
    await context.caught_up()
    rows = await context.read_models.conversations(scope_of(principal), workspace_id=workspace_id, before=before, limit=limit + 1)
    page = rows[:limit]
    return JSONResponse(
        {
            "conversations": [conversation_json(row) for row in page],
            "nextBefore": page[-1].conversation_id if len(rows) > limit else None,
        }
    )


async def get_conversation(request: Request) -> JSONResponse:
    return await _conversation(request, authenticate(request))


async def _conversation(request: Request, principal: Principal, *, written_at: int | None = None) -> JSONResponse:
    """The conversation, once the read models hold its partition up to `written_at` (or its end when not given)."""
    context = context_of(request)
    conversation_id = request.path_params["conversation_id"]
    directory: ConversationDirectory = request.app.state.conversations
    await directory.find(request, principal, conversation_id)
    await context.caught_up(key=conversation_id, offset=written_at)
    # The directory's header may hold an older title (a rename): the row is read after the fence.
    row = await context.read_models.conversation(scope_of(principal), conversation_id)
    if row is None:
        raise NotFound(detail=f"conversation {conversation_id} does not exist")
    latest = await context.read_models.latest_turn_seq(scope_of(principal), conversation_id)
    return JSONResponse(conversation_json(row, latest_turn_seq=latest))


async def rename_conversation(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    conversation_id = request.path_params["conversation_id"]
    body = await read_json_body(request, RenameConversationBody, max_bytes=context.limits.max_small_body_bytes)
    directory: ConversationDirectory = request.app.state.conversations
    header = await directory.find(request, principal, conversation_id)
    command = RenameConversation(conversation_id=conversation_id, title=body.title)
    accepted = await context.bus.send(command, actor=actor_of(principal, header.workspace_id))
    # Read-your-writes: the fence waits for the rename's event (none when the title did not change).
    return await _conversation(request, principal, written_at=accepted.conversation_offset)


async def submit_turn(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    conversation_id = request.path_params["conversation_id"]
    idempotency_key = idempotency_key_of(request)
    body = await read_json_body(request, SubmitTurnBody, max_bytes=context.limits.max_turn_body_bytes)
    command = SubmitTurn(
        conversation_id=conversation_id,
        run_id=new_scoped_id(context.secret, "run", run_scope(principal.org_id, principal.user_id)),
        content=tuple(ContentPart(type=part.type, text=part.text) for part in body.input),
        attachments=tuple(body.attachments),
        tool_mode=body.tool_mode,
        tools=tuple(body.tools) if body.tools is not None else None,
        response_mode=body.response_mode,
        idempotency_key=idempotency_key,
        request_fingerprint="turn:" + request_fingerprint(body),
    )
    if body.attachments:
        header = await request.app.state.conversations.find(request, principal, conversation_id)
        await check_attachments(context, principal, workspace_id=header.workspace_id, file_ids=body.attachments)
    return await _start_run(request, principal, command)


async def regenerate(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    conversation_id = request.path_params["conversation_id"]
    idempotency_key = idempotency_key_of(request)
    body = await read_json_body(request, RegenerateBody, max_bytes=context.limits.max_small_body_bytes, allow_empty=True)
    command = RegenerateTurn(
        conversation_id=conversation_id,
        run_id=new_scoped_id(context.secret, "run", run_scope(principal.org_id, principal.user_id)),
        response_mode=body.response_mode or "stream",
        idempotency_key=idempotency_key,
        request_fingerprint="regenerate:" + request_fingerprint(body),
    )
    return await _start_run(request, principal, command)


async def list_turns(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    conversation_id = request.path_params["conversation_id"]
    after_seq = int_query(request, "afterSeq", default=0, minimum=0, maximum=2**31 - 1)
    limit = int_query(request, "limit", default=context.limits.default_page_size, minimum=1, maximum=context.limits.max_page_size)
    await request.app.state.conversations.find(request, principal, conversation_id)
    await context.caught_up(key=conversation_id)
    rows = await context.read_models.turns(scope_of(principal), conversation_id, after_seq=after_seq, limit=limit + 1)
    page = rows[:limit]
    return JSONResponse(
        {"turns": [turn_json(row) for row in page], "nextAfterSeq": page[-1].turn_seq if len(rows) > limit else None}
    )


async def _start_run(request: Request, principal: Principal, command: SubmitTurn | RegenerateTurn) -> JSONResponse:
    """Send a command that starts a run, in the conversation's scope, once governance admits it; 202 with where to follow it."""
    context = context_of(request)
    workspace_id = await request.app.state.conversations.workspace_of(request, principal, command.conversation_id)
    actor = actor_of(principal, workspace_id)
    texts = [part.text for part in command.content] if isinstance(command, SubmitTurn) else []
    admission = await admit_run(context, actor, run_id=command.run_id, estimated=estimated_tokens(texts))
    try:
        accepted = await context.bus.send(command, actor=actor)
    except (NotFound, Conflict, InvalidRequest, IdempotencyKeyReused) as rejected:  # a timeout withdraws nothing
        if admission is not None:
            await withdraw_run(context, actor, run_id=command.run_id, reason=f"the conversation refused it: {rejected.detail}")
        raise
    if accepted.run_id is None or accepted.turn_seq is None:
        raise RuntimeError("the decider accepted a run command without naming the run")
    headers = {"Location": f"/v1/runs/{accepted.run_id}"}
    if admission is not None:
        if accepted.run_id != command.run_id:  # an Idempotency-Key replay: the earlier run answers, this one never runs
            await withdraw_run(context, actor, run_id=command.run_id, reason=f"the same request started run {accepted.run_id}")
        headers.update(rate_limit_headers(admission.limits))
    return JSONResponse(
        {"runId": accepted.run_id, "turnSeq": accepted.turn_seq, "streamUrl": f"/v1/runs/{accepted.run_id}/stream"},
        status_code=202,
        headers=headers,
    )
