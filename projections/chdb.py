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
  is not NULL, a list is not an Array), so `_parameter_text` writes that form.
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
import json
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from chdb.session import Session

from projections.store import SqlError

__all__ = ["ChdbStore"]

_Result = TypeVar("_Result")

# Table and column names are SQL text, so only plain identifiers (optionally db.table) pass.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")

# Backslash escapes of ClickHouse's escaped and quoted text forms.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
_QUOTED_ESCAPES = {**_ESCAPES, "'": "\\'"}
_ESCAPED = str.maketrans(_ESCAPES)
_QUOTED = str.maketrans(_QUOTED_ESCAPES)

# The text form ClickHouse reads and writes for DateTime64(6) (microseconds, no zone).
_DATETIME_TEXT = "%Y-%m-%d %H:%M:%S.%f"


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
            lambda session: _decode_rows(_run(session, sql, parameter_texts))
        )

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        if not rows:
            return
        statement = _insert_statement(table, rows)
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
    body = "\n".join(json.dumps(row, ensure_ascii=False, default=_json_value) for row in rows)
    try:
        with session.send_insert(statement, "JSONEachRow") as inserter:
            inserter.append(body.encode("utf-8"))
            inserter.finish()
    except RuntimeError as error:
        raise SqlError(str(error)) from error


def _insert_statement(table: str, rows: Sequence[Mapping[str, object]]) -> str:
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"not a plain table name: {table!r}")
    columns = list(rows[0])
    for column in columns:
        if not _IDENTIFIER.fullmatch(column):
            raise ValueError(f"not a plain column name: {column!r}")
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"every row of a batch must name the columns {columns}, got {list(row)}")
    quoted_table = ".".join(f"`{part}`" for part in table.split("."))
    return f"INSERT INTO {quoted_table} ({', '.join(f'`{column}`' for column in columns)})"


# --- values into the engine -------------------------------------------------------------


def _parameter_texts(parameters: Mapping[str, object] | None) -> dict[str, str]:
    return {name: _parameter_text(value) for name, value in (parameters or {}).items()}


def _parameter_text(value: object) -> str:
    """`value` in ClickHouse's escaped text form, the form a `{name:Type}` parameter is read in."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPED)
    if isinstance(value, (list, tuple)):
        # Array elements are read in the quoted form, which has no raw tab or newline left.
        return _literal(value)
    return _scalar_text(value)


def _literal(value: object) -> str:
    """`value` as a ClickHouse literal, the form of an element inside an array."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.translate(_QUOTED) + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(element) for element in value) + "]"
    if isinstance(value, (datetime, date)):
        return "'" + _scalar_text(value) + "'"
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot bind a {type(value).__name__} as a query parameter")


def _json_value(value: object) -> object:
    """json.dumps hook: the JSON form of values JSON has no type for."""
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot insert a {type(value).__name__}")


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give it a time zone (UTC)")
    return moment.astimezone(timezone.utc).strftime(_DATETIME_TEXT)


# --- rows out of the engine -------------------------------------------------------------

_Decoder = Callable[[Any], object]


def _decode_rows(output: bytes) -> list[dict[str, object]]:
    if not output:
        return []  # statements without a result set write nothing at all
    result = json.loads(output)
    names = [column["name"] for column in result["meta"]]
    decoders = [
        (index, decoder)
        for index, column in enumerate(result["meta"])
        if (decoder := _decoder_for(column["type"])) is not None
    ]
    rows: list[dict[str, object]] = []
    for values in result["data"]:
        for index, decoder in decoders:
            values[index] = decoder(values[index])
        rows.append(dict(zip(names, values)))
    return rows


def _decoder_for(type_name: str) -> _Decoder | None:
    """How to turn a JSONCompact value of ClickHouse type `type_name` into Python (None: as is)."""
    if type_name.startswith("LowCardinality("):
        return _decoder_for(type_name[len("LowCardinality(") : -1])
    if type_name.startswith("Nullable("):
        inner = _decoder_for(type_name[len("Nullable(") : -1])
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    if type_name.startswith("Array("):
        element = _decoder_for(type_name[len("Array(") : -1])
        if element is None:
            return None
        return lambda values: [element(value) for value in values]
    if type_name.startswith("DateTime"):
        return _datetime_decoder(type_name)
    if type_name in ("Date", "Date32"):
        return date.fromisoformat
    if type_name.startswith(("Int", "UInt")):
        # 64-bit and wider integers may come quoted (output_format_json_quote_64bit_integers).
        return lambda value: int(value) if isinstance(value, str) else value
    if type_name.startswith(("Float", "BFloat")):
        return lambda value: float(value) if isinstance(value, str) else value
    return None


def _datetime_decoder(type_name: str) -> _Decoder:
    # A DateTime without a zone is written in the session zone, which _open_session pins to UTC.
    zone_match = re.search(r"'([^']+)'", type_name)
    zone = timezone.utc if zone_match is None or zone_match[1] == "UTC" else ZoneInfo(zone_match[1])

    def decode(text: str) -> datetime:
        # DateTime64(9) has nanoseconds; Python keeps microseconds.
        return datetime.fromisoformat(text[:26]).replace(tzinfo=zone)

    return decode
