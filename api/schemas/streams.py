"""The events of a run's stream (`GET /v1/runs/{runId}/stream`, `text/event-stream`): each SSE `event:` names one
of these, its `data:` is the JSON object, its `id:` the event's number in the run's stream (1, 2, ...) to resume
after (`Last-Event-ID`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import Instant, ResponseModel
from api.schemas.runs import TokenUsage


class RunStartedEvent(ResponseModel):
    """`run.started`: the first event."""

    type: Literal["run.started"]
    run_id: str
    turn_seq: int


class AssistantDeltaEvent(ResponseModel):
    """`assistant.delta`: more of the answer (provisional until the terminal event)."""

    type: Literal["assistant.delta"]
    run_id: str
    text: str


class ToolCallEvent(ResponseModel):
    """`tool.call`: the model called a tool."""

    type: Literal["tool.call"]
    run_id: str
    tool_name: str
    call_id: str
    arguments: str | None = Field(default=None, description="the arguments as the model wrote them, shortened")


class ToolResultEvent(ResponseModel):
    """`tool.result`: a call ended."""

    type: Literal["tool.result"]
    run_id: str
    call_id: str
    status: str
    tool_name: str | None = None
    duration_ms: int | None = None
    summary: str | None = None


class ToolApprovalRequiredEvent(ResponseModel):
    """`tool.approval_required`: a call waits for its owner at `POST .../tool-calls/{callId}/approval`."""

    type: Literal["tool.approval_required"]
    run_id: str
    call_id: str
    tool_name: str
    arguments: str
    expires_at: Instant


class RunBackgroundedEvent(ResponseModel):
    """`run.backgrounded`: the run became long work; follow it at `GET /v1/runs/{runId}`."""

    type: Literal["run.backgrounded"]
    run_id: str
    reason: str


class SafetyStoppedEvent(ResponseModel):
    """`safety.stopped`: a safety stage stopped the answer; the terminal event that follows carries the stored text."""

    type: Literal["safety.stopped"]
    run_id: str
    stage: str
    reason: str


class RunEndedEvent(ResponseModel):
    """The last event: `assistant.completed`, `run.cancelled` or `run.failed`. With `replaced: true`, `text` is the
    stored answer, to show instead of the deltas (a safety stage changed it)."""

    type: Literal["assistant.completed", "run.cancelled", "run.failed"]
    run_id: str
    turn_seq: int
    usage: TokenUsage
    reason: str | None = None
    replaced: bool | None = None
    text: str | None = None


RUN_STREAM_EVENTS = (
    RunStartedEvent, AssistantDeltaEvent, ToolCallEvent, ToolResultEvent, ToolApprovalRequiredEvent,
    RunBackgroundedEvent, SafetyStoppedEvent, RunEndedEvent,
)
