"""The conversation decider: pure `decide(command, state)` and `evolve(state, event)`.

One writer per conversation key runs these. `decide` validates a command against the state folded
from the conversation's history and returns the events to append (possibly none) and the outcome
the caller sees. Nothing here does I/O or reads a clock: time comes from the command's envelope.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from commands.catalog import (
    CancelRun,
    Command,
    CreateConversation,
    FinishRun,
    RegenerateTurn,
    RenameConversation,
    SubmitTurn,
)
from events.conversation import (
    AssistantTurnFinished,
    ConversationCreated,
    ConversationRenamed,
    RunCancellationRequested,
    RunRequested,
    TurnSubmitted,
)
from kernel.envelope import Envelope
from events.runs import RunFinished, RunStarted
from kernel.envelope import Actor
from events.values import ContentPart

# The same Idempotency-Key on the same conversation returns the same run for this long.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
RUN_STATUSES = frozenset({"completed", "cancelled", "failed"})


@dataclass(frozen=True, kw_only=True)
class RunState:
    run_id: str
    turn_seq: int
    parent_turn_seq: int
    mode: str
    requested_at: datetime
    status: str = "in_progress"
    cancel_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class IdempotentResult:
    request_fingerprint: str
    run_id: str
    turn_seq: int
    recorded_at: datetime


@dataclass(frozen=True, kw_only=True)
class DecidedCommand:
    outcome: "Accepted"
    decided_at: datetime


@dataclass(frozen=True, kw_only=True)
class ConversationState:
    conversation_id: str | None = None
    org_id: str = ""
    workspace_id: str = ""
    owner_id: str = ""
    # A digest of the title, not the title: all a rename needs to tell "the same title", and no words in the state,
    # which is saved beside the log (commands/snapshots.py) where sealing does not reach.
    title_digest: str | None = None
    created_at: datetime | None = None
    latest_turn_seq: int = 0
    latest_user_turn_seq: int | None = None
    active_run_id: str | None = None
    runs: Mapping[str, RunState] = field(default_factory=dict)
    idempotency: Mapping[str, IdempotentResult] = field(default_factory=dict)
    # Commands whose events are in the history (recent ones): a redelivered command is answered, not re-applied.
    decided: Mapping[str, DecidedCommand] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.conversation_id is not None

    @property
    def owner(self) -> Actor:
        return Actor(user_id=self.owner_id, org_id=self.org_id, workspace_id=self.workspace_id)


@dataclass(frozen=True, kw_only=True)
class Accepted:
    run_id: str | None = None
    turn_seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class Rejected:
    code: str  # not_found | conflict | idempotency_key_reused | invalid | erased (its sender's data was erased)
    detail: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    events: tuple[object, ...] = ()
    outcome: Accepted | Rejected


def evolve(state: ConversationState, envelope: Envelope) -> ConversationState:
    """Fold one conversation event into the state."""
    if not state.exists and not isinstance(envelope.payload, ConversationCreated):
        # A conversation's events follow its creation. Without it (its owner was erased, so the creation, sealed,
        # no longer opens) the rest fold to nothing too, as its snapshot, deleted with the erasure, loads.
        return state
    state = _apply(state, envelope)
    outcome = _outcome_of(envelope.payload, state)
    if envelope.causation_id is None or outcome is None:
        return state
    decided = {
        command_id: earlier
        for command_id, earlier in state.decided.items()
        if envelope.occurred_at - earlier.decided_at < IDEMPOTENCY_WINDOW
    }
    decided[envelope.causation_id] = DecidedCommand(outcome=outcome, decided_at=envelope.occurred_at)
    return replace(state, decided=decided)


def _outcome_of(event: object, state: ConversationState) -> "Accepted | None":
    """What the command that caused `event` was told (its last event decides, as in `decide`)."""
    match event:
        case ConversationCreated() | ConversationRenamed():
            return Accepted()
        case RunRequested():
            return Accepted(run_id=event.run_id, turn_seq=event.created_turn_seq)
        case RunCancellationRequested() | AssistantTurnFinished():
            return Accepted(run_id=event.run_id, turn_seq=state.runs[event.run_id].turn_seq)
    return None  # TurnSubmitted: the RunRequested that follows it answers its command


def _apply(state: ConversationState, envelope: Envelope) -> ConversationState:
    event = envelope.payload
    match event:
        case ConversationCreated():
            return replace(
                state,
                conversation_id=event.conversation_id,
                org_id=envelope.actor.org_id,
                workspace_id=event.workspace_id,
                owner_id=event.owner_id,
                title_digest=title_digest(event.title),
                created_at=event.created_at,
            )
        case ConversationRenamed():
            return replace(state, title_digest=title_digest(event.title))
        case TurnSubmitted():
            return replace(state, latest_turn_seq=event.turn_seq, latest_user_turn_seq=event.turn_seq)
        case RunRequested():
            run = RunState(
                run_id=event.run_id,
                turn_seq=event.turn_seq,
                parent_turn_seq=event.parent_turn_seq,
                mode=event.mode,
                requested_at=event.requested_at,
            )
            idempotency = state.idempotency
            if event.idempotency_key is not None:
                idempotency = {
                    **_unexpired(state.idempotency, event.requested_at),
                    event.idempotency_key: IdempotentResult(
                        request_fingerprint=event.request_fingerprint,
                        run_id=event.run_id,
                        turn_seq=event.created_turn_seq,
                        recorded_at=event.requested_at,
                    ),
                }
            return replace(
                state,
                latest_turn_seq=event.turn_seq,
                active_run_id=event.run_id,
                runs={**state.runs, event.run_id: run},
                idempotency=idempotency,
            )
        case RunCancellationRequested():
            cancelling = replace(state.runs[event.run_id], cancel_requested=True)
            return replace(state, runs={**state.runs, event.run_id: cancelling})
        case AssistantTurnFinished():
            finished = replace(state.runs[event.run_id], status=event.state)
            return replace(
                state,
                active_run_id=None if state.active_run_id == event.run_id else state.active_run_id,
                runs={**state.runs, event.run_id: finished},
            )
    return state


def decide(command: Envelope[Command], state: ConversationState) -> Decision:
    """Validate `command` against `state`; return the events to append and the caller's outcome."""
    earlier = state.decided.get(command.event_id)
    if earlier is not None:
        return Decision(outcome=earlier.outcome)  # delivered again (at-least-once): its events are already there
    match command.payload:
        case CreateConversation() as create:
            return _create(create, command.actor, command.occurred_at, state)
        case RenameConversation() as rename:
            return _rename(rename, command.actor, command.occurred_at, state)
        case SubmitTurn() as submit:
            return _submit(submit, command.actor, command.occurred_at, state)
        case RegenerateTurn() as regenerate:
            return _regenerate(regenerate, command.actor, command.occurred_at, state)
        case CancelRun() as cancel:
            return _cancel(cancel, command.actor, state)
        case FinishRun() as finish:
            return _finish(finish, command.occurred_at, state)
    return Decision(outcome=Rejected(code="invalid", detail=f"unknown command {command.type}"))


