"""A fake SGLang server for serving benchmarks: OpenAI-style streamed chat completions at a modelled GPU's speed.

Real HTTP (Starlette on uvicorn), `POST /v1/chat/completions` with `stream: true`, answered the way
SGLang's OpenAI server streams and turnlog's `inference/openai_compatible.py` reads: a chunk whose
delta is the assistant role, one content chunk per token (usage on each with
`stream_options.continuous_usage_stats`), a chunk with the `finish_reason`, a usage chunk with empty
`choices` (`include_usage`) carrying `prompt_tokens_details.cached_tokens`, then `data: [DONE]`.
`GET /stats` reports what the server did (requests, disconnects, most requests waiting for a slot) and
how many HTTP connections are open.

Timing model (these are assumptions for a small model, ~1.5B parameters, on one H100, not measurements):

- **slots**: at most `max_running` requests run at once (SGLang's max running requests, default
  64); later ones wait, first come first served, without a byte sent back;
- **prefill**: one prefill at a time (the GPU runs one forward pass), each taking
  `prefill_ms_per_1k` ms per 1,000 prompt tokens (default 50 ms, i.e. 20k tokens/s); a prompt waits
  for the prefills ahead of it, so a long prompt delays every short one queued behind it;
- **tokens** are counted approximately: whitespace-separated words x 1.3, over the messages'
  contents, plus 4 per message and 3 for the generation prompt (a ChatML template);
- **decode**: the first token comes out of prefill, then one token every `decode_ms` (default
  10 ms) per stream, whatever the batch size (small-model decode is memory-bound); an answer is
  `answer_tokens` long (default 32) or `max_tokens`, whichever is smaller;
- no prefix cache (every prompt is prefilled in full, `cached_tokens` is 0) and no context limit.

A client that hangs up, while waiting, in prefill or decoding, frees its slot and stops its generation.

    python benchmarks/fake_sglang_server.py --port 30000 [--prefill-ms-per-1k 50] [--decode-ms 10] [--max-running 64]

`FakeSglangServer(...)` starts the same in a subprocess on a free port (`with` it, read `.base_url`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

TOKENS_PER_WORD = 1.3
TEMPLATE_TOKENS_PER_MESSAGE = 4  # <|im_start|>, role, newline, <|im_end|>
GENERATION_PROMPT_TOKENS = 3  # <|im_start|>assistant\n
ANSWER_WORDS = ("the", "cache", "holds", "recent", "pages", "so", "reads", "stay", "fast", "under", "load")


@dataclass(frozen=True, kw_only=True)
class TimingModel:
    """How fast the modelled GPU serves: see the module docstring for what each number stands for."""

    max_running: int = 64
    prefill_ms_per_1k: float = 50.0
    decode_ms: float = 10.0
    answer_tokens: int = 32

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens * self.prefill_ms_per_1k / 1_000_000


def prompt_tokens_of(messages: list[dict[str, Any]]) -> int:
    """The approximate token count of a chat prompt: words x 1.3, plus the template's tokens."""
    words = sum(len(str(message.get("content") or "").split()) for message in messages)
    template = TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + GENERATION_PROMPT_TOKENS
    return round(words * TOKENS_PER_WORD) + template


@dataclass
class ServerStats:
    """What the server did since it started."""

    requests: int = 0
    completed: int = 0
    disconnected: int = 0
    running: int = 0
    waiting: int = 0
    most_waiting: int = 0
    most_running: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


class FakeScheduler:
    """The shared GPU: running slots and the one-at-a-time prefill, both first come first served."""

    def __init__(self, timing: TimingModel) -> None:
        self.timing = timing
        self.stats = ServerStats()
        self._slots = asyncio.Semaphore(timing.max_running)
        self._prefill = asyncio.Lock()

    async def admit(self) -> None:
        self.stats.waiting += 1
        self.stats.most_waiting = max(self.stats.most_waiting, self.stats.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.stats.waiting -= 1
        self.stats.running += 1
        self.stats.most_running = max(self.stats.most_running, self.stats.running)

    def release(self) -> None:
        self.stats.running -= 1
        self._slots.release()

    async def prefill(self, prompt_tokens: int) -> None:
        async with self._prefill:
            await asyncio.sleep(self.timing.prefill_s(prompt_tokens))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}},
                        status_code=status)


def build_app(timing: TimingModel, *, model: str = "fake-sglang") -> Starlette:
    """The ASGI app; its scheduler is built with the app, on `app.state`, never at import."""

    async def chat_completions(request: Request) -> Any:
        body = await request.json()
        if not body.get("stream"):
            return _error(400, "this fake server only streams: send stream: true")
        if body.get("model") != model:
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        scheduler: FakeScheduler = request.app.state.scheduler
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 128)
        return CompletionStream(
            scheduler=scheduler,
            request_id=request.headers.get("x-request-id", f"req-{scheduler.stats.requests}"),
            model=model,
            prompt_tokens=prompt_tokens_of(body.get("messages") or []),
            answer_tokens=min(timing.answer_tokens, max_tokens),
            cut_short=timing.answer_tokens > max_tokens,
            stream_options=body.get("stream_options") or {},
        )

    async def stats(request: Request) -> JSONResponse:
        scheduler: FakeScheduler = request.app.state.scheduler
        # Open HTTP connections, this request's included (uvicorn closes one idle for 5 s).
        server: uvicorn.Server | None = getattr(request.app.state, "server", None)
        connections = len(server.server_state.connections) if server is not None else None
        return JSONResponse({"timing": asdict(scheduler.timing), **asdict(scheduler.stats),
                             "open_connections": connections})

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
    ])
    app.state.scheduler = FakeScheduler(timing)
    return app


