"""The conversation decider, given/when/then: given past events, when a command, then events and an outcome."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from commands.catalog import (
    CancelRun,
    Command,
    CreateConversation,
    FinishRun,
    RegenerateTurn,
    RenameConversation,
    SubmitTurn,
)
from commands.decider import (
    IDEMPOTENCY_WINDOW,
    Accepted,
    ConversationState,
    Decision,
    Rejected,
    decide,
    evolve,
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
from events.values import ContentPart, Usage

CONVERSATION_ID = "conv_1"
WORKSPACE_ID = "ws_main"
T0 = datetime(2026, 4, 25, 12, 0, tzinfo=UTC)
OWNER = Actor(user_id="user_ana", org_id="org_acme", workspace_id=WORKSPACE_ID)
COLLEAGUE = Actor(user_id="user_bob", org_id="org_acme", workspace_id=WORKSPACE_ID)
OTHER_ORG_SAME_USER_ID = Actor(user_id="user_ana", org_id="org_evil", workspace_id=WORKSPACE_ID)
OWNER_IN_ANOTHER_WORKSPACE = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws_elsewhere")
STRANGERS = pytest.mark.parametrize(
    "stranger",
    [COLLEAGUE, OTHER_ORG_SAME_USER_ID, OWNER_IN_ANOTHER_WORKSPACE],
    ids=["other_user", "other_org", "other_workspace"],
)
USAGE = Usage(prompt_tokens=12, cached_tokens=4, output_tokens=7)


# ---------------------------------------------------------------- given / when


@dataclass(frozen=True)
class History:
    state: ConversationState

    def when(self, command: Command, *, actor: Actor = OWNER, at: datetime = T0) -> Decision:
        envelope = Envelope.wrap(command, key=CONVERSATION_ID, actor=actor, occurred_at=at)
        return decide(envelope, self.state)

    def then_apply(self, decision: Decision, *, actor: Actor = OWNER) -> "History":
        """The history after a writer appended the decision's events (as a real writer folds them)."""
        return History(fold(self.state, decision.events, actor=actor))


def fold(state: ConversationState, events: tuple[object, ...], *, actor: Actor = OWNER) -> ConversationState:
    for event in events:
        state = evolve(state, Envelope.wrap(event, key=CONVERSATION_ID, actor=actor, occurred_at=T0))
    return state


def given(*events: object) -> History:
    return History(fold(ConversationState(), events))


# ---------------------------------------------------------------- event and command factories


def created(*, owner: Actor = OWNER) -> ConversationCreated:
    return ConversationCreated(
        conversation_id=CONVERSATION_ID, workspace_id=owner.workspace_id, owner_id=owner.user_id, created_at=T0
    )


def submitted(turn_seq: int, *, parent: int | None = None, text: str = "hello") -> TurnSubmitted:
    return TurnSubmitted(
        conversation_id=CONVERSATION_ID,
        turn_seq=turn_seq,
        parent_turn_seq=parent,
        content=(ContentPart(type="text", text=text),),
        submitted_at=T0,
    )


def requested(
    run_id: str,
    turn_seq: int,
    *,
    parent: int,
    created_turn_seq: int | None = None,
    key: str | None = None,
    fingerprint: str = "fp",
    at: datetime = T0,
    mode: str = "interactive",
) -> RunRequested:
    return RunRequested(
        conversation_id=CONVERSATION_ID,
        run_id=run_id,
        turn_seq=turn_seq,
        parent_turn_seq=parent,
        mode=mode,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        created_turn_seq=parent if created_turn_seq is None else created_turn_seq,
        requested_at=at,
    )


def answered(run_id: str, turn_seq: int, *, parent: int, state: str = "completed") -> AssistantTurnFinished:
    return AssistantTurnFinished(
        conversation_id=CONVERSATION_ID,
        run_id=run_id,
        turn_seq=turn_seq,
        parent_turn_seq=parent,
        state=state,
        content=(ContentPart(type="text", text="an answer"),),
        usage=USAGE,
        mode="interactive",
        requested_at=T0,
        finished_at=T0,
    )


