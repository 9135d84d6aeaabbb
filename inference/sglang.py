"""The SGLang offline engine: `sglang.Engine.async_generate(stream=True)` in this process, on a GPU.

SGLang streams each request as dicts whose `text` is the whole answer so far (unless the engine was
started with `incremental_streaming_output`, when it is the new piece), with `meta_info` carrying
`prompt_tokens`, `completion_tokens`, `cached_tokens` and, on the last chunk only, a `finish_reason`
dict (`{"type": "stop" | "length" | "abort", ...}`). `TextDeltas` turns that into the port's pieces.

Cancellation: SGLang forgets a request whose stream is closed (or whose reader is cancelled) but does
not stop generating it, and `tokenizer_manager.abort_request(rid)` is a no-op for a rid it forgot.
So a task of the adapter's own reads SGLang's stream, and when the consumer leaves, the abort goes
out first, while SGLang still holds the rid; its scheduler stops the request at its next step. An
abort by run id (`abort()`) sends the same, and the stream then ends with `{"type": "abort"}`.

Tool calls, with a `tool_call_parser` (SGLang's names: `qwen25`, `llama3`, `mistral`, ...): the tools go
into the model's own chat template (as SGLang's server does), and the streamed text goes through
SGLang's `FunctionCallParser` for that format, as its server does for `delta.tool_calls`: the text
outside calls streams as before, the calls come back whole at the end (finish reason `tool_calls`).
Without a parser, tools are ignored and the model answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
from inference.openai_compatible import ToolCallAssembly, ToolCallFragment, message_payload, tools_payload

logger = logging.getLogger(__name__)

_REPLACEMENT_CHARACTER = "\ufffd"
# How long a left stream waits for SGLang to confirm its abort (one decode step, normally).
_ABORT_DRAIN_S = 1.0
# SGLang's own wording when a prompt does not fit (tokenizer_manager._validate_one_request).
_INPUT_TOO_LONG = re.compile(r"input \((\d+) tokens\) is longer than the model's context length \((\d+) tokens\)")


class TextDeltas:
    """Turns a stream of cumulative texts (or of increments) into new text only, never repeated.

    A trailing U+FFFD is held back until the text grows past it or the stream ends: it is what a
    decoder prints for a character whose remaining bytes are still to come. Text that comes back
    *revised* (not an extension of what was already handed out) cannot be taken back; like SGLang's
    own OpenAI server, the new text is taken from the same character offset, and `revisions` counts it.
    """

    def __init__(self, *, incremental: bool = False) -> None:
        self._incremental = incremental
        self._seen = ""  # the engine's whole text so far
        self._basis = ""  # the text as of the last take: what the handed-out offset counts in
        self._handed_out = 0  # characters of it handed out
        self._text = ""
        self.revisions = 0

    @property
    def text(self) -> str:
        """Everything handed out so far."""
        return self._text

    def take(self, text: str | None, *, final: bool = False) -> str:
        if text is not None:
            self._seen = self._seen + text if self._incremental else text
        visible = self._seen if final else self._seen.rstrip(_REPLACEMENT_CHARACTER)
        if not visible.startswith(self._basis[: self._handed_out]):
            self.revisions += 1
        delta = visible[self._handed_out :]
        self._handed_out += len(delta)
        self._basis = visible
        self._text += delta
        return delta


@dataclass(frozen=True, kw_only=True)
class _Chunk:
    """One streamed SGLang output, reduced to what the port needs."""

    text: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int
    finish_reason: Mapping[str, Any] | None

    @classmethod
    def parse(cls, output: Mapping[str, Any]) -> _Chunk:
        meta_info = output.get("meta_info") or {}
        finish_reason = meta_info.get("finish_reason")
        return cls(
            text=output.get("text"),
            # An abort answered from the waiting queue carries no prompt_tokens.
            prompt_tokens=meta_info.get("prompt_tokens"),
            completion_tokens=meta_info.get("completion_tokens"),
            cached_tokens=int(meta_info.get("cached_tokens") or 0),
            finish_reason=finish_reason if isinstance(finish_reason, Mapping) else None,
        )


class ToolCallParser(Protocol):
    """SGLang's `FunctionCallParser`, as this adapter uses it: streamed text in, normal text and call pieces out.

    A piece (SGLang's `ToolCallItem`) has `tool_index`, `name` (in a call's first piece) and `parameters`
    (a fragment of the arguments' JSON).
    """

    def parse_stream_chunk(self, chunk_text: str) -> tuple[str, list[Any]]: ...

    def parse_stream_end(self) -> tuple[str, list[Any]]: ...


# Builds a parser for one generation from the tools in OpenAI's shape.
ToolParserFactory = Callable[[list[dict[str, Any]]], ToolCallParser]


def sglang_tool_parser(tool_call_parser: str) -> ToolParserFactory:
    """SGLang's own parser for the format `tool_call_parser` names (imported only when a step offers tools)."""

    def build(tools: list[dict[str, Any]]) -> ToolCallParser:
        from sglang.srt.entrypoints.openai.protocol import Tool
        from sglang.srt.function_call.function_call_parser import FunctionCallParser

        return FunctionCallParser([Tool.model_validate(tool) for tool in tools], tool_call_parser)

    return build


class SglangEngine:
    """One `sglang.Engine` in this process; it batches every generation it is given on its GPU(s)."""

    name = "sglang"

    def __init__(
        self,
        *,
        model_path: str | None = None,
        engine_args: Mapping[str, Any] | None = None,
        engine_factory: Callable[[], Any] | None = None,
        max_concurrency: int = 64,
        sampling_params: Mapping[str, Any] | None = None,
        incremental_text: bool | None = None,
        tool_call_parser: str | None = None,
        tool_parser_factory: ToolParserFactory | None = None,
    ) -> None:
        """Give `model_path` (and `sglang.Engine` keyword arguments) or an `engine_factory`.

        `sampling_params` are SGLang's (`temperature`, `top_p`, ...); `max_new_tokens` comes from
        each request. `incremental_text` overrides what is read from the engine's settings.
        `tool_call_parser` (SGLang's parser name for the model's format) turns tool calls on.
        """
        if (model_path is None) == (engine_factory is None):
            raise ValueError("give either model_path or engine_factory")
        self._model_path = model_path
        self._engine_args = dict(engine_args or {})
        self._engine_factory = engine_factory
        self.max_concurrency = max_concurrency
        self._sampling_params = dict(sampling_params or {})
        self._incremental_text = incremental_text
        self._engine: Any = None
        self._in_flight: dict[str, asyncio.Event] = {}  # request id -> set once abort() asked
        self._tool_parser_factory = tool_parser_factory or (sglang_tool_parser(tool_call_parser) if tool_call_parser else None)

    async def start(self) -> None:
        if self._engine is not None:
            return
        # On this thread and loop, blocking it while the model loads: sglang.Engine wants the main
        # thread (signal handlers) and binds its tokenizer manager to the loop that first uses it.
        self._engine = (self._engine_factory or self._build_sglang_engine)()
        if self._incremental_text is None:
            self._incremental_text = _streams_increments(self._engine)

    def _build_sglang_engine(self) -> Any:
        import sglang  # only here: importing it needs CUDA and sets uvloop as the loop policy

        return sglang.Engine(model_path=self._model_path, **self._engine_args)

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        for request_id, abort_requested in list(self._in_flight.items()):
            abort_requested.set()
            _send_abort(engine, request_id)
        # shutdown() kills SGLang's scheduler and detokenizer processes and waits for the GPU.
        await asyncio.to_thread(engine.shutdown)

    def abort(self, request_id: str) -> bool:
        abort_requested = self._in_flight.get(request_id)
        if abort_requested is None or self._engine is None:
            return False
        abort_requested.set()
        _send_abort(self._engine, request_id)
        return True

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        engine = self._engine
        if engine is None:
            raise RuntimeError("SglangEngine.generate() called before start()")
        if request.request_id in self._in_flight:
            raise EngineRejected(engine=self.name, reason=f"request {request.request_id!r} is already generating")
        abort_requested = asyncio.Event()
        # Registered before the prompt is even built, so a run can be aborted while it waits.
        self._in_flight[request.request_id] = abort_requested
        try:
            tools = tools_payload(request.tools) if request.tools and self._tool_parser_factory else None
            parser = self._tool_parser_factory(tools) if tools else None
            input_ids = await asyncio.to_thread(_chat_prompt_ids, engine, request.messages, tools)
            prompt_tokens = len(input_ids)
            max_new_tokens = self._max_new_tokens(engine, prompt_tokens, request.max_output_tokens)
            if abort_requested.is_set():
                yield GenerationFinished(prompt_tokens=prompt_tokens, output_tokens=0, finish_reason="cancelled")
                return
            async with contextlib.aclosing(
                self._stream(engine, request, input_ids, max_new_tokens, abort_requested, parser)
            ) as events:
                async for event in events:
                    yield event
        finally:
            if self._in_flight.get(request.request_id) is abort_requested:
                del self._in_flight[request.request_id]

    def _max_new_tokens(self, engine: Any, prompt_tokens: int, max_output_tokens: int) -> int:
        manager = engine.tokenizer_manager
        context_tokens = getattr(manager, "context_len", None)
        if not isinstance(context_tokens, int):
            return max_output_tokens
        # SGLang refuses (rather than truncates) a request whose prompt plus max_new_tokens does not
        # fit, so the answer gets what room is left, as the CPU engine does.
        room = context_tokens - prompt_tokens - int(getattr(manager, "num_reserved_tokens", 0) or 0)
        if room < 1:
            raise PromptTooLong(prompt_tokens=prompt_tokens, context_tokens=context_tokens)
        return min(max_output_tokens, room)

    async def _stream(
        self,
        engine: Any,
        request: GenerationRequest,
        input_ids: list[int],
        max_new_tokens: int,
        abort_requested: asyncio.Event,
        parser: ToolCallParser | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        request_id = request.request_id
        prompt_tokens = len(input_ids)
        calls = ToolCallAssembly()
        deltas = TextDeltas(incremental=bool(self._incremental_text))
        reader = _StreamReader(
            engine, rid=request_id, input_ids=input_ids,
            sampling_params={**self._sampling_params, "max_new_tokens": max_new_tokens},
        )
        finished = False
        try:
            last = None
            while True:
                output = await reader.outputs.get()
                if isinstance(output, _StreamEnded):
                    if output.error is not None:
                        raise output.error
                    break
                last = _Chunk.parse(output)
                if abort_requested.is_set() and last.finish_reason is None:
                    # An abort sent before SGLang registered the rid was dropped: send it again.
                    _send_abort(engine, request_id)
                text = deltas.take(last.text, final=last.finish_reason is not None)
                if parser is not None and text:
                    text = _parsed(parser.parse_stream_chunk(text), calls)
                if text:
                    yield TokenText(text=text)
                if last.finish_reason is not None:
                    break
            if last is None or last.finish_reason is None:
                raise EngineUnavailable(engine=self.name, reason="the stream ended without a finish reason")
            finished = True
            if deltas.revisions:
                logger.warning("sglang revised already streamed text of %s %d time(s)", request_id, deltas.revisions)
            if parser is not None and (held := _parsed(parser.parse_stream_end(), calls)):
                yield TokenText(text=held)  # text the parser held back waiting for a call that never came
            reason = self._finish_reason(last.finish_reason, abort_requested)
            if reason == "stop" and calls:
                reason = "tool_calls"  # whole calls came: a tool step (a call cut by `length` is no call)
            yield GenerationFinished(
                prompt_tokens=last.prompt_tokens if last.prompt_tokens is not None else prompt_tokens,
                output_tokens=last.completion_tokens or 0,
                cached_tokens=last.cached_tokens,
                finish_reason=reason,
                tool_calls=calls.proposals(request) if reason == "tool_calls" else (),
            )
        finally:
            await reader.stop(abort=not finished)

    def _finish_reason(self, finish_reason: Mapping[str, Any], abort_requested: asyncio.Event) -> FinishReason:
        match finish_reason.get("type"):
            case "length":
                return "length"
            case "abort":
                status_code = finish_reason.get("status_code")
                message = str(finish_reason.get("message") or "aborted")
                if status_code is None or abort_requested.is_set():
                    return "cancelled"  # ours, or SGLang's own (abort_all on a weight update)
                if int(status_code) == 400:
                    raise _rejection(message, engine_name=self.name, status_code=400)
                raise EngineUnavailable(engine=self.name, reason=message, status_code=int(status_code))
            case _:
                return "stop"


@dataclass(frozen=True)
class _StreamEnded:
    error: BaseException | None = None


class _StreamReader:
    """Reads one SGLang stream into `outputs` in a task of its own, ending with _StreamEnded.

    Its own task, so that a cancel aimed at the consumer never reaches SGLang's stream first: SGLang
    would forget the rid, and the abort that follows would find nothing to stop.
    """

    def __init__(self, engine: Any, *, rid: str, input_ids: list[int], sampling_params: dict[str, Any]) -> None:
        self.outputs: asyncio.Queue[Mapping[str, Any] | _StreamEnded] = asyncio.Queue()
        self._engine = engine
        self._rid = rid
        self._reached_sglang = False
        self._task = asyncio.create_task(self._read(input_ids, sampling_params), name=f"sglang-stream-{rid}")

    async def _read(self, input_ids: list[int], sampling_params: dict[str, Any]) -> None:
        stream = None
        try:
            stream = await self._engine.async_generate(
                input_ids=input_ids, sampling_params=sampling_params, stream=True, rid=self._rid
            )
            # SGLang registers the rid in the first step of its stream, before anything suspends it.
            self._reached_sglang = True
            async for output in stream:
                self.outputs.put_nowait(output)
        except asyncio.CancelledError:
            raise
        except ValueError as error:
            # SGLang reports a request it will not run (too long, duplicate rid) as a ValueError.
            self.outputs.put_nowait(_StreamEnded(error=_rejection(str(error), engine_name=SglangEngine.name)))
        except BaseException as error:  # noqa: BLE001 - handed to the generation, raised there
            self.outputs.put_nowait(_StreamEnded(error=error))
        else:
            self.outputs.put_nowait(_StreamEnded())
        finally:
            if stream is not None:
                await stream.aclose()

    async def stop(self, *, abort: bool) -> None:
        """Let go of the stream; with `abort`, first stop the request on SGLang's scheduler."""
        try:
            if abort and self._reached_sglang and not self._task.done():
                # Closing SGLang's stream alone drops the request's state but leaves the scheduler
                # generating it to max_new_tokens. The abort stops it at its next step, and its
                # last chunk comes back within a step or two.
                _send_abort(self._engine, self._rid)
                await asyncio.wait({self._task}, timeout=_ABORT_DRAIN_S)
        finally:
            # A reader that never reached SGLang is cancelled before it does.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _rejection(message: str, *, engine_name: str, status_code: int | None = None) -> ValueError:
    if match := _INPUT_TOO_LONG.search(message):
        return PromptTooLong(prompt_tokens=int(match[1]), context_tokens=int(match[2]))
    return EngineRejected(engine=engine_name, reason=message, status_code=status_code)


def _send_abort(engine: Any, request_id: str) -> None:
    # A no-op for a rid SGLang does not (or no longer) hold.
    engine.tokenizer_manager.abort_request(request_id)


def _parsed(parsed: tuple[str, list[Any]], calls: ToolCallAssembly) -> str:
    """The parser's normal text; its call pieces join `calls`."""
    normal_text, items = parsed
    for item in items:
        calls.add(ToolCallFragment(index=item.tool_index, call_id=None, name=item.name or "", arguments=item.parameters or ""))
    return normal_text


def _chat_prompt_ids(engine: Any, messages: tuple[ChatMessage, ...], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """The model's own chat template over the messages, as token ids (how SGLang's server does it); with
    tools, the template's own rendering of them, and the history's calls and results in OpenAI's shape."""
    tokenizer = engine.tokenizer_manager.tokenizer
    conversation = [message_payload(message) for message in messages]
    options: dict[str, Any] = {"tools": tools} if tools else {}
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **options)
    # The template already writes the special tokens; letting encode() add a BOS would double it.
    return list(tokenizer.encode(prompt, add_special_tokens=False))


def _streams_increments(engine: Any) -> bool:
    """Whether the engine streams new text per chunk instead of the whole text so far."""
    manager = engine.tokenizer_manager
    for holder in (manager, getattr(manager, "server_args", None), getattr(engine, "server_args", None)):
        # `incremental_streaming_output` in current SGLang, `stream_output` in older releases.
        for setting in ("incremental_streaming_output", "stream_output"):
            value = getattr(holder, setting, None)
            if isinstance(value, bool):
                return value
    return False
