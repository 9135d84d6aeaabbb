"""Test support: one chDB engine behind the ClickHouse HTTP interface, in a process of its own.

No modern ClickHouse server installs on these machines, and a chDB data path belongs to one
process. So a `ClickHouseHttpServer` starts this file as a separate Python process: it owns
the engine and answers the parts of ClickHouse's HTTP interface that clickhouse-connect uses,
and every client (the test process, `python -c` children) reaches the one engine over HTTP.
The test process itself never opens this data path, so its own in-process chDB stores (the
`ChdbStore` tests) are free to open theirs.

What it answers (checked against clickhouse-connect 1.12's requests):

- `GET /ping` and a bare `GET /`: `Ok.\\n`.
- `GET|POST /?query=...`: the SQL is the `query` parameter, then a newline, then the body
  (ClickHouse's rule), or the `query` field of a multipart form (clickhouse-connect sends one
  when bound parameters pass ~4 KiB). `database=` selects the database, `default_format=`
  the output format (TabSeparated otherwise), `param_<name>=` binds `{name:Type}` in the same
  escaped text form as the real server. Every other parameter that is not a transport option
  (`query_id`, `session_id`, `wait_end_of_query`, ...) is a ClickHouse setting for this request.
- `INSERT ... FORMAT <fmt>` followed by data: the data goes to the engine as bytes through
  chDB's streaming insert, never through the SQL parser.
- `Content-Encoding` of the request (lz4 frame, zstd, gzip, deflate) is undone; with
  `enable_http_compression=1` the reply is compressed with the first method of
  `Accept-Encoding` it knows, as the real server does.
- Replies carry the headers clickhouse-connect reads: `X-ClickHouse-Summary`,
  `X-ClickHouse-Format` (for statements that return rows), `X-ClickHouse-Timezone`,
  `X-ClickHouse-Query-Id`, `X-ClickHouse-Server-Display-Name`; errors are HTTP 4xx/5xx with
  `X-ClickHouse-Exception-Code` and the engine's `Code: N. DB::Exception: ...` text.
- With `--user/--password`, requests must authenticate (Basic auth, `X-ClickHouse-User` /
  `X-ClickHouse-Key`, or `user=`/`password=` parameters), else code 516 and HTTP 401.

Each request runs on a fresh chDB connection to the one path (about 0.1 ms), with the
request's settings in its connection string and `USE <database>`; chDB keeps `USE` and
settings per connection, so requests never see each other's, and they run in parallel on a
thread pool. Not served: sessions (`session_id` is accepted and ignored: every request is
independent), ClickHouse's own `compress`/`decompress` block format, external data tables,
progress headers, and readonly GET requests (a GET runs like a POST).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.parser
import email.policy
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_DEADLINE_S = 30.0
DISPLAY_NAME = "turnlog-chdb-test-server"

# HTTP parameters that are not settings (ClickHouse's HTTPHandler keeps the same list apart).
_TRANSPORT_PARAMETERS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "stacktrace",
        "role", "query_id", "session_id", "session_timeout", "session_check", "close_session",
        "client_protocol_version", "compress", "decompress", "buffer_size", "wait_end_of_query",
    }
)
_PARAMETER_PREFIX = "param_"

# An INSERT whose data follows a FORMAT clause in the same text. Data is bytes in any
# format, so the statement is cut at the first line break after the format's name.
_INSERT_WITH_DATA = re.compile(
    rb"\A\s*(?P<statement>INSERT\s+INTO\s.*?)\s+FORMAT\s+(?P<format>[A-Za-z0-9_]+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
_INLINE_ROWS = re.compile(rb"\b(VALUES|SELECT|WITH)\b", re.IGNORECASE)
# Statements that answer with rows (and so with X-ClickHouse-Format).
_RETURNS_ROWS = re.compile(
    r"\A\s*(\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN|CHECK)\b", re.IGNORECASE
)
_EXCEPTION_CODE = re.compile(r"Code: (\d+)\.")
_AUTHENTICATION_FAILED = 516
_BAD_ARGUMENTS = 36
_UNKNOWN_SETTING = 115
_UNKNOWN_DATABASE = 81
_UNKNOWN_TABLE = 60
_SYNTAX_ERROR = 62
_STATUS_BY_CODE = {
    _SYNTAX_ERROR: 400,
    _BAD_ARGUMENTS: 400,
    _UNKNOWN_SETTING: 400,
    _UNKNOWN_TABLE: 404,
    _UNKNOWN_DATABASE: 404,
    _AUTHENTICATION_FAILED: 401,
}
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8",
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
}


class ClickHouseHttpError(Exception):
    """A request this server refuses: answered with the ClickHouse error code and text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- the server process --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Request:
    sql: bytes
    database: str | None
    output_format: str
    parameters: dict[str, str]
    settings: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class _Reply:
    body: bytes
    output_format: str | None
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_s: float = 0.0