class CompletionStream:
    """One request's SSE response: queueing, prefill and decode, raced against the client hanging up."""

    def __init__(self, *, scheduler: FakeScheduler, request_id: str, model: str, prompt_tokens: int,
                 answer_tokens: int, cut_short: bool, stream_options: dict[str, Any]) -> None:
        self.scheduler = scheduler
        self.request_id = request_id
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.answer_tokens = answer_tokens
        self.cut_short = cut_short
        self.include_usage = bool(stream_options.get("include_usage"))
        self.continuous_usage = bool(stream_options.get("continuous_usage_stats"))
        self.created = int(time.time())
        self.tokens_sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.scheduler.stats
        stats.requests += 1
        generation = asyncio.create_task(self._serve(send))
        disconnected = asyncio.create_task(_client_disconnected(receive))
        try:
            await asyncio.wait({generation, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if not generation.done():
                stats.disconnected += 1
                generation.cancel()
        finally:
            disconnected.cancel()
            outcome, _ = await asyncio.gather(generation, disconnected, return_exceptions=True)
            stats.output_tokens += self.tokens_sent
        if isinstance(outcome, Exception):
            raise outcome

    async def _serve(self, send: Send) -> None:
        scheduler = self.scheduler
        await scheduler.admit()
        try:
            await scheduler.prefill(self.prompt_tokens)
            scheduler.stats.prompt_tokens += self.prompt_tokens
            await self._stream(send)
            scheduler.stats.completed += 1
        finally:
            scheduler.release()

    async def _stream(self, send: Send) -> None:
        async def body(data: bytes, *, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        # As SGLang's server does, the response starts once the first token is out of prefill.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await body(self._chunk(delta={"role": "assistant", "content": ""}))
        loop = asyncio.get_running_loop()
        next_token_at = loop.time()
        for index in range(self.answer_tokens):
            if index:
                # A fixed schedule, so event-loop lag does not slow the modelled decode rate.
                next_token_at += self.scheduler.timing.decode_ms / 1000
                await asyncio.sleep(max(0.0, next_token_at - loop.time()))
            self.tokens_sent += 1
            usage = self._usage(self.tokens_sent) if self.continuous_usage else None
            word = ANSWER_WORDS[index % len(ANSWER_WORDS)]
            await body(self._chunk(delta={"content": word if index == 0 else f" {word}"}, usage=usage))
        completion_tokens = self.tokens_sent if self.cut_short else self.tokens_sent + 1  # + the EOS token
        await body(self._chunk(delta={}, finish_reason="length" if self.cut_short else "stop"))
        if self.include_usage:
            usage_chunk = {"id": self.request_id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": self._usage(completion_tokens)}
            await body(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await body(b"data: [DONE]\n\n", more=False)

    def _chunk(self, *, delta: dict[str, Any], finish_reason: str | None = None,
               usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _usage(self, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }


async def _client_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeSglangServer:
    """The fake server in a subprocess of its own (its own core time, apart from the load generator)."""

    def __init__(self, timing: TimingModel = TimingModel(), *, model: str = "fake-sglang") -> None:
        self.timing = timing
        self.model = model
        self.port = free_port()
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The API root, as turnlog's `--engine-url` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the fake server is not running"
        return self._process.pid

    def start(self, timeout_s: float = 20.0) -> FakeSglangServer:
        self._process = subprocess.Popen([
            sys.executable, __file__, "--port", str(self.port), "--model", self.model,
            "--max-running", str(self.timing.max_running),
            "--prefill-ms-per-1k", str(self.timing.prefill_ms_per_1k),
            "--decode-ms", str(self.timing.decode_ms),
            "--answer-tokens", str(self.timing.answer_tokens),
        ])
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the fake SGLang server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> FakeSglangServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model", default="fake-sglang", help="the served model name requests must name")
    parser.add_argument("--max-running", type=int, default=TimingModel.max_running)
    parser.add_argument("--prefill-ms-per-1k", type=float, default=TimingModel.prefill_ms_per_1k)
    parser.add_argument("--decode-ms", type=float, default=TimingModel.decode_ms)
    parser.add_argument("--answer-tokens", type=int, default=TimingModel.answer_tokens)
    arguments = parser.parse_args()
    timing = TimingModel(
        max_running=arguments.max_running,
        prefill_ms_per_1k=arguments.prefill_ms_per_1k,
        decode_ms=arguments.decode_ms,
        answer_tokens=arguments.answer_tokens,
    )
    app = build_app(timing, model=arguments.model)
    server = uvicorn.Server(uvicorn.Config(app, host=arguments.host, port=arguments.port, log_level="warning",
                                           access_log=False, lifespan="off", backlog=4096))
    app.state.server = server
    server.run()


if __name__ == "__main__":
    main()
