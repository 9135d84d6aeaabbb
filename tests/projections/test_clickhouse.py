"""ClickHouseStore beyond the shared contract: its URL, its wire, and one engine for many processes.

The contract suite (test_store_contract.py, test_read_models.py) already runs over this adapter;
these tests cover what only a server adapter has, against the chDB-backed test server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone

import clickhouse_connect
import clickhouse_http
import pytest

from projections.clickhouse import ClickHouseAddress, ClickHouseStore, parse_clickhouse_url
from projections.store import SqlError


@pytest.fixture
async def database(clickhouse_server: clickhouse_http.ClickHouseHttpServer) -> str:
    name = f"test_{uuid.uuid4().hex[:20]}"
    await clickhouse_server.create_database(name)
    return name


@pytest.fixture
async def clickhouse_store(
    clickhouse_server: clickhouse_http.ClickHouseHttpServer, database: str
) -> AsyncIterator[ClickHouseStore]:
    store = ClickHouseStore(clickhouse_server.url(database))
    try:
        yield store
    finally:
        await store.close()


# --- the URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("clickhouse://localhost", ClickHouseAddress(host="localhost", port=8123, database="default")),
        (
            "clickhouses://reader:p%40ss%3Aword@ch.example.com/analytics",
            ClickHouseAddress(
                host="ch.example.com",
                port=8443,
                database="analytics",
                username="reader",
                password="p@ss:word",
                secure=True,
            ),
        ),
        (
            "clickhouse://writer@[::1]:9123/read%20models",
            ClickHouseAddress(host="::1", port=9123, database="read models", username="writer"),
        ),
        ("clickhouse://h:8124/", ClickHouseAddress(host="h", port=8124, database="default")),
    ],
)
def test_urls_name_host_port_credentials_and_database(url: str, address: ClickHouseAddress) -> None:
    assert parse_clickhouse_url(url) == address


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://h:8123/db", "starts with clickhouse://"),
        ("chdb:///var/lib/turnlog", "starts with clickhouse://"),
        ("", "starts with clickhouse://"),
        ("clickhouse:///db", "names a host"),
        ("clickhouse://h:http/db", "port"),
        ("clickhouse://h:70000/db", "port"),
        ("clickhouse://h/db/turns", "one database name"),
        ("clickhouse://h/db?secure=true", "takes no options"),
        ("clickhouse://h/db#x", "takes no options"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_clickhouse_url(url)


def test_a_password_never_shows_in_errors_or_reprs() -> None:
    with pytest.raises(ValueError) as refused:
        parse_clickhouse_url("clickhouse://user:hunter2@h:bad/db")
    assert "hunter2" not in str(refused.value)
    assert "hunter2" not in repr(parse_clickhouse_url("clickhouse://user:hunter2@h/db"))


# --- talking to the server -------------------------------------------------------------------


async def test_requests_run_in_utc_like_the_chdb_session(clickhouse_store: ClickHouseStore) -> None:
    rows = await clickhouse_store.query(
        "SELECT timezone() AS zone, toDateTime('2024-05-17 09:30:01') AS at, toDate('2024-05-17') AS day"
    )

    assert rows == [
        {"zone": "UTC", "at": datetime(2024, 5, 17, 9, 30, 1, tzinfo=timezone.utc), "day": date(2024, 5, 17)}
    ]


async def test_values_never_become_sql_text(clickhouse_store: ClickHouseStore) -> None:
    # clickhouse-connect alone would %-format these into the SQL (and fail on the literal %).
    assert await clickhouse_store.query("SELECT '100%' AS literal", {"unused": "' OR 1=1 --"}) == [
        {"literal": "100%"}
    ]
    assert await clickhouse_store.query(
        "SELECT '100%' AS literal, {text:String} AS text", {"text": "%(text)s"}
    ) == [{"literal": "100%", "text": "%(text)s"}]
    with pytest.raises(ValueError):
        await clickhouse_store.query("SELECT {name:String}", {"$name$": "x"})


async def test_tuples_bind_as_arrays_and_naive_datetimes_are_refused(
    clickhouse_store: ClickHouseStore,
) -> None:
    # clickhouse-connect alone sends a tuple as ('a', 'b'), which an Array parameter refuses,
    # and binds a naive datetime without a word.
    rows = await clickhouse_store.query(
        "SELECT {names:Array(String)} AS names, {on:Bool} AS on", {"names": ("a", "b"), "on": False}
    )
    assert rows == [{"names": ["a", "b"], "on": False}]

    with pytest.raises(ValueError, match="naive"):
        await clickhouse_store.query(
            "SELECT {at:Nullable(DateTime64(6, 'UTC'))} AS at", {"at": datetime(2024, 5, 17)}
        )


async def test_parameters_past_the_url_limit_travel_as_a_form(clickhouse_store: ClickHouseStore) -> None:
    # Over ~4 KiB clickhouse-connect moves the query and its parameters into a multipart body.
    ids = [f"conversation_{index:05d}\t'" for index in range(2000)]
    text = "long " * 2000 + "\n\\N"

    rows = await clickhouse_store.query(
        "SELECT length({ids:Array(String)}) AS ids, {ids:Array(String)}[2000] AS last, {text:String} AS text",
        {"ids": ids, "text": text},
    )

    assert rows == [{"ids": 2000, "last": ids[-1], "text": text}]


async def test_wrong_credentials_are_refused(
    clickhouse_server: clickhouse_http.ClickHouseHttpServer, database: str
) -> None:
    store = ClickHouseStore(clickhouse_server.url(database, password="wrong"))
    try:
        with pytest.raises(SqlError, match="Authentication failed"):
            await store.query("SELECT 1")
    finally:
        await store.close()


async def test_an_unreachable_server_fails_on_the_first_call() -> None:
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse_http.free_port()}/default", connect_timeout_s=2)
    try:
        with pytest.raises(SqlError, match="cannot connect to ClickHouse"):
            await store.query("SELECT 1")
    finally:
        await store.close()


async def test_a_missing_database_is_an_sql_error(clickhouse_server: clickhouse_http.ClickHouseHttpServer) -> None:
    store = ClickHouseStore(clickhouse_server.url("no_such_database"))
    try:
        with pytest.raises(SqlError, match="no_such_database"):
            await store.query("SELECT 1")
    finally:
        await store.close()


# --- one engine, several processes -----------------------------------------------------------

_READ_THEN_WRITE = """
import asyncio, json, os, sys
from projections.clickhouse import ClickHouseStore

