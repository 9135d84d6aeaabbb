"""Properties of the conversation decider over random command sequences, folded as the real writer folds them."""

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.catalog import CancelRun, Command, CreateConversation, FinishRun, RegenerateTurn, SubmitTurn
from commands.snapshots import ConversationSnapshot, snapshot_from_json
from kernel.snapshots import snapshot_json
from commands.decider import IDEMPOTENCY_WINDOW, Accepted, ConversationState, Decision, Rejected, decide, evolve
from events.conversation import AssistantTurnFinished, RunCancellationRequested, RunRequested, TurnSubmitted
from kernel.envelope import Envelope
from events.runs import RunFinished, RunStarted
from events.topics import CONVERSATION_EVENTS, topic_of
from kernel.envelope import Actor
from events.values import ContentPart, Usage

CONVERSATION_ID = "conv_prop"
WORKSPACE_ID = "ws_main"
T0 = datetime(2026, 4, 25, 12, 0, tzinfo=UTC)
OWNER = Actor(user_id="user_ana", org_id="org_acme", workspace_id=WORKSPACE_ID)
STRANGERS = (
    Actor(user_id="user_bob", org_id="org_acme", workspace_id=WORKSPACE_ID),
    Actor(user_id="user_ana", org_id="org_evil", workspace_id=WORKSPACE_ID),
)
WORKER = Actor(user_id="svc_worker", org_id="system", workspace_id="system")
USAGE = Usage(prompt_tokens=3, output_tokens=5)
TERMINAL = ("completed", "cancelled", "failed")

# Small pools, so keys and bodies collide often.
KEYS = (None, "key-a", "key-b", "key-c")
BODIES = ("hello", "tell me more", "hello again", "  \n ")
# The clock of the commands' envelopes only moves forward, mostly a little; a 25h step expires every key.
SMALL_STEPS = (timedelta(0), timedelta(seconds=1), timedelta(seconds=30), timedelta(minutes=5))
CLOCK_STEPS = (*SMALL_STEPS * 6, timedelta(hours=1), timedelta(hours=5), timedelta(hours=23), timedelta(hours=25))


@dataclass(frozen=True)
class Submit:
    key: str | None
    body: str
    background: bool
    stranger: int | None  # index into STRANGERS, None for the owner
    step: timedelta


@dataclass(frozen=True)
class Regenerate:
    key: str | None
    background: bool
    stranger: int | None
    step: timedelta


@dataclass(frozen=True)
class Cancel:
    run_pick: int  # index into the runs seen so far (-1 the latest); out of range names an unknown run
    stranger: int | None
    step: timedelta


@dataclass(frozen=True)
class Finish:
    run_pick: int
    status: str
    step: timedelta


@dataclass(frozen=True)
class Create:
    stranger: int | None
    step: timedelta


@dataclass(frozen=True)
class Retry:
    """A client resending one of its earlier keyed requests, byte for byte (possibly from another session)."""

    pick: int  # index into the keyed submits and regenerates sent so far
    stranger: int | None
    step: timedelta


Step = Submit | Regenerate | Cancel | Finish | Create | Retry

_who = st.one_of(st.none(), st.none(), st.none(), st.none(), st.sampled_from(range(len(STRANGERS))))
_step = st.sampled_from(CLOCK_STEPS)
_keys = st.sampled_from(KEYS)
# Mostly the latest run (usually the active one), sometimes an earlier one, sometimes one that never existed.
_pick = st.one_of(st.just(-1), st.just(-1), st.just(-2), st.integers(min_value=0, max_value=3), st.just(99))
_submit = st.builds(
    Submit, key=_keys, body=st.sampled_from(BODIES), background=st.booleans(), stranger=_who, step=_step
)
_regenerate = st.builds(Regenerate, key=_keys, background=st.booleans(), stranger=_who, step=_step)
_cancel = st.builds(Cancel, run_pick=_pick, stranger=_who, step=_step)
_finish = st.builds(Finish, run_pick=_pick, status=st.sampled_from((*TERMINAL, *TERMINAL, "exploded")), step=_step)
_create = st.builds(Create, stranger=_who, step=_step)
_retry = st.builds(Retry, pick=st.integers(min_value=0, max_value=7), stranger=_who, step=_step)
# Weighted towards the commands that move a conversation forward; a retried create is rare.
STEPS = st.one_of(
    _submit, _submit, _submit, _regenerate, _retry, _retry, _cancel, _cancel, _finish, _finish, _finish, _create
)


