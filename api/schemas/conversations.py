"""Conversations and their turns, and the 202 that starts a run."""

from __future__ import annotations

from pydantic import Field

from api.schemas.base import Instant, ResponseModel
from projections.read_models import TurnRole, TurnState


class ConversationCreated(ResponseModel):
    """`POST /v1/conversations` (201)."""

    conversation_id: str
    created_at: Instant


class Conversation(ResponseModel):
    conversation_id: str
    workspace_id: str
    title: str | None
    created_at: Instant
    latest_turn_seq: int | None = Field(default=None, description="`GET /v1/conversations/{id}` only: its newest turn")


class ConversationPage(ResponseModel):
    """`GET /v1/conversations`, newest first; `nextBefore` asks for the next page."""

    conversations: list[Conversation]
    next_before: str | None


class ContentPart(ResponseModel):
    type: str = Field(description="`text` (the only kind so far)")
    text: str


class Citation(ResponseModel):
    """A passage the answer cites as `[marker]`, with a quote of it."""

    marker: int
    source_id: str = Field(description="the cited file's id")
    chunk_id: str
    title: str
    location: str = Field(description="`page 3`, a heading, or empty")
    quote: str


class Source(ResponseModel):
    """A passage the model was given as `[marker]`."""

    marker: int
    source_id: str
    chunk_id: str
    title: str
    location: str


class ToolCallSummary(ResponseModel):
    """A tool call a run made (`attempts` 0: never executed)."""

    call_id: str
    tool_name: str
    status: str
    attempts: int
    duration_ms: int


class Turn(ResponseModel):
    turn_seq: int
    role: TurnRole
    state: TurnState
    content: list[ContentPart]
    parent_turn_seq: int | None
    run_id: str | None
    citations: list[Citation]
    sources: list[Source]
    created_at: Instant
    tool_calls: list[ToolCallSummary] | None = Field(default=None, description="assistant turns only")
    reason: str | None = Field(default=None, description="why a turn was cancelled, failed or changed, when it was")


class TurnPage(ResponseModel):
    """`GET /v1/conversations/{id}/turns`, oldest first; `nextAfterSeq` asks for the next page."""

    turns: list[Turn]
    next_after_seq: int | None


class RunAccepted(ResponseModel):
    """`POST .../turns` and `POST .../regenerate` (202): the run to follow, and where its stream is."""

    run_id: str
    turn_seq: int
    stream_url: str