async def main() -> None:
    store = ClickHouseStore(sys.argv[1])
    try:
        seen = await store.query("SELECT writer FROM writes ORDER BY writer")
        await store.insert("writes", [{"writer": sys.argv[2], "pid": os.getpid()}])
    finally:
        await store.close()
    print(json.dumps([row["writer"] for row in seen]))

asyncio.run(main())
"""


async def test_separate_processes_see_each_others_writes(
    clickhouse_server: clickhouse_http.ClickHouseHttpServer, database: str, clickhouse_store: ClickHouseStore
) -> None:
    await clickhouse_store.execute(
        "CREATE TABLE writes (writer String, pid UInt32) ENGINE = MergeTree ORDER BY writer"
    )
    await clickhouse_store.insert("writes", [{"writer": "parent", "pid": 0}])

    async def child(name: str) -> list[str]:
        finished = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _READ_THEN_WRITE, clickhouse_server.url(database), name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert finished.returncode == 0, finished.stderr
        return json.loads(finished.stdout)

    first_seen = await child("first")
    others_seen = await asyncio.gather(child("second"), child("third"))
    rows = await clickhouse_store.query("SELECT writer, pid FROM writes ORDER BY writer")

    assert first_seen == ["parent"], "a child reads what the test process wrote"
    for seen in others_seen:
        assert {"parent", "first"} <= set(seen), "a later child reads an earlier child's write"
    assert [row["writer"] for row in rows] == ["first", "parent", "second", "third"]
    assert len({row["pid"] for row in rows}) == 4, "four processes wrote"


# --- the test server itself ------------------------------------------------------------------


def test_the_test_server_serves_clickhouse_connects_own_typed_path(
    clickhouse_server: clickhouse_http.ClickHouseHttpServer, database: str
) -> None:
    # Native format both ways, lz4 on the insert and on the reply: the client's defaults.
    client = clickhouse_connect.get_client(
        host="127.0.0.1",
        port=clickhouse_server.port,
        username=clickhouse_server.user,
        password=clickhouse_server.password,
        database=database,
        autogenerate_session_id=False,
    )
    try:
        assert client.server_version.startswith("26.")
        client.command("CREATE TABLE typed (id UInt64, tags Array(String), note Nullable(String)) ENGINE = Memory")
        client.insert("typed", [[1, ["a", "b'"], None], [2, [], "x\ty"]], column_names=["id", "tags", "note"])

        assert client.query("SELECT * FROM typed ORDER BY id").result_rows == [
            (1, ["a", "b'"], None),
            (2, [], "x\ty"),
        ]
        assert client.command("SELECT count() FROM typed") == 2
    finally:
        client.close()
