"""SqlStore adapters under test: every test that asks for `store` runs once per adapter.

The clickhouse-connect adapter talks to one chDB engine served over ClickHouse's HTTP interface
by `tests/clickhouse_http.py` in a process of its own, started once per test session, and only
when a test asks for that adapter. Each test gets a database of its own on that server.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from projections.chdb import ChdbStore
from projections.clickhouse import ClickHouseStore
from projections.store import SqlStore


clickhouse_http = sys.modules["clickhouse_http"]  # loaded by tests/conftest.py


@dataclass(frozen=True, kw_only=True)
class StoreAdapter:
    """How to open one engine's store on a data location; opening it again reopens that data."""

    name: str
    open: Callable[[Path], Awaitable[SqlStore]]


async def open_chdb(data_dir: Path) -> SqlStore:
    return ChdbStore(str(data_dir))


def chdb_adapter(request: pytest.FixtureRequest) -> StoreAdapter:
    return StoreAdapter(name="chdb", open=open_chdb)


def clickhouse_adapter(request: pytest.FixtureRequest) -> StoreAdapter:
    server: clickhouse_http.ClickHouseHttpServer = request.getfixturevalue("clickhouse_server")

    async def open_clickhouse(data_dir: Path) -> SqlStore:
        # The data location names a database on the shared server: a fresh one per test, the
        # same one again when a test reopens its store.
        database = "test_" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:20]
        await server.create_database(database)
        return ClickHouseStore(server.url(database))

    return StoreAdapter(name="clickhouse", open=open_clickhouse)


# Each builds its adapter when a test asks for it, so a server starts only if one is needed.
ADAPTERS: dict[str, Callable[[pytest.FixtureRequest], StoreAdapter]] = {
    "chdb": chdb_adapter,
    "clickhouse": clickhouse_adapter,
}


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> StoreAdapter:
    return ADAPTERS[request.param](request)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "sql"


@pytest.fixture
async def store(adapter: StoreAdapter, data_dir: Path) -> AsyncIterator[SqlStore]:
    # One store per test: chDB opens in about 15 ms, and a fresh directory isolates each test.
    # chDB serves one data path per process at a time, so each test closes before the next opens.
    store = await adapter.open(data_dir)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def reopen_store(adapter: StoreAdapter, data_dir: Path) -> Callable[[], Awaitable[SqlStore]]:
    """Opens another store on the `store` fixture's data, as a restarted server would."""
    return lambda: adapter.open(data_dir)
