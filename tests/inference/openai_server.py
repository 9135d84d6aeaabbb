"""A real OpenAI-compatible chat completions server for tests: Starlette on uvicorn, on a loopback port.

It streams the way SGLang's OpenAI server does (serving_chat._generate_chat_stream): a first chunk
whose delta is `{"role": "assistant", "content": ""}`, one content chunk per token (with usage on
each when `stream_options.continuous_usage_stats`), a chunk with an empty delta and the
`finish_reason`, a usage chunk whose `choices` is empty (when `include_usage`), then `data: [DONE]`.
Errors answer as SGLang's do: `{"error": {"message", "type", "param", "code"}}`, with its wording for
prompts that do not fit.

Its "model" is the scripted engine's: given `tools`, the `call:name(arguments)` triggers of the latest
user message come back as streamed tool calls, the way SGLang's server streams them
(serving_chat._process_tool_call_stream): per call a first fragment with `index`, `id`, `type` and
`function.name` (arguments ""), then `function.arguments` in fragments whose `id` and `name` are
null, one fragment per chunk (and per token); then a finish chunk saying "tool_calls". With
`stream_style="vllm"` later fragments leave `id` and `name` out and the finish reason rides on the
last fragment, as vLLM's server sends them. `behaviour` can also interleave the calls, stream text
before them, leave out their ids, or have the finish chunk say something else.

It notices a client that hangs up and stops generating for it (each request's `RequestRecord` says
how it ended and how many tokens it sent), and `behaviour` makes it slow or failing on demand.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from events.values import ChatMessage, ToolCallProposal, ToolSpec
from inference.scripted import proposed_calls, scripted_answer

EOS_TOKEN_ID = 151645  # Qwen2.5's <|im_end|>, what SGLang reports as matched_stop
TEMPLATE_TOKENS_PER_MESSAGE = 4  # <|im_start|>, role, newline, <|im_end|>
GENERATION_PROMPT_TOKENS = 3  # <|im_start|>assistant\n


@dataclass
class Behaviour:
    """How the server acts on the next requests; tests change it, `reset()` restores it."""

    token_delay_s: float = 0.002
    first_token_delay_s: float = 0.0  # queueing plus prefill: silence before the first chunk
    answer_tokens: int = 400
    context_tokens: int = 4096
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (status, JSON body), in order
    error_chunk_after_tokens: int | None = None  # send a streamed error chunk after this many tokens
    end_body_after_tokens: int | None = None  # end the body cleanly after this many tokens, with no [DONE]
    drop_connection_after_tokens: int | None = None  # fail the response mid-body: the connection drops
    api_key: str | None = None
    send_usage: bool = True  # False: ignore stream_options, as some servers do
    stream_style: str = "sglang"  # or "vllm": later tool call fragments without id/name, finish on the last chunk
    argument_fragment_chars: int = 4  # how many characters of a call's arguments each fragment carries
    interleave_tool_calls: bool = False  # the calls' fragments in turn, not one call after another
    text_before_tool_calls: str = ""  # content streamed (a word per chunk) before the calls
    tool_call_ids: bool = True  # False: fragments carry no id, as some servers send them
    tool_calls_finish_reason: str = "tool_calls"  # what the finish says after streamed calls ("stop": some servers)


@dataclass
class RequestRecord:
    """What the server saw of one request (keyed by its X-Request-Id) and how it ended."""

    request_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    tokens_sent: int = 0
    outcome: str = "streaming"  # completed | client disconnected | error chunk | body ended | connection dropped
    ended: threading.Event = field(default_factory=threading.Event)


class _DropConnection(Exception):
    """Raised inside a started response: uvicorn then closes the connection mid-body."""


def _error(status: int, message: str, error_type: str = "BadRequestError") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": error_type, "param": None, "code": status}}, status_code=status)


def prompt_tokens_of(messages: list[dict[str, Any]]) -> list[str]:
    """The prompt as this server's "tokenizer" sees it: a ChatML-like template over whitespace words."""
    tokens: list[str] = []
    for message in messages:
        calls = [f"{call['function']['name']}({call['function']['arguments']})" for call in message.get("tool_calls") or ()]
        words = " ".join([message.get("content") or "", *calls]).split()
        tokens += ["<|im_start|>", message["role"], "\n", *words, "<|im_end|>"]
    return tokens + ["<|im_start|>", "assistant", "\n"]


def chat_message_of(message: dict[str, Any]) -> ChatMessage:
    """A request's message as the scripted "model" reads it, calls and results included."""
    return ChatMessage(
        role=message["role"],
        content=message.get("content") or "",
        tool_call_id=message.get("tool_call_id"),
        tool_calls=tuple(
            ToolCallProposal(call_id=call["id"], name=call["function"]["name"], arguments=call["function"]["arguments"])
            for call in message.get("tool_calls") or ()
        ),
    )