def submit(
    text: str = "hello",
    *,
    run_id: str = "run_1",
    key: str | None = None,
    fingerprint: str | None = None,
    response_mode: str = "stream",
) -> SubmitTurn:
    return SubmitTurn(
        conversation_id=CONVERSATION_ID,
        run_id=run_id,
        content=(ContentPart(type="text", text=text),),
        response_mode=response_mode,
        idempotency_key=key,
        request_fingerprint=fingerprint or f"submit:{text}:{response_mode}",
    )


def regenerate(*, run_id: str = "run_2", key: str | None = None, fingerprint: str = "regenerate") -> RegenerateTurn:
    return RegenerateTurn(
        conversation_id=CONVERSATION_ID, run_id=run_id, idempotency_key=key, request_fingerprint=fingerprint
    )


def cancel(run_id: str = "run_1") -> CancelRun:
    return CancelRun(conversation_id=CONVERSATION_ID, run_id=run_id)


def finish(run_id: str = "run_1", *, status: str = "completed", text: str = "an answer") -> FinishRun:
    return FinishRun(conversation_id=CONVERSATION_ID, run_id=run_id, status=status, text=text, usage=USAGE)


def kinds(decision: Decision) -> list[type]:
    return [type(event) for event in decision.events]


def rejected(decision: Decision, code: str) -> bool:
    return decision.events == () and isinstance(decision.outcome, Rejected) and decision.outcome.code == code


# A conversation with one finished exchange: user turn 1, answer 2 (run_1, keyed "key-1" at T0).
FIRST_EXCHANGE = (
    created(),
    submitted(1),
    requested("run_1", 2, parent=1, key="key-1", fingerprint="submit:hello:stream"),
    answered("run_1", 2, parent=1),
)
# The same, with run_1 still generating.
FIRST_RUN_ACTIVE = FIRST_EXCHANGE[:-1]


# ---------------------------------------------------------------- create


def test_create_appends_conversation_created_owned_by_the_actor() -> None:
    decision = given().when(CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID, title="t"))

    assert decision.outcome == Accepted()
    assert decision.events == (
        ConversationCreated(
            conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID, owner_id=OWNER.user_id, title="t", created_at=T0
        ),
    )
    state = given().then_apply(decision).state
    assert state.exists and state.owner == OWNER and state.latest_turn_seq == 0 and state.active_run_id is None


def test_retried_create_by_the_same_owner_in_the_same_workspace_is_accepted_without_events() -> None:
    decision = given(created()).when(CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID))

    assert decision == Decision(events=(), outcome=Accepted())


@pytest.mark.parametrize("stranger", [COLLEAGUE, OTHER_ORG_SAME_USER_ID], ids=["other_user", "other_org"])
def test_create_over_someone_elses_conversation_is_a_conflict(stranger: Actor) -> None:
    decision = given(created()).when(
        CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID), actor=stranger
    )

    assert rejected(decision, "conflict")


def test_create_again_in_another_workspace_is_a_conflict() -> None:
    decision = given(created()).when(CreateConversation(conversation_id=CONVERSATION_ID, workspace_id="ws_other"))

    assert rejected(decision, "conflict")


# ---------------------------------------------------------------- rename


def test_rename_appends_the_new_title_with_the_conversations_creation_time() -> None:
    later = T0 + timedelta(minutes=5)
    decision = given(created()).when(RenameConversation(conversation_id=CONVERSATION_ID, title="Tides"), at=later)
    assert decision.events == (
        ConversationRenamed(conversation_id=CONVERSATION_ID, title="Tides", created_at=T0, renamed_at=later),
    )
    assert decision.outcome == Accepted()


def test_renaming_to_the_same_title_appends_nothing_and_a_later_rename_back_does() -> None:
    history = given(created())
    renamed = history.when(RenameConversation(conversation_id=CONVERSATION_ID, title="Tides"))
    history = history.then_apply(renamed)
    again = history.when(RenameConversation(conversation_id=CONVERSATION_ID, title="Tides"))
    assert (again.events, again.outcome) == ((), Accepted())
    untitled = history.when(RenameConversation(conversation_id=CONVERSATION_ID, title=None))
    assert [event.title for event in untitled.events] == [None]


@STRANGERS
def test_only_the_owner_may_rename_and_others_are_told_it_does_not_exist(stranger: Actor) -> None:
    decision = given(created()).when(RenameConversation(conversation_id=CONVERSATION_ID, title="mine now"), actor=stranger)
    assert decision.events == ()
    assert isinstance(decision.outcome, Rejected) and decision.outcome.code == "not_found"


