"""An unreachable ClickHouse server is `StoreUnavailable` (a 503 with Retry-After), and a store built while the server
was down connects once it is up."""

import sys
from pathlib import Path

import pytest

from kernel.errors import Unavailable
from projections.clickhouse import ClickHouseStore
from projections.store import StoreUnavailable

clickhouse_http = sys.modules["clickhouse_http"]  # loaded by tests/conftest.py


async def test_a_store_built_while_the_server_is_down_answers_503_then_connects_once_it_is_up(tmp_path: Path) -> None:
    server = clickhouse_http.ClickHouseHttpServer(data_dir=tmp_path / "clickhouse")
    server.port = clickhouse_http.free_port()
    store = ClickHouseStore(server.url(), connect_timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await store.query("SELECT 1 AS one")
        assert isinstance(refused.value, Unavailable) and refused.value.retry_after_s
        assert "127.0.0.1" not in refused.value.detail  # the client's detail names no host; the server's log does
        server.start()  # on the port the store was built for
        try:
            assert await store.query("SELECT 1 AS one") == [{"one": 1}]
        finally:
            server.stop()
    finally:
        await store.close()