def _create(command: CreateConversation, actor: Actor, now: datetime, state: ConversationState) -> Decision:
    if state.exists:
        same = state.owner_id == actor.user_id and state.org_id == actor.org_id
        if same and state.workspace_id == command.workspace_id:
            return Decision(outcome=Accepted())  # a retried create is not an error
        return Decision(outcome=Rejected(code="conflict", detail="a conversation with this id already exists"))
    created = ConversationCreated(
        conversation_id=command.conversation_id,
        workspace_id=command.workspace_id,
        owner_id=actor.user_id,
        title=command.title,
        created_at=now,
    )
    return Decision(events=(created,), outcome=Accepted())


def _rename(command: RenameConversation, actor: Actor, now: datetime, state: ConversationState) -> Decision:
    if not _owned(state, actor):
        return _not_found(command.conversation_id)
    if title_digest(command.title) == state.title_digest:
        return Decision(outcome=Accepted())  # nothing changes: nothing to append
    assert state.created_at is not None  # set with the conversation
    renamed = ConversationRenamed(
        conversation_id=command.conversation_id, title=command.title, created_at=state.created_at, renamed_at=now
    )
    return Decision(events=(renamed,), outcome=Accepted())


def title_digest(title: str | None) -> str | None:
    return None if title is None else hashlib.sha256(title.encode()).hexdigest()


