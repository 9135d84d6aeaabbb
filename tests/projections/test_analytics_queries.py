"""Every query of docs/analytics.md on both stores' schema: the tables and views it names exist, and it runs.

What each query answers is checked end to end, on rows a real server wrote (tests/api/test_e2e_analytics.py);
this runs them on the ClickHouse server adapter too, against the schema every start creates (empty: no rows).
"""

import re
from pathlib import Path

import pytest

from projections.ledger_replay import every_ledger
from projections.read_models import ReadModels
from turnlog.sql import check_query

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
QUERIES = re.findall(r"^```sql\n(.*?)^```$", DOCS.read_text(), re.S | re.M)


def test_the_page_has_its_queries() -> None:
    assert len(QUERIES) >= 8


@pytest.mark.parametrize("sql", QUERIES, ids=[f"query{number}" for number in range(1, len(QUERIES) + 1)])
async def test_a_documented_query_runs_on_the_schema_every_start_creates(store, sql: str) -> None:
    await ReadModels(store).create_tables()
    for ledger in every_ledger(store):
        await ledger.create_tables()

    await check_query(store, sql)

    assert await store.query(sql) == []