class _Engine:
    """The one chDB engine of this process; each request gets its own connection to it."""

    def __init__(self, data_path: str) -> None:
        import chdb  # only the server process loads the engine

        self._connect = chdb.connect
        self._path = os.path.abspath(data_path)
        # Held open for the server's lifetime: the engine stops when its last connection closes.
        self._anchor = chdb.connect(f"{self._path}?session_timezone=UTC")
        version, zone = (
            self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        )
        self.version = version
        self.timezone = zone
        self._setting_names = frozenset(
            self._anchor.query("SELECT name FROM system.settings", "TabSeparated").bytes().decode().split()
        )

    def close(self) -> None:
        self._anchor.close()

    def run(self, request: _Request) -> _Reply:
        unknown = sorted(name for name in request.settings if name not in self._setting_names)
        if unknown:
            raise ClickHouseHttpError(_UNKNOWN_SETTING, f"Unknown setting '{unknown[0]}'")
        settings = {"session_timezone": self.timezone, **request.settings}
        try:
            connection = self._connect(f"{self._path}?{urllib.parse.urlencode(settings)}")
        except RuntimeError as error:
            raise _engine_error(error) from error
        try:
            if request.database:
                connection.query(f"USE {_quote_identifier(request.database)}")
            return self._run_on(connection, request)
        except RuntimeError as error:
            raise _engine_error(error) from error
        finally:
            connection.close()

    def _run_on(self, connection: Any, request: _Request) -> _Reply:
        insert = _INSERT_WITH_DATA.match(request.sql)
        if insert is not None and not _INLINE_ROWS.search(insert["statement"]):
            started = time.perf_counter()
            with connection.send_insert(insert["statement"].decode(), insert["format"].decode()) as inserter:
                data = request.sql[insert.end() :]
                if data:
                    inserter.append(data)
                result = inserter.finish()
            return _Reply(
                body=b"",
                output_format=None,
                written_rows=result.rows_written,
                written_bytes=result.bytes_written,
                elapsed_s=time.perf_counter() - started,
            )
        try:
            sql = request.sql.decode()
        except UnicodeDecodeError as error:
            raise ClickHouseHttpError(_BAD_ARGUMENTS, f"the query is not UTF-8: {error}") from error
        result = connection.query(sql, request.output_format, params=request.parameters or None)
        returns_rows = _RETURNS_ROWS.match(sql) is not None
        return _Reply(
            body=result.bytes(),
            output_format=request.output_format if returns_rows else None,
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            elapsed_s=result.elapsed(),
        )