def test_renaming_a_conversation_that_does_not_exist_is_not_found() -> None:
    decision = given().when(RenameConversation(conversation_id=CONVERSATION_ID, title="x"))
    assert isinstance(decision.outcome, Rejected) and decision.outcome.code == "not_found"


# ---------------------------------------------------------------- submit


def test_given_created_when_submit_then_turn_submitted_run_requested_run_started() -> None:
    decision = given(created()).when(submit("hello", run_id="run_1"))

    assert kinds(decision) == [TurnSubmitted, RunRequested, RunStarted]
    turn, run, started = decision.events
    assert turn == submitted(1, parent=None, text="hello")
    assert (run.run_id, run.turn_seq, run.parent_turn_seq, run.created_turn_seq) == ("run_1", 2, 1, 1)
    assert (run.mode, run.tool_mode, run.requested_at) == ("interactive", "auto", T0)
    assert run.conversation_id == CONVERSATION_ID and run.idempotency_key is None
    assert started == RunStarted(run_id="run_1", conversation_id=CONVERSATION_ID, turn_seq=2)
    assert decision.outcome == Accepted(run_id="run_1", turn_seq=1)


def test_submit_makes_the_run_active() -> None:
    history = given(created())
    state = history.then_apply(history.when(submit(run_id="run_1"))).state

    assert state.active_run_id == "run_1"
    assert (state.latest_turn_seq, state.latest_user_turn_seq) == (2, 1)
    assert state.runs["run_1"].status == "in_progress"


def test_second_turn_after_the_first_run_finished_gets_seq_3_with_parent_2() -> None:
    decision = given(*FIRST_EXCHANGE).when(submit("and then?", run_id="run_2"))

    assert kinds(decision) == [TurnSubmitted, RunRequested, RunStarted]
    turn, run, _ = decision.events
    assert (turn.turn_seq, turn.parent_turn_seq) == (3, 2)
    assert (run.turn_seq, run.parent_turn_seq, run.created_turn_seq) == (4, 3, 3)
    assert decision.outcome == Accepted(run_id="run_2", turn_seq=3)


def test_submit_while_a_run_is_active_is_a_conflict_naming_the_run() -> None:
    decision = given(*FIRST_RUN_ACTIVE).when(submit("again", run_id="run_2"))

    assert rejected(decision, "conflict")
    assert "run_1" in decision.outcome.detail


def test_background_response_mode_requests_a_background_run() -> None:
    decision = given(created()).when(submit(response_mode="background"))

    assert decision.events[1].mode == "background"


def test_submit_carries_content_attachments_and_tool_mode() -> None:
    command = SubmitTurn(
        conversation_id=CONVERSATION_ID,
        run_id="run_1",
        content=(ContentPart(type="text", text="look"), ContentPart(type="text", text="here")),
        attachments=("att_1",),
        tool_mode="none",
        request_fingerprint="fp",
    )
    turn, run, _ = given(created()).when(command).events

    assert turn.content == command.content and turn.attachments == ("att_1",)
    assert run.tool_mode == "none"


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_blank_text_is_invalid(text: str) -> None:
    assert rejected(given(created()).when(submit(text)), "invalid")


def test_no_content_parts_is_invalid() -> None:
    command = SubmitTurn(conversation_id=CONVERSATION_ID, run_id="run_1", content=(), request_fingerprint="fp")

    assert rejected(given(created()).when(command), "invalid")


def test_submit_to_a_conversation_that_does_not_exist_is_not_found() -> None:
    assert rejected(given().when(submit()), "not_found")


@STRANGERS
def test_submit_by_a_stranger_is_not_found(stranger: Actor) -> None:
    decision = given(created()).when(submit(), actor=stranger)

    assert rejected(decision, "not_found")
    assert decision.outcome.detail == given().when(submit()).outcome.detail  # indistinguishable from absent


@STRANGERS
def test_a_stranger_replaying_the_owners_idempotency_key_learns_nothing(stranger: Actor) -> None:
    decision = given(*FIRST_RUN_ACTIVE).when(submit(key="key-1"), actor=stranger)

    assert rejected(decision, "not_found")


# ---------------------------------------------------------------- idempotency


