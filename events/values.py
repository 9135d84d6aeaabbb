"""Value types shared by events and commands (each is an Avro record of the same name)."""

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ContentPart:
    type: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class ToolCallProposal:
    """A tool call a model step proposed; `arguments` is JSON text as the model wrote it, never trusted."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class ToolCallSummary:
    """A call a run made, as its assistant turn lists it (`attempts` 0: never executed)."""

    call_id: str
    tool_name: str
    status: str
    attempts: int = 0
    duration_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool offered to the model; `parameters` is the JSON Schema of its arguments, as JSON text."""

    name: str
    description: str
    parameters: str


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of a prompt: `system`, `user`, `assistant` (with the calls it proposed) or `tool` (a call's result)."""

    role: str
    content: str
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCallProposal, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Source:
    """A retrieved passage given to the model as `[marker]`."""

    marker: int
    file_id: str
    chunk_id: str
    title: str
    location: str  # "page 3", a heading, or ""
    text: str


@dataclass(frozen=True, kw_only=True)
class Citation:
    """A source the answer cites by its marker, with a quote of the passage."""

    marker: int
    file_id: str
    chunk_id: str
    title: str
    location: str
    quote: str


@dataclass(frozen=True, kw_only=True)
class SummaryFact:
    """One line of a rolling summary: a statement and the turn it came from."""

    turn_seq: int
    text: str


def text_of(content: tuple[ContentPart, ...]) -> str:
    """The plain text of a turn's content parts."""
    return "\n".join(part.text for part in content if part.type == "text")
