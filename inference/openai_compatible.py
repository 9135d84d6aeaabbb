"""An engine behind any server that streams OpenAI's `/v1/chat/completions` (SGLang, vLLM, llama.cpp).

One POST per generation with `stream: true` and `stream_options.include_usage`; the answer comes
back as server-sent events, `data: {chat.completion.chunk}` lines up to `data: [DONE]`: first a
chunk whose delta is the assistant role, then content deltas, a chunk with the `finish_reason`, and
last a usage chunk whose `choices` is empty. `continuous_usage_stats` (SGLang and vLLM) puts usage on
every chunk too, so a run cut short still reports what it spent.

Tools go out in OpenAI's shape (`tools: [{"type": "function", "function": {...}}]` with
`tool_choice: "auto"`, only when the request offers any), and so do the calls and results in the
history: an assistant message's `tool_calls` and `tool` messages with their `tool_call_id`. Proposed
calls stream back as `delta.tool_calls` fragments the way SGLang and vLLM send them: keyed by `index`,
the first fragment of a call carries its `id` and `function.name`, later ones pieces of
`function.arguments`, and several calls may interleave. `ToolCallAssembly` puts them back together;
the step finishes with "tool_calls" whenever whole calls came (SGLang and vLLM say so; a server that
says "stop" instead is not believed), and a step cut short ("length") proposes nothing.

The HTTP client is aiohttp: its parser is C, and a token chunk costs it about half of httpx's CPU
(`benchmarks/engine_client.py`). Cancellation is the client hanging up: releasing a response before
its end closes its connection, and these servers stop generating a request whose client disconnected. `abort(request_id)` does that from
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

import aiohttp

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
    ToolCallProposal,
    ToolSpec,
    derived_call_id,
)

ENGINE_NAME = "openai-compatible"
# The longest SSE line read (a chunk whose tool call arguments come whole can be long).
_LINE_LIMIT_BYTES = 4 * 1024 * 1024

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
class ToolCallFragment:
    """One entry of a chunk's `delta.tool_calls`: a piece of one proposed call.

    SGLang sends `id` and `function.name` as null after a call's first fragment, vLLM leaves them
    out; either way they are None here, and `arguments` is "" where a fragment carries none.
    """

    index: int | None
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> ToolCallFragment:
        function = entry.get("function") or {}
        index, arguments = entry.get("index"), function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments)  # a server that sends the object, not its JSON text
        return cls(
            index=index if isinstance(index, int) else None,
            call_id=entry.get("id") or None,
            name=function.get("name") or None,
            arguments=arguments or "",
        )


@dataclass(frozen=True, kw_only=True)
class ChunkDelta:
    """What one `chat.completion.chunk` says: new text, tool call fragments, a finish reason, usage (each optional)."""

    text: str = ""
    tool_calls: tuple[ToolCallFragment, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None

    @classmethod
    def parse(cls, chunk: Mapping[str, Any]) -> ChunkDelta:
        text, tool_calls, finish_reason = "", (), None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            tool_calls = tuple(
                ToolCallFragment.parse(entry) for entry in delta.get("tool_calls") or () if isinstance(entry, dict)
            )
            finish_reason = choice.get("finish_reason")
        usage = chunk.get("usage")
        return cls(
            text=text, tool_calls=tool_calls, finish_reason=finish_reason, usage=Usage.parse(usage) if usage else None
        )


@dataclass(eq=False)
class _PartialCall:
    call_id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembly:
    """Puts streamed tool call fragments back together into whole calls, in `index` order.

    A fragment without an `index` (servers that leave it out) belongs to the call its `id` names, to
    a new call when that `id` is new, or else to the latest call.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._latest: int | None = None

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragment: ToolCallFragment) -> None:
        index = fragment.index if fragment.index is not None else self._index_without_one(fragment.call_id)
        call = self._calls.setdefault(index, _PartialCall())
        self._latest = index
        if fragment.call_id and call.call_id is None:
            call.call_id = fragment.call_id
        # A name comes whole in a call's first fragment; one sent again is not doubled.
        if fragment.name and fragment.name != call.name:
            call.name += fragment.name
        if fragment.arguments:
            call.arguments.append(fragment.arguments)

    def _index_without_one(self, call_id: str | None) -> int:
        if call_id is not None:
            known = next((index for index, call in self._calls.items() if call.call_id == call_id), None)
            if known is not None:
                return known
            return max(self._calls, default=-1) + 1
        return self._latest if self._latest is not None else 0

    def proposals(self, request: GenerationRequest) -> tuple[ToolCallProposal, ...]:
        """The whole calls; one that came without an id gets one derived from the request and its index."""
        return tuple(
            ToolCallProposal(
                call_id=call.call_id or derived_call_id(request, index),
                name=call.name,
                # A call to a tool without parameters may stream no arguments at all: that is `{}`.
                arguments="".join(call.arguments) or "{}",
            )
            for index, call in sorted(self._calls.items())
        )