def _engine_error(error: Exception) -> ClickHouseHttpError:
    message = str(error).removeprefix("Failed to create connection: ")
    match = _EXCEPTION_CODE.search(message)
    return ClickHouseHttpError(int(match[1]) if match else 1001, message)


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class ClickHouseHttpApp:
    """The ASGI app: ClickHouse's HTTP interface in front of one `_Engine`."""

    def __init__(
        self, *, data_path: str, user: str | None = None, password: str = "", workers: int = 8
    ) -> None:
        self._data_path = data_path
        self._user = user
        self._password = password
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chdb-http")
        self._engine: _Engine | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._engine = await loop.run_in_executor(self._executor, _Engine, self._data_path)
                except Exception as error:  # the harness shows the log when startup fails
                    await send({"type": "lifespan.startup.failed", "message": repr(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._engine is not None:
                    await loop.run_in_executor(self._executor, self._engine.close)
                self._executor.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        parameters = urllib.parse.parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        path, method = scope["path"], scope["method"]
        if path == "/ping" or (path == "/" and method in ("GET", "HEAD") and not parameters):
            await _respond(send, 200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        if path != "/":
            await _respond(send, 404, b"There is no handle " + path.encode() + b"\n", {})
            return
        query_id = dict(parameters).get("query_id") or str(uuid.uuid4())
        common_headers = {"X-ClickHouse-Server-Display-Name": DISPLAY_NAME, "X-ClickHouse-Query-Id": query_id}
        assert self._engine is not None
        try:
            self._authenticate(headers, dict(parameters))
            request = self._parse(headers, parameters, bytes(body))
            reply = await asyncio.get_running_loop().run_in_executor(self._executor, self._engine.run, request)
        except ClickHouseHttpError as error:
            text = f"{error} (version {self._engine.version} (chDB test server))\n"
            if not text.startswith("Code:"):
                text = f"Code: {error.code}. DB::Exception: {text}"
            await _respond(
                send,
                _STATUS_BY_CODE.get(error.code, 500),
                text.encode(),
                {**common_headers, "Content-Type": "text/plain; charset=UTF-8",
                 "X-ClickHouse-Exception-Code": str(error.code)},
            )
            return
        reply_headers = {
            **common_headers,
            "Content-Type": _content_type(request.output_format),
            "X-ClickHouse-Timezone": request.settings.get("session_timezone", self._engine.timezone),
            "X-ClickHouse-Summary": json.dumps(
                {
                    "read_rows": str(reply.read_rows),
                    "read_bytes": str(reply.read_bytes),
                    "written_rows": str(reply.written_rows),
                    "written_bytes": str(reply.written_bytes),
                    "total_rows_to_read": "0",
                    "result_rows": str(reply.written_rows),
                    "result_bytes": str(reply.written_bytes),
                    "elapsed_ns": str(int(reply.elapsed_s * 1e9)),
                }
            ),
        }
        if reply.output_format is not None:
            reply_headers["X-ClickHouse-Format"] = reply.output_format
        reply_body = reply.body
        if request.settings.get("enable_http_compression") == "1":
            encoding = _response_encoding(headers.get("accept-encoding", ""))
            if encoding is not None:
                reply_body = _compress(reply_body, encoding)
                reply_headers["Content-Encoding"] = encoding
        await _respond(send, 200, reply_body, reply_headers)

    def _parse(self, headers: Mapping[str, str], parameters: list[tuple[str, str]], body: bytes) -> _Request:
        fields = dict(parameters)
        for transport_option in ("compress", "decompress"):
            if fields.get(transport_option, "0") not in ("", "0"):
                raise ClickHouseHttpError(
                    _BAD_ARGUMENTS, f"{transport_option}=1 (ClickHouse's block compression) is not served here"
                )
        body = _decoded_body(body, headers.get("content-encoding", ""))
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = _form_fields(content_type, body)
            fields.update(form)
            parameters = [*parameters, *form.items()]
            body = b""
        query = fields.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            raise ClickHouseHttpError(_BAD_ARGUMENTS, "Empty query")
        return _Request(
            sql=sql,
            database=fields.get("database") or None,
            output_format=fields.get("default_format") or "TabSeparated",
            parameters={
                name[len(_PARAMETER_PREFIX) :]: value
                for name, value in parameters
                if name.startswith(_PARAMETER_PREFIX)
            },
            settings={
                name: value
                for name, value in parameters
                if name not in _TRANSPORT_PARAMETERS and not name.startswith(_PARAMETER_PREFIX)
            },
        )

    def _authenticate(self, headers: Mapping[str, str], fields: Mapping[str, str]) -> None:
        if self._user is None:
            return
        user, password = fields.get("user"), fields.get("password", "")
        if "x-clickhouse-user" in headers:
            user, password = headers["x-clickhouse-user"], headers.get("x-clickhouse-key", "")
        authorization = headers.get("authorization", "")
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[len("Basic ") :]).decode().partition(":")
        if user != self._user or password != self._password:
            raise ClickHouseHttpError(
                _AUTHENTICATION_FAILED,
                f"{user or 'default'}: Authentication failed: password is incorrect,"
                " or there is no user with such name.",
            )


async def _respond(send: Any, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _content_type(output_format: str) -> str:
    if output_format.startswith("JSON"):
        return "application/json; charset=UTF-8"
    return _CONTENT_TYPES.get(output_format, "text/plain; charset=UTF-8")


def _decoded_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding == "lz4":
            import lz4.frame

            return lz4.frame.decompress(body)
        if encoding == "zstd":
            from backports import zstd

            return zstd.decompress(body)
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except Exception as error:
        raise ClickHouseHttpError(_BAD_ARGUMENTS, f"cannot decompress the {encoding} body: {error}") from error
    raise ClickHouseHttpError(_BAD_ARGUMENTS, f"Content-Encoding {encoding!r} is not served here")


def _response_encoding(accept_encoding: str) -> str | None:
    for encoding in (part.split(";")[0].strip().lower() for part in accept_encoding.split(",")):
        if encoding in ("lz4", "zstd", "gzip", "deflate"):
            return encoding
    return None


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.compress(body)
    if encoding == "zstd":
        from backports import zstd

        return zstd.compress(body)
    if encoding == "gzip":
        return gzip.compress(body)
    return zlib.compress(body)


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The plain text fields of a multipart/form-data body; files (external data) are refused."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if part.get_filename() is not None:
            raise ClickHouseHttpError(_BAD_ARGUMENTS, "external data tables are not served here")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
    return fields


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    arguments = parser.parse_args(argv)

    import uvicorn

    app = ClickHouseHttpApp(data_path=arguments.data_dir, user=arguments.user, password=arguments.password)
    uvicorn.run(app, host=arguments.host, port=arguments.port, log_level="warning", access_log=False, lifespan="on")


# --- the test side: start, use and stop the server process ---------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerFailedToStart(RuntimeError):
    pass


@dataclass(kw_only=True)
class ClickHouseHttpServer:
    """This file run as a server process on a free loopback port; `start()` waits for `/ping`."""

    data_dir: Path
    user: str | None = None
    password: str = ""
    startup_deadline_s: float = STARTUP_DEADLINE_S
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def url(self, database: str = "default", *, user: str | None = None, password: str | None = None) -> str:
        """A `clickhouse://` URL for ClickHouseStore, with this server's credentials unless told."""
        assert self.port is not None, "server not started"
        user = self.user if user is None else user
        password = self.password if password is None else password
        credentials = ""
        if user is not None:
            credentials = urllib.parse.quote(user, safe="")
            if password:
                credentials += ":" + urllib.parse.quote(password, safe="")
            credentials += "@"
        return f"clickhouse://{credentials}127.0.0.1:{self.port}/{urllib.parse.quote(database, safe='')}"

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.port is None:  # started again after `stop()`: the same port, so clients' URLs still hold
            self.port = free_port()
        self.log_path = self.data_dir.parent / f"clickhouse-http-{self.port}.log"
        command = [sys.executable, __file__, "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.user is not None:
            command += ["--user", self.user, "--password", self.password]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TZ": "UTC"}
            )
        deadline = time.monotonic() + self.startup_deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailedToStart(f"exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/ping", timeout=1) as response:
                    if response.read() == b"Ok.\n":
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServerFailedToStart(f"no answer on {self.base_url}/ping in {self.startup_deadline_s} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def execute(self, sql: str) -> bytes:
        """Run one statement over plain HTTP (no clickhouse-connect): for setting up databases."""
        request = urllib.request.Request(f"{self.base_url}/", data=sql.encode(), method="POST")
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{sql!r} failed: {error.read().decode(errors='replace')}") from error

    async def create_database(self, database: str) -> None:
        await asyncio.to_thread(self.execute, f"CREATE DATABASE IF NOT EXISTS {_quote_identifier(database)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
