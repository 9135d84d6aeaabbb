"""An engine behind any server that streams OpenAI's `/v1/chat/completions` (SGLang, vLLM, llama.cpp).

One POST per generation with `stream: true` and `stream_options.include_usage`; the answer comes
back as server-sent events, `data: {chat.completion.chunk}` lines up to `data: [DONE]`: first a
chunk whose delta is the assistant role, then content deltas, a chunk with the `finish_reason`, and
last a usage chunk whose `choices` is empty. `continuous_usage_stats` (SGLang and vLLM) puts usage on
every chunk too, so a run cut short still reports what it spent.

Cancellation is the client hanging up: closing the response closes its connection, and these
servers stop generating a request whose client disconnected. `abort(request_id)` does that from
outside the stream, at once, even while the server is still silent in prefill.

Errors are typed for the worker and a future circuit breaker: timeouts, refused or dropped
connections, 408/429/5xx and a stream cut off before its end are `EngineUnavailable`; a 400 about
the context window is `PromptTooLong` (or, when only the answer does not fit, one retry with the
room that is left); any other 4xx is `EngineRejected`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from kernel.sse import iter_sse
from inference.engine import (
    ChatMessage,
    EngineRejected,
    EngineUnavailable,
    FinishReason,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    PromptTooLong,
    TokenText,
)

ENGINE_NAME = "openai-compatible"

# How servers word "this does not fit the context window" (SGLang, vLLM, llama.cpp, OpenAI).
_CONTEXT_TOKENS = (
    re.compile(r"maximum context length (?:is |of )?(\d+)"),
    re.compile(r"model's context length \((\d+) tokens\)"),
    re.compile(r"context (?:size|window) (?:is |of )?(\d+)"),
)
_PROMPT_TOKENS = (
    re.compile(r"input \((\d+) tokens\)"),
    re.compile(r"(\d+) tokens from the input"),
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"request has (\d+) input tokens"),
)
_CONTEXT_WORDS = ("context length", "context size", "context window")


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @classmethod
    def parse(cls, usage: Mapping[str, Any]) -> Usage:
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )


@dataclass(frozen=True, kw_only=True)
class ChunkDelta:
    """What one `chat.completion.chunk` says: new text, a finish reason, usage (each optional)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None

    @classmethod
    def parse(cls, chunk: Mapping[str, Any]) -> ChunkDelta:
        text, finish_reason = "", None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for
            text = (choice.get("delta") or {}).get("content") or ""
            finish_reason = choice.get("finish_reason")
        usage = chunk.get("usage")
        return cls(text=text, finish_reason=finish_reason, usage=Usage.parse(usage) if usage else None)


@dataclass(frozen=True)
class StreamEnded:
    """`data: [DONE]` (`done=True`), or the response body ended without it."""

    done: bool


