"""The usage ledger: one row per run's consumption in ClickHouse, and a view that sums it by org and hour.

Rows are folded from the `usage` topic and upserted by run (ReplacingMergeTree by log offset), so a
redelivered or replayed event is counted once. Analysts query `usage_ledger` (one row per run) or
`usage_by_org_hour` (totals per org, hour, pool and engine) with plain ClickHouse SQL.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from events.runs import UsageRecorded
from events.topics import USAGE
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

USAGE_LEDGER_GROUP = "usage-ledger"

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS usage_ledger (
    org_id String,
    workspace_id String,
    user_id String,
    run_id String,
    conversation_id String,
    pool LowCardinality(String),
    engine LowCardinality(String),
    status LowCardinality(String),
    prompt_tokens UInt32,
    cached_tokens UInt32,
    output_tokens UInt32,
    recorded_at DateTime64(6, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, run_id)
"""

# FINAL inside the view: a run counted twice (redelivery) still adds up once.
_BY_ORG_HOUR_DDL = """
CREATE VIEW IF NOT EXISTS usage_by_org_hour AS
SELECT
    org_id,
    toStartOfHour(recorded_at) AS hour,
    pool,
    engine,
    count() AS runs,
    sum(prompt_tokens) AS prompt_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(output_tokens) AS output_tokens
FROM usage_ledger FINAL
GROUP BY org_id, hour, pool, engine
"""


@dataclass(frozen=True, kw_only=True)
class UsageTotals:
    org_id: str
    hour: datetime
    pool: str
    engine: str
    runs: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


class UsageLedger:
    """Writes the ledger from `UsageRecorded` events and answers the per-org totals."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        await self._store.execute(_LEDGER_DDL)
        await self._store.execute(_BY_ORG_HOUR_DDL)

    def processor(self) -> Processor:
        # Nobody waits on the ledger: gather half a second of runs into one insert (one ClickHouse part).
        return Processor(
            group=USAGE_LEDGER_GROUP, topics=(USAGE,), react=self.react, max_batch=5_000, linger_s=0.5, durable=False,
            background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        rows = [
            _row(delivery.envelope, offset=delivery.record.offset)
            for delivery in deliveries
            if isinstance(delivery.envelope.payload, UsageRecorded)
        ]
        await self._store.insert("usage_ledger", rows)
        return []

    async def totals(self, org_id: str, *, since: datetime, until: datetime) -> list[UsageTotals]:
        """One org's totals per hour, pool and engine in [since, until), oldest first."""
        rows = await self._store.query(
            "SELECT org_id, hour, pool, engine, runs, prompt_tokens, cached_tokens, output_tokens"
            " FROM usage_by_org_hour WHERE org_id = {org_id:String}"
            " AND hour >= {since:DateTime64(6, 'UTC')} AND hour < {until:DateTime64(6, 'UTC')}"
            " ORDER BY hour, pool, engine",
            {"org_id": org_id, "since": since, "until": until},
        )
        return [UsageTotals(**row) for row in rows]


def _row(envelope, *, offset: int) -> dict[str, object]:
    usage: UsageRecorded = envelope.payload
    return {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "user_id": envelope.actor.user_id,
        "run_id": usage.run_id,
        "conversation_id": usage.conversation_id,
        "pool": usage.pool,
        "engine": usage.engine,
        "status": usage.status,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "recorded_at": usage.recorded_at,
        "version": offset,
    }
