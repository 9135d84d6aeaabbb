"""Who may see what: the caller's principal, its read scope, and conversation/run lookups within it."""

import asyncio
from collections import OrderedDict
from datetime import timedelta

from starlette.requests import Request

from api.api_keys import api_key_of, principal_from_api_key
from api.auth import Principal
from api.context import ApiContext
from api.edge import refuse_when_over
from api.oidc import principal_from_bearer
from api.scoped_ids import Ownership, conversation_scope, matching_scope, minted_at, ownership, run_scope
from api.session_cookies import session_principal
from kernel.log import LogRecord
from events.runs import RunFinished, RunStarted
from events.topics import RUN_EVENTS
from kernel.envelope import Actor, Envelope, utc_now
from kernel import log_context
from kernel.key_store import SubjectErased
from kernel.sealing import Subject
from projections.read_models import ConversationRow, RunRow, Scope
from kernel.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated, Unavailable


def context_of(request: Request) -> ApiContext:
    return request.app.state.context


def authenticate(request: Request) -> Principal:
    """The caller; with governance on, an address whose tokens keep failing is answered 429 rather than 401."""
    context = context_of(request)
    try:
        api_key = api_key_of(request)  # a bearer starting tlk_ is an API key (api/api_keys.py); anything else a JWT
        if api_key is not None:
            principal = principal_from_api_key(context.api_keys, api_key, now=utc_now())
        else:  # without an Authorization header, a browser's session cookie (api/session_cookies.py)
            max_ttl_s = context.limits.max_token_ttl_s
            # A bearer JWT whose iss is the OIDC provider's is checked against the provider's keys alone (api/oidc.py).
            principal = session_principal(request, context.secret, max_token_ttl_s=max_ttl_s) or principal_from_bearer(
                request, context.secret, oidc=context.oidc, max_ttl_s=max_ttl_s
            )
    except Unauthenticated:
        if context.governance is not None:
            refuse_when_over(context.governance.edge, request.client.host if request.client else "unknown")
        raise
    if context.keys is not None and context.keys.is_erased(Subject(org_id=principal.org_id, user_id=principal.user_id)):
        # Erased (docs/encryption.md): the token may still verify, but nothing of theirs exists, nor may be written.
        raise SubjectErased(subject=Subject(org_id=principal.org_id, user_id=principal.user_id))
    request.state.principal = principal  # for the rate-limit fields added to the answer (api/rate_limit_fields.py)
    # The request's log lines (its access log line too) name the org and the conversation or run in the path.
    path_params = request.path_params
    log_context.bind(
        org_id=principal.org_id, conversation_id=path_params.get("conversation_id"), run_id=path_params.get("run_id")
    )
    return principal


def scope_of(principal: Principal) -> Scope:
    return Scope(org_id=principal.org_id, owner_id=principal.user_id, workspace_ids=principal.workspace_ids)


def actor_of(principal: Principal, workspace_id: str) -> Actor:
    return Actor(user_id=principal.user_id, org_id=principal.org_id, workspace_id=workspace_id)


def require_workspace(principal: Principal, workspace_id: str) -> None:
    if not principal.can_use(workspace_id):
        raise Forbidden(detail=f"your token does not grant access to workspace {workspace_id}")


def require_admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise Forbidden(
            detail=f"{what} is for your org's administrators: a token with role admin (turnlog token --user-role admin,"
            " an API key created with role admin, or an OIDC token with the configured admin role)"
        )