def fingerprint(kind: str, body: str, background: bool) -> str:
    """What the API derives from the request body (and route): equal bodies, equal fingerprints."""
    return f"{kind}|{body}|{'background' if background else 'stream'}"


@dataclass
class KeyRecord:
    command: Submit | Regenerate
    fingerprint: str
    run_id: str
    turn_seq: int
    recorded_at: datetime

    def retry(self, key: str) -> Command:
        """The same request again, as a client that never saw the answer would resend it."""
        if isinstance(self.command, Submit):
            return SubmitTurn(
                conversation_id=CONVERSATION_ID, run_id="run_retry",
                content=(ContentPart(type="text", text=self.command.body),),
                idempotency_key=key, request_fingerprint=self.fingerprint,
            )
        return RegenerateTurn(
            conversation_id=CONVERSATION_ID, run_id="run_retry", idempotency_key=key,
            request_fingerprint=self.fingerprint,
        )


@dataclass
class Observed:
    """What an outside observer of the log knows, independently of the decider's state."""

    turn_seqs: list[int] = field(default_factory=list)
    user_turns: set[int] = field(default_factory=set)
    runs: list[str] = field(default_factory=list)
    run_parents: dict[str, int] = field(default_factory=dict)
    run_turns: dict[str, int] = field(default_factory=dict)
    active_run: str | None = None
    cancel_requested: set[str] = field(default_factory=set)
    endings: Counter = field(default_factory=Counter)
    stream_endings: Counter = field(default_factory=Counter)
    keys: dict[str, KeyRecord] = field(default_factory=dict)

    def live_key(self, key: str | None, now: datetime) -> KeyRecord | None:
        record = self.keys.get(key) if key is not None else None
        return record if record is not None and now - record.recorded_at < IDEMPOTENCY_WINDOW else None


def writer_scope(state: ConversationState, command: Envelope) -> Actor:
    """The actor the real writer (commands.handler) stamps on a command's events."""
    if state.exists:
        return state.owner
    return Actor(user_id=command.actor.user_id, org_id=command.actor.org_id, workspace_id=command.payload.workspace_id)


def append(state: ConversationState, command: Envelope, decision: Decision) -> ConversationState:
    for event in decision.events:
        envelope = Envelope.wrap(event, key=CONVERSATION_ID, actor=writer_scope(state, command), cause=command)
        if topic_of(event) == CONVERSATION_EVENTS:
            state = evolve(state, envelope)
    return state


def started_conversation() -> ConversationState:
    create = Envelope.wrap(
        CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID),
        key=CONVERSATION_ID, actor=OWNER, occurred_at=T0,
    )
    return append(ConversationState(), create, decide(create, ConversationState()))


def command_of(step: Step, *, index: int, observed: Observed) -> tuple[Command, Actor]:
    actor = OWNER if getattr(step, "stranger", None) is None else STRANGERS[step.stranger]
    run_id = f"run_{index}"
    match step:
        case Submit():
            return SubmitTurn(
                conversation_id=CONVERSATION_ID,
                run_id=run_id,
                content=(ContentPart(type="text", text=step.body),),
                response_mode="background" if step.background else "stream",
                idempotency_key=step.key,
                request_fingerprint=fingerprint("submit", step.body, step.background),
            ), actor
        case Regenerate():
            return RegenerateTurn(
                conversation_id=CONVERSATION_ID,
                run_id=run_id,
                response_mode="background" if step.background else "stream",
                idempotency_key=step.key,
                request_fingerprint=fingerprint("regenerate", "", step.background),
            ), actor
        case Cancel():
            return CancelRun(conversation_id=CONVERSATION_ID, run_id=_picked(step.run_pick, observed)), actor
        case Finish():
            return FinishRun(
                conversation_id=CONVERSATION_ID, run_id=_picked(step.run_pick, observed), status=step.status,
                text="an answer", usage=USAGE,
            ), WORKER
        case Create():
            return CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID), actor
    raise AssertionError(step)


def _picked(run_pick: int, observed: Observed) -> str:
    return observed.runs[run_pick] if -len(observed.runs) <= run_pick < len(observed.runs) else "run_unknown"


