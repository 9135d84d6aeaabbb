"""ClickHouseStore: the SqlStore on a ClickHouse server, over HTTP with clickhouse-connect.

The same SQL and the same wire formats as the chDB adapter, so the two read and write alike:
results come back as `FORMAT JSONCompact` and are decoded by the same rules, and an insert
is one `INSERT INTO t (columns) FORMAT JSONEachRow` whose rows are JSON, never SQL text.
Every request carries `session_timezone=UTC`, as the chDB session is pinned, so a
`DateTime` without a zone reads the same on both.

What clickhouse-connect 1.12 does, and how this adapter deals with it:

- The client is synchronous (urllib3); its async client needs aiohttp, which nothing else
  here uses. So every call runs on a small pool of threads that share one client: sessions
  are off (a client with a session refuses concurrent queries), and urllib3's connection
  pool is thread safe.
- Building a client talks to the server (`SELECT version(), timezone()`, all of
  `system.settings`, a protocol probe), so it is built on a worker thread, queued at
  construction; a server that cannot be reached surfaces on the first call.
- It binds `{name:Type}` parameters server-side (`param_<name>` on the URL, or a form field
  once they pass about 4 KiB) but formats the values itself, not as this port promises: a
  tuple becomes a ClickHouse tuple, which an `Array` parameter refuses; a naive datetime
  passes silently; and when the SQL has no `{name:Type}` at all it falls back to
  client-side `%` formatting, which splices the values into the SQL text (and fails on a
  literal `%`). So this adapter writes each value in ClickHouse's escaped text form itself
  (the form a `param_<name>` is read in, as the chDB adapter does), hands it over in a
  wrapper that clickhouse-connect sends as `str()` of it, and sends parameters only when
  the SQL names at least one placeholder.
- Its own typed reads (`client.query`, Native format) return naive datetimes for UTC
  columns by default and types of its own choosing; JSONCompact keeps both adapters' rows
  identical instead.
- It retries a request whose connection the server closed, inserts included, so an insert
  can land twice when the connection drops after the server wrote it. The read models
  shrug (ReplacingMergeTree by version, FINAL reads); append-only tables would not.
- An insert's body is compressed (`Content-Encoding: lz4`, or gzip where lz4 is not
  installed); the INSERT statement then travels as the `query` URL parameter.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseConnectError
from clickhouse_connect.driver.exceptions import OperationalError

from projections.clickhouse_text import (
    check_parameter_name,
    decode_rows,
    insert_target,
    json_each_row,
    parameter_text,
)
from projections.store import SqlError, StoreUnavailable

try:
    import lz4.frame as _lz4_frame
except ModuleNotFoundError:  # clickhouse-connect pulls in lz4 only before Python 3.14
    _lz4_frame = None

__all__ = ["ClickHouseAddress", "ClickHouseStore", "parse_clickhouse_url"]

_Result = TypeVar("_Result")

_DEFAULT_PORTS = {"clickhouse": 8123, "clickhouses": 8443}

# A `{name:Type}` placeholder. clickhouse-connect's own pattern accepts at least these, so
# whenever this one matches, it binds server-side and never formats the SQL text.
_PLACEHOLDER = re.compile(r"\{(\w+):([^}]+)\}")

_SETTINGS = {"session_timezone": "UTC"}


@dataclass(frozen=True, kw_only=True)
class ClickHouseAddress:
    """Where a ClickHouse server's HTTP interface is, and who to be there."""

    host: str
    port: int
    database: str
    username: str | None = None
    password: str = field(default="", repr=False)
    secure: bool = False


