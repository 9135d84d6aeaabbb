"""The inference engine port: chat messages (and the tools on offer) in, text pieces, usage and proposed tool calls out."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from events.values import ChatMessage, ToolCallProposal, ToolSpec

# "tool_calls": the step ended by proposing calls (GenerationFinished.tool_calls), for the caller to run.
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    request_id: str  # the run id; engines that support abort use it
    messages: tuple[ChatMessage, ...]
    max_output_tokens: int
    # What the model may call in this step. An engine without tool support ignores them and answers.
    tools: tuple[ToolSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be >= 1, got {self.max_output_tokens}")
        if not self.messages:
            raise ValueError("a generation request needs at least one message")


@dataclass(frozen=True, kw_only=True)
class TokenText:
    text: str  # one decoded piece of output (one token or a few)


@dataclass(frozen=True, kw_only=True)
class GenerationFinished:
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    cached_tokens: int = 0  # prompt tokens the engine served from its prefix cache, where it says
    # The calls the step proposed, in order: present exactly when finish_reason is "tool_calls".
    tool_calls: tuple[ToolCallProposal, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.tool_calls) != (self.finish_reason == "tool_calls"):
            raise ValueError(
                f"finish_reason {self.finish_reason!r} with {len(self.tool_calls)} tool call(s): "
                "calls come exactly with finish_reason 'tool_calls'"
            )


GenerationEvent = TokenText | GenerationFinished


def derived_call_id(request: GenerationRequest, index: int) -> str:
    """An id for the `index`th call a step proposed without one: the same on a retry, new in each step of a run."""
    # A run's steps share its request id; each later step's prompt holds more messages.
    seed = f"{request.request_id}\x1f{len(request.messages)}\x1f{index}"
    return "call_" + hashlib.blake2b(seed.encode(), digest_size=12).hexdigest()


class PromptTooLong(ValueError):
    """The prompt alone does not fit in the engine's context window."""

    def __init__(self, *, prompt_tokens: int, context_tokens: int) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens; the context window holds {context_tokens}"
        )
        self.prompt_tokens = prompt_tokens
        self.context_tokens = context_tokens


class EngineUnavailable(RuntimeError):
    """The engine could not serve the request now (down, overloaded, timed out, cut off mid-stream).

    Worth retrying later or elsewhere; what a circuit breaker counts. `status_code` is the HTTP
    status where a server answered one.
    """

    def __init__(self, *, engine: str, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{engine} engine unavailable: {reason}")
        self.engine = engine
        self.reason = reason
        self.status_code = status_code


class EngineRejected(ValueError):
    """The engine refused this request itself (bad parameters, unknown model): a retry fails the same way."""

    def __init__(self, *, engine: str, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{engine} engine rejected the request: {reason}")
        self.engine = engine
        self.reason = reason
        self.status_code = status_code


class InferenceEngine(Protocol):
    """Turns a chat into a stream of text pieces that ends with exactly one GenerationFinished.

    Given tools, an engine that supports them may end the step with finish_reason "tool_calls" and
    the proposed calls on the GenerationFinished (text before the calls still streams as pieces); it
    never runs a call itself. An engine without tool support ignores the tools and answers in text.
    A step cut short ("length", "cancelled") proposes nothing, even if it had begun a call.

    When the consumer stops early (``aclose()`` on the iterator, or cancelling the task awaiting
    it) the engine stops generating and frees its concurrency slot.
    """

    name: str
    max_concurrency: int  # how many generations the engine runs at once

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]: ...


@runtime_checkable
class AbortableEngine(InferenceEngine, Protocol):
    """An engine that can end an in-flight generation by request id, from outside its stream.

    The aborted stream still ends with a GenerationFinished whose finish_reason is "cancelled",
    so the consumer can record partial usage.
    """

    def abort(self, request_id: str) -> bool: ...
