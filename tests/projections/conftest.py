"""SqlStore adapters under test: every test that asks for `store` runs once per adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from projections.chdb import ChdbStore
from projections.store import SqlStore


@dataclass(frozen=True, kw_only=True)
class StoreAdapter:
    """How to open one engine's store on a data location; opening it again reopens that data."""

    name: str
    open: Callable[[Path], Awaitable[SqlStore]]


async def open_chdb(data_dir: Path) -> SqlStore:
    return ChdbStore(str(data_dir))


# The clickhouse-connect adapter joins this list; the tests themselves should not change.
ADAPTERS = [StoreAdapter(name="chdb", open=open_chdb)]


@pytest.fixture(params=ADAPTERS, ids=lambda adapter: adapter.name)
def adapter(request: pytest.FixtureRequest) -> StoreAdapter:
    return request.param


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
