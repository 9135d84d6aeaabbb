"""A stand-in for `sglang.Engine` (which needs a GPU) that streams and aborts the way SGLang does.

Ported from SGLang's own code paths, so the adapter meets the same shapes and races:

- `TokenizerManager.generate_request`: a duplicate rid and a prompt that does not fit raise a plain
  `ValueError` on the first `__anext__`; queued outputs are drained at once and only the last one is
  yielded; `text` is the whole text so far unless `incremental_streaming_output` is on; closing the
  stream drops the request's state but does NOT stop the scheduler, which goes on generating.
- `meta_info`: `id`, `finish_reason` (None until the last chunk, then `{"type": "stop", "matched":
  eos}`, `{"type": "length", "length": n}` or `{"type": "abort", ...}`), `prompt_tokens`,
  `completion_tokens`, `cached_tokens` (prefix-cache hits).
- `abort_request(rid)`: a no-op for a rid it does not hold; otherwise the scheduler, at its next
  step, drops a waiting request (answered by `_handle_abort_req`: "Abort in waiting queue", no
  `prompt_tokens`) or finishes a running one with `FINISH_ABORT` after one more token.
- `DetokenizerManager`: incremental decoding with surrogate/read offsets; text ending in U+FFFD (an
  unfinished UTF-8 character) is held back, only whole words of it are sent.

The "model" is a byte-level vocabulary that answers the same text to every prompt, with multi-byte
characters split across tokens so the detokenizer has something to hold back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import itertools
import logging
import re
import uuid
from collections import deque
from http import HTTPStatus
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

EOS_TOKEN_ID = 0
BOS_TOKEN_ID = 1
_SPECIAL_TOKENS = {EOS_TOKEN_ID: "<|im_end|>", BOS_TOKEN_ID: "<s>"}
DEFAULT_ANSWER = "Fresh bread, warm crust: café au lait and 🍞 for the dragon who bakes. "
_SAMPLING_PARAMS = frozenset(
    {"max_new_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "stop_token_ids", "ignore_eos",
     "skip_special_tokens", "spaces_between_special_tokens", "repetition_penalty", "frequency_penalty",
     "presence_penalty", "n", "no_stop_trim", "min_new_tokens", "json_schema", "regex"}
)


def _template_content(message: Mapping[str, Any]) -> str:
    calls = "".join(
        f"<tool_call>{json.dumps({'name': call['function']['name'], 'arguments': json.loads(call['function']['arguments'])})}</tool_call>"
        for call in message.get("tool_calls") or ()
    )
    return (message.get("content") or "") + calls


class FakeTokenizer:
    """A byte-level vocabulary that grows as it meets new pieces; ids 0 and 1 are EOS and BOS."""

    chat_template = "chatml"

    def __init__(self) -> None:
        self._pieces: dict[bytes, int] = {}
        self._bytes: dict[int, bytes] = {}
        for token_id, text in _SPECIAL_TOKENS.items():
            self._pieces[text.encode()] = token_id
            self._bytes[token_id] = text.encode()

    def token_id(self, piece: bytes) -> int:
        if piece not in self._pieces:
            token_id = len(self._bytes)
            self._pieces[piece] = token_id
            self._bytes[token_id] = piece
        return self._pieces[piece]

    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]],
        *,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str | list[int]:
        # Like Qwen2.5's (Hermes) template: the tools in a system block, calls as <tool_call> blocks.
        offered = f"<|im_start|>system\n<tools>{json.dumps(list(tools))}</tools><|im_end|>\n" if tools else ""
        prompt = "<s>" + offered + "".join(
            f"<|im_start|>{message['role']}\n{_template_content(message)}<|im_end|>\n" for message in conversation
        )
        if add_generation_prompt:
            prompt += "<|im_start|>assistant\n"
        return self.encode(prompt) if tokenize else prompt

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # Like a Llama tokenizer, encode() puts a BOS in front unless told not to.
        ids = [BOS_TOKEN_ID] if add_special_tokens else []
        for piece in re.findall(r"<s>|<\|im_end\|>|<\|im_start\|>|\S+\s*|\s+", text):
            ids.append(self.token_id(piece.encode()))
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return b"".join(
            self._bytes[token_id]
            for token_id in token_ids
            if not (skip_special_tokens and token_id in _SPECIAL_TOKENS)
        ).decode("utf-8", errors="replace")

    def answer_token_ids(self, text: str) -> list[int]:
        """The answer as the model would emit it: ASCII words whole, other characters byte by byte."""
        ids = []
        for piece in re.findall(r"\S+\s*|\s+", text):
            if piece.isascii():
                ids.append(self.token_id(piece.encode()))
            else:
                ids.extend(self.token_id(bytes([byte])) for byte in piece.encode())
        return ids


def find_printable_text(text: str) -> str:
    """sglang.utils.find_printable_text (from transformers' TextStreamer): whole words only."""
    if text.endswith("\n"):
        return text
    if text and _is_cjk(text[-1]):
        return text
    if len(text) > 1 and _is_cjk(text[-2]):
        return text[:-1]
    return text[: text.rfind(" ") + 1]


def _is_cjk(character: str) -> bool:
    return 0x4E00 <= ord(character) <= 0x9FFF or 0x3400 <= ord(character) <= 0x4DBF


@dataclasses.dataclass
class _DecodeStatus:
    """DetokenizerManager.DecodeStatus for one request."""

    decoded_text: str = ""
    decode_ids: list[int] = dataclasses.field(default_factory=list)
    surr_offset: int = 0
    read_offset: int = 0
    sent_offset: int = 0

    def incremental_text(self, tokenizer: FakeTokenizer, new_ids: list[int], finished_reason: dict | None) -> str:
        self.decode_ids.extend(new_ids)
        read_ids = self.decode_ids[self.surr_offset :]
        if finished_reason and isinstance(finished_reason.get("matched"), int):
            read_ids = read_ids[:-1]  # trim_matched_stop: the matched stop token prints nothing
        surr_text = tokenizer.decode(self.decode_ids[self.surr_offset : self.read_offset])
        new_text = tokenizer.decode(read_ids)[len(surr_text) :]
        if finished_reason is None:
            if new_text and not new_text.endswith("\ufffd"):
                self.decoded_text += new_text
                self.surr_offset = self.read_offset
                self.read_offset = len(self.decode_ids)
                new_text = ""
            else:
                new_text = find_printable_text(new_text)
        output = self.decoded_text + new_text
        increment = output[self.sent_offset :]
        self.sent_offset = len(output)
        return increment


@dataclasses.dataclass
class _Req:
    """A request on the fake GPU."""

    rid: str
    input_ids: list[int]
    max_new_tokens: int
    ignore_eos: bool
    output_ids: list[int] = dataclasses.field(default_factory=list)
    cached_tokens: int = 0
    to_finish: dict | None = None
    decode: _DecodeStatus = dataclasses.field(default_factory=_DecodeStatus)


class FakeScheduler:
    """Continuous batching at one token per request per step; a waiting queue past `max_running_requests`."""

    def __init__(
        self, *, manager: FakeTokenizerManager, answer_ids: list[int], answer_tokens: int,
        step_s: float, max_running_requests: int,
    ) -> None:
        self._manager = manager
        self._answer_ids = answer_ids
        self._answer_tokens = answer_tokens
        self._step_s = step_s
        self._max_running_requests = max_running_requests
        self.waiting: deque[_Req] = deque()
        self.running: list[_Req] = []
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._prefix_cache: list[tuple[int, ...]] = []
        # What the fake GPU did, for tests: tokens generated per rid, and rids that ran to their end.
        self.generated_tokens: dict[str, int] = {}
        self.finished_reasons: dict[str, dict] = {}
        self.task: asyncio.Task | None = None

    def send(self, message: tuple[str, Any]) -> None:
        """The tokenizer manager's ZMQ push: handled at the start of the next step."""
        self._inbox.append(message)
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not (self._inbox or self.waiting or self.running):
                self._wake.clear()
                await self._wake.wait()
            self._process_inbox()
            self._admit()
            if self.running:
                await asyncio.sleep(self._step_s)
                self._step()

    def _process_inbox(self) -> None:
        while self._inbox:
            kind, payload = self._inbox.popleft()
            if kind == "generate":
                self.waiting.append(payload)
            elif kind == "abort":
                self._abort(payload)
            elif kind == "abort_all":
                self._abort("", abort_all=True)

    def _abort(self, rid: str, *, abort_all: bool = False) -> None:
        for req in list(self.waiting):
            if abort_all or req.rid == rid:
                self.waiting.remove(req)
                self._manager.handle_abort_req(req.rid)  # the AbortReq sent back to the tokenizer manager
        for req in self.running:
            if abort_all or req.rid == rid:
                req.to_finish = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}

    def fail(self, rid: str, *, message: str, status_code: HTTPStatus) -> None:
        """Finish a running request with an error abort, as the scheduler does (KV pool full, bad input)."""
        for req in self.running:
            if req.rid == rid:
                req.to_finish = {"type": "abort", "message": message, "status_code": status_code, "err_type": None}

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self._max_running_requests:
            req = self.waiting.popleft()
            prompt = tuple(req.input_ids)
            req.cached_tokens = max((_common_prefix(prompt, cached) for cached in self._prefix_cache), default=0)
            self._prefix_cache.append(prompt)
            self.running.append(req)

    def _step(self) -> None:
        for req in list(self.running):
            position = len(req.output_ids)
            if position >= self._answer_tokens and not req.ignore_eos:
                token_id = EOS_TOKEN_ID
            else:
                token_id = self._answer_ids[position % len(self._answer_ids)]
            req.output_ids.append(token_id)
            self.generated_tokens[req.rid] = len(req.output_ids)
            finished_reason = None
            if req.to_finish is not None:
                finished_reason = req.to_finish
            elif token_id == EOS_TOKEN_ID:
                finished_reason = {"type": "stop", "matched": EOS_TOKEN_ID}
            elif len(req.output_ids) >= req.max_new_tokens:
                finished_reason = {"type": "length", "length": req.max_new_tokens}
            if finished_reason is not None:
                self.running.remove(req)
                self.finished_reasons[req.rid] = finished_reason
            text = req.decode.incremental_text(self._manager.tokenizer, [token_id], finished_reason)
            self._manager.handle_batch_output(
                rid=req.rid,
                finished_reason=finished_reason,
                text=text,
                output_ids=[token_id],
                prompt_tokens=len(req.input_ids),
                completion_tokens=len(req.output_ids),
                cached_tokens=req.cached_tokens,
            )


