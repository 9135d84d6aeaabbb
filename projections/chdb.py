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
- The engine is configured by a ClickHouse XML file named in the connection string
  (`config-file=`), written into the data directory as `turnlog-chdb.xml` before the session
  opens (`ENGINE_CONFIG`: why each setting is there). `key=value` options in the string set
  server settings too, but not the `<merge_tree>` table defaults.
- The engine's global thread pool keeps up to `max_thread_pool_free_size` threads idle (the
  server default: 1,000), each holding three descriptors of its own `/proc/thread-self`
  files. The pool is sized once per process, when `import chdb` starts the engine for a
  throwaway connection, from the first config file that connection finds (`./config.xml`,
  `./clickhouse-local.xml`, `$HOME/.clickhouse-local/config.xml`): a session's own
  `config-file=` comes too late for it. So the import runs with HOME pointing at a
  directory holding `PROCESS_CONFIG` (`_start_engine`).
- The cleanup of outdated parts can start many pool threads at once: clickhouse-local drops
  a part as soon as a merge replaces it (`old_parts_lifetime` 0), every
  `cleanup_delay_period` (30 s), and once more than `concurrent_part_removal_threshold`
  (100) are due, it removes them on up to 128 pool threads. The read models insert small
  batches (a part each), so under load a cleanup often has that many; `ENGINE_CONFIG` keeps
  removal on the cleanup thread.

Every chDB call blocks, so all of them run on one dedicated thread: the event loop never
waits on the engine, calls never overlap, and the session is used from the thread that
opened it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from projections.clickhouse_text import decode_rows, insert_statement, json_each_row, parameter_text
from projections.store import SqlError

__all__ = ["ENGINE_CONFIG", "IDLE_ENGINE_THREADS", "MEMORY_WORKER_PERIOD_MS", "PROCESS_CONFIG", "ChdbStore"]

# What the engine's pool keeps idle after a burst: the read models' steady work (one call at
# a time, plus merges) reuses about 8 (a bound of 4 cost 5-10% more CPU per insert and
# query, created afresh; 8 and 16 cost nothing measurable), and the threads of a burst beyond it
# end instead of holding their descriptors for the life of the process.
IDLE_ENGINE_THREADS = 8

# How often the engine's memory worker reads the process's resident memory to correct its memory tracking. The
# server default, 100 ms, woke it 20 times a second and was a third of an idle server's CPU here; the read models'
# memory moves slowly. Read from the session's config (ENGINE_CONFIG), not from PROCESS_CONFIG.
MEMORY_WORKER_PERIOD_MS = 1000

# Read by the engine when `import chdb` starts it, the one time its global pool is sized.
PROCESS_CONFIG = f"""<clickhouse>
    <max_thread_pool_free_size>{IDLE_ENGINE_THREADS}</max_thread_pool_free_size>
</clickhouse>
"""

# The session's own config. Outdated parts are removed one after another on the engine's
# cleanup thread: they are small (one insert batch, or a merge's inputs), and a parallel
# removal would start ~120 pool threads at once (see the module docstring). The pool's
# bound is repeated so that system.server_settings tells the truth about it.
ENGINE_CONFIG = f"""<clickhouse>
    <max_thread_pool_free_size>{IDLE_ENGINE_THREADS}</max_thread_pool_free_size>
    <memory_worker_period_ms>{MEMORY_WORKER_PERIOD_MS}</memory_worker_period_ms>
    <merge_tree>
        <concurrent_part_removal_threshold>1000000000</concurrent_part_removal_threshold>
    </merge_tree>
</clickhouse>
"""
_CONFIG_FILE_NAME = "turnlog-chdb.xml"

_Result = TypeVar("_Result")


def _start_engine() -> None:
    """Import chdb (which starts its engine) with PROCESS_CONFIG as the config it finds.

    HOME is swapped only while the import runs, best before the process starts threads
    (`turnlog serve`, `replay` and a projector's `worker` import this module first:
    `turnlog.adapters.load_store_engine`);
    a process that imported chdb before keeps the pool it got then.
    """
    if "chdb" in sys.modules:
        return
    with tempfile.TemporaryDirectory(prefix="turnlog-chdb-") as home:
        config = Path(home, ".clickhouse-local", "config.xml")
        config.parent.mkdir()
        config.write_text(PROCESS_CONFIG, encoding="utf-8")
        previous_home = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            import chdb  # noqa: F401
        finally:
            if previous_home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = previous_home


_start_engine()
from chdb.session import Session  # noqa: E402  (after the engine has started with PROCESS_CONFIG)


class ChdbStore:
    """SqlStore on a chDB data directory; see the module docstring for chDB's rules."""

    def __init__(self, path: str) -> None:
        if "?" in path:
            raise ValueError(f"a chDB data path cannot contain '?' (it starts options): {path!r}")
        if "&" in os.path.abspath(path):
            raise ValueError(f"a chDB data path cannot contain '&' (it separates options): {path!r}")
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
        # One engine thread per insert: the read models' batches are small, and timed alone a one-row insert cost the
        # process ~10% less CPU so (docs/benchmarks.md, "2026-12-06"). Queries keep the engine's default.
        statement = f"{insert_statement(table, rows)} SETTINGS max_threads = 1"
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
    config_file = _write_engine_config(path)
    try:
        return Session(f"{path}?session_timezone=UTC&config-file={config_file}")
    except RuntimeError as error:
        # chDB's own message for a path locked by another process is just "Error initializing
        # EmbeddedServer" (the reason goes to stderr), so name both rules here.
        raise SqlError(
            f"cannot open chDB at {path!r} (a data path belongs to one process, and a process"
            f" serves one path at a time): {error}"
        ) from error


def _write_engine_config(path: str) -> str:
    # Written whole and renamed into place: another process may be reading it (to fail on
    # the locked path), and a file left from an older ENGINE_CONFIG is replaced.
    config_file = os.path.join(os.path.abspath(path), _CONFIG_FILE_NAME)
    os.makedirs(os.path.dirname(config_file), exist_ok=True)
    partial = f"{config_file}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as file:
        file.write(ENGINE_CONFIG)
    os.replace(partial, config_file)
    return config_file


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