def test_same_key_and_body_while_the_run_is_active_returns_the_original_run_without_events() -> None:
    decision = given(*FIRST_RUN_ACTIVE).when(submit(run_id="run_retry", key="key-1"), at=T0 + timedelta(seconds=3))

    assert decision == Decision(events=(), outcome=Accepted(run_id="run_1", turn_seq=1))


def test_same_key_and_body_after_the_run_finished_returns_the_original_run_without_events() -> None:
    decision = given(*FIRST_EXCHANGE).when(submit(run_id="run_retry", key="key-1"), at=T0 + timedelta(hours=1))

    assert decision == Decision(events=(), outcome=Accepted(run_id="run_1", turn_seq=1))


def test_replay_through_the_decider_returns_the_first_acceptance() -> None:
    history = given(created())
    first = history.when(submit(run_id="run_1", key="k"))
    history = history.then_apply(first)

    again = history.when(submit(run_id="run_9", key="k"), at=T0 + timedelta(minutes=5))

    assert again == Decision(events=(), outcome=first.outcome)


def test_same_key_with_another_body_is_rejected_as_reused() -> None:
    for history in (given(*FIRST_RUN_ACTIVE), given(*FIRST_EXCHANGE)):
        decision = history.when(submit("something else", run_id="run_2", key="key-1"))

        assert rejected(decision, "idempotency_key_reused")


def test_key_reuse_is_checked_before_the_body_is_validated() -> None:
    assert rejected(given(*FIRST_EXCHANGE).when(submit("   ", key="key-1")), "idempotency_key_reused")


def test_same_key_just_inside_the_window_still_replays() -> None:
    at = T0 + IDEMPOTENCY_WINDOW - timedelta(seconds=1)
    decision = given(*FIRST_EXCHANGE).when(submit(run_id="run_2", key="key-1"), at=at)

    assert decision == Decision(events=(), outcome=Accepted(run_id="run_1", turn_seq=1))


def test_same_key_after_the_window_starts_a_new_run() -> None:
    at = T0 + IDEMPOTENCY_WINDOW + timedelta(seconds=1)
    history = given(*FIRST_EXCHANGE)
    decision = history.when(submit(run_id="run_2", key="key-1"), at=at)

    assert kinds(decision) == [TurnSubmitted, RunRequested, RunStarted]
    assert decision.outcome == Accepted(run_id="run_2", turn_seq=3)
    assert decision.events[1].idempotency_key == "key-1"
    # ...and from now on the key names the new run.
    state = history.then_apply(decision).state
    assert state.idempotency["key-1"].run_id == "run_2"


def test_an_expired_key_with_another_body_is_a_new_request_not_a_reuse() -> None:
    at = T0 + IDEMPOTENCY_WINDOW + timedelta(minutes=1)
    decision = given(*FIRST_EXCHANGE).when(submit("different", run_id="run_2", key="key-1"), at=at)

    assert decision.outcome == Accepted(run_id="run_2", turn_seq=3)


def test_each_key_is_remembered_on_its_own() -> None:
    history = given(*FIRST_EXCHANGE)  # key-1 -> run_1, user turn 1
    history = history.then_apply(history.when(submit("next", run_id="run_2", key="key-2"), at=T0 + timedelta(hours=1)))
    history = history.then_apply(history.when(finish("run_2")))
    later = T0 + timedelta(hours=2)

    assert history.when(submit(run_id="run_x", key="key-1"), at=later) == Decision(
        events=(), outcome=Accepted(run_id="run_1", turn_seq=1)
    )
    assert history.when(submit("next", run_id="run_y", key="key-2"), at=later) == Decision(
        events=(), outcome=Accepted(run_id="run_2", turn_seq=3)
    )


def test_a_new_key_while_a_run_is_active_is_still_a_conflict() -> None:
    assert rejected(given(*FIRST_RUN_ACTIVE).when(submit(run_id="run_2", key="key-2")), "conflict")


def test_a_rejected_keyed_submit_records_nothing_so_a_later_retry_runs() -> None:
    history = given(*FIRST_RUN_ACTIVE)
    assert rejected(history.when(submit("next", run_id="run_2", key="key-2")), "conflict")
    history = history.then_apply(history.when(finish("run_1")))

    decision = history.when(submit("next", run_id="run_2", key="key-2"))

    assert decision.outcome == Accepted(run_id="run_2", turn_seq=3)


