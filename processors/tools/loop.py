"""The tool loop of one run, pure: `decide(state, event, rules) -> events` and `evolve(state, event) -> state`.

A model step that proposes calls is checked call by call (the tool is offered to this run, its
arguments are a JSON object its schema accepts, the tool safety stage did not refuse them, the run has
calls left, the same call was not made before) and each call is requested, held for its owner's approval, or finished at once with the
reason the model will read. Runners report starts and finishes; once every call of a step has
finished, the step completes and the prompt builder assembles the next model step, without tools
when a budget has run out (`final`). Time comes from the events (and from `ToolLoopTicked`s, for approvals
that expire, runners that vanish and the run's wall clock), never from a clock of this process, so
a replay decides the same.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import jsonschema

from events.runs import RunBackgrounded
from processors.tools.catalog import DeclarationError
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

# An idempotent call whose runners keep dying is given up after this many attempts.
MAX_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class ToolRules:
    """How the loop treats one tool offered to the run (from the tools file, after the caller's permissions)."""

    name: str
    parameters: Mapping[str, Any]  # the JSON Schema of its arguments
    timeout_s: float = 30.0
    idempotent: bool = False
    require_approval: bool = False
    long: bool = False  # long work: calling it moves the run to the background


@dataclass(frozen=True, kw_only=True)
class LoopBudget:
    """Per run: how many calls and model steps, and how long; how long an approval may wait.

    A run whose tools take longer than `interactive_s` moves to the background (nobody should have
    to watch a spinner that long); it still ends at `wall_clock_s`. A call with no finish
    `runner_grace_s` after its own timeout has lost its runner: it is asked again or given up.
    """

    max_calls: int = 8
    max_steps: int = 10
    wall_clock_s: float = 600.0
    approval_timeout_s: float = 300.0
    interactive_s: float = 60.0
    runner_grace_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_steps"):
            if getattr(self, name) < 1:
                raise DeclarationError(field=name, problem=f"must be >= 1, got {getattr(self, name)}")
        for name in ("wall_clock_s", "approval_timeout_s", "interactive_s", "runner_grace_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise DeclarationError(field=name, problem=f"must be a finite number > 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class RunCancelled:
    """The run was cancelled (its `RunCancellationRequested`, at that event's time)."""

    run_id: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class CallState:
    run_id: str
    call_id: str
    step: int
    tool_name: str
    arguments: str
    fingerprint: str
    status: str  # proposed | awaiting_approval | requested | started, or a finished status
    attempt: int = 0
    timeout_s: float = 0.0
    idempotent: bool = False
    since: datetime  # when it entered its status (approval asked, requested, started)
    expires_at: datetime | None = None  # awaiting approval: declined after this
    result: str = ""

    @property
    def finished(self) -> bool:
        return self.status not in _OPEN


_OPEN = frozenset({"proposed", "awaiting_approval", "requested", "started"})


@dataclass(frozen=True, kw_only=True)
class LoopState:
    run_id: str | None = None
    conversation_id: str = ""
    started_at: datetime | None = None  # the first proposal: the wall clock runs from here
    calls: Mapping[str, CallState] = field(default_factory=dict)  # in the order they were proposed
    steps: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # step -> its call ids
    completed_steps: frozenset[int] = frozenset()
    calls_used: int = 0
    cancelled: bool = False
    backgrounded: bool = False

    def open_calls(self, step: int | None = None) -> list[CallState]:
        return [c for c in self.calls.values() if not c.finished and (step is None or c.step == step)]


LoopInput = ToolCallsProposed | ToolApprovalDecided | ToolCallStarted | ToolCallFinished | RunCancelled | ToolLoopTicked
LoopEvent = ToolCallRequested | ToolApprovalRequested | ToolApprovalDecided | ToolCallFinished | ToolStepCompleted | RunBackgrounded


def decide(
    state: LoopState,
    event: LoopInput,
    *,
    rules: Mapping[str, ToolRules],
    budget: LoopBudget,
    refused: Mapping[str, str] = MappingProxyType({}),
) -> list[LoopEvent]:
    """The events `event` leads to; apply them with `evolve` (the input itself too, when it is an event).

    `refused`: the proposal's calls the tool safety stage refused (call id -> the reason), checked by the caller
    before deciding; each finishes `not_allowed` with that reason, which the model reads.
    """
    match event:
        case ToolCallsProposed():
            return _proposed(state, event, rules, budget, refused)
        case ToolApprovalDecided():
            decided = _approval(state, event, rules)
            return decided + _step_completions(fold(decided, state), budget, at=event.decided_at)
        case ToolCallStarted():
            return []
        case ToolCallFinished():
            call = state.calls.get(event.call_id)
            if call is None or call.finished:
                return []  # a late report of a call the loop already ended (timed out, cancelled)
            return _step_completions(evolve(state, event), budget, at=event.finished_at)
        case RunCancelled():
            return [_finish(call, "cancelled", "the run was cancelled", at=event.at) for call in state.open_calls()]
        case ToolLoopTicked():
            return _tick(state, event, budget)
    raise TypeError(f"the tool loop does not handle {type(event).__name__}")


def evolve(state: LoopState, event: object) -> LoopState:
    """Fold one event of the run's tool loop into its state (other events leave it unchanged)."""
    match event:
        case ToolCallsProposed():
            new_ids = tuple(call.call_id for call in event.calls if call.call_id not in state.calls)
            return replace(
                state,
                run_id=event.run_id,
                conversation_id=event.conversation_id,
                started_at=state.started_at or event.proposed_at,
                steps={**state.steps, event.step: tuple(dict.fromkeys((*state.steps.get(event.step, ()), *new_ids)))},
                calls_used=state.calls_used + len(new_ids),
                calls={
                    **state.calls,
                    **{
                        call.call_id: CallState(
                            run_id=event.run_id, call_id=call.call_id, step=event.step, tool_name=call.name, arguments=call.arguments,
                            fingerprint=_fingerprint(call.name, call.arguments), status="proposed", since=event.proposed_at,
                        )
                        for call in event.calls
                        if call.call_id in new_ids
                    },
                },
            )
        case ToolApprovalRequested():
            return _update(state, event.call_id, status="awaiting_approval", expires_at=event.expires_at)
        case ToolCallRequested():
            return _update(
                state, event.call_id, status="requested", attempt=event.attempt, timeout_s=event.timeout_s,
                idempotent=event.idempotent, since=event.requested_at,
            )
        case ToolCallStarted():
            call = state.calls.get(event.call_id)
            if call is None or call.finished or event.attempt != call.attempt:
                return state  # a start of an attempt the loop has moved past
            return _update(state, event.call_id, status="started", since=event.started_at)
        case ToolCallFinished():
            call = state.calls.get(event.call_id)
            if call is None or call.finished:
                return state  # the first finish wins
            return _update(state, event.call_id, status=event.status, result=event.result, since=event.finished_at)
        case ToolStepCompleted():
            return replace(state, completed_steps=state.completed_steps | {event.step})
        case RunCancelled():
            return replace(state, cancelled=True)
        case RunBackgrounded():
            return replace(state, backgrounded=True)
    return state


def fold(events: Sequence[object], state: LoopState = LoopState()) -> LoopState:
    for event in events:
        state = evolve(state, event)
    return state


# -- proposals -------------------------------------------------------------------------------------


def _proposed(
    state: LoopState, event: ToolCallsProposed, rules: Mapping[str, ToolRules], budget: LoopBudget, refused: Mapping[str, str]
) -> list[LoopEvent]:
    fresh = [call for call in event.calls if call.call_id not in state.calls]
    if not fresh:
        return []  # a proposal delivered again: decided already
    after = evolve(state, event)
    at = event.proposed_at
    deadline = _deadline(after, budget)
    decided: list[LoopEvent] = []
    earlier = {call.fingerprint: call for call in state.calls.values()}
    for index, proposal in enumerate(fresh):
        call = after.calls[proposal.call_id]
        number = state.calls_used + index + 1  # this call's place in the run's budget
        rule = rules.get(call.tool_name)
        if after.cancelled:
            decided.append(_finish(call, "cancelled", "the run was cancelled", at=at))
        elif number > budget.max_calls:
            decided.append(_finish(call, "budget_exhausted", f"this run may make at most {budget.max_calls} tool calls", at=at))
        elif at >= deadline:
            decided.append(_finish(call, "budget_exhausted", f"this run's {budget.wall_clock_s:g} s for tools ran out", at=at))
        elif rule is None:
            offered = ", ".join(sorted(rules)) or "none"
            decided.append(_finish(call, "not_allowed", f"no tool named {call.tool_name!r} is available here (available: {offered})", at=at))
        elif (problem := _argument_problem(call.arguments, rule.parameters)) is not None:
            decided.append(_finish(call, "invalid_arguments", problem, at=at))
        elif call.call_id in refused:
            decided.append(_finish(call, "not_allowed", f"refused by the safety policy: {refused[call.call_id]}", at=at))
        elif call.fingerprint in earlier:
            decided.append(_repeat(call, earlier[call.fingerprint], at=at))
        elif rule.require_approval:
            expires_at = at + timedelta(seconds=budget.approval_timeout_s)
            decided.append(ToolApprovalRequested(
                run_id=event.run_id, call_id=call.call_id, step=call.step, tool_name=call.tool_name,
                arguments=call.arguments, expires_at=expires_at,
            ))
        else:
            decided.append(_request(call, rule, attempt=1, at=at))
        earlier.setdefault(call.fingerprint, call)
    going = [d.tool_name for d in decided if isinstance(d, (ToolCallRequested, ToolApprovalRequested))]
    long_calls = [name for name in going if rules[name].long]
    if long_calls and not after.backgrounded:
        decided.append(RunBackgrounded(run_id=event.run_id, reason=f"{long_calls[0]} is long work", at=at))
    return decided + _step_completions(fold(decided, after), budget, at=at)


def _argument_problem(arguments: str, schema: Mapping[str, Any]) -> str | None:
    """Why `arguments` cannot be executed, in words the model can act on; None when they can."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError as error:
        return f"the arguments are not valid JSON: {error.msg} at position {error.pos}"
    if not isinstance(parsed, dict):
        return f"the arguments must be a JSON object, got {type(parsed).__name__}"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(parsed))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(the arguments)"
    return f"{where}: {error.message}"


def _repeat(call: CallState, earlier: CallState, *, at: datetime) -> ToolCallFinished:
    if earlier.finished:
        note = f"(the same call was made before as {earlier.call_id}; its result, not run again) "
        return _finish(call, earlier.status, note + earlier.result, at=at)
    return _finish(call, "failed", f"the same call is already running as {earlier.call_id}; it is not run twice", at=at)


# -- approvals, time, completion -----------------------------------------------------------------------


def _approval(state: LoopState, event: ToolApprovalDecided, rules: Mapping[str, ToolRules]) -> list[LoopEvent]:
    call = state.calls.get(event.call_id)
    if call is None or call.status != "awaiting_approval":
        return []  # answered already, or never asked (the API refuses those with a 409)
    if not event.approved:
        reason = f"declined by the user: {event.reason}" if event.reason else "declined by the user"
        if event.decided_by == "timeout":
            reason = event.reason or "no answer to the approval in time"
        return [_finish(call, "declined", reason, at=event.decided_at)]
    if state.cancelled:
        return [_finish(call, "cancelled", "the run was cancelled", at=event.decided_at)]
    rule = rules.get(call.tool_name)
    if rule is None:  # no longer offered (the tools file changed while it waited)
        return [_finish(call, "not_allowed", f"{call.tool_name!r} is no longer available", at=event.decided_at)]
    return [_request(call, rule, attempt=1, at=event.decided_at)]


def _tick(state: LoopState, tick: ToolLoopTicked, budget: LoopBudget) -> list[LoopEvent]:
    now = tick.now
    decided: list[LoopEvent] = []
    past_deadline = state.started_at is not None and now >= _deadline(state, budget)
    for call in state.open_calls():
        if past_deadline:
            decided.append(_finish(call, "budget_exhausted", f"this run's {budget.wall_clock_s:g} s for tools ran out", at=now))
        elif call.status == "awaiting_approval" and call.expires_at is not None and now >= call.expires_at:
            waited = f"no answer to the approval within {budget.approval_timeout_s:g} s"
            decided.append(ToolApprovalDecided(
                run_id=tick.run_id, call_id=call.call_id, approved=False, reason=waited, decided_by="timeout", decided_at=now,
            ))
            decided.append(_finish(call, "declined", waited, at=now))
        elif call.status in ("requested", "started") and now >= call.since + timedelta(seconds=call.timeout_s + budget.runner_grace_s):
            decided.extend(_runner_lost(state, call, at=now))
    outgrown = state.started_at is not None and now >= state.started_at + timedelta(seconds=budget.interactive_s)
    if outgrown and not past_deadline and not state.backgrounded and state.open_calls() and state.run_id is not None:
        reason = f"its tools have taken more than {budget.interactive_s:g} s"
        decided.append(RunBackgrounded(run_id=state.run_id, reason=reason, at=now))
    return decided + _step_completions(fold(decided, state), budget, at=now)


def _runner_lost(state: LoopState, call: CallState, *, at: datetime) -> list[LoopEvent]:
    """No finish long after the call's timeout: its runner died (or never took it)."""
    if call.status == "requested" or call.idempotent:
        if call.attempt >= MAX_ATTEMPTS:
            return [_finish(call, "failed", f"no runner finished it in {MAX_ATTEMPTS} attempts", at=at)]
        kept = ToolRules(name=call.tool_name, parameters={}, timeout_s=call.timeout_s, idempotent=call.idempotent)
        return [_request(call, kept, attempt=call.attempt + 1, at=at)]
    # Started and not idempotent: it may have had its effect; running it again could do it twice.
    return [_finish(call, "unknown_outcome", "its runner stopped mid-call; it is not idempotent, so it was not retried", at=at)]


def _step_completions(state: LoopState, budget: LoopBudget, *, at: datetime) -> list[ToolStepCompleted]:
    """A step whose calls have all finished completes, once; `final` when the next step must answer."""
    if state.cancelled or state.run_id is None:
        return []
    completions = []
    for step, call_ids in sorted(state.steps.items()):
        if step in state.completed_steps or any(not state.calls[call_id].finished for call_id in call_ids):
            continue
        reasons = []
        if step + 1 >= budget.max_steps:
            reasons.append(f"this run may take at most {budget.max_steps} model steps")
        if state.calls_used >= budget.max_calls:
            reasons.append(f"this run may make at most {budget.max_calls} tool calls")
        if state.started_at is not None and at >= _deadline(state, budget):
            reasons.append(f"this run's {budget.wall_clock_s:g} s for tools ran out")
        completions.append(ToolStepCompleted(
            run_id=state.run_id, conversation_id=state.conversation_id, step=step, final=bool(reasons),
            reason="; ".join(reasons), completed_at=at,
        ))
    return completions


# -- small pieces ----------------------------------------------------------------------------------------


def _request(call: CallState, rule: ToolRules, *, attempt: int, at: datetime) -> ToolCallRequested:
    return ToolCallRequested(
        run_id=call.run_id, call_id=call.call_id, step=call.step, tool_name=call.tool_name, arguments=call.arguments,
        attempt=attempt, idempotency_key=f"{call.run_id}:{call.call_id}", timeout_s=rule.timeout_s, requested_at=at,
        idempotent=rule.idempotent,
    )


def _finish(call: CallState, status: str, result: str, *, at: datetime) -> ToolCallFinished:
    return ToolCallFinished(
        run_id=call.run_id, call_id=call.call_id, step=call.step, tool_name=call.tool_name, status=status, result=result,
        attempt=call.attempt, finished_at=at,
    )


def _update(state: LoopState, call_id: str, **changes: Any) -> LoopState:
    call = state.calls.get(call_id)
    if call is None:
        return state
    return replace(state, calls={**state.calls, call_id: replace(call, **changes)})


def _deadline(state: LoopState, budget: LoopBudget) -> datetime:
    assert state.started_at is not None
    return state.started_at + timedelta(seconds=budget.wall_clock_s)


def _fingerprint(name: str, arguments: str) -> str:
    try:
        canonical = json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError:
        canonical = arguments
    return f"{name}\x00{canonical}"
