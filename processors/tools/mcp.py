"""MCP servers as tools: the `ToolExecutor` adapter over the official SDK's client, Streamable HTTP and stdio.

Each call renders its server's credentials (headers, or a stdio server's environment) from turnlog's
environment and the caller, and runs on a session pooled under the digest of exactly those values: a
session opened with one user's credential never carries another user's call. A server that cannot be
reached makes its own tools `unavailable` (with the reason) and nothing else; it is tried again after
`retry_after_s`. A call's deadline covers connecting too; when it passes, the request is abandoned and
the SDK cancels it at the server (`notifications/cancelled`, or closing the request's HTTP stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from events.values import ToolSpec
from kernel.envelope import Actor
from processors.tools.catalog import ToolResult, allowed
from processors.tools.credentials import MissingEnvironment, fingerprint, render_all
from processors.tools.tools_file import ServerDeclaration, ToolsConfig

log = logging.getLogger(__name__)

# Where a call's idempotency key travels: MCP has no field for one, so it rides in the request's `_meta`.
IDEMPOTENCY_KEY_META = "turnlog/idempotency-key"
_CLIENT_INFO = mcp_types.Implementation(name="turnlog", version="0.1.0")
_LISTING_PAGES_MAX = 100  # a server whose listing never ends cannot hang a turn
_CLOSE_GRACE_S = 5.0

Outcome = TypeVar("Outcome")


class _Unreachable(Exception):
    """The server could not be reached: nothing was sent, and its tools are unavailable for now."""


class _ConnectionLost(Exception):
    """The session broke while a request was out: the server may have acted on it."""


@dataclass(frozen=True, kw_only=True)
class _Outage:
    """Why a server's tools are unavailable to some credentials, and until when no new connection is tried."""

    reason: str
    unreachable: bool  # no session could be opened (else the server answered, but its listing failed)
    retry_at: float  # time.monotonic()


class _Session:
    """One client session with one server under one set of rendered credentials, run by a task of its own.

    The SDK's client holds anyio task groups, which only the task that entered them may exit, so a task
    owns each session for its whole life; calls from any task share it (requests are multiplexed by id).
    """

    def __init__(
        self,
        *,
        server: ServerDeclaration,
        credentials: dict[str, str],
        errlog: TextIO,
        on_unreachable: Callable[[str], None],
    ) -> None:
        self.server = server
        self.client: Client | None = None
        self.failure: str | None = None
        self.tools: dict[str, mcp_types.Tool] | None = None  # the server's listing, fetched once per session
        self.in_flight = 0
        self.last_used = time.monotonic()
        self._credentials = credentials
        self._errlog = errlog
        self._on_unreachable = on_unreachable  # told why, when no session could be opened
        self._settled = asyncio.Event()  # connected, or failed to
        self._closing = asyncio.Event()
        self._ended = asyncio.Event()  # the transport ended under the session (the server exited or hung up)
        self._scope: anyio.CancelScope | None = None
        self._task = asyncio.create_task(self._run(), name=f"mcp session {server.name}")

    @property
    def settled(self) -> bool:
        return self._settled.is_set()

    @property
    def usable(self) -> bool:
        return (
            self.client is not None and not self._closing.is_set() and not self._ended.is_set() and not self._task.done()
        )

    async def connected(self) -> Client:
        """The connected client; `_Unreachable` with the reason when there is none."""
        await self._settled.wait()
        if self.client is None or not self.usable:
            raise _Unreachable(self.failure or "the session with it has closed")
        return self.client

    async def close(self) -> None:
        """Ends the session (for stdio, the server's process) gracefully, or by force after a grace period."""
        self._closing.set()
        if self.client is None and self._scope is not None:
            self._scope.cancel()  # still connecting: nothing to end gracefully
        done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_GRACE_S)
        if not done:
            if self._scope is not None:
                self._scope.cancel()
            else:
                self._task.cancel()
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        server = self.server
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                scope.deadline = anyio.current_time() + server.connect_timeout_s
                transport = _watched(self._transport(), on_end=self._ended.set)
                async with Client(transport, mode="auto", cache=None, client_info=_CLIENT_INFO) as client:
                    scope.deadline = math.inf
                    self.client = client
                    self._settled.set()
                    await _first_of(self._closing, self._ended)
            if self._ended.is_set() and not self._closing.is_set():
                log.warning("MCP server %s: the server ended the session", server.name)
                self.failure = "the server ended the session"
            if scope.cancelled_caught and not self._settled.is_set() and not self._closing.is_set():
                self.failure = f"no answer within {server.connect_timeout_s:g} s"
                log.warning("MCP server %s: no session: %s", server.name, self.failure)
        except Exception as error:
            self.failure = _describe(error)
            if not self._closing.is_set():
                # One line: a server that is down is tried again every few seconds, and its traceback says no more.
                log.warning("MCP server %s: %s: %s", server.name, "the session failed" if self._settled.is_set() else "no session", self.failure)
                log.debug("MCP server %s: the session's error", server.name, exc_info=error)
        finally:
            self.client = None
            if self.failure is not None and not self._settled.is_set() and not self._closing.is_set():
                self._on_unreachable(self.failure)
            if self.failure is None and not self._closing.is_set():
                self.failure = "the session with it has closed"
            self._settled.set()

    def _transport(self):
        server = self.server
        if server.transport == "streamable-http":
            assert server.url is not None
            return _http_transport(server.url, headers=self._credentials, connect_timeout_s=server.connect_timeout_s)
        assert server.command is not None
        parameters = StdioServerParameters(
            command=server.command, args=list(server.args), env=self._credentials, cwd=server.cwd
        )
        return stdio_client(parameters, errlog=self._errlog)


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


