"""A TCP proxy in front of a server whose open connections a test can drop at once: a real network cut.

Chromium's offline emulation leaves an open EventSource connection alone, so the browser tests reach the
server through this proxy instead and `cut()` it mid-stream. It runs its own event loop in a thread (the
Playwright tests are synchronous) and keeps what the browser sent, so a test can see the headers of its
reconnections (`Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>; `cut()` aborts every connection open now."""

    def __init__(self, *, target_port: int) -> None:
        self.target_port = target_port
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cuttable-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._sent = bytearray()
        self._sent_lock = threading.Lock()

    def start(self) -> CuttableProxy:
        self._thread.start()
        self.port = self._run(self._listen())
        return self

    def cut(self) -> int:
        """Drop every open connection (both sides, with a reset); returns how many were open."""
        return self._run(self._cut())

    def sent_text(self) -> str:
        """Everything browsers sent through the proxy so far (request lines, headers and bodies), as text."""
        with self._sent_lock:
            return self._sent.decode("latin-1")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._run(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def _run(self, coroutine):
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self._connections.add(pair)
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, record=True),
                self._pipe(upstream_reader, client_writer, record=False),
            )
        finally:
            self._connections.discard(pair)
            for writer in pair:
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                if record:
                    with self._sent_lock:
                        self._sent.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()  # one side gone: the other goes too, as through a real network

    async def _cut(self) -> int:
        open_now = list(self._connections)
        for pair in open_now:
            for writer in pair:
                writer.transport.abort()
        return len(open_now)

    async def _close(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
