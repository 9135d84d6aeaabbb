"""The facade's Chat Completions objects, in OpenAI's shapes (api/openai/completions.py builds them)."""

from __future__ import annotations

from typing import Literal

from api.schemas.base import OpenAIModel


class PromptTokensDetails(OpenAIModel):
    cached_tokens: int


class CompletionUsage(OpenAIModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ChatMessageOut(OpenAIModel):
    role: Literal["assistant"]
    content: str
    refusal: None


class ChatChoice(OpenAIModel):
    index: int
    message: ChatMessageOut
    logprobs: None
    finish_reason: Literal["stop", "content_filter"]


class ChatCompletion(OpenAIModel):
    """`POST /chat/completions` without `stream`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChunkDelta(OpenAIModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(OpenAIModel):
    index: int
    delta: ChunkDelta
    logprobs: None
    finish_reason: Literal["stop", "content_filter"] | None


class ChatCompletionChunk(OpenAIModel):
    """One `data:` line of a streamed completion (the stream ends with `data: [DONE]`). With
    `stream_options.include_usage`, every chunk carries `usage: null` but the last, which has no choices."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