@asynccontextmanager
async def _watched(transport: Any, *, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    """`transport`, whose read stream calls `on_end` when it ends: the SDK's client does not say when its
    server went away (a stdio server that exited), and a session must not be handed a call after that."""
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end=on_end), write_stream


class _WatchedReadStream:
    """A transport's read stream that reports its end (`ReadStream` of the SDK, delegated)."""

    def __init__(self, inner: Any, *, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._inner.__aexit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # e.g. `last_context`, which the dispatcher reads after each message


@asynccontextmanager
async def _http_transport(url: str, *, headers: dict[str, str], connect_timeout_s: float) -> AsyncIterator[Any]:
    # No read timeout: each call has its own deadline, and a long tool may stay silent for a while.
    timeout = httpx2.Timeout(connect_timeout_s, read=None)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


class McpToolExecutor:
    """Runs the tools file's tools on their MCP servers, for each caller with that caller's credentials."""

    def __init__(
        self,
        *,
        config: ToolsConfig,
        environ: Mapping[str, str] | None = None,  # None: the process's environment, read at each call
        retry_after_s: float = 2.0,  # after a server could not be reached, its tools answer `unavailable` this long
        max_sessions_per_server: int = 16,  # idle sessions beyond this are closed, least recently used first
        idle_timeout_s: float = 300.0,  # a session idle this long is closed
        errlog: TextIO | None = None,  # where stdio servers' stderr goes; None: turnlog's stderr
    ) -> None:
        self._config = config
        self._environ = environ
        self._retry_after_s = retry_after_s
        self._max_sessions = max_sessions_per_server
        self._idle_timeout_s = idle_timeout_s
        self._errlog = errlog
        self._sessions: dict[tuple[str, str], _Session] = {}  # (server, credentials' fingerprint) -> session
        self._outages: dict[tuple[str, str], _Outage] = {}
        self._background: set[asyncio.Task[Any]] = set()  # sessions closing, listings retried off a turn's path
        self._closed = False

    async def start(self) -> None:
        # Sessions open on first use: their credentials may name the caller, who is not known yet.
        environ = self._environment()
        missing = [name for name in self._config.environment_names() if name not in environ]
        if missing:
            log.warning("tools: the environment lacks %s; tools whose servers need them are unavailable", ", ".join(missing))

    async def close(self) -> None:
        self._closed = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(session.close() for session in sessions), *self._background, return_exceptions=True)

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        permitted = [tool for tool in self._config.tools if allowed(tool, actor)]
        servers = [self._config.server(name) for name in dict.fromkeys(tool.server for tool in permitted)]
        # Concurrently, so one slow server costs a turn its own connect timeout, not the sum of all of them.
        listings = await asyncio.gather(*(self._listing(server, actor) for server in servers))
        offered = {server.name: listing for server, listing in zip(servers, listings, strict=True)}
        specs = []
        for tool in permitted:
            listing = offered[tool.server]
            if listing is None or tool.name not in listing:
                continue
            declared = listing[tool.name]
            specs.append(
                ToolSpec(
                    name=tool.name,
                    description=declared.description or declared.title or "",
                    parameters=json.dumps(declared.input_schema, separators=(",", ":"), ensure_ascii=False),
                )
            )
        return specs

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for tool in self._config.tools:
            if not allowed(tool, actor):
                continue
            server = self._config.server(tool.server)
            try:
                key = self._key(server, self._credentials(server, actor))
            except MissingEnvironment as error:
                reasons[tool.name] = f"the {server.name} server is not configured: {error}"
                continue
            outage = self._outages.get(key)
            session = self._sessions.get(key)
            if outage is not None:
                reasons[tool.name] = f"the {server.name} server is unavailable: {outage.reason}"
            elif session is not None and session.tools is not None and tool.name not in session.tools:
                reasons[tool.name] = f"the {server.name} server does not offer it"
        return reasons

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        policy = self._config.tool(tool)
        if policy is None or not allowed(policy, actor):
            # One answer for both, so a caller cannot learn which tools others may use.
            return ToolResult.failed(f"no tool named {tool!r} is available", duration_ms=elapsed_ms())
        server = self._config.server(policy.server)
        if self._closed:
            return ToolResult.unavailable("tools are shutting down", duration_ms=elapsed_ms())
        try:
            credentials = self._credentials(server, actor)
        except MissingEnvironment as error:
            return ToolResult.unavailable(f"the {server.name} server is not configured: {error}", duration_ms=elapsed_ms())

        async def run(client: Client, _session: _Session) -> mcp_types.CallToolResult:
            return await client.call_tool(tool, arguments, meta={IDEMPOTENCY_KEY_META: idempotency_key})

        result: mcp_types.CallToolResult | None = None
        try:
            with anyio.move_on_after(timeout_s):
                # Reconnecting and sending again is safe only when the call cannot have run (or is idempotent).
                result = await self._use(server, credentials, run, resend=policy.idempotent)
        except _Unreachable as error:
            return ToolResult.unavailable(f"the {server.name} server is unavailable: {error}", duration_ms=elapsed_ms())
        except _ConnectionLost as error:
            return ToolResult.failed(
                f"the connection to the {server.name} server broke during the call, which may have run: {error}",
                duration_ms=elapsed_ms(),
            )
        except MCPError as error:
            return ToolResult.failed(f"the {server.name} server refused the call: {error.message}", duration_ms=elapsed_ms())
        except ValidationError:
            return ToolResult.failed(f"the {server.name} server answered with a malformed result", duration_ms=elapsed_ms())
        if result is None:
            return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
        text = _text_of(result)  # whole: the caller cuts it to the tool's `max_result_tokens` and keeps the rest
        if result.is_error:
            return ToolResult.failed(text or "the tool reported an error", duration_ms=elapsed_ms())
        return ToolResult.completed(text, duration_ms=elapsed_ms())

    # --- sessions ------------------------------------------------------------------------------------

    async def _listing(self, server: ServerDeclaration, actor: Actor) -> dict[str, mcp_types.Tool] | None:
        """The tools `server` offers under `actor`'s credentials, or None (the reason kept) when it cannot say."""
        try:
            credentials = self._credentials(server, actor)
        except MissingEnvironment:
            return None
        key = self._key(server, credentials)
        outage = self._outages.get(key)
        if outage is not None and outage.unreachable:
            # It could not be reached last time: no turn waits for it again (a server that never answers would
            # cost each one its connect timeout); it is tried in the background, and listed once it answers.
            if time.monotonic() >= outage.retry_at and key not in self._sessions:
                self._in_background(self._fetch_listing(server, credentials))
            return None
        return await self._fetch_listing(server, credentials)

    async def _fetch_listing(self, server: ServerDeclaration, credentials: dict[str, str]) -> dict[str, mcp_types.Tool] | None:
        async def fetch(client: Client, session: _Session) -> dict[str, mcp_types.Tool]:
            if session.tools is None:
                tools: dict[str, mcp_types.Tool] = {}
                cursor: str | None = None
                for _ in range(_LISTING_PAGES_MAX):
                    page = await client.list_tools(cursor=cursor)
                    tools.update((listed.name, listed) for listed in page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                session.tools = tools
            return session.tools

        with anyio.move_on_after(server.connect_timeout_s):
            try:
                return await self._use(server, credentials, fetch, resend=True)
            except _Unreachable:
                return None  # _use kept the reason
            except (_ConnectionLost, MCPError, ValidationError) as error:
                self._report(server, credentials, f"listing its tools failed: {_describe(error)}")
                return None
        self._report(server, credentials, f"listing its tools took longer than {server.connect_timeout_s:g} s")
        return None

    def _report(self, server: ServerDeclaration, credentials: Mapping[str, str], reason: str) -> None:
        """Keeps `reason` for `unavailable`, without holding back the next attempt (nor hiding a worse reason)."""
        key = self._key(server, credentials)
        known = self._outages.get(key)
        if known is None or not known.unreachable:
            self._outages[key] = _Outage(reason=reason, unreachable=False, retry_at=time.monotonic())

    def _unreachable(self, key: tuple[str, str], reason: str) -> None:
        self._outages[key] = _Outage(reason=reason, unreachable=True, retry_at=time.monotonic() + self._retry_after_s)

    async def _use(
        self,
        server: ServerDeclaration,
        credentials: dict[str, str],
        work: Callable[[Client, _Session], Awaitable[Outcome]],
        *,
        resend: bool,
    ) -> Outcome:
        """`work` on the session for these credentials, connecting when there is none.

        `_Unreachable` (with the reason) when the server cannot be reached, and `_ConnectionLost` when the
        session breaks under `work`. A pooled session found broken is replaced, and `work` sent again on
        the new one only when `resend` allows it (the first attempt may have reached the server).
        """
        key = self._key(server, credentials)
        for attempt in (1, 2):
            session = self._session(server, key, credentials)
            reused = session.settled
            try:
                client = await session.connected()
            except _Unreachable:
                self._discard(key, session)
                if reused and attempt == 1:
                    continue  # it ended while pooled, and nothing was sent: connect afresh
                raise  # the session told the executor why (`_unreachable`)
            self._outages.pop(key, None)
            session.in_flight += 1
            session.last_used = time.monotonic()
            try:
                return await work(client, session)
            except Exception as error:
                if not _connection_lost(error, session):
                    raise
                reason = _describe(error)
                log.warning("MCP server %s: the session broke: %s", server.name, reason)
                self._discard(key, session)
                if attempt == 2 or not reused or not resend:
                    raise _ConnectionLost(reason) from None
            finally:
                session.in_flight -= 1
                session.last_used = time.monotonic()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _session(self, server: ServerDeclaration, key: tuple[str, str], credentials: dict[str, str]) -> _Session:
        session = self._sessions.get(key)
        if session is not None and (session.usable or not session.settled):
            return session
        if session is not None:
            self._discard(key, session)
        outage = self._outages.get(key)
        if outage is not None and time.monotonic() < outage.retry_at:
            raise _Unreachable(outage.reason)
        if self._closed:
            raise _Unreachable("tools are shutting down")
        self._make_room(server.name)
        session = _Session(
            server=server,
            credentials=credentials,
            errlog=self._errlog or sys.stderr,
            on_unreachable=lambda reason: self._unreachable(key, reason),
        )
        self._sessions[key] = session
        return session

    def _make_room(self, server_name: str) -> None:
        """Closes this server's sessions idle too long, then the least recently used idle ones beyond the cap."""
        now = time.monotonic()
        idle = sorted(
            ((key, session) for key, session in self._sessions.items() if key[0] == server_name and session.in_flight == 0),
            key=lambda item: item[1].last_used,
        )
        count = sum(1 for key in self._sessions if key[0] == server_name)
        for key, session in idle:
            if now - session.last_used > self._idle_timeout_s or count >= self._max_sessions:
                self._discard(key, session)
                count -= 1

    def _discard(self, key: tuple[str, str], session: _Session) -> None:
        if self._sessions.get(key) is session:
            del self._sessions[key]
        self._in_background(session.close())

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _credentials(self, server: ServerDeclaration, actor: Actor) -> dict[str, str]:
        return render_all(server.credentials, actor=actor, environ=self._environment())

    def _environment(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    @staticmethod
    def _key(server: ServerDeclaration, credentials: Mapping[str, str]) -> tuple[str, str]:
        return (server.name, fingerprint(server.name, credentials))


def _connection_lost(error: BaseException, session: _Session) -> bool:
    """Whether `error` means the session is gone (the transport failed), not that the server answered an error."""
    if isinstance(error, MCPError):
        return error.code == mcp_types.CONNECTION_CLOSED or not session.usable
    if isinstance(error, ValidationError):
        return False
    return True


def _describe(error: BaseException) -> str:
    """A short reason for a person or the model: the innermost error, without a traceback or any credential."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        return error.message
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _text_of(result: mcp_types.CallToolResult) -> str:
    """The model's view of a result: text as it is, other content named (`[image]`), structured content as JSON."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _block_text(block: object) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent):
        return "[image]"
    if isinstance(block, mcp_types.AudioContent):
        return "[audio]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource {block.uri}]"
    if isinstance(block, mcp_types.EmbeddedResource):
        if isinstance(block.resource, mcp_types.TextResourceContents):
            return block.resource.text
        return f"[resource {block.resource.uri}]"
    return f"[{getattr(block, 'type', 'content')}]"