def test_regenerate_replay_returns_the_assistant_turn_it_created() -> None:
    history = given(*FIRST_EXCHANGE)
    first = history.when(regenerate(run_id="run_2", key="regen-1"))
    history = history.then_apply(first)

    for at in (T0, T0 + timedelta(hours=2)):  # while active, and after it finished
        assert history.when(regenerate(run_id="run_x", key="regen-1"), at=at) == Decision(
            events=(), outcome=Accepted(run_id="run_2", turn_seq=3)
        )
        history = history.then_apply(history.when(finish("run_2")))


# ---------------------------------------------------------------- regenerate


def test_regenerate_without_a_user_turn_is_a_conflict() -> None:
    assert rejected(given(created()).when(regenerate()), "conflict")


def test_regenerate_after_an_answer_requests_a_sibling_answer_to_the_latest_user_turn() -> None:
    history = given(*FIRST_EXCHANGE)
    decision = history.when(regenerate(run_id="run_2"))

    assert kinds(decision) == [RunRequested, RunStarted]
    run, started = decision.events
    assert (run.run_id, run.turn_seq, run.parent_turn_seq, run.created_turn_seq) == ("run_2", 3, 1, 3)
    assert started == RunStarted(run_id="run_2", conversation_id=CONVERSATION_ID, turn_seq=3)
    assert decision.outcome == Accepted(run_id="run_2", turn_seq=3)
    # The earlier answer (turn 2, parent 1) is untouched: both are children of turn 1.
    state = history.then_apply(decision).state
    assert state.runs["run_1"].status == "completed" and state.runs["run_1"].parent_turn_seq == 1
    assert state.runs["run_2"].parent_turn_seq == 1 and state.latest_user_turn_seq == 1


def test_regenerate_twice_keeps_the_user_turn_as_parent_and_the_next_submit_follows_the_latest() -> None:
    history = given(*FIRST_EXCHANGE)
    for run_id, seq in (("run_2", 3), ("run_3", 4)):
        decision = history.when(regenerate(run_id=run_id))
        assert (decision.events[0].turn_seq, decision.events[0].parent_turn_seq) == (seq, 1)
        history = history.then_apply(decision)
        history = history.then_apply(history.when(finish(run_id)))

    turn = history.when(submit(run_id="run_4")).events[0]

    assert (turn.turn_seq, turn.parent_turn_seq) == (5, 4)


def test_regenerate_while_a_run_is_active_is_a_conflict() -> None:
    decision = given(*FIRST_RUN_ACTIVE).when(regenerate())

    assert rejected(decision, "conflict")
    assert "run_1" in decision.outcome.detail


def test_regenerate_with_background_mode() -> None:
    command = RegenerateTurn(
        conversation_id=CONVERSATION_ID, run_id="run_2", response_mode="background", request_fingerprint="fp"
    )

    assert given(*FIRST_EXCHANGE).when(command).events[0].mode == "background"


@STRANGERS
def test_regenerate_by_a_stranger_is_not_found(stranger: Actor) -> None:
    assert rejected(given(*FIRST_EXCHANGE).when(regenerate(), actor=stranger), "not_found")


def test_regenerate_with_a_key_used_by_a_submit_and_another_body_is_reused() -> None:
    assert rejected(given(*FIRST_EXCHANGE).when(regenerate(key="key-1")), "idempotency_key_reused")


# ---------------------------------------------------------------- cancel


def test_cancel_an_active_run_requests_cancellation() -> None:
    decision = given(*FIRST_RUN_ACTIVE).when(cancel("run_1"))

    assert decision.events == (RunCancellationRequested(run_id="run_1", conversation_id=CONVERSATION_ID),)
    assert decision.outcome == Accepted(run_id="run_1", turn_seq=2)


def test_cancel_marks_the_run_but_does_not_itself_end_it() -> None:
    history = given(*FIRST_RUN_ACTIVE)
    state = history.then_apply(history.when(cancel("run_1"))).state

    assert state.active_run_id == "run_1"  # the worker reports the end with FinishRun
    assert state.runs["run_1"].cancel_requested and state.runs["run_1"].status == "in_progress"


def test_cancel_twice_is_accepted_without_a_second_request() -> None:
    history = given(*FIRST_RUN_ACTIVE, RunCancellationRequested(conversation_id=CONVERSATION_ID, run_id="run_1"))

    assert history.when(cancel("run_1")) == Decision(events=(), outcome=Accepted(run_id="run_1", turn_seq=2))