def _owned(state: ConversationState, actor: Actor) -> bool:
    return (
        state.exists
        and state.org_id == actor.org_id
        and state.owner_id == actor.user_id
        and state.workspace_id == actor.workspace_id
    )


def _not_found(conversation_id: str) -> Decision:
    return Decision(outcome=Rejected(code="not_found", detail=f"conversation {conversation_id} does not exist"))


def _replayed(
    idempotency_key: str | None, fingerprint: str, now: datetime, state: ConversationState
) -> Decision | None:
    """The outcome of an earlier command with the same key, or None if the key is new."""
    if idempotency_key is None:
        return None
    earlier = _unexpired(state.idempotency, now).get(idempotency_key)
    if earlier is None:
        return None
    if earlier.request_fingerprint != fingerprint:
        return Decision(
            outcome=Rejected(
                code="idempotency_key_reused",
                detail=f"Idempotency-Key {idempotency_key!r} was already used with a different request body",
            )
        )
    return Decision(outcome=Accepted(run_id=earlier.run_id, turn_seq=earlier.turn_seq))


def _busy(state: ConversationState) -> Decision | None:
    if state.active_run_id is None:
        return None
    return Decision(
        outcome=Rejected(
            code="conflict",
            detail=f"run {state.active_run_id} is still in progress; cancel it or wait for it to finish",
        )
    )


def _start_run(
    *,
    state: ConversationState,
    run_id: str,
    turn_seq: int,
    parent_turn_seq: int,
    created_turn_seq: int,
    response_mode: str,
    tool_mode: str,
    tools: tuple[str, ...] | None = None,
    idempotency_key: str | None,
    request_fingerprint: str,
    now: datetime,
) -> tuple[object, ...]:
    mode = "background" if response_mode == "background" else "interactive"
    requested = RunRequested(
        conversation_id=state.conversation_id or "",
        run_id=run_id,
        turn_seq=turn_seq,
        parent_turn_seq=parent_turn_seq,
        mode=mode,
        tool_mode=tool_mode,
        tools=tools,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
        created_turn_seq=created_turn_seq,
        requested_at=now,
    )
    started = RunStarted(run_id=run_id, conversation_id=requested.conversation_id, turn_seq=turn_seq)
    return requested, started


def _submit(command: SubmitTurn, actor: Actor, now: datetime, state: ConversationState) -> Decision:
    if not _owned(state, actor):
        return _not_found(command.conversation_id)
    replayed = _replayed(command.idempotency_key, command.request_fingerprint, now, state)
    if replayed is not None:
        return replayed
    if not any(part.text.strip() for part in command.content):
        return Decision(outcome=Rejected(code="invalid", detail="a turn needs some non-blank text"))
    busy = _busy(state)
    if busy is not None:
        return busy
    user_seq = state.latest_turn_seq + 1
    submitted = TurnSubmitted(
        conversation_id=command.conversation_id,
        turn_seq=user_seq,
        parent_turn_seq=state.latest_turn_seq or None,
        content=tuple(ContentPart(type=part.type, text=part.text) for part in command.content),
        attachments=command.attachments,
        submitted_at=now,
    )
    run_events = _start_run(
        state=state,
        run_id=command.run_id,
        turn_seq=user_seq + 1,
        parent_turn_seq=user_seq,
        created_turn_seq=user_seq,
        response_mode=command.response_mode,
        tool_mode=command.tool_mode,
        tools=command.tools,
        idempotency_key=command.idempotency_key,
        request_fingerprint=command.request_fingerprint,
        now=now,
    )
    return Decision(events=(submitted, *run_events), outcome=Accepted(run_id=command.run_id, turn_seq=user_seq))


