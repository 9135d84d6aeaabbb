"""An assistant turn lists the calls its run made: `call_summaries` folds them from the run's events."""

from datetime import UTC, datetime

from events.tools import ToolCallFinished, ToolCallRequested, ToolCallsProposed, call_summaries
from events.values import ToolCallProposal, ToolCallSummary

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def proposed(*names: str, step: int = 1) -> ToolCallsProposed:
    calls = tuple(ToolCallProposal(call_id=f"c{step}{i}", name=name, arguments="{}") for i, name in enumerate(names))
    return ToolCallsProposed(run_id="r", conversation_id="c", step=step, text="", calls=calls, proposed_at=NOW, topic="t")


def requested(call_id: str, attempt: int) -> ToolCallRequested:
    return ToolCallRequested(
        run_id="r", call_id=call_id, step=1, tool_name="x", arguments="{}", attempt=attempt,
        idempotency_key=f"r:{call_id}", timeout_s=1, requested_at=NOW,
    )


def finished(call_id: str, status: str, attempt: int = 1, duration_ms: int = 5) -> ToolCallFinished:
    return ToolCallFinished(
        run_id="r", call_id=call_id, step=1, tool_name="x", status=status, result="", attempt=attempt,
        duration_ms=duration_ms, finished_at=NOW,
    )


def test_calls_are_listed_in_proposal_order_with_their_first_outcome() -> None:
    events = [
        proposed("search", "add"),
        requested("c10", 1), requested("c11", 1),
        finished("c11", "completed", duration_ms=7),
        requested("c10", 2),  # its runner vanished: asked again
        finished("c10", "completed", attempt=2, duration_ms=30),
        finished("c10", "failed", attempt=1),  # the first runner's late report loses
        proposed("add", step=2),
        finished("c20", "not_allowed", attempt=0, duration_ms=0),
    ]

    assert call_summaries(events) == (
        ToolCallSummary(call_id="c10", tool_name="search", status="completed", attempts=2, duration_ms=30),
        ToolCallSummary(call_id="c11", tool_name="add", status="completed", attempts=1, duration_ms=7),
        ToolCallSummary(call_id="c20", tool_name="add", status="not_allowed", attempts=0, duration_ms=0),
    )


def test_a_run_without_calls_lists_none() -> None:
    assert call_summaries([]) == ()