def check_decision(
    step: Step, command: Command, actor: Actor, now: datetime, decision: Decision, seen: Observed
) -> None:
    """Every property that one decision must satisfy, given what was appended before it."""
    outcome = decision.outcome
    if isinstance(outcome, Rejected):
        assert decision.events == (), "a rejected decision emitted events"

    stranger = actor in STRANGERS
    if stranger:
        assert isinstance(outcome, Rejected), f"a stranger's {type(command).__name__} was accepted"
        assert outcome.code == ("conflict" if isinstance(step, Create) else "not_found")
        return

    match step:
        case Submit() | Regenerate():
            record = seen.live_key(command.idempotency_key, now)
            if record is not None:
                if record.fingerprint == command.request_fingerprint:
                    replayed = Accepted(run_id=record.run_id, turn_seq=record.turn_seq)
                    assert decision == Decision(events=(), outcome=replayed)
                else:
                    assert decision.events == () and outcome.code == "idempotency_key_reused"
                return
            blank = isinstance(step, Submit) and not step.body.strip()
            no_user_turn = isinstance(step, Regenerate) and not seen.user_turns
            if blank:
                assert outcome.code == "invalid"
            elif no_user_turn:
                assert outcome.code == "conflict"
            elif seen.active_run is not None:
                assert outcome.code == "conflict" and seen.active_run in outcome.detail
            else:  # nothing stands in the way: the decider must start the run
                run_events = [RunRequested, RunStarted]
                expected = [TurnSubmitted, *run_events] if isinstance(step, Submit) else run_events
                assert [type(event) for event in decision.events] == expected
                created = decision.events[0].turn_seq
                assert outcome == Accepted(run_id=command.run_id, turn_seq=created)
                assert decision.events[-2].mode == ("background" if step.background else "interactive")
        case Cancel():
            if command.run_id not in seen.run_parents:
                assert outcome.code == "not_found"
            elif command.run_id != seen.active_run:
                assert outcome.code == "conflict"
            else:
                assert isinstance(outcome, Accepted) and outcome.run_id == command.run_id
                again = command.run_id in seen.cancel_requested
                assert [type(event) for event in decision.events] == ([] if again else [RunCancellationRequested])
        case Finish():
            if command.run_id != seen.active_run:
                assert outcome.code == "conflict"
            elif command.status not in TERMINAL:
                assert outcome.code == "invalid"
            else:
                assert [type(event) for event in decision.events] == [AssistantTurnFinished, RunFinished]
                turn, stream_end = decision.events
                # The owner's cancel wins over a worker that completed anyway.
                overridden = command.run_id in seen.cancel_requested and command.status == "completed"
                assert turn.state == stream_end.status == ("cancelled" if overridden else command.status)
                assert turn.turn_seq == stream_end.turn_seq == seen.run_turns[command.run_id]
                assert turn.parent_turn_seq == seen.run_parents[command.run_id]
        case Create():
            assert decision == Decision(events=(), outcome=Accepted())