@pytest.mark.parametrize(
    ("reported", "recorded"), [("completed", "cancelled"), ("cancelled", "cancelled"), ("failed", "failed")]
)
def test_a_cancelled_run_that_the_worker_reports_completed_ends_cancelled(reported: str, recorded: str) -> None:
    history = given(*FIRST_RUN_ACTIVE, RunCancellationRequested(conversation_id=CONVERSATION_ID, run_id="run_1"))
    decision = history.when(finish(status=reported))

    assert decision.events[0].state == decision.events[1].status == recorded
    state = history.then_apply(decision).state
    assert state.active_run_id is None and state.runs["run_1"].status == recorded


def test_cancel_an_unknown_run_is_not_found() -> None:
    assert rejected(given(*FIRST_RUN_ACTIVE).when(cancel("run_nope")), "not_found")


def test_cancel_a_finished_run_is_a_conflict() -> None:
    assert rejected(given(*FIRST_EXCHANGE).when(cancel("run_1")), "conflict")


@STRANGERS
def test_cancel_someone_elses_run_is_not_found(stranger: Actor) -> None:
    for history in (given(*FIRST_RUN_ACTIVE), given(*FIRST_EXCHANGE)):
        assert rejected(history.when(cancel("run_1"), actor=stranger), "not_found")


def test_cancel_in_a_conversation_that_does_not_exist_is_not_found() -> None:
    assert rejected(given().when(cancel("run_1")), "not_found")


# ---------------------------------------------------------------- finish


def test_finish_an_active_run_records_the_assistant_turn_and_ends_the_stream() -> None:
    later = T0 + timedelta(seconds=9)
    history = given(*FIRST_RUN_ACTIVE)
    decision = history.when(
        FinishRun(conversation_id=CONVERSATION_ID, run_id="run_1", status="completed", text="hi there",
                  reason="stop", usage=USAGE),
        at=later,
    )

    assert decision.events == (
        AssistantTurnFinished(
            conversation_id=CONVERSATION_ID,
            run_id="run_1",
            turn_seq=2,
            parent_turn_seq=1,
            state="completed",
            content=(ContentPart(type="text", text="hi there"),),
            reason="stop",
            usage=USAGE,
            mode="interactive",
            requested_at=T0,
            finished_at=later,
        ),
        RunFinished(run_id="run_1", conversation_id=CONVERSATION_ID, turn_seq=2, status="completed", reason="stop",
                    usage=USAGE),
    )
    assert decision.outcome == Accepted(run_id="run_1", turn_seq=2)
    state = history.then_apply(decision).state
    assert state.active_run_id is None and state.runs["run_1"].status == "completed"


def test_an_answer_a_safety_stage_changed_is_stored_and_the_stream_s_end_carries_it() -> None:
    """The deltas were provisional: the stored turn is what passed, and the terminal event says what that is."""
    replaced = FinishRun(conversation_id=CONVERSATION_ID, run_id="run_1", status="completed", text="I can't share that answer.",
                         reason="I can't share that answer.", usage=USAGE, stream_replaced=True)
    turn, stream_end = given(*FIRST_RUN_ACTIVE).when(replaced).events

    assert turn.content == (ContentPart(type="text", text="I can't share that answer."),)
    assert stream_end.text == "I can't share that answer." and stream_end.status == "completed"
    assert given(*FIRST_RUN_ACTIVE).when(finish()).events[1].text is None  # as streamed: nothing to replace


@pytest.mark.parametrize("status", ["completed", "cancelled", "failed"])
def test_every_terminal_status_ends_the_run(status: str) -> None:
    history = given(*FIRST_RUN_ACTIVE)
    decision = history.when(finish(status=status))

    assert kinds(decision) == [AssistantTurnFinished, RunFinished]
    assert decision.events[0].state == decision.events[1].status == status
    state = history.then_apply(decision).state
    assert state.active_run_id is None and state.runs["run_1"].status == status


def test_a_background_run_finishes_as_a_background_turn() -> None:
    history = given(created())
    history = history.then_apply(history.when(submit(response_mode="background")))

    assert history.when(finish()).events[0].mode == "background"