def _common_prefix(left: tuple[int, ...], right: tuple[int, ...]) -> int:
    return next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))


@dataclasses.dataclass
class _ReqState:
    """TokenizerManager.ReqState, the fields streaming uses."""

    out_list: list[dict]
    finished: bool
    event: asyncio.Event
    stream: bool
    text: str = ""
    output_ids: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FakeServerArgs:
    model_path: str
    incremental_streaming_output: bool
    context_length: int


class FakeTokenizerManager:
    """The parts of sglang.srt.managers.tokenizer_manager.TokenizerManager the adapter touches."""

    def __init__(
        self, *, context_len: int, incremental_streaming_output: bool, answer: str, answer_tokens: int,
        step_s: float, max_running_requests: int, model_path: str, expose_context_len: bool,
    ) -> None:
        self.tokenizer = FakeTokenizer()
        self._context_len = context_len
        self.num_reserved_tokens = 0
        self.incremental_streaming_output = incremental_streaming_output
        self.server_args = FakeServerArgs(
            model_path=model_path, incremental_streaming_output=incremental_streaming_output, context_length=context_len
        )
        self.rid_to_state: dict[str, _ReqState] = {}
        if expose_context_len:
            self.context_len = context_len
        self.scheduler = FakeScheduler(
            manager=self,
            answer_ids=self.tokenizer.answer_token_ids(answer),
            answer_tokens=answer_tokens,
            step_s=step_s,
            max_running_requests=max_running_requests,
        )
        self.abort_requests: list[str] = []  # every abort_request() call that reached the scheduler

    def auto_create_handle_loop(self) -> None:
        if self.scheduler.task is None:
            self.scheduler.task = asyncio.get_running_loop().create_task(self.scheduler.run(), name="fake-sglang")

    async def generate_request(self, *, rid: str, input_ids: list[int], sampling_params: Mapping[str, Any], stream: bool):
        self.auto_create_handle_loop()
        if rid in self.rid_to_state:
            raise ValueError(f"Duplicate request ID detected: {rid}")
        state = _ReqState(out_list=[], finished=False, event=asyncio.Event(), stream=stream)
        self.rid_to_state[rid] = state
        try:
            max_new_tokens = self._validate(input_ids, sampling_params)
            self.scheduler.send(
                ("generate", _Req(rid=rid, input_ids=list(input_ids), max_new_tokens=max_new_tokens,
                                  ignore_eos=bool(sampling_params.get("ignore_eos"))))
            )
            async for response in self._wait_one_response(rid, state):
                yield response
        except BaseException:
            # _discard_pending_req_states: forget the rid; nothing tells the scheduler to stop.
            self.rid_to_state.pop(rid, None)
            raise

    def _validate(self, input_ids: list[int], sampling_params: Mapping[str, Any]) -> int:
        unknown = set(sampling_params) - _SAMPLING_PARAMS
        if unknown:
            raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        input_token_num = len(input_ids) + self.num_reserved_tokens
        if input_token_num >= self._context_len:
            raise ValueError(
                f"The input ({input_token_num} tokens) is longer than the model's context length "
                f"({self._context_len} tokens)."
            )
        max_new_tokens = int(sampling_params.get("max_new_tokens", 128))
        if max_new_tokens + input_token_num > self._context_len:
            raise ValueError(
                f"Requested token count exceeds the model's maximum context length of {self._context_len} tokens. "
                f"You requested a total of {max_new_tokens + input_token_num} tokens: {input_token_num} tokens from "
                f"the input messages and {max_new_tokens} tokens for the completion. Please reduce the number of "
                "tokens in the input messages or the completion to fit within the limit."
            )
        return max_new_tokens

    async def _wait_one_response(self, rid: str, state: _ReqState) -> AsyncIterator[dict]:
        while True:
            await state.event.wait()
            out_list, state.out_list = state.out_list, []
            finished = state.finished
            state.event.clear()
            incremental = state.stream and self.incremental_streaming_output
            if incremental and len(out_list) > 1:
                out = dict(out_list[-1])
                out["text"] = "".join(chunk["text"] for chunk in out_list)
                out["output_ids"] = [i for chunk in out_list for i in chunk["output_ids"]]
            else:
                out = out_list[-1]
            if state.stream and not incremental and out.get("text", "") is None:
                out["text"] = state.text
            if finished:
                yield out
                break
            if state.stream:
                yield out

    def handle_batch_output(
        self, *, rid: str, finished_reason: dict | None, text: str, output_ids: list[int],
        prompt_tokens: int, completion_tokens: int, cached_tokens: int,
    ) -> None:
        state = self.rid_to_state.get(rid)
        if state is None:
            logger.error("Received output for rid=%r but the state was deleted in TokenizerManager.", rid)
            return
        meta_info = {
            "id": rid,
            "finish_reason": finished_reason,
            "prompt_tokens": prompt_tokens,
            "weight_version": "default",
            "reasoning_tokens": 0,
            "completion_tokens": completion_tokens,
            "cached_tokens": cached_tokens,
        }
        state.finished = finished_reason is not None
        state.text += text
        state.output_ids.extend(output_ids)
        if state.stream and self.incremental_streaming_output:
            out = {"text": text, "output_ids": list(output_ids), "meta_info": meta_info}
        elif state.stream and not state.finished:
            out = {"text": None, "output_ids": state.output_ids, "meta_info": meta_info}
        else:
            out = {"text": state.text, "output_ids": list(state.output_ids), "meta_info": meta_info}
        if state.finished:
            del self.rid_to_state[rid]
        state.out_list.append(out)
        state.event.set()

    def handle_abort_req(self, rid: str) -> None:
        state = self.rid_to_state.get(rid)
        if state is None:
            return
        state.finished = True
        meta_info = {
            "id": rid,
            "finish_reason": {"type": "abort", "message": "Abort in waiting queue"},
            "weight_version": "default",
            "completion_tokens": len(state.output_ids),
        }
        output_ids = state.output_ids[-1:] if state.stream else list(state.output_ids)
        del self.rid_to_state[rid]
        state.out_list.append({"text": state.text, "output_ids": output_ids, "meta_info": meta_info})
        state.event.set()

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        if not abort_all and not rid:
            logger.warning("Ignore abort_request with empty rid and abort_all=False")
            return
        if not abort_all and rid not in self.rid_to_state:
            return
        self.abort_requests.append(rid)
        self.scheduler.send(("abort_all", "") if abort_all else ("abort", rid))


