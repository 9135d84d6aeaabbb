"""A run: its status and usage, what it has done so far or its answer, and the 202s that act on it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import Instant, ResponseModel
from api.schemas.conversations import Citation, ContentPart

RunStatus = Literal["in_progress", "completed", "cancelled", "failed"]


class TokenUsage(ResponseModel):
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


class RunProgress(ResponseModel):
    """While it runs: what it has streamed so far."""

    deltas: int
    characters: int
    tool_calls: int


class RunRoute(ResponseModel):
    """Where the router sent the run (docs/routing.md)."""

    pool: str | None
    size_class: str | None
    fallback_from: str | None
    reason: str
    prompt_tokens: int
    tool_tokens: int


class RunPrompt(ResponseModel):
    """What went into the prompt: passages, and what the safety stages fenced, dropped or redacted."""

    chunk_ids: list[str]
    fenced_chunk_ids: list[str]
    dropped_chunk_ids: list[str]
    redacted_turn_seqs: list[int]


class RunToolCall(ResponseModel):
    call_id: str
    tool_name: str
    step: int
    status: str
    attempts: int
    duration_ms: int | None


class RunResult(ResponseModel):
    """Once it has ended: the assistant turn it produced."""

    turn_seq: int
    content: list[ContentPart]
    citations: list[Citation]


class Run(ResponseModel):
    """`GET /v1/runs/{runId}`."""

    run_id: str
    status: RunStatus
    mode: Literal["interactive", "background"] = Field(description="`background`: started so, or moved there by long tool work")
    conversation_id: str
    turn_seq: int
    usage: TokenUsage
    created_at: Instant
    finished_at: Instant | None
    reason: str | None = None
    backgrounded_reason: str | None = Field(default=None, description="why it moved to the background, if it did")
    route: RunRoute | None = None
    prompt: RunPrompt | None = None
    tool_calls: list[RunToolCall] | None = None
    progress: RunProgress | None = Field(default=None, description="while it is in progress")
    result: RunResult | None = Field(default=None, description="once it has ended")


class RunCancelling(ResponseModel):
    """`POST /v1/runs/{runId}/cancel` (202): the run stops; its stream ends with `run.cancelled`."""

    run_id: str
    status: Literal["cancelling"]


class ToolApprovalAccepted(ResponseModel):
    """`POST /v1/runs/{runId}/tool-calls/{callId}/approval` (202)."""

    run_id: str
    call_id: str
    approved: bool