async def completion_chunks(lines: AsyncIterator[str]) -> AsyncIterator[ChunkDelta | StreamEnded]:
    """The chunks of one streamed chat completion, from the lines of its body; ends with StreamEnded."""
    async for event in iter_sse(lines):
        if event.data == "[DONE]":
            yield StreamEnded(done=True)
            return
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise EngineUnavailable(engine=ENGINE_NAME, reason=f"undecodable chunk {event.data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise EngineUnavailable(engine=ENGINE_NAME, reason=f"unexpected chunk {event.data[:200]!r}")
        if "error" in chunk or chunk.get("object") == "error":
            # A failure after the stream began (SGLang and vLLM send it as a data line, then [DONE]).
            error = error_from_body(chunk, status_code=None)
            if isinstance(error, _RoomForFewerTokens):
                error = EngineRejected(engine=ENGINE_NAME, reason=str(error), status_code=400)
            raise error
        yield ChunkDelta.parse(chunk)
    yield StreamEnded(done=False)


class _RoomForFewerTokens(Exception):
    """The prompt fits, but not with max_tokens more: the server said how much room is left."""

    def __init__(self, *, prompt_tokens: int, context_tokens: int) -> None:
        super().__init__(f"{prompt_tokens} prompt tokens leave {context_tokens - prompt_tokens} in the context window")
        self.prompt_tokens = prompt_tokens
        self.context_tokens = context_tokens


def error_from_body(body: Any, *, status_code: int | None) -> Exception:
    """The typed error for a server's error answer (`{"error": {...}}`, or flat as older servers send)."""
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
    if not isinstance(error, dict):
        error = {"message": str(body)}
    message = str(error.get("message") or body)
    if status_code is None:
        code = error.get("code")
        status_code = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else None
    if status_code in (400, 413, 422) or status_code is None:
        overflow = _context_overflow(message, error)
        if overflow is not None:
            return overflow
    if status_code is not None and 400 <= status_code < 500 and status_code not in (408, 429):
        return EngineRejected(engine=ENGINE_NAME, reason=message, status_code=status_code)
    return EngineUnavailable(engine=ENGINE_NAME, reason=message, status_code=status_code)


def _context_overflow(message: str, error: Mapping[str, Any]) -> Exception | None:
    lowered = message.lower()
    if error.get("type") != "exceed_context_size_error" and not any(words in lowered for words in _CONTEXT_WORDS):
        return None
    # llama.cpp names the numbers as fields; the others only in the message.
    context_tokens = _first_number(_CONTEXT_TOKENS, message, error.get("n_ctx"))
    prompt_tokens = _first_number(_PROMPT_TOKENS, message, error.get("n_prompt_tokens"))
    if context_tokens is None or prompt_tokens is None:
        return EngineRejected(engine=ENGINE_NAME, reason=message, status_code=400)
    if prompt_tokens >= context_tokens:
        return PromptTooLong(prompt_tokens=prompt_tokens, context_tokens=context_tokens)
    return _RoomForFewerTokens(prompt_tokens=prompt_tokens, context_tokens=context_tokens)


def _first_number(patterns: tuple[re.Pattern[str], ...], message: str, field_value: Any) -> int | None:
    if isinstance(field_value, int):
        return field_value
    for pattern in patterns:
        if match := pattern.search(message):
            return int(match[1])
    return None


def _finish_reason(reason: str) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "abort":
        return "cancelled"  # SGLang's graceful abort: someone else ended the request on the server
    return "stop"  # stop, tool_calls, content_filter, eos


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(eq=False)
class _Stream:
    """One generation in flight: what its reader hands over, and whether abort() was asked."""

    items: asyncio.Queue[ChunkDelta | StreamEnded | _Failed | None] = field(default_factory=asyncio.Queue)
    aborted: bool = False


class OpenAICompatibleEngine:
    """Streams chat completions from one OpenAI-compatible server; its own batching does the rest."""

    name = ENGINE_NAME

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 16,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        sampling: Mapping[str, Any] | None = None,
        continuous_usage_stats: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`base_url` is the API root, with or without `/v1`; `read_timeout_s` bounds each silence
        (queueing and prefill included); `sampling` goes into every request (`temperature`, ...)."""
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        self.model = model
        self._api_key = api_key
        self.max_concurrency = max_concurrency
        self._timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=connect_timeout_s, pool=connect_timeout_s)
        self._sampling = dict(sampling or {})
        self._continuous_usage_stats = continuous_usage_stats
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._streams: dict[str, _Stream] = {}

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
            transport=self._transport,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        for stream in self._streams.values():
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason="the engine was closed")))
        if client is not None:
            await client.aclose()

    def abort(self, request_id: str) -> bool:
        stream = self._streams.get(request_id)
        if stream is None:
            return False
        stream.aborted = True
        stream.items.put_nowait(None)  # wakes the generation even while the server is silent
        return True

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        client = self._client
        if client is None:
            raise RuntimeError("OpenAICompatibleEngine.generate() called before start()")
        if request.request_id in self._streams:
            raise EngineRejected(engine=self.name, reason=f"request {request.request_id!r} is already generating")
        stream = _Stream()
        self._streams[request.request_id] = stream
        reader = asyncio.create_task(self._read(client, request, stream), name=f"openai-stream-{request.request_id}")
        pieces, finish_reason, usage = 0, None, None
        read_to_the_end = False
        try:
            while True:
                item = await stream.items.get()
                if stream.aborted:
                    break
                read_to_the_end = isinstance(item, (_Failed, StreamEnded))
                if isinstance(item, _Failed):
                    raise item.error
                if isinstance(item, StreamEnded):
                    if finish_reason is None:
                        raise EngineUnavailable(engine=self.name, reason="the stream ended before a finish_reason")
                    break
                if item is None:
                    continue
                usage = item.usage or usage
                finish_reason = item.finish_reason or finish_reason
                if item.text:
                    pieces += 1
                    yield TokenText(text=item.text)
            # Without usage from the server, each content chunk counts as one token (one decode step).
            yield GenerationFinished(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else pieces,
                cached_tokens=usage.cached_tokens if usage else 0,
                finish_reason="cancelled" if stream.aborted else _finish_reason(finish_reason),
            )
        finally:
            if self._streams.get(request.request_id) is stream:
                del self._streams[request.request_id]
            if read_to_the_end:
                # The reader is closing the response: let it finish. Cancelled in the middle of that,
                # httpcore leaves the connection checked out of the pool for good, and once
                # `max_concurrency` are lost every request times out waiting for one.
                await asyncio.wait({reader}, timeout=self._timeout.pool)
            # Otherwise the consumer left early: cancelling the reader closes the response, hence the
            # connection, so the server sees the client leave and stops generating.
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _body(self, messages: tuple[ChatMessage, ...], max_tokens: int) -> dict[str, Any]:
        stream_options: dict[str, Any] = {"include_usage": True}
        if self._continuous_usage_stats:
            stream_options["continuous_usage_stats"] = True
        return {
            **self._sampling,
            "model": self.model,
            "messages": [{"role": message.role, "content": message.content} for message in messages],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": stream_options,
        }

    async def _read(self, client: httpx.AsyncClient, request: GenerationRequest, stream: _Stream) -> None:
        """Streams the completion into `stream.items`; every way out but cancellation leaves a last item."""
        max_tokens = request.max_output_tokens
        try:
            for attempt in range(2):
                try:
                    await self._post(client, request, max_tokens, stream)
                    return
                except _RoomForFewerTokens as room:
                    # Only the answer overflows: ask once more for what fits, as the other engines do.
                    if attempt:
                        raise EngineRejected(engine=self.name, reason=str(room), status_code=400) from room
                    max_tokens = min(max_tokens, room.context_tokens - room.prompt_tokens)
        except asyncio.CancelledError:
            raise
        except httpx.TimeoutException as error:
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason=f"{type(error).__name__}: timed out")))
        except httpx.HTTPError as error:  # refused, reset, cut off mid-body, protocol errors
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason=f"{type(error).__name__}: {error}")))
        except BaseException as error:  # noqa: BLE001 - handed to the generation, raised there
            stream.items.put_nowait(_Failed(error))

    async def _post(self, client: httpx.AsyncClient, request: GenerationRequest, max_tokens: int, stream: _Stream) -> None:
        async with client.stream(
            "POST",
            "/chat/completions",
            json=self._body(request.messages, max_tokens),
            headers={"X-Request-Id": request.request_id},
        ) as response:
            if response.status_code != 200:
                await response.aread()
                try:
                    body = response.json()
                except ValueError:
                    body = {"message": response.text[:500] or response.reason_phrase}
                raise error_from_body(body, status_code=response.status_code)
            async for item in completion_chunks(response.aiter_lines()):
                stream.items.put_nowait(item)
