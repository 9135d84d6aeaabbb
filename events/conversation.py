"""Events of the durable conversation history (topic `conversation-events`, keyed by conversation id)."""

from dataclasses import dataclass
from datetime import datetime

from events.values import Citation, ContentPart, Source, SummaryFact, ToolCallSummary, Usage


@dataclass(frozen=True, kw_only=True)
class ConversationCreated:
    conversation_id: str
    workspace_id: str
    owner_id: str
    title: str | None = None
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ConversationRenamed:
    """The owner gave the conversation a new title; it carries `created_at` so its read-model row is whole."""

    conversation_id: str
    title: str | None = None
    created_at: datetime
    renamed_at: datetime


@dataclass(frozen=True, kw_only=True)
class TurnSubmitted:
    conversation_id: str
    turn_seq: int
    parent_turn_seq: int | None = None
    content: tuple[ContentPart, ...]
    attachments: tuple[str, ...] = ()
    submitted_at: datetime


@dataclass(frozen=True, kw_only=True)
class RunRequested:
    conversation_id: str
    run_id: str
    turn_seq: int
    parent_turn_seq: int
    mode: str
    tool_mode: str = "auto"
    tools: tuple[str, ...] | None = None  # the turn narrowed the run to these tools (None: all the owner may use)
    idempotency_key: str | None = None
    request_fingerprint: str
    created_turn_seq: int
    requested_at: datetime


@dataclass(frozen=True, kw_only=True)
class AssistantTurnFinished:
    conversation_id: str
    run_id: str
    turn_seq: int
    parent_turn_seq: int
    state: str
    content: tuple[ContentPart, ...]
    reason: str = ""
    usage: Usage
    mode: str
    requested_at: datetime
    finished_at: datetime
    sources: tuple[Source, ...] = ()
    citations: tuple[Citation, ...] = ()
    tool_calls: tuple[ToolCallSummary, ...] = ()  # the calls the run made, in the order proposed


@dataclass(frozen=True, kw_only=True)
class RunCancellationRequested:
    """The owner asked to stop a run; workers listen for it, and the run ends as cancelled."""

    conversation_id: str
    run_id: str


CONVERSATION_EVENT_TYPES = (
    ConversationCreated,
    ConversationRenamed,
    TurnSubmitted,
    RunRequested,
    RunCancellationRequested,
    AssistantTurnFinished,
)


@dataclass(frozen=True, kw_only=True)
class ConversationSummarized:
    """A rolling summary of a conversation's older turns (topic `conversation-summaries`).

    Derived state, not history: the summarizer rebuilds it from `conversation-events`, and a
    prompt may lag it. `through_turn_seq` is the newest turn it covers.
    """

    conversation_id: str
    version: int
    through_turn_seq: int
    facts: tuple[SummaryFact, ...]
    summarized_at: datetime

