"""The facade's Responses API objects and stream events, in OpenAI's shapes (api/openai/response_objects.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import OpenAIModel


class OutputText(OpenAIModel):
    type: Literal["output_text"]
    text: str
    annotations: list[dict]
    logprobs: list[dict]


class OutputMessage(OpenAIModel):
    type: Literal["message"]
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText]


class ResponseError(OpenAIModel):
    code: str
    message: str


class IncompleteDetails(OpenAIModel):
    reason: str


class InputTokensDetails(OpenAIModel):
    cached_tokens: int


class OutputTokensDetails(OpenAIModel):
    reasoning_tokens: int


class ResponseUsage(OpenAIModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class Reasoning(OpenAIModel):
    effort: None
    summary: None


class TextFormat(OpenAIModel):
    type: Literal["text"]


class TextConfig(OpenAIModel):
    format: TextFormat


class ResponseObject(OpenAIModel):
    """A response (`object: "response"`): its id is the turnlog run id."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
    background: bool
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: None
    model: str
    output: list[OutputMessage]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: Reasoning
    store: bool
    temperature: None
    text: TextConfig
    tool_choice: Literal["none"]
    tools: list[dict]
    top_p: None
    truncation: Literal["disabled"]
    usage: ResponseUsage | None
    metadata: dict[str, str]


class ResponseLifecycleEvent(OpenAIModel):
    """`response.created`, `response.in_progress`, and the last: `response.completed`, `response.failed` or
    `response.incomplete` (also for a cancelled response)."""

    type: Literal["response.created", "response.in_progress", "response.completed", "response.failed", "response.incomplete"]
    sequence_number: int = Field(description="from 0, in log order: the same on every replay (`starting_after`)")
    response: ResponseObject


class OutputItemEvent(OpenAIModel):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputMessage


class ContentPartEvent(OpenAIModel):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDeltaEvent(OpenAIModel):
    type: Literal["response.output_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict]


class OutputTextDoneEvent(OpenAIModel):
    type: Literal["response.output_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict]


RESPONSE_STREAM_EVENTS = (
    ResponseLifecycleEvent, OutputItemEvent, ContentPartEvent, OutputTextDeltaEvent, OutputTextDoneEvent,
)