class FakeSglangEngine:
    """`sglang.Engine` as the adapter uses it: `async_generate`, `tokenizer_manager`, `shutdown`."""

    def __init__(
        self, *, model_path: str = "fake/model", context_len: int = 4096, incremental_streaming_output: bool = False,
        answer: str = DEFAULT_ANSWER, answer_tokens: int = 400, step_s: float = 0.002, max_running_requests: int = 64,
        expose_context_len: bool = True,
    ) -> None:
        self.tokenizer_manager = FakeTokenizerManager(
            context_len=context_len,
            incremental_streaming_output=incremental_streaming_output,
            answer=answer,
            answer_tokens=answer_tokens,
            step_s=step_s,
            max_running_requests=max_running_requests,
            model_path=model_path,
            expose_context_len=expose_context_len,
        )
        self.server_args = self.tokenizer_manager.server_args
        self.received: list[dict[str, Any]] = []  # the arguments of every async_generate call
        self.is_shut_down = False
        self._rids = (f"fake-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())

    @property
    def scheduler(self) -> FakeScheduler:
        return self.tokenizer_manager.scheduler

    async def async_generate(
        self,
        prompt: str | None = None,
        sampling_params: Mapping[str, Any] | None = None,
        input_ids: list[int] | None = None,
        stream: bool = False,
        rid: str | None = None,
        **unused: Any,
    ) -> dict | AsyncIterator[dict]:
        self.received.append(
            {"prompt": prompt, "input_ids": input_ids, "sampling_params": dict(sampling_params or {}), "rid": rid}
        )
        if input_ids is None:
            if prompt is None:
                raise ValueError("Either text or input_ids should be provided.")
            input_ids = self.tokenizer_manager.tokenizer.encode(prompt)
        generator = self.tokenizer_manager.generate_request(
            rid=rid or next(self._rids), input_ids=input_ids, sampling_params=dict(sampling_params or {}), stream=stream
        )
        if stream is True:
            return generator
        return await generator.__anext__()

    def shutdown(self) -> None:
        """Called from a worker thread by the adapter, as sglang.Engine.shutdown blocks."""
        self.is_shut_down = True
        task = self.scheduler.task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