class ConversationDirectory:
    """Conversation headers by id, cached: a conversation never changes its org, owner or workspace."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._headers: OrderedDict[str, ConversationRow] = OrderedDict()

    def remember(self, header: ConversationRow) -> None:
        """A conversation this instance just created: its first turn needs no lookup (nor a wait for the projector)."""
        self._headers[header.conversation_id] = header
        while len(self._headers) > self._capacity:
            self._headers.popitem(last=False)

    async def workspace_of(self, request: Request, principal: Principal, conversation_id: str) -> str:
        """The workspace to send a command about the conversation in. An id tagged for the caller in one of their
        workspaces says which without a lookup (the decider still checks that the conversation exists and is
        theirs); any other id is looked up."""
        header = self._headers.get(conversation_id)
        if header is None:
            scopes = [conversation_scope(principal.org_id, principal.user_id, workspace) for workspace in principal.workspace_ids]
            scope = matching_scope(context_of(request).secret, conversation_id, prefix="conv", scopes=scopes)
            if scope is not None:
                return scope[-1]
        return (await self.find(request, principal, conversation_id)).workspace_id

    async def find(self, request: Request, principal: Principal, conversation_id: str) -> ConversationRow:
        """The conversation if the caller may use it; otherwise NotFound, whoever owns it."""
        header = self._headers.get(conversation_id)
        if header is None:
            context = context_of(request)
            await context.caught_up(key=conversation_id)
            header = await context.read_models.conversation(scope_of(principal), conversation_id)
            if header is None:
                raise NotFound(detail=f"conversation {conversation_id} does not exist")
            self.remember(header)
        self._headers.move_to_end(conversation_id)
        visible = (
            header.org_id == principal.org_id
            and header.owner_id == principal.user_id
            and principal.can_use(header.workspace_id)
        )
        if not visible:
            raise NotFound(detail=f"conversation {conversation_id} does not exist")
        return header


async def find_run(request: Request, principal: Principal, run_id: str) -> RunRow:
    context = context_of(request)
    try:
        started = await started_run(context, principal, run_id)  # the run exists: the log says so
    except NotFound:
        expired = await expired_run(context, principal, run_id)
        if expired is None:
            raise
        return expired
    await context.caught_up(key=started.conversation_id)  # the conversation's partition, not the whole topic
    # On Kafka a transaction's records can become visible on one partition a moment before another,
    # so the fence may pass just before the run's row lands; the run exists, so wait for it briefly.
    for _ in range(100):
        run = await context.read_models.run(scope_of(principal), run_id)
        if run is not None:
            return run
        await asyncio.sleep(0.02)
    raise Unavailable(detail=f"run {run_id} is not in the read models yet; retry shortly", retry_after_s=1)


async def expired_run(context: ApiContext, principal: Principal, run_id: str) -> RunRow | None:
    """The caller's run whose records the log no longer holds, from the read models; None for any other id.

    On Kafka a segment of `run-events` is deleted whole once it is older than the retention period, the run's
    `RunStarted` with its deltas: its answer is durable in the read models, so the run is expired, not unknown.
    Only an id minted before the retention period is looked for there, whosever it is (a guess takes this path too).
    """
    retention = context.limits.run_events_retention
    minted = minted_at(run_id)
    if retention is None or minted is None or utc_now() - minted <= retention:
        return None
    return await context.read_models.run(scope_of(principal), run_id)


async def started_run(context: ApiContext, principal: Principal, run_id: str) -> RunStarted:
    """The run's first event on the log, which names its conversation and its owner's scope.

    It needs no read model, so a client can attach to a stream the moment it has the 202.
    """
    started, _ = await started_run_at(context, principal, run_id)
    return started


async def started_run_at(context: ApiContext, principal: Principal, run_id: str) -> tuple[RunStarted, int]:
    """`started_run`, and the log offset of that first event (where the run's stream begins)."""
    started, offset = await _started_run_envelope(context, principal, run_id)
    return started.payload, offset


async def started_run_actor(context: ApiContext, principal: Principal, run_id: str) -> tuple[RunStarted, Actor]:
    """`started_run`, and the scope its events carry (the conversation's owner and workspace): enough to send a
    command about the run without waiting for a read model."""
    started, _ = await _started_run_envelope(context, principal, run_id)
    return started.payload, started.actor


async def _started_run_envelope(context: ApiContext, principal: Principal, run_id: str) -> tuple[Envelope, int]:
    """An id not tagged for the caller is a 404 at once, without a read: another tenant's run and an unknown id take
    the same path (api/scoped_ids.py). Only the caller's own ids are looked for patiently.
    """
    match ownership(context.secret, run_id, prefix="run", scopes=[run_scope(principal.org_id, principal.user_id)]):
        case Ownership.NOT_CALLERS:
            raise NotFound(detail=f"run {run_id} does not exist")
        case Ownership.CALLERS:
            first = await read_patiently(context, RUN_EVENTS, key=run_id, limit=1)
        case Ownership.LEGACY:
            first = await context.log.read(RUN_EVENTS, key=run_id, limit=1)
    started = context.codec.decode(first[0].value) if first else None
    visible = (
        started is not None
        and isinstance(started.payload, RunStarted)
        and started.actor.org_id == principal.org_id
        and started.actor.user_id == principal.user_id
        and principal.can_use(started.actor.workspace_id)
    )
    if not visible:
        raise NotFound(detail=f"run {run_id} does not exist")
    return started, first[0].offset


_LOOKUP_ATTEMPTS = 12  # waits 0.02 * (0 + 1 + ... + 11) = 1.32 s in all before a 404
# An id older than this had its records readable everywhere long ago, or never will: the command that creates a
# resource is answered (or given up, 503) within the bus's reply and readability waits, 10 s each.
_IN_FLIGHT = timedelta(seconds=30)


async def read_patiently(context: ApiContext, topic: str, *, key: str, limit: int | None = None) -> list[LogRecord]:
    """The key's records; when none show and the key is a fresh id, looked for again for a moment before they are
    called missing.

    On the Kafka test broker a record was seen to reach one process's readers ~0.2 s after
    another's, and more under load: a resource another instance just created must not be a 404.
    An id minted long ago (an expired run, a request that was refused) is one read: on Kafka each
    read scans the key's partition, so a 404 must not cost twelve of them.
    """
    minted = minted_at(key)
    fresh = minted is None or utc_now() - minted < _IN_FLIGHT
    for attempt in range(_LOOKUP_ATTEMPTS if fresh else 1):
        records = await context.log.read(topic, key=key, limit=limit)
        if records:
            return records
        await asyncio.sleep(0.02 * attempt)
    return []


def int_query(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(detail=f"query parameter {name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise InvalidRequest(detail=f"query parameter {name} must be between {minimum} and {maximum}, got {value}")
    return value


def idempotency_key_of(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise InvalidRequest(detail="Idempotency-Key must be 1-255 printable ASCII characters")
    return key


async def run_records(context: ApiContext, run_id: str) -> list[LogRecord]:
    """The run's records on the log now, through its `RunFinished` if it has one: a finished run's lookup ends with
    its last record, not at the end of its partition (on Kafka, a scan of days of other runs' deltas for an old run)."""
    def finishes(record: LogRecord) -> bool:
        return context.codec.envelope_type(record.value) == RunFinished.__name__

    return await context.log.read(RUN_EVENTS, key=run_id, through=finishes)