def tool_spec_of(tool: dict[str, Any]) -> ToolSpec:
    function = tool["function"]
    return ToolSpec(
        name=function["name"], description=function.get("description") or "",
        parameters=json.dumps(function.get("parameters") or {}),
    )


def tool_call_deltas(calls: tuple[ToolCallProposal, ...], behaviour: Behaviour) -> list[dict[str, Any]]:
    """The `delta`s of the chunks that stream the calls, one fragment each."""
    per_call = []
    for index, call in enumerate(calls):
        first: dict[str, Any] = {"index": index, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if behaviour.tool_call_ids:
            first["id"] = call.call_id
        elif behaviour.stream_style == "sglang":
            first["id"] = None
        step = max(1, behaviour.argument_fragment_chars)
        pieces = [call.arguments[start : start + step] for start in range(0, len(call.arguments), step)]
        if behaviour.stream_style == "vllm":
            first["function"] = {"name": call.name}  # vLLM: exclude_none, no arguments yet
            later = [{"index": index, "function": {"arguments": piece}} for piece in pieces]
        else:
            later = [
                {"id": None, "index": index, "type": "function", "function": {"name": None, "arguments": piece}}
                for piece in pieces
            ]
        per_call.append([first, *later])
    if behaviour.interleave_tool_calls:
        longest = max(len(fragments) for fragments in per_call)
        ordered = [fragments[turn] for turn in range(longest) for fragments in per_call if turn < len(fragments)]
    else:
        ordered = [fragment for fragments in per_call for fragment in fragments]
    return [{"tool_calls": [fragment]} for fragment in ordered]


class OpenAICompatibleServer:
    """Runs in a thread of its own (its own event loop), so any test loop can talk to it."""

    def __init__(self, *, model: str = "test-model") -> None:
        self.model = model
        self.behaviour = Behaviour()
        self.records: dict[str, RequestRecord] = {}
        self._prefix_cache: list[list[str]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat_completions, methods=["POST"])])

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.behaviour = Behaviour()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OpenAI-compatible test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def wait_for(self, request_id: str, timeout_s: float = 5.0) -> RequestRecord:
        """The record of a request once the server has finished with it."""
        deadline = time.monotonic() + timeout_s
        while request_id not in self.records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server never saw {request_id!r}")
            time.sleep(0.005)
        record = self.records[request_id]
        if not record.ended.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"the server is still on {request_id!r} ({record.tokens_sent} tokens sent)")
        return record

    async def _chat_completions(self, request: Request) -> Any:
        behaviour = self.behaviour
        if behaviour.api_key is not None and request.headers.get("authorization") != f"Bearer {behaviour.api_key}":
            return _error(401, "Invalid API key", "AuthenticationError")
        if behaviour.fail_next:
            status, body = behaviour.fail_next.pop(0)
            return JSONResponse(body, status_code=status)
        body = await request.json()
        record = RequestRecord(
            request_id=request.headers.get("x-request-id", f"anonymous-{len(self.records)}"),
            body=body,
            headers=dict(request.headers),
        )
        self.records[record.request_id] = record
        if body.get("model") != self.model:
            record.outcome = "rejected"
            record.ended.set()
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        prompt = prompt_tokens_of(body["messages"])
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 128)
        context = behaviour.context_tokens
        # SGLang's own validation messages (tokenizer_manager._validate_one_request).
        if len(prompt) >= context:
            record.outcome = "rejected"
            record.ended.set()
            return _error(400, f"The input ({len(prompt)} tokens) is longer than the model's context length ({context} tokens).")
        if len(prompt) + max_tokens > context:
            record.outcome = "rejected"
            record.ended.set()
            return _error(
                400,
                f"Requested token count exceeds the model's maximum context length of {context} tokens. You requested "
                f"a total of {len(prompt) + max_tokens} tokens: {len(prompt)} tokens from the input messages and "
                f"{max_tokens} tokens for the completion. Please reduce the number of tokens in the input messages or "
                "the completion to fit within the limit.",
            )
        cached = max((_common_prefix(prompt, earlier) for earlier in self._prefix_cache), default=0)
        self._prefix_cache.append(prompt)
        messages = tuple(chat_message_of(message) for message in body["messages"])
        calls = proposed_calls(messages, tuple(tool_spec_of(tool) for tool in body.get("tools") or ()))
        if calls:
            words = behaviour.text_before_tool_calls.split()
            deltas = [{"content": f" {word}" if index else word} for index, word in enumerate(words)]
            deltas += tool_call_deltas(calls, behaviour)
            cut_short = len(deltas) > max_tokens
            deltas = deltas[:max_tokens]
        else:
            whole_answer = scripted_answer(messages, answer_tokens=behaviour.answer_tokens)
            deltas = [{"content": token} for token in whole_answer[:max_tokens]]
            cut_short = len(whole_answer) > max_tokens
        if cut_short:
            finish_reason = "length"
        else:
            finish_reason = behaviour.tool_calls_finish_reason if calls else "stop"
        return _CompletionStream(
            record=record, behaviour=behaviour, model=self.model, deltas=deltas,
            prompt_tokens=len(prompt), cached_tokens=cached, finish_reason=finish_reason,
        )


