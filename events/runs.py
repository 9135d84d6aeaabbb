"""Events of a run's life outside the durable history: its stream, its control and its inference request."""

from dataclasses import dataclass
from datetime import datetime

from events.values import ChatMessage, Source, ToolSpec, Usage


@dataclass(frozen=True, kw_only=True)
class RunStarted:
    run_id: str
    conversation_id: str
    turn_seq: int


@dataclass(frozen=True, kw_only=True)
class GenerationStarted:
    run_id: str
    worker_id: str
    pool: str
    step: int = 1  # a run with tool calls is claimed once per model step
    model: str = ""  # what served it: analysts compare models, and a pool's model can change


@dataclass(frozen=True, kw_only=True)
class AssistantDelta:
    run_id: str
    index: int
    text: str


@dataclass(frozen=True, kw_only=True)
class RunHeartbeat:
    run_id: str
    worker_id: str


@dataclass(frozen=True, kw_only=True)
class RunBackgrounded:
    """The run became long work: it goes on without a client (the stream says `run.backgrounded`, GET follows it)."""

    run_id: str
    reason: str  # e.g. a long tool was called, or its tools outgrew the interactive time
    at: datetime


@dataclass(frozen=True, kw_only=True)
class RunFinished:
    run_id: str
    conversation_id: str
    turn_seq: int
    status: str
    reason: str = ""
    usage: Usage
    # The stored answer when it is not what the deltas streamed (a safety stage refused, redacted, replaced or
    # stopped it): a client replaces the streamed text with it. None: the deltas are the answer.
    text: str | None = None


@dataclass(frozen=True, kw_only=True)
class UsageRecorded:
    """What one run consumed, for the usage ledger (topic `usage`; the envelope's actor is who pays)."""

    run_id: str
    conversation_id: str
    pool: str
    engine: str
    status: str
    prompt_tokens: int
    cached_tokens: int = 0
    output_tokens: int
    recorded_at: datetime
    engine_unavailable: bool = False  # the engine was unreachable or broke off: counts against the pool's breaker


@dataclass(frozen=True, kw_only=True)
class PromptAssembled:
    """A run's prompt manifest: which turns, summary and passages went in, and their token counts.

    With the log, it is enough to rebuild the prompt exactly and to explain any answer.
    """

    run_id: str
    conversation_id: str
    pool: str
    tokenizer: str
    budget_tokens: int
    prompt_tokens: int  # everything the model reads: the messages and the tools' definitions
    tool_tokens: int = 0  # the offered tools' definitions
    system_tokens: int
    summary_version: int | None = None
    summary_through_turn_seq: int | None = None
    summary_tokens: int = 0
    turn_seqs: tuple[int, ...]
    history_tokens: int
    chunk_ids: tuple[str, ...]
    source_tokens: int = 0
    question_tokens: int
    tenant_salt: str = ""
    size_class: str = ""  # short | long: the queue the run waited in
    fallback_from: str | None = None  # the preferred pool, when its breaker was open
    route_reason: str = ""  # why the router chose `pool`
    # The context safety stage: passages wrapped as untrusted data, and passages left out (not in `chunk_ids`).
    fenced_chunk_ids: tuple[str, ...] = ()
    dropped_chunk_ids: tuple[str, ...] = ()
    redacted_turn_seqs: tuple[int, ...] = ()  # user turns that went in redacted by the input safety stage


@dataclass(frozen=True, kw_only=True)
class ToolCalled:
    """A tool call began inside the run (the client sees `tool.call`)."""

    run_id: str
    call_id: str
    tool_name: str
    arguments: str  # JSON


@dataclass(frozen=True, kw_only=True)
class ToolReturned:
    """A tool call ended (the client sees `tool.result`)."""

    run_id: str
    call_id: str
    tool_name: str
    status: str  # completed | failed
    summary: str = ""


@dataclass(frozen=True, kw_only=True)
class InferenceRequested:
    run_id: str
    conversation_id: str
    turn_seq: int
    pool: str
    messages: tuple[ChatMessage, ...]
    max_output_tokens: int
    sources: tuple[Source, ...] = ()
    tools: tuple[ToolSpec, ...] = ()  # what the model may call in this step; none: it answers
    step: int = 1  # the run's model step: one more after each round of tool calls


RUN_EVENT_TYPES = (
    RunStarted, GenerationStarted, AssistantDelta, RunHeartbeat, RunFinished, ToolCalled, ToolReturned, PromptAssembled,
    RunBackgrounded,
)
TERMINAL_RUN_STATUSES = frozenset({"completed", "cancelled", "failed"})
