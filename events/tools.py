"""Events of a run's tool loop (topic `run-events`, keyed by run id, so one run's calls stay ordered).

A model step that ends asking for tools is `ToolCallsProposed`; the tool loop answers each call with
a `ToolCallRequested` (to run), a `ToolApprovalRequested` (to wait for the owner), or at once a
`ToolCallFinished` (not allowed, invalid arguments, over budget, a repeat); runners report
`ToolCallStarted` and `ToolCallFinished`; once every call of the step is finished, `ToolStepCompleted`
hands the results to the prompt builder for the run's next model step.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from events.values import Source, ToolCallProposal, ToolCallSummary

# How a call ended; the model sees the status with the result, the client in `tool.result`.
TOOL_CALL_STATUSES = (
    "completed",  # the tool answered
    "failed",  # the tool answered with an error, or kept failing
    "timed_out",  # no answer within the call's timeout: abandoned and cancelled at the tool
    "invalid_arguments",  # not JSON, or not what the tool's schema accepts: never executed
    "not_allowed",  # unknown, not offered to this run, or not allowed for this user: never executed
    "declined",  # its owner declined it, or did not answer in time
    "budget_exhausted",  # the run had used its tool calls or its time
    "cancelled",  # the run was cancelled
    "unknown_outcome",  # a runner died mid-call and the tool is not idempotent: not retried
    "unavailable",  # its server is down or its breaker is open
)


@dataclass(frozen=True, kw_only=True)
class ToolCallsProposed:
    """A model step ended asking for tool calls (the inference worker; the step's engine slot is free)."""

    run_id: str
    conversation_id: str
    step: int
    text: str  # what the model said before its calls
    calls: tuple[ToolCallProposal, ...]
    proposed_at: datetime
    topic: str  # the inference topic the step came from: the next step queues there too
    offered: tuple[str, ...] | None = None  # the tools offered to the step (None: written before this was kept)


@dataclass(frozen=True, kw_only=True)
class ToolCallRequested:
    """A call that passed policy, arguments and budget: a runner may execute it (again, on `attempt` > 1)."""

    run_id: str
    call_id: str
    step: int
    tool_name: str
    arguments: str  # JSON, validated against the tool's schema
    attempt: int
    idempotency_key: str  # `<runId>:<callId>`: a retried call reaches the tool with the same key
    timeout_s: float
    requested_at: datetime
    idempotent: bool = False  # the tool says a repeat with the same key has no second effect: retry freely


@dataclass(frozen=True, kw_only=True)
class ToolApprovalRequested:
    """A call that waits for its run's owner to approve it (the stream shows `tool.approval_required`)."""

    run_id: str
    call_id: str
    step: int
    tool_name: str
    arguments: str
    expires_at: datetime  # no answer by then is a decline


@dataclass(frozen=True, kw_only=True)
class ToolApprovalDecided:
    """The owner's answer to an approval (or the loop's, when it expired)."""

    run_id: str
    call_id: str
    approved: bool
    reason: str = ""
    decided_by: str  # a user id, or "timeout"
    decided_at: datetime


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted:
    """A runner took the call; without a finish within its lease, another runner may take it over."""

    run_id: str
    call_id: str
    attempt: int
    runner_id: str
    started_at: datetime


@dataclass(frozen=True, kw_only=True)
class ToolCallFinished:
    """How a call ended, with its result as the model will see it (capped; the whole result in the blob store)."""

    run_id: str
    call_id: str
    step: int
    tool_name: str
    status: str  # one of TOOL_CALL_STATUSES
    result: str
    attempt: int = 0  # 0: never executed
    duration_ms: int = 0
    idempotency_key: str = ""
    result_truncated: bool = False
    result_blob: str | None = None  # the SHA-256 digest of the whole result, when it was cut
    finished_at: datetime
    runner_id: str = ""  # the runner that executed it; empty when the loop ended it without running it
    sources: tuple[Source, ...] = ()  # passages the result holds (file_search): the next step numbers them for citing
    # What the call used, where the tool measures it (code_interpreter): recorded for review and analysts.
    cpu_ms: int | None = None
    memory_bytes: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class ToolStepCompleted:
    """Every call of a step has finished: the prompt builder assembles the next step, without tools when `final`."""

    run_id: str
    conversation_id: str
    step: int
    final: bool  # a budget ran out: the model is asked for its answer with what it has
    reason: str = ""
    completed_at: datetime


@dataclass(frozen=True, kw_only=True)
class ToolLoopTicked:
    """Time passed for a run waiting on tools: the loop ends what expired (in log order, so a replay agrees)."""

    run_id: str
    now: datetime


TOOL_EVENT_TYPES = (
    ToolCallsProposed,
    ToolCallRequested,
    ToolApprovalRequested,
    ToolApprovalDecided,
    ToolCallStarted,
    ToolCallFinished,
    ToolStepCompleted,
    ToolLoopTicked,
)


def call_summaries(events: Iterable[object]) -> tuple[ToolCallSummary, ...]:
    """The calls a run's events show, in the order they were proposed: each call's first finish is its outcome."""
    calls: dict[str, ToolCallSummary] = {}
    for event in events:
        match event:
            case ToolCallsProposed():
                for call in event.calls:
                    calls.setdefault(call.call_id, ToolCallSummary(call_id=call.call_id, tool_name=call.name, status="proposed"))
            case ToolCallRequested() if event.call_id in calls and calls[event.call_id].status not in TOOL_CALL_STATUSES:
                calls[event.call_id] = replace(calls[event.call_id], status="requested", attempts=event.attempt)
            case ToolCallFinished() if event.call_id in calls and calls[event.call_id].status not in TOOL_CALL_STATUSES:
                calls[event.call_id] = replace(
                    calls[event.call_id], status=event.status, attempts=event.attempt, duration_ms=event.duration_ms
                )
    return tuple(calls.values())