def _common_prefix(left: list[str], right: list[str]) -> int:
    return next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))


class _CompletionStream:
    """The SSE response: generation and a watch for the client's disconnect, whichever ends first."""

    def __init__(
        self, *, record: RequestRecord, behaviour: Behaviour, model: str, deltas: list[dict[str, Any]],
        prompt_tokens: int, cached_tokens: int, finish_reason: str,
    ) -> None:
        self.record = record
        self.behaviour = behaviour
        self.model = model
        self.deltas = deltas  # one per chunk (and per token): content, or one tool call fragment
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.finish_reason = finish_reason
        stream_options = record.body.get("stream_options") or {}
        self.include_usage = behaviour.send_usage and bool(stream_options.get("include_usage"))
        self.continuous_usage = behaviour.send_usage and bool(stream_options.get("continuous_usage_stats"))
        self.created = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = asyncio.create_task(self._generate(send))
        disconnected = asyncio.create_task(_client_disconnected(receive))
        try:
            await asyncio.wait({generation, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done() and not generation.done():
                self.record.outcome = "client disconnected"
                generation.cancel()
            disconnected.cancel()
            outcome, _ = await asyncio.gather(generation, disconnected, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome  # _DropConnection, or a bug here: uvicorn drops the connection either way
        finally:
            self.record.ended.set()

    def _chunk(self, *, delta: dict[str, Any], finish_reason: str | None = None, matched_stop: int | None = None,
               usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.record.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason,
                         "matched_stop": matched_stop}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _usage(self, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens} if self.cached_tokens else None,
            "reasoning_tokens": 0,
        }

    async def _generate(self, send: Send) -> None:
        record, behaviour = self.record, self.behaviour

        async def body(data: bytes, *, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        # Like SGLang's server, the response starts only once the first token is out (after prefill).
        await asyncio.sleep(behaviour.first_token_delay_s)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        })
        await body(self._chunk(delta={"role": "assistant", "content": ""}))
        cut_short = self.finish_reason == "length"
        matched_stop = None if cut_short else EOS_TOKEN_ID
        finish_on_last_delta = behaviour.stream_style == "vllm" and bool(self.deltas)
        for index, delta in enumerate(self.deltas):
            if index:
                await asyncio.sleep(behaviour.token_delay_s)
            if index == behaviour.error_chunk_after_tokens:
                record.outcome = "error chunk"
                error = {"error": {"message": "Scheduler hit an internal error", "type": "InternalServerError",
                                   "param": None, "code": 500}}
                await body(f"data: {json.dumps(error)}\n\n".encode())
                await body(b"data: [DONE]\n\n", more=False)
                return
            if index == behaviour.end_body_after_tokens:
                record.outcome = "body ended"
                await body(b"", more=False)
                return
            if index == behaviour.drop_connection_after_tokens:
                record.outcome = "connection dropped"
                raise _DropConnection
            record.tokens_sent += 1
            usage = self._usage(record.tokens_sent) if self.continuous_usage else None
            if finish_on_last_delta and index == len(self.deltas) - 1:
                # vLLM sends the finish reason with the last delta rather than in a chunk of its own.
                await body(self._chunk(delta=delta, usage=usage, finish_reason=self.finish_reason))
            else:
                await body(self._chunk(delta=delta, usage=usage))
        completion_tokens = record.tokens_sent if cut_short else record.tokens_sent + 1  # + the EOS token
        if not finish_on_last_delta:
            await body(self._chunk(delta={}, finish_reason=self.finish_reason, matched_stop=matched_stop))
        if self.include_usage:
            usage_chunk = {"id": record.request_id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": self._usage(completion_tokens)}
            await body(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await body(b"data: [DONE]\n\n", more=False)
        record.outcome = "completed"


async def _client_disconnected(receive: Callable[[], Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