def parse_clickhouse_url(url: str) -> ClickHouseAddress:
    """`clickhouse://[user[:password]@]host[:port][/database]` (HTTP, port 8123 by default).

    `clickhouses://` is the same over HTTPS (port 8443). User, password and database are
    percent-decoded; the database defaults to `default`. Options (`?...`) are refused rather
    than ignored, so a misspelt one never goes unnoticed.
    """
    parts = urlsplit(url)
    shown = _without_password(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"a ClickHouse URL starts with clickhouse:// or clickhouses://, got {shown!r}")
    if not parts.hostname:
        raise ValueError(f"a ClickHouse URL names a host (clickhouse://host:8123/database), got {shown!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as error:
        raise ValueError(f"the port of a ClickHouse URL is a number from 1 to 65535, got {shown!r}") from error
    if parts.query or parts.fragment:
        raise ValueError(f"a ClickHouse URL takes no options (?...) or fragment (#...), got {shown!r}")
    database = unquote(parts.path.removeprefix("/"))
    if "/" in database:
        raise ValueError(f"a ClickHouse URL's path is one database name, got {shown!r}")
    return ClickHouseAddress(
        host=parts.hostname,
        port=port,
        database=database or "default",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password or ""),
        secure=parts.scheme == "clickhouses",
    )


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class ClickHouseStore:
    """SqlStore on a ClickHouse server; see the module docstring for clickhouse-connect's rules."""

    def __init__(
        self,
        url: str,
        *,
        max_concurrent_calls: int = 4,
        connect_timeout_s: int = 10,
        query_timeout_s: int = 300,
    ) -> None:
        self._address = parse_clickhouse_url(url)
        self._url = _without_password(url)
        self._closed = False
        # clickhouse-connect's pool keeps 8 connections per host; more threads would churn them.
        self._executor = ThreadPoolExecutor(
            max_workers=min(max_concurrent_calls, 8), thread_name_prefix="clickhouse"
        )
        # Queued, not awaited: a call waits for the client, and a failure to connect
        # surfaces on the first call.
        self._connect_timeout_s = connect_timeout_s
        self._query_timeout_s = query_timeout_s
        self._client: Future[Client] = self._executor.submit(
            _connect, self._address, connect_timeout_s, query_timeout_s
        )

    @property
    def address(self) -> ClickHouseAddress:
        return self._address

    async def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        bound = _bound_parameters(sql, parameters)
        await self._call(lambda client: client.command(sql, parameters=bound))

    async def query(
        self, sql: str, parameters: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        bound = _bound_parameters(sql, parameters)
        # Decoding runs on the worker thread too, so a large result never stalls the loop.
        return await self._call(
            lambda client: decode_rows(client.raw_query(sql, parameters=bound, fmt="JSONCompact"))
        )

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        if not rows:
            return
        quoted_table, columns = insert_target(table, rows)
        # JSONEachRow data never passes through the SQL parser, so no string can escape it.
        encoding, compressed = _compressed(json_each_row(rows))
        await self._call(
            lambda client: client.raw_insert(
                quoted_table, columns, insert_block=compressed, fmt="JSONEachRow", compression=encoding
            )
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Calls already started finish first; then the client's connection pool is closed.
        await asyncio.to_thread(self._shut_down)

    async def _call(self, call: Callable[[Client], _Result]) -> _Result:
        if self._closed:
            raise RuntimeError(f"ClickHouseStore({self._url!r}) is closed")

        def run_with_client() -> _Result:
            try:
                return call(self._connected())
            except OperationalError as error:  # the transport failed: the server is down or unreachable
                raise StoreUnavailable(str(error)) from error
            except ClickHouseConnectError as error:
                raise SqlError(str(error)) from error

        return await asyncio.get_running_loop().run_in_executor(self._executor, run_with_client)

    def _connected(self) -> Client:
        """The client; one that failed to connect (the server was down at start) is built again, once per call."""
        if self._client.done() and self._client.exception() is not None:
            self._client = _completed(_connect(self._address, self._connect_timeout_s, self._query_timeout_s))
        return self._client.result()

    def _shut_down(self) -> None:
        self._executor.shutdown(wait=True)
        if self._client.exception() is None:
            self._client.result().close()


def _connect(address: ClickHouseAddress, connect_timeout_s: int, query_timeout_s: int) -> Client:
    try:
        return clickhouse_connect.get_client(
            host=address.host,
            port=address.port,
            username=address.username,
            password=address.password,
            database=address.database,
            secure=address.secure,
            settings=_SETTINGS,
            autogenerate_session_id=False,
            dedicated_pool=True,
            compress=False,
            connect_timeout=connect_timeout_s,
            send_receive_timeout=query_timeout_s,
            client_name="turnlog",
        )
    except ClickHouseConnectError as error:
        scheme = "clickhouses" if address.secure else "clickhouse"
        message = f"cannot connect to ClickHouse at {scheme}://{address.host}:{address.port}/{address.database}: {error}"
        # Unreachable is a 503 that passes; refused (credentials, a missing database) is a mistake to fix.
        raise (StoreUnavailable if isinstance(error, OperationalError) else SqlError)(message) from error


def _completed(client: Client) -> Future[Client]:
    future: Future[Client] = Future()
    future.set_result(client)
    return future


def _compressed(body: bytes) -> tuple[str, bytes]:
    """The insert body and its Content-Encoding: JSON rows shrink several times over."""
    if _lz4_frame is not None:
        return "lz4", _lz4_frame.compress(body)
    return "gzip", gzip.compress(body, compresslevel=1)


# --- values into the engine -------------------------------------------------------------


@dataclass(frozen=True)
class _ParameterText:
    """A value already in ClickHouse's escaped text form: clickhouse-connect sends `str()` of it."""

    text: str

    def __str__(self) -> str:
        return self.text


def _bound_parameters(
    sql: str, parameters: Mapping[str, object] | None
) -> dict[str, _ParameterText] | None:
    if not parameters:
        return None
    texts: dict[str, _ParameterText] = {}
    for name, value in parameters.items():
        # Each name becomes a `param_<name>` URL key (or form field), so only plain ones pass.
        check_parameter_name(name)
        texts[name] = _ParameterText(parameter_text(value))
    # Without a placeholder the server would ignore every value, and clickhouse-connect
    # would format them into the SQL text instead: send none.
    return texts if _PLACEHOLDER.search(sql) else None
