"""A real OpenAI-compatible judge for tests: Starlette on uvicorn, on a loopback port, answering what a test scripts.

`tests/inference/openai_server.py` only streams, and its scripted model echoes the prompt; a Llama Guard
model answers one short non-streamed completion (`unsafe\\nS10`), so this server does exactly that:
`answer` is the message content, `status`/`body` make it fail, `delay_s` makes it slow, and every
request's body and headers are kept for the test to read.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Script:
    """How the judge answers the next requests."""

    answer: str = "safe"
    status: int = 200
    body: str | None = None  # a raw body to send instead of a completion
    delay_s: float = 0.0


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]


class JudgeServer:
    """Runs in a thread of its own (its own event loop), so any test loop can talk to it."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[Seen] = []
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [listener]}, name="judge-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the judge test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    async def _completions(self, request: Request) -> Response:
        script = self.script
        body = await request.json()
        self.requests.append(Seen(body=body, headers=dict(request.headers)))
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.body is not None:
            return Response(script.body, status_code=script.status, media_type="application/json")
        if script.status != 200:
            return JSONResponse({"error": {"message": "judge unavailable", "type": "InternalServerError", "code": script.status}},
                                status_code=script.status)
        return JSONResponse({
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": script.answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 4, "total_tokens": 204},
        })
