"""`turnlog sql "SELECT ..."`: a query on the read-model store, printed as a table, JSON or CSV, without a ClickHouse client.

The store is the one the server writes: chDB under `<data-dir>/read-models` by default, or a ClickHouse server
(`--store clickhouse://...`). chDB lets one process open a data path at a time, so on the embedded store the
server must be stopped (the error says so when it is not); a ClickHouse server answers any number of clients,
the running server included. Only queries run (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS), as ClickHouse's
own parser reads the statement: a typo never drops a table. The tables and the analysts' queries are in
docs/analytics.md; a query's name (`turnlog sql routing`) runs that query.

With `--server URL` and an admin token, a named query runs through the running server instead, over the
token's org only (`GET /v1/admin/analytics/{name}`): no access to the store is needed, and the embedded one
need not be stopped. There is no HTTP endpoint for free SQL: docs/analytics.md says why.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import httpx

from projections.analyst_queries import ANALYST_QUERIES
from projections.store import SqlError, SqlStore
from turnlog.extras import missing_extras, required_extras
from turnlog.options import CommandParser
from turnlog.settings import Settings, url_path, url_scheme

FORMATS = ("table", "json", "csv")
QUERY_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")


class NotAQuery(ValueError):
    """A statement that would change something (INSERT, ALTER, DROP, ...): `turnlog sql` only reads."""


def add_sql_parser(commands: argparse._SubParsersAction) -> None:
    """`turnlog sql QUERY`."""
    sql: CommandParser = commands.add_parser(
        "sql", help="run a query on the read-model store and print the rows (docs/analytics.md)",
        description="Run one query (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) on the read models and print its rows.",
        epilog="On the embedded store (chDB) stop the server first: chDB lets one process open a data path at a time."
        " A ClickHouse server store (--store clickhouse://...) can be queried while the server runs.",
    )
    sql.add_argument(
        "query", nargs="?", metavar="QUERY",
        help=f"the SQL, or a documented query's name ({', '.join(ANALYST_QUERIES)}); without it (or '-'), read from stdin",
    )
    sql.add_option(
        "--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the (stopped) server's data directory"
    )
    sql.add_option("--store", metavar="URL", help="read-model store URL", shown_default="chdb:///<data-dir>/read-models")
    sql.add_option("--format", choices=FORMATS, default="table", help="how the rows are printed")
    sql.add_option(
        "--server", metavar="URL", shown_default="none: the store itself",
        help="run a documented query (by name) through this running server, over your org only; needs an admin token",
    )
    sql.add_option(
        "--token", metavar="TOKEN", shown_default="none",
        help="with --server: a token with role admin (turnlog token --user-role admin, or an admin API key)",
    )
    sql.add_option(
        "--param", type=_parameter, repeated=True, default=(), shown_default="none", metavar="NAME=VALUE",
        help="a value for {NAME:Type} in the query, in ClickHouse's text form for that type; repeat for several",
    )


def run_sql(arguments: argparse.Namespace) -> int:
    """0 and the rows on stdout; 1 and why on stderr when the store or the query fails; 2 for bad arguments."""
    if arguments.server:
        return _run_through_server(arguments)
    settings = Settings(data_dir=arguments.data_dir, store_url=arguments.store, roles=("projector",))
    missing = missing_extras(required_extras(replace(settings, roles=("projector",)), api=False))
    if missing:
        for problem in missing:
            print(f"turnlog sql: error: {problem}", file=sys.stderr)
        return 2
    sql = sys.stdin.read() if arguments.query in (None, "-") else arguments.query
    if sql.strip() in ANALYST_QUERIES:
        sql = ANALYST_QUERIES[sql.strip()].sql
    if not sql.strip():
        print("turnlog sql: error: the query is empty", file=sys.stderr)
        return 2
    try:
        rows = asyncio.run(_query(settings, sql, dict(arguments.param)))
    except (NotAQuery, SqlError, ValueError) as error:
        print(f"turnlog sql: error: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(format_rows(rows, arguments.format))
    return 0


def _run_through_server(arguments: argparse.Namespace) -> int:
    name = (arguments.query or "").strip()
    if name not in ANALYST_QUERIES:
        print(
            f"turnlog sql: error: with --server, QUERY is a documented query's name ({', '.join(ANALYST_QUERIES)}),"
            f" not {name[:60]!r}: the server runs no free SQL (docs/analytics.md says why)",
            file=sys.stderr,
        )
        return 2
    token = arguments.token
    if not token:
        print("turnlog sql: error: --server needs an admin token: --token TOKEN or $TURNLOG_TOKEN", file=sys.stderr)
        return 2
    try:
        response = httpx.get(
            f"{arguments.server.rstrip('/')}/v1/admin/analytics/{name}",
            headers={"Authorization": f"Bearer {token}"}, timeout=120,
        )
    except httpx.HTTPError as error:
        print(f"turnlog sql: error: cannot reach {arguments.server}: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        print(f"turnlog sql: error: the server answered {response.status_code}: {detail}", file=sys.stderr)
        return 1
    sys.stdout.write(format_rows(response.json()["rows"], arguments.format))
    return 0


async def _query(settings: Settings, sql: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
    from turnlog.adapters import build_store

    embedded = url_scheme(settings.store) == "chdb"
    path = url_path(settings.store)
    if embedded and not path.exists():
        raise ValueError(f"no read models at {path}: has a server run with --data-dir {settings.data_dir}?")
    store = build_store(settings)
    try:
        try:
            await check_query(store, sql)
        except SqlError as error:
            if embedded and "cannot open chDB" in str(error):
                raise SqlError(
                    f"the read models at {path} are open in another process, most likely a running `turnlog serve`"
                    " (or a worker with the projector role) on this data directory: chDB lets one process open a data"
                    " path at a time. Stop it and run this again, or keep the read models on a ClickHouse server"
                    " (--store clickhouse://...), which answers any number of clients."
                ) from error
            raise
        return await store.query(sql, parameters)
    finally:
        await store.close()


async def check_query(store: SqlStore, sql: str) -> None:
    """Refuse (NotAQuery) anything but one query, as the engine's own parser reads it (comments and case aside)."""
    [row] = await store.query("SELECT formatQuerySingleLine({sql:String}) AS statement", {"sql": sql})
    statement = str(row["statement"]).lstrip("( ")
    keyword = statement.split(maxsplit=1)[0].upper() if statement else ""
    if keyword not in QUERY_KEYWORDS:
        raise NotAQuery(f"turnlog sql only reads: a query starts with {', '.join(QUERY_KEYWORDS)}, not {keyword or 'nothing'}")