def tools_payload(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """The tools in OpenAI's shape, each schema parsed; a schema that is not JSON is EngineRejected."""
    payload = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "description": tool.description}
        if tool.parameters.strip():
            try:
                function["parameters"] = json.loads(tool.parameters)
            except ValueError:
                raise EngineRejected(
                    engine=ENGINE_NAME, reason=f"tool {tool.name!r} has parameters that are not JSON"
                ) from None
        payload.append({"type": "function", "function": function})
    return payload


def message_payload(message: ChatMessage) -> dict[str, Any]:
    """One chat message in OpenAI's shape: plain, an assistant's proposed calls, or a tool's result."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    if message.tool_calls:
        return {
            "role": message.role,
            "content": message.content or None,  # what OpenAI itself sends beside calls with no text
            "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


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


def _finish_reason(reason: str, *, proposed_calls: bool) -> FinishReason:
    if reason == "length":
        return "length"  # calls begun in a step cut short are not proposed: their arguments may be cut too
    if reason == "abort":
        return "cancelled"  # SGLang's graceful abort: someone else ended the request on the server
    # stop, tool_calls, content_filter, eos: whole calls streamed make it a tool step, whatever the
    # server calls it (some say "stop"), and "tool_calls" with none streamed is an answer.
    return "tool_calls" if proposed_calls else "stop"


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
    ) -> None:
        """`base_url` is the API root, with or without `/v1`; `read_timeout_s` bounds each silence
        (queueing and prefill included); `sampling` goes into every request (`temperature`, ...)."""
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        self.model = model
        self._api_key = api_key
        self.max_concurrency = max_concurrency
        # `connect` also bounds the wait for a free connection of the pool; `sock_read`, each silence.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s)
        self._sampling = dict(sampling or {})
        self._continuous_usage_stats = continuous_usage_stats
        self._client: aiohttp.ClientSession | None = None
        self._streams: dict[str, _Stream] = {}

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = aiohttp.ClientSession(
            headers=headers,
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self.max_concurrency),
            read_bufsize=_LINE_LIMIT_BYTES // 2,  # a line may be twice the buffer
            raise_for_status=False,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        for stream in self._streams.values():
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason="the engine was closed")))
        if client is not None:
            await client.close()

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
        tools = tools_payload(request.tools)  # before anything is sent: a bad schema fails the same way every time
        stream = _Stream()
        self._streams[request.request_id] = stream
        reader = asyncio.create_task(
            self._read(client, request, tools, stream), name=f"openai-stream-{request.request_id}"
        )
        pieces, finish_reason, usage = 0, None, None
        calls = ToolCallAssembly()
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
                for fragment in item.tool_calls:
                    calls.add(fragment)
                if item.text or item.tool_calls:
                    pieces += 1
                if item.text:
                    yield TokenText(text=item.text)
            reason = "cancelled" if stream.aborted else _finish_reason(finish_reason, proposed_calls=bool(calls))
            # Without usage from the server, each content or tool call chunk counts as one token (one decode step).
            yield GenerationFinished(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else pieces,
                cached_tokens=usage.cached_tokens if usage else 0,
                finish_reason=reason,
                tool_calls=calls.proposals(request) if reason == "tool_calls" else (),
            )
        finally:
            if self._streams.get(request.request_id) is stream:
                del self._streams[request.request_id]
            if read_to_the_end:
                # The reader is giving the connection back: let it finish rather than cut that short.
                await asyncio.wait({reader}, timeout=self._timeout.connect)
            # Otherwise the consumer left early: cancelling the reader closes the response, hence the
            # connection, so the server sees the client leave and stops generating.
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _body(
        self, messages: tuple[ChatMessage, ...], max_tokens: int, tools: list[dict[str, Any]]
    ) -> dict[str, Any]:
        stream_options: dict[str, Any] = {"include_usage": True}
        if self._continuous_usage_stats:
            stream_options["continuous_usage_stats"] = True
        body = {
            **self._sampling,
            "model": self.model,
            "messages": [message_payload(message) for message in messages],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": stream_options,
        }
        if tools:
            # Only with tools: vLLM refuses a tool_choice without them, and an empty tools list too.
            body["tools"] = tools
            body["tool_choice"] = "auto"
        return body

    async def _read(
        self, client: aiohttp.ClientSession, request: GenerationRequest, tools: list[dict[str, Any]], stream: _Stream
    ) -> None:
        """Streams the completion into `stream.items`; every way out but cancellation leaves a last item."""
        max_tokens = request.max_output_tokens
        try:
            for attempt in range(2):
                try:
                    await self._post(client, request, max_tokens, tools, stream)
                    return
                except _RoomForFewerTokens as room:
                    # Only the answer overflows: ask once more for what fits, as the other engines do.
                    if attempt:
                        raise EngineRejected(engine=self.name, reason=str(room), status_code=400) from room
                    max_tokens = min(max_tokens, room.context_tokens - room.prompt_tokens)
        except asyncio.CancelledError:
            raise
        except TimeoutError as error:  # connecting, waiting for a connection, or a silence past the read timeout
            reason = (
                f"read timeout: nothing from the server for {self._timeout.sock_read:g} s"
                if isinstance(error, aiohttp.SocketTimeoutError) else f"{type(error).__name__}: timed out"
            )
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason=reason)))
        except aiohttp.ClientError as error:  # refused, reset, cut off mid-body, protocol errors
            stream.items.put_nowait(_Failed(EngineUnavailable(engine=self.name, reason=f"{type(error).__name__}: {error}")))
        except BaseException as error:  # noqa: BLE001 - handed to the generation, raised there
            stream.items.put_nowait(_Failed(error))

    async def _post(
        self,
        client: aiohttp.ClientSession,
        request: GenerationRequest,
        max_tokens: int,
        tools: list[dict[str, Any]],
        stream: _Stream,
    ) -> None:
        async with client.post(
            f"{self.base_url}/chat/completions",
            json=self._body(request.messages, max_tokens, tools),
            headers={"X-Request-Id": request.request_id},
        ) as response:
            if response.status != 200:
                raw = await response.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"message": raw.decode(errors="replace")[:500] or response.reason or ""}
                raise error_from_body(body, status_code=response.status)
            async for item in completion_chunks(_lines(response.content)):
                stream.items.put_nowait(item)
                if item.text:
                    # Hand each token on before parsing what arrived with it: when a burst lands at once (a fast
                    # model, a cached answer), the first delta and its SSE frame go out before the rest is read.
                    await asyncio.sleep(0)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The body's lines without their line ends (SSE's `\n` or `\r\n`)."""
    async for line in content:
        yield line.decode().rstrip("\r\n")