def observe(step: Step, command: Command, now: datetime, decision: Decision, seen: Observed) -> None:
    """Record the decision's events the way a reader of the log would, checking log-level invariants."""
    for event in decision.events:
        match event:
            case TurnSubmitted():
                assert event.parent_turn_seq == (seen.turn_seqs[-1] if seen.turn_seqs else None)
                seen.turn_seqs.append(event.turn_seq)
                seen.user_turns.add(event.turn_seq)
            case RunRequested():
                assert seen.active_run is None, f"{event.run_id} requested while {seen.active_run} is in progress"
                assert event.parent_turn_seq in seen.user_turns, "an assistant turn's parent is not a user turn"
                assert event.run_id not in seen.run_parents
                # A submit created the user turn just before; a regenerate created only the assistant turn.
                created = seen.turn_seqs[-1] if isinstance(step, Submit) else event.turn_seq
                assert event.created_turn_seq == created
                seen.turn_seqs.append(event.turn_seq)
                seen.runs.append(event.run_id)
                seen.run_parents[event.run_id] = event.parent_turn_seq
                seen.run_turns[event.run_id] = event.turn_seq
                seen.active_run = event.run_id
                if event.idempotency_key is not None:
                    seen.keys[event.idempotency_key] = KeyRecord(
                        command=step, fingerprint=event.request_fingerprint, run_id=event.run_id, turn_seq=created,
                        recorded_at=now,
                    )
            case RunStarted():
                assert event.run_id == seen.active_run
            case RunCancellationRequested():
                assert event.run_id == seen.active_run
                seen.cancel_requested.add(event.run_id)
            case AssistantTurnFinished():
                seen.endings[event.run_id] += 1
                assert seen.endings[event.run_id] == 1, f"run {event.run_id} ended twice"
                assert event.parent_turn_seq in seen.user_turns
                assert event.run_id == seen.active_run
                seen.active_run = None
            case RunFinished():
                seen.stream_endings[event.run_id] += 1
                assert seen.stream_endings[event.run_id] == 1, f"run {event.run_id}'s stream ended twice"
            case _:
                raise AssertionError(f"unexpected event {event!r}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEPS, min_size=10, max_size=50))
def test_random_command_sequences_keep_the_conversation_invariants(steps: list[Step]) -> None:
    state = started_conversation()
    seen = Observed()
    now = T0
    keyed: list[Submit | Regenerate] = []
    for index, step in enumerate(steps):
        now += step.step
        if isinstance(step, Retry):
            if not keyed:
                continue
            step = replace(keyed[step.pick % len(keyed)], stranger=step.stranger, step=step.step)
        elif isinstance(step, Submit | Regenerate) and step.key is not None:
            keyed.append(step)
        command, actor = command_of(step, index=index, observed=seen)
        envelope = Envelope.wrap(command, key=CONVERSATION_ID, actor=actor, occurred_at=now)
        decision = decide(envelope, state)

        check_decision(step, command, actor, now, decision, seen)
        observe(step, command, now, decision, seen)
        state = append(state, envelope, decision)

        # A decider restarted from the state's stored snapshot decides every next command as this one does.
        assert snapshot_from_json(snapshot_json(ConversationSnapshot(state=state, through=index))).state == state

        # The decider's own state agrees with what the log says.
        assert state.active_run_id == seen.active_run
        assert state.latest_turn_seq == (seen.turn_seqs[-1] if seen.turn_seqs else 0)

        # An accepted keyed request names the run its key is bound to in this window.
        key = getattr(command, "idempotency_key", None)
        if key is not None and actor == OWNER and isinstance(decision.outcome, Accepted):
            record = seen.live_key(key, now)
            assert record is not None
            assert (decision.outcome.run_id, decision.outcome.turn_seq) == (record.run_id, record.turn_seq)

        # Whatever happened since, every live key still answers its first acceptance (probed, not appended).
        for live_key in list(seen.keys):
            record = seen.live_key(live_key, now)
            if record is not None:
                retry = Envelope.wrap(record.retry(live_key), key=CONVERSATION_ID, actor=OWNER, occurred_at=now)
                assert decide(retry, state) == Decision(
                    events=(), outcome=Accepted(run_id=record.run_id, turn_seq=record.turn_seq)
                ), f"{live_key} forgot its run"

    # Turn numbers are exactly 1..N, in emission order, with no gaps or duplicates.
    assert seen.turn_seqs == list(range(1, len(seen.turn_seqs) + 1))
    # Every run ended at most once, and its stream ended with it.
    assert seen.endings == seen.stream_endings
    assert all(count == 1 for count in seen.endings.values())


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(KEYS[1:]),
    bodies=st.lists(st.sampled_from(BODIES[:3]), min_size=2, max_size=8),
    finish_between=st.lists(st.booleans(), min_size=8, max_size=8),
    steps=st.lists(st.sampled_from(SMALL_STEPS), min_size=8, max_size=8),
)
def test_a_key_replayed_within_the_window_returns_its_first_run_whatever_happened_since(
    key: str, bodies: list[str], finish_between: list[bool], steps: list[timedelta]
) -> None:
    state = started_conversation()
    now = T0
    first: Accepted | None = None
    first_body = bodies[0]
    for index, body in enumerate(bodies):
        now += steps[index]  # at most 40 minutes in all: always inside the window
        submit = Envelope.wrap(
            SubmitTurn(
                conversation_id=CONVERSATION_ID, run_id=f"run_{index}", content=(ContentPart(type="text", text=body),),
                idempotency_key=key, request_fingerprint=fingerprint("submit", body, False),
            ),
            key=CONVERSATION_ID, actor=OWNER, occurred_at=now,
        )
        decision = decide(submit, state)
        if first is None:
            assert isinstance(decision.outcome, Accepted) and len(decision.events) == 3
            first = decision.outcome
        elif body == first_body:
            assert decision == Decision(events=(), outcome=first)
        else:
            assert decision.events == () and decision.outcome.code == "idempotency_key_reused"
        state = append(state, submit, decision)
        if finish_between[index] and state.active_run_id is not None:
            finish = Envelope.wrap(
                FinishRun(conversation_id=CONVERSATION_ID, run_id=state.active_run_id, status="completed", text="ok",
                          usage=USAGE),
                key=CONVERSATION_ID, actor=WORKER, occurred_at=now,
            )
            state = append(state, finish, decide(finish, state))