def format_rows(rows: Sequence[Mapping[str, object]], output: str) -> str:
    """The rows as an aligned text table (with a row count), a JSON array of objects (one a line), or CSV with a header."""
    match output:
        case "json":
            # One row a line, inside one array: valid JSON that still reads (and greps) line by line.
            lines = ",\n".join(json.dumps(dict(row), ensure_ascii=False, default=_json_value) for row in rows)
            return f"[\n{lines}\n]\n" if rows else "[]\n"
        case "csv":
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            if rows:
                writer.writerow(list(rows[0]))
                writer.writerows([[_cell(value, null="") for value in row.values()] for row in rows])
            return text.getvalue()
        case "table":
            return _table(rows)
    raise ValueError(f"unknown format {output!r}; formats are {', '.join(FORMATS)}")


def _table(rows: Sequence[Mapping[str, object]]) -> str:
    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n"
    if not rows:
        return count
    names = list(rows[0])
    cells = [[_cell(value, null="NULL") for value in row.values()] for row in rows]
    widths = [max(len(name), *(len(line[index]) for line in cells)) for index, name in enumerate(names)]
    # Numbers line up on the right, as in psql and clickhouse-client (a NULL among them too).
    numeric = [
        all(row[name] is None or (isinstance(row[name], (int, float)) and not isinstance(row[name], bool)) for row in rows)
        and any(row[name] is not None for row in rows)
        for name in names
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width) for value, width, right in zip(values, widths, numeric)
        ]
        return " | ".join(padded).rstrip() + "\n"

    rule = "-+-".join("-" * width for width in widths) + "\n"
    return line(names) + rule + "".join(line(values) for values in cells) + count


def _cell(value: object, *, null: str) -> str:
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=_json_value)
    return str(value)


def _json_value(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _parameter(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, got {text!r}")
    return name, value