def _regenerate(command: RegenerateTurn, actor: Actor, now: datetime, state: ConversationState) -> Decision:
    if not _owned(state, actor):
        return _not_found(command.conversation_id)
    replayed = _replayed(command.idempotency_key, command.request_fingerprint, now, state)
    if replayed is not None:
        return replayed
    if state.latest_user_turn_seq is None:
        return Decision(outcome=Rejected(code="conflict", detail="nothing to regenerate: the conversation has no user turn yet"))
    busy = _busy(state)
    if busy is not None:
        return busy
    assistant_seq = state.latest_turn_seq + 1
    run_events = _start_run(
        state=state,
        run_id=command.run_id,
        turn_seq=assistant_seq,
        parent_turn_seq=state.latest_user_turn_seq,
        created_turn_seq=assistant_seq,
        response_mode=command.response_mode,
        tool_mode="auto",
        idempotency_key=command.idempotency_key,
        request_fingerprint=command.request_fingerprint,
        now=now,
    )
    return Decision(events=run_events, outcome=Accepted(run_id=command.run_id, turn_seq=assistant_seq))


def _cancel(command: CancelRun, actor: Actor, state: ConversationState) -> Decision:
    run = state.runs.get(command.run_id) if _owned(state, actor) else None
    if run is None:
        return Decision(outcome=Rejected(code="not_found", detail=f"run {command.run_id} does not exist"))
    if run.status != "in_progress":
        return Decision(outcome=Rejected(code="conflict", detail=f"run {run.run_id} already finished ({run.status})"))
    accepted = Accepted(run_id=run.run_id, turn_seq=run.turn_seq)
    if run.cancel_requested:
        return Decision(outcome=accepted)  # asking twice is not an error
    requested = RunCancellationRequested(conversation_id=command.conversation_id, run_id=run.run_id)
    return Decision(events=(requested,), outcome=accepted)


def _finish(command: FinishRun, now: datetime, state: ConversationState) -> Decision:
    run = state.runs.get(command.run_id)
    if run is None or run.status != "in_progress":
        # A late or repeated report (a worker that lost its lease, a redelivery): the first one won.
        return Decision(outcome=Rejected(code="conflict", detail=f"run {command.run_id} is not in progress"))
    if command.status not in RUN_STATUSES:
        return Decision(outcome=Rejected(code="invalid", detail=f"unknown run status {command.status!r}"))
    # The owner's cancel wins over a worker that finished anyway (it may not have heard of it).
    status = "cancelled" if run.cancel_requested and command.status == "completed" else command.status
    finished = AssistantTurnFinished(
        conversation_id=command.conversation_id,
        run_id=run.run_id,
        turn_seq=run.turn_seq,
        parent_turn_seq=run.parent_turn_seq,
        state=status,
        content=(ContentPart(type="text", text=command.text),),
        reason=command.reason,
        usage=command.usage,
        mode=run.mode,
        requested_at=run.requested_at,
        finished_at=now,
        sources=command.sources,
        citations=command.citations,
        tool_calls=command.tool_calls,
    )
    stream_end = RunFinished(
        run_id=run.run_id,
        conversation_id=command.conversation_id,
        turn_seq=run.turn_seq,
        status=status,
        reason=command.reason,
        usage=command.usage,
        # The deltas were provisional: when a safety stage changed the answer, the stream's end carries the one stored.
        text=command.text if command.stream_replaced else None,
    )
    return Decision(events=(finished, stream_end), outcome=Accepted(run_id=run.run_id, turn_seq=run.turn_seq))


def _unexpired(idempotency: Mapping[str, IdempotentResult], now: datetime) -> dict[str, IdempotentResult]:
    return {key: result for key, result in idempotency.items() if now - result.recorded_at < IDEMPOTENCY_WINDOW}
