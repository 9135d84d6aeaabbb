"""A real MCP server (the official SDK's `MCPServer`) for the tool adapter's tests, over Streamable HTTP or stdio.

`python mcp_test_server.py http --events FILE` serves on 127.0.0.1 at a port of the kernel's choosing and
prints `port N` once it listens; `... stdio --events FILE --prefix local_` talks over stdin and stdout.
Tools: `<prefix>add`, `<prefix>whoami` (the credentials it received: HTTP headers or its environment),
`<prefix>sleep` (appends `started <label>`, then `cancelled <label>` or `finished <label>` to the events
file, so a test sees the server's side of a cancellation), `<prefix>keyed_sleep` (the same, each line
ending with the idempotency key of the request's `_meta`, so a test counts executions per key),
`<prefix>fail` (an isError result),
`<prefix>image`, `<prefix>meta_key` (the idempotency key in the request's `_meta`), `<prefix>secret` and
`<prefix>crash` (the process exits mid-call) and `<prefix>pid`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

import anyio
import uvicorn
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# A 1x1 PNG: the image tool's content.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def build(*, prefix: str, events: Path) -> MCPServer:
    server = MCPServer(f"turnlog-test-{prefix or 'http'}", log_level="WARNING")

    def record(line: str) -> None:
        with events.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    def whoami(ctx: Context) -> str:
        """The credentials this call arrived with."""
        headers = ctx.headers
        if headers is not None:
            return f"authorization={headers.get('authorization', '')} user={headers.get('x-turnlog-user', '')}"
        return f"token={os.environ.get('TOOL_TOKEN', '')} user={os.environ.get('TOOL_USER', '')}"

    async def sleep(seconds: float, label: str) -> str:
        """Sleeps, and records whether it finished or was cancelled."""
        record(f"started {label}")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record(f"cancelled {label}")
            raise
        record(f"finished {label}")
        return f"slept {seconds}"

    async def keyed_sleep(seconds: float, label: str, ctx: Context) -> str:
        """Sleeps, recording each execution with the idempotency key it came with."""
        key = str((ctx.request_context.meta or {}).get("turnlog/idempotency-key", ""))
        record(f"started {label} {key}")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record(f"cancelled {label} {key}")
            raise
        record(f"finished {label} {key}")
        return f"slept {seconds} for {label}"

    def fail(message: str) -> str:
        """Always fails with `message`."""
        raise ToolError(message)

    def image() -> Image:
        """A picture."""
        return Image(data=PNG, format="png")

    def meta_key(ctx: Context) -> str:
        """The idempotency key the client sent in `_meta`."""
        meta = ctx.request_context.meta or {}
        return str(meta.get("turnlog/idempotency-key", ""))

    def secret() -> str:
        """Only some orgs may call this."""
        return "the secret"

    def crash() -> str:
        """Ends the server's process mid-call, as a crash would."""
        os._exit(3)

    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    for tool in (add, whoami, sleep, keyed_sleep, fail, image, meta_key, secret, crash, pid):
        server.add_tool(tool, name=f"{prefix}{tool.__name__}")
    return server


async def serve_http(server: MCPServer) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    runner = uvicorn.Server(config)
    task = asyncio.create_task(runner.serve(sockets=[listener]))
    while not runner.started and not task.done():
        await asyncio.sleep(0.01)
    print(f"port {listener.getsockname()[1]}", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=("http", "stdio"))
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--prefix", default="")
    options = parser.parse_args()
    server = build(prefix=options.prefix, events=options.events)
    if options.transport == "http":
        asyncio.run(serve_http(server))
    else:
        anyio.run(server.run_stdio_async)


if __name__ == "__main__":
    sys.exit(main())
