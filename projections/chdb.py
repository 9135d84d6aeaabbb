"""ChdbStore: the embedded SqlStore, a ClickHouse engine inside this process (chDB).

What chDB 4.4 (ClickHouse 26.9) does, checked by hand and by the contract suite:

- One embedded server per process, bound to one data path. A second session on the SAME
  path in the same process shares that server; a session on ANOTHER path fails
  ("EmbeddedServer already initialized with path ...") until every session on the first
  path is closed. Another process opening a path in use fails with "Cannot lock file
  <path>/status. Another server instance in same directory is already running", so a
  data directory belongs to exactly one process. Closing and reopening a path in the same
  process works, and the data is still there.
- The `default` database is an `Overlay` (clickhouse-local's Atomic database plus the
  file system), and `EXCHANGE TABLES a AND b[, c AND d]` works on it: blue/green rebuilds
  swap tables by name without copying. Several pairs go in one statement; each pair is
  swapped atomically, the statement as a whole is not a snapshot for concurrent readers.
- Query parameters (`{name:Type}`) are handed to chDB as text that the engine parses in
  ClickHouse's "escaped" (TabSeparated) form, exactly like `param_<name>` on the HTTP
  interface; `str(value)` is NOT enough (a tab, newline or backslash breaks it, `None`
  is not NULL, a list is not an Array), so `clickhouse_text.parameter_text` writes that
  form.
- chDB's defaults differ from a server's: `async_insert=1` (with `wait_for_async_insert=1`,
  so an insert is readable once it returns), `input_format_skip_unknown_fields=1` (a
  misspelt column would be dropped silently, hence the explicit, checked column list),
  `date_time_input_format=best_effort`, and the session time zone is the process's
  (pinned to UTC here so `DateTime` without a zone never depends on the host).
- A JSON number too big for its column wraps around instead of failing (300 into UInt8
  reads back 44): range checks belong in the code that builds the rows.

Every chDB call blocks, so all of them run on one dedicated thread: the event loop never
waits on the engine, calls never overlap, and the session is used from the thread that
opened it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from chdb.session import Session

from projections.clickhouse_text import decode_rows, insert_statement, json_each_row, parameter_text
from projections.store import SqlError

__all__ = ["ChdbStore"]

_Result = TypeVar("_Result")


class ChdbStore:
    """SqlStore on a chDB data directory; see the module docstring for chDB's rules."""

    def __init__(self, path: str) -> None:
        if "?" in path:
            raise ValueError(f"a chDB data path cannot contain '?' (it starts options): {path!r}")
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")
        self._closed = False
        # Opening is queued, not awaited: the single worker runs it before any later call,
        # and a failure to open (path locked by another process) surfaces on the first call.
        self._session: Future[Session] = self._executor.submit(_open_session, path)

    @property
    def path(self) -> str:
        return self._path

    async def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        parameter_texts = _parameter_texts(parameters)
        await self._on_engine_thread(lambda session: _run(session, sql, parameter_texts))

    async def query(
        self, sql: str, parameters: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        parameter_texts = _parameter_texts(parameters)
        # Decoding runs on the engine thread too, so a large result never stalls the loop.
        return await self._on_engine_thread(
            lambda session: decode_rows(_run(session, sql, parameter_texts))
        )

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        if not rows:
            return
        statement = insert_statement(table, rows)
        await self._on_engine_thread(lambda session: _stream_insert(session, statement, rows))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_session)
        finally:
            # The worker is idle now (close was the last job), so this does not block.
            self._executor.shutdown(wait=True)

    async def _on_engine_thread(self, call: Callable[[Session], _Result]) -> _Result:
        if self._closed:
            raise RuntimeError(f"ChdbStore({self._path!r}) is closed")

        def run_with_session() -> _Result:
            return call(self._session.result())

        return await asyncio.get_running_loop().run_in_executor(self._executor, run_with_session)

    def _close_session(self) -> None:
        if self._session.exception() is None:
            self._session.result().close()


def _open_session(path: str) -> Session:
    try:
        return Session(f"{path}?session_timezone=UTC")
    except RuntimeError as error:
        # chDB's own message for a path locked by another process is just "Error initializing
        # EmbeddedServer" (the reason goes to stderr), so name both rules here.
        raise SqlError(
            f"cannot open chDB at {path!r} (a data path belongs to one process, and a process"
            f" serves one path at a time): {error}"
        ) from error


def _run(session: Session, sql: str, parameter_texts: dict[str, str]) -> bytes:
    try:
        return session.query(sql, "JSONCompact", params=parameter_texts).bytes()
    except RuntimeError as error:
        raise SqlError(str(error)) from error


def _stream_insert(session: Session, statement: str, rows: Sequence[Mapping[str, object]]) -> None:
    # JSONEachRow data never passes through the SQL parser, so no string can escape it.
    body = json_each_row(rows)
    try:
        with session.send_insert(statement, "JSONEachRow") as inserter:
            inserter.append(body)
            inserter.finish()
    except RuntimeError as error:
        raise SqlError(str(error)) from error


def _parameter_texts(parameters: Mapping[str, object] | None) -> dict[str, str]:
    # Names go to chDB as they are: no URL to keep them out of, and the engine answers a
    # placeholder it was given no value for with an SqlError (UNKNOWN_QUERY_PARAMETER).
    return {name: parameter_text(value) for name, value in (parameters or {}).items()}
