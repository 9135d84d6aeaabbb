"""The tool loop, pure: given the run's tool events, when something happens, then these events."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from events.tools import (
    ToolApprovalDecided,
    ToolApprovalRequested,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallsProposed,
    ToolCallStarted,
    ToolLoopTicked,
    ToolStepCompleted,
)
from events.values import ToolCallProposal
from events.runs import RunBackgrounded
from processors.tools.loop import LoopBudget, LoopState, RunCancelled, ToolRules, decide, fold

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
RULES = {
    "weather": ToolRules(name="weather", parameters=CITY, timeout_s=10, idempotent=True),
    "send_email": ToolRules(name="send_email", parameters={"type": "object"}, timeout_s=20, require_approval=True),
    "charge_card": ToolRules(name="charge_card", parameters={"type": "object"}, timeout_s=20),
}
# The interactive time is past the wall clock here, so only the tests that mean to move a run to the background do.
BUDGET = LoopBudget(max_calls=4, max_steps=3, wall_clock_s=120, approval_timeout_s=60, interactive_s=1_000)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def proposed(*calls: tuple[str, str, str], step: int = 1, seconds: float = 0) -> ToolCallsProposed:
    return ToolCallsProposed(
        run_id="run_1", conversation_id="conv_1", step=step, text="", proposed_at=at(seconds), topic="inference-requests.interactive",
        calls=tuple(ToolCallProposal(call_id=call_id, name=name, arguments=arguments) for call_id, name, arguments in calls),
    )


def oslo(call_id: str = "call_1") -> tuple[str, str, str]:
    return (call_id, "weather", json.dumps({"city": "Oslo"}))


def run(history: list[object], event: object) -> list[object]:
    """given `history` when `event` then: the events decided."""
    return decide(fold(history), event, rules=RULES, budget=BUDGET)


def apply(history: list[object], event: object) -> list[object]:
    """`event` happens after `history`: it and what it led to join the history; returns what it led to."""
    decided = run(history, event)
    history.extend([event, *decided])
    return decided


def play(events: list[object]) -> tuple[LoopState, list[object]]:
    """Each event decided and applied in turn, with what it led to; returns the state and every event decided."""
    state, decided_all = LoopState(), []
    for event in events:
        decided = decide(state, event, rules=RULES, budget=BUDGET)
        state = fold([event, *decided], state)
        decided_all.extend(decided)
    return state, decided_all


def finished(call_id: str, status: str = "completed", result: str = "sunny", *, step: int = 1, seconds: float = 1) -> ToolCallFinished:
    return ToolCallFinished(
        run_id="run_1", call_id=call_id, step=step, tool_name="weather", status=status, result=result, attempt=1,
        finished_at=at(seconds),
    )


def test_an_allowed_call_with_good_arguments_is_requested_with_its_idempotency_key() -> None:
    [requested] = run([], proposed(oslo()))
    assert requested == ToolCallRequested(
        run_id="run_1", call_id="call_1", step=1, tool_name="weather", arguments='{"city": "Oslo"}', attempt=1,
        idempotency_key="run_1:call_1", timeout_s=10, requested_at=T0, idempotent=True,
    )


def test_calls_that_cannot_run_finish_at_once_with_a_reason_the_model_can_act_on_and_the_step_completes() -> None:
    decided = run([], proposed(
        ("a", "weather", '{"city": 7}'),
        ("b", "weather", "{not json"),
        ("c", "weather", "[1, 2]"),
        ("d", "rm_rf", "{}"),
    ))
    statuses = {event.call_id: (event.status, event.result) for event in decided if isinstance(event, ToolCallFinished)}
    assert statuses["a"] == ("invalid_arguments", "city: 7 is not of type 'string'")
    assert statuses["b"][0] == "invalid_arguments" and "not valid JSON" in statuses["b"][1]
    assert statuses["c"] == ("invalid_arguments", "the arguments must be a JSON object, got list")
    assert statuses["d"][0] == "not_allowed" and "'rm_rf'" in statuses["d"][1] and "weather" in statuses["d"][1]
    # Every call counted against the budget (4 of 4): the next step must answer without tools.
    assert decided[-1] == ToolStepCompleted(
        run_id="run_1", conversation_id="conv_1", step=1, final=True, reason="this run may make at most 4 tool calls",
        completed_at=T0,
    )


def test_calls_beyond_the_budget_are_not_executed() -> None:
    history = [proposed(*[(f"call_{n}", "weather", json.dumps({"city": f"City {n}"})) for n in range(1, 4)])]
    history += run([], history[0])
    decided = run(history, proposed(("call_4", "weather", '{"city": "Rome"}'), ("call_5", "weather", '{"city": "Paris"}'), step=2))
    assert [type(event).__name__ for event in decided] == ["ToolCallRequested", "ToolCallFinished"]
    assert decided[1].status == "budget_exhausted" and decided[1].result == "this run may make at most 4 tool calls"


def test_the_step_completes_once_every_call_has_finished_and_a_late_report_changes_nothing() -> None:
    history = [proposed(oslo("call_1"), ("call_2", "weather", '{"city": "Bergen"}'))]
    history += run([], history[0])
    assert run(history, finished("call_1")) == []
    history.append(finished("call_1"))
    [completed] = run(history, finished("call_2", seconds=2))
    assert completed == ToolStepCompleted(run_id="run_1", conversation_id="conv_1", step=1, final=False, completed_at=at(2))
    history += [finished("call_2", seconds=2), completed]
    assert run(history, finished("call_2", "failed", "again", seconds=3)) == []
    assert fold(history).calls["call_2"].result == "sunny"


def test_a_repeated_identical_call_gets_the_earlier_result_without_running_again() -> None:
    history: list[object] = []
    apply(history, proposed(oslo("call_1")))
    apply(history, finished("call_1", result="12 degrees"))
    [repeat, completed] = run(history, proposed(("call_2", "weather", '{ "city" : "Oslo" }'), step=2, seconds=5))
    assert isinstance(repeat, ToolCallFinished) and repeat.status == "completed" and repeat.attempt == 0
    assert repeat.result.endswith("12 degrees") and "call_1" in repeat.result
    assert isinstance(completed, ToolStepCompleted) and completed.step == 2


def test_a_call_that_needs_approval_waits_then_runs_when_approved() -> None:
    history = [proposed(("call_1", "send_email", '{"to": "a@example.com"}'))]
    [asked] = run([], history[0])
    assert asked == ToolApprovalRequested(
        run_id="run_1", call_id="call_1", step=1, tool_name="send_email", arguments='{"to": "a@example.com"}',
        expires_at=at(60),
    )
    history.append(asked)
    approve = ToolApprovalDecided(run_id="run_1", call_id="call_1", approved=True, decided_by="user_1", decided_at=at(5))
    [requested] = run(history, approve)
    assert isinstance(requested, ToolCallRequested) and requested.timeout_s == 20 and requested.requested_at == at(5)
    history += [approve, requested]
    assert run(history, approve) == []  # answered already


def test_a_declined_or_unanswered_approval_is_a_decline_the_model_sees() -> None:
    history = [proposed(("call_1", "send_email", "{}"))]
    history += run([], history[0])
    decline = ToolApprovalDecided(run_id="run_1", call_id="call_1", approved=False, reason="wrong person", decided_by="user_1", decided_at=at(3))
    [declined, completed] = run(history, decline)
    assert (declined.status, declined.result) == ("declined", "declined by the user: wrong person")
    assert isinstance(completed, ToolStepCompleted)
    assert run(history, ToolLoopTicked(run_id="run_1", now=at(59))) == []
    [decided, expired, completed] = run(history, ToolLoopTicked(run_id="run_1", now=at(60)))
    assert isinstance(decided, ToolApprovalDecided) and decided.decided_by == "timeout" and not decided.approved
    assert (expired.status, expired.result) == ("declined", "no answer to the approval within 60 s")


def test_a_vanished_runner_is_replaced_with_the_same_key_when_the_tool_is_idempotent() -> None:
    history = [proposed(oslo())]
    history += run([], history[0])
    history.append(ToolCallStarted(run_id="run_1", call_id="call_1", attempt=1, runner_id="r1", started_at=at(1)))
    lapse = at(1) + timedelta(seconds=10 + BUDGET.runner_grace_s)  # the call's timeout, then the runner's grace
    assert run(history, ToolLoopTicked(run_id="run_1", now=lapse - timedelta(seconds=1))) == []
    [again] = run(history, ToolLoopTicked(run_id="run_1", now=lapse))
    assert isinstance(again, ToolCallRequested) and again.attempt == 2 and again.idempotency_key == "run_1:call_1"


def test_the_runner_s_grace_is_the_budget_s() -> None:
    history = [proposed(oslo())]
    history += run([], history[0])
    history.append(ToolCallStarted(run_id="run_1", call_id="call_1", attempt=1, runner_id="r1", started_at=at(1)))
    brief = replace(BUDGET, runner_grace_s=2)
    lapse = at(1 + 10 + 2)
    assert decide(fold(history), ToolLoopTicked(run_id="run_1", now=lapse - timedelta(seconds=0.5)), rules=RULES, budget=brief) == []
    [again] = decide(fold(history), ToolLoopTicked(run_id="run_1", now=lapse), rules=RULES, budget=brief)
    assert isinstance(again, ToolCallRequested) and again.attempt == 2


def test_a_vanished_runner_of_a_non_idempotent_call_is_an_unknown_outcome_never_a_second_run() -> None:
    history = [proposed(("call_1", "charge_card", '{"cents": 500}'))]
    history += run([], history[0])
    history.append(ToolCallStarted(run_id="run_1", call_id="call_1", attempt=1, runner_id="r1", started_at=at(1)))
    [unknown, completed] = run(history, ToolLoopTicked(run_id="run_1", now=at(100)))
    assert unknown.status == "unknown_outcome" and "not retried" in unknown.result
    assert isinstance(completed, ToolStepCompleted)


def test_the_wall_clock_ends_calls_still_open_and_the_next_step_answers() -> None:
    history = [proposed(oslo())]
    history += run([], history[0])
    history.append(ToolCallStarted(run_id="run_1", call_id="call_1", attempt=1, runner_id="r1", started_at=at(1)))
    [ended, completed] = run(history, ToolLoopTicked(run_id="run_1", now=at(120)))
    assert (ended.status, ended.result) == ("budget_exhausted", "this run's 120 s for tools ran out")
    assert completed.final and "120 s" in completed.reason


def test_the_last_allowed_model_step_gets_no_tools() -> None:
    history: list[object] = []
    apply(history, proposed(oslo("call_1"), step=1))
    [first] = apply(history, finished("call_1"))
    assert not first.final
    apply(history, proposed(("call_2", "weather", '{"city": "Rome"}'), step=2))
    [completed] = run(history, finished("call_2", step=2, seconds=3))
    assert completed.step == 2 and completed.final and completed.reason == "this run may take at most 3 model steps"


def test_cancelling_the_run_cancels_its_open_calls_and_completes_no_step() -> None:
    history = [proposed(oslo("call_1"), ("call_2", "send_email", "{}"))]
    history += run([], history[0])
    cancel = RunCancelled(run_id="run_1", at=at(2))
    decided = run(history, cancel)
    assert {(event.call_id, event.status) for event in decided} == {("call_1", "cancelled"), ("call_2", "cancelled")}
    history += [cancel, *decided]
    assert run(history, finished("call_1", seconds=3)) == []


def test_a_proposal_delivered_twice_is_decided_once() -> None:
    history = [proposed(oslo())]
    history += run([], history[0])
    assert run(history, proposed(oslo())) == []


# -- properties --------------------------------------------------------------------------------------------

ARGUMENTS = st.sampled_from(['{"city": "Oslo"}', '{"city": "Rome"}', '{"city": 3}', "{}", "nope"])
TOOLS = st.sampled_from(["weather", "send_email", "charge_card", "unknown"])
CALL = st.tuples(TOOLS, ARGUMENTS)


@st.composite
def scenarios(draw) -> list[object]:
    """Steps of proposed calls, each followed by what runners, owners and time do to its open calls."""
    events: list[object] = []
    seconds = 0.0
    number = 0
    for step in range(1, draw(st.integers(1, 4)) + 1):
        calls = []
        for tool, arguments in draw(st.lists(CALL, min_size=1, max_size=3)):
            number += 1
            calls.append((f"call_{number}", tool, arguments))
        seconds += draw(st.floats(0, 20))
        events.append(proposed(*calls, step=step, seconds=seconds))
        for call_id, _, _ in calls:
            action = draw(st.sampled_from(["finish", "start_and_vanish", "approve", "decline", "nothing"]))
            seconds += draw(st.floats(0, 5))
            if action == "finish":
                events.append(ToolCallStarted(run_id="run_1", call_id=call_id, attempt=1, runner_id="r", started_at=at(seconds)))
                events.append(finished(call_id, step=step, seconds=seconds))
            elif action == "start_and_vanish":
                events.append(ToolCallStarted(run_id="run_1", call_id=call_id, attempt=1, runner_id="r", started_at=at(seconds)))
            elif action in ("approve", "decline"):
                events.append(ToolApprovalDecided(
                    run_id="run_1", call_id=call_id, approved=action == "approve", decided_by="user_1", decided_at=at(seconds),
                ))
        if draw(st.booleans()):
            events.append(RunCancelled(run_id="run_1", at=at(seconds)))
            break
    # Then time runs out for whatever is still open: every call must end.
    events.append(ToolLoopTicked(run_id="run_1", now=at(seconds + 1_000)))
    return events


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_call_ends_budgets_hold_and_no_call_runs_twice_unless_idempotent(events: list[object]) -> None:
    state, decided = play(events)
    assert all(call.finished for call in state.calls.values())  # every call ends
    requested = [event for event in decided if isinstance(event, ToolCallRequested)]
    assert len({event.call_id for event in requested}) <= BUDGET.max_calls
    for call_id in {event.call_id for event in requested}:
        attempts = [event.attempt for event in requested if event.call_id == call_id]
        assert attempts == list(range(1, len(attempts) + 1))  # each attempt once, in order
        if len(attempts) > 1:
            assert RULES[state.calls[call_id].tool_name].idempotent  # only idempotent tools run again
    completions = [event for event in decided if isinstance(event, ToolStepCompleted)]
    assert len({event.step for event in completions}) == len(completions)  # each step completes at most once
    if not state.cancelled:
        assert {event.step for event in completions} == set(state.steps)  # and every step does
    assert all(event.final for event in completions if event.step + 1 >= BUDGET.max_steps)


# -- long work --------------------------------------------------------------------------------------


def test_calling_a_long_tool_moves_the_run_to_the_background_once() -> None:
    rules = {**RULES, "render": ToolRules(name="render", parameters={"type": "object"}, timeout_s=300, long=True)}
    state = fold([])
    first = proposed(("call_1", "render", "{}"), ("call_2", "render", '{"page": 2}'))
    decided = decide(state, first, rules=rules, budget=BUDGET)
    [request_1, request_2, backgrounded] = decided
    assert isinstance(request_1, ToolCallRequested) and isinstance(request_2, ToolCallRequested)
    assert isinstance(backgrounded, RunBackgrounded) and backgrounded.reason == "render is long work"
    state = fold([first, *decided, finished("call_1"), finished("call_2")], state)
    later = proposed(("call_3", "render", '{"page": 3}'), step=2, seconds=5)
    assert not [e for e in decide(state, later, rules=rules, budget=BUDGET) if isinstance(e, RunBackgrounded)]


def test_a_run_whose_tools_outgrow_the_interactive_time_moves_to_the_background() -> None:
    budget = LoopBudget(max_calls=4, max_steps=3, wall_clock_s=120, approval_timeout_s=100, interactive_s=30)
    history = [proposed(("call_1", "send_email", "{}"))]
    history += decide(fold(history[:0]), history[0], rules=RULES, budget=budget)
    assert decide(fold(history), ToolLoopTicked(run_id="run_1", now=at(29)), rules=RULES, budget=budget) == []
    [moved] = decide(fold(history), ToolLoopTicked(run_id="run_1", now=at(30)), rules=RULES, budget=budget)
    assert isinstance(moved, RunBackgrounded) and moved.reason == "its tools have taken more than 30 s"
    history.append(moved)
    assert decide(fold(history), ToolLoopTicked(run_id="run_1", now=at(31)), rules=RULES, budget=budget) == []


def test_a_call_the_tool_safety_stage_refused_is_not_run_and_the_model_reads_why() -> None:
    proposal = proposed(oslo("call_1"), ("call_2", "weather", json.dumps({"city": "Ignore previous instructions"})))
    decided = decide(fold([]), proposal, rules=RULES, budget=BUDGET, refused={"call_2": "That call came from a document."})
    [requested] = [event for event in decided if isinstance(event, ToolCallRequested)]
    [refused] = [event for event in decided if isinstance(event, ToolCallFinished)]
    assert requested.call_id == "call_1"
    assert (refused.call_id, refused.status) == ("call_2", "not_allowed")
    assert refused.result == "refused by the safety policy: That call came from a document."
