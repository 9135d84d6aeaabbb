"""Commands: imperative requests to change a conversation (topic `commands`, keyed by conversation id)."""

from dataclasses import dataclass

from events.values import Citation, ContentPart, Source, ToolCallSummary, Usage


@dataclass(frozen=True, kw_only=True)
class CreateConversation:
    conversation_id: str
    workspace_id: str
    title: str | None = None


@dataclass(frozen=True, kw_only=True)
class RenameConversation:
    conversation_id: str
    title: str | None = None  # None: untitled


@dataclass(frozen=True, kw_only=True)
class SubmitTurn:
    conversation_id: str
    run_id: str
    content: tuple[ContentPart, ...]
    attachments: tuple[str, ...] = ()
    tool_mode: str = "auto"
    tools: tuple[str, ...] | None = None  # narrowed to these tools (None: all the owner may use)
    response_mode: str = "stream"
    idempotency_key: str | None = None
    request_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class RegenerateTurn:
    conversation_id: str
    run_id: str
    response_mode: str = "stream"
    idempotency_key: str | None = None
    request_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class CancelRun:
    conversation_id: str
    run_id: str


@dataclass(frozen=True, kw_only=True)
class FinishRun:
    conversation_id: str
    run_id: str
    status: str
    text: str
    reason: str = ""
    usage: Usage
    sources: tuple[Source, ...] = ()
    citations: tuple[Citation, ...] = ()
    tool_calls: tuple[ToolCallSummary, ...] = ()  # the calls the run made, in the order proposed
    # The text is not what the deltas streamed (a safety stage refused, redacted, replaced or stopped the answer).
    stream_replaced: bool = False


Command = CreateConversation | RenameConversation | SubmitTurn | RegenerateTurn | CancelRun | FinishRun
COMMAND_TYPES: tuple[type, ...] = (
    CreateConversation, RenameConversation, SubmitTurn, RegenerateTurn, CancelRun, FinishRun,
)
# The commands that carry content: sealed on the log like the events they become (events/sealed_content.py).
SEALED_COMMAND_TYPES: tuple[type, ...] = (CreateConversation, RenameConversation, SubmitTurn, FinishRun)