def test_a_second_finish_for_the_same_run_is_rejected_the_first_one_wins() -> None:
    history = given(*FIRST_RUN_ACTIVE)
    history = history.then_apply(history.when(finish(status="cancelled")))

    decision = history.when(finish(status="completed", text="late"))

    assert rejected(decision, "conflict")
    assert history.state.runs["run_1"].status == "cancelled"


def test_finish_with_an_unknown_status_is_invalid() -> None:
    history = given(*FIRST_RUN_ACTIVE)
    decision = history.when(finish(status="exploded"))

    assert rejected(decision, "invalid")
    assert history.then_apply(decision).state.active_run_id == "run_1"


def test_finish_an_unknown_run_is_rejected() -> None:
    assert isinstance(given(*FIRST_RUN_ACTIVE).when(finish("run_nope")).outcome, Rejected)


def test_after_a_finish_a_new_turn_may_start() -> None:
    history = given(*FIRST_RUN_ACTIVE)
    history = history.then_apply(history.when(finish(status="failed")))

    assert history.when(submit(run_id="run_2")).outcome == Accepted(run_id="run_2", turn_seq=3)


# ---------------------------------------------------------------- evolve


def test_evolve_ignores_run_stream_events() -> None:
    state = given(*FIRST_RUN_ACTIVE).state
    for event in (
        RunStarted(run_id="run_1", conversation_id=CONVERSATION_ID, turn_seq=2),
        RunFinished(run_id="run_1", conversation_id=CONVERSATION_ID, turn_seq=2, status="completed", usage=USAGE),
    ):
        assert fold(state, (event,)) == state


def test_evolve_takes_the_tenant_from_the_creating_envelope() -> None:
    state = given(created()).state

    assert (state.conversation_id, state.org_id, state.workspace_id, state.owner_id) == (
        CONVERSATION_ID, OWNER.org_id, WORKSPACE_ID, OWNER.user_id
    )


# ---------------------------------------------------------------- redelivery (at-least-once runtimes)


def decided_and_applied(history: History, command: Command, *, at: datetime = T0) -> tuple[History, Envelope, Decision]:
    """Decide `command` and fold its events as the handler writes them: caused by the command's envelope."""
    envelope = Envelope.wrap(command, key=CONVERSATION_ID, actor=OWNER, occurred_at=at)
    decision = decide(envelope, history.state)
    state = history.state
    for event in decision.events:
        state = evolve(state, Envelope.wrap(event, key=CONVERSATION_ID, actor=OWNER, cause=envelope, occurred_at=at))
    return History(state), envelope, decision


@pytest.mark.parametrize(
    "before, command",
    [
        ((), CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=WORKSPACE_ID)),
        ((created(),), submit(run_id="run_1")),
        (FIRST_RUN_ACTIVE, cancel()),
        (FIRST_RUN_ACTIVE, finish()),
    ],
    ids=["create", "submit", "cancel", "finish"],
)
def test_a_redelivered_command_is_answered_as_before_without_new_events(before: tuple, command: Command) -> None:
    history, envelope, first = decided_and_applied(given(*before), command)

    again = decide(envelope, history.state)

    assert first.events and again.events == ()
    assert again.outcome == first.outcome


def test_a_redelivered_submit_after_its_run_finished_does_not_start_another_turn() -> None:
    history, envelope, first = decided_and_applied(given(created()), submit(run_id="run_1"))
    history, _, _ = decided_and_applied(history, finish("run_1"))

    again = decide(envelope, history.state)

    assert again == Decision(outcome=first.outcome) and first.outcome == Accepted(run_id="run_1", turn_seq=1)


def test_a_new_command_with_the_same_body_is_still_decided_on_its_own() -> None:
    history, _, _ = decided_and_applied(given(created()), submit(run_id="run_1"))
    history, _, _ = decided_and_applied(history, finish("run_1"))

    assert kinds(history.when(submit(run_id="run_2"))) == [TurnSubmitted, RunRequested, RunStarted]


def test_decided_commands_are_forgotten_after_the_idempotency_window() -> None:
    history, first_envelope, _ = decided_and_applied(given(created()), submit(run_id="run_1"))
    later = T0 + IDEMPOTENCY_WINDOW + timedelta(seconds=1)
    history, _, _ = decided_and_applied(history, finish("run_1"), at=later)

    assert first_envelope.event_id not in history.state.decided
