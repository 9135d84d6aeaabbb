"""The tool-call ledger: each tool call's outcome in ClickHouse, and a view of each tool's failures and latency by hour.

Every `ToolCallFinished` on `run-events` becomes a row of `tool_call_reports` with its log offset. A call's
outcome is its first report, the one the loop acted on (a runner's late report of a call the loop had
already ended comes later and loses), so the views keep the lowest offset per call, which also makes a
redelivered or replayed report count once. Analysts query `tool_calls` (one row per call) or
`tool_calls_by_tool_hour` with plain ClickHouse SQL.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from events.tools import ToolCallFinished
from events.topics import RUN_EVENTS
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

TOOL_CALLS_GROUP = "tool-call-ledger"

_REPORTS_DDL = """
CREATE TABLE IF NOT EXISTS tool_call_reports (
    org_id String,
    workspace_id String,
    user_id String,
    run_id String,
    call_id String,
    tool LowCardinality(String),
    step UInt16,
    status LowCardinality(String),
    attempts UInt16,
    duration_ms UInt32,
    result_truncated Bool,
    finished_at DateTime64(6, 'UTC'),
    version UInt64,
    cpu_ms Nullable(UInt64),
    memory_bytes Nullable(UInt64),
    exit_code Nullable(Int32)
)
ENGINE = MergeTree
ORDER BY (org_id, run_id, call_id, version)
"""

_TOOL_CALLS_DDL = """
CREATE OR REPLACE VIEW tool_calls AS
SELECT
    org_id, run_id, call_id,
    argMin(workspace_id, version) AS workspace_id,
    argMin(user_id, version) AS user_id,
    argMin(tool, version) AS tool,
    argMin(step, version) AS step,
    argMin(status, version) AS status,
    argMin(attempts, version) AS attempts,
    argMin(duration_ms, version) AS duration_ms,
    argMin(result_truncated, version) AS result_truncated,
    argMin(finished_at, version) AS finished_at,
    argMin(cpu_ms, version) AS cpu_ms,
    argMin(memory_bytes, version) AS memory_bytes,
    argMin(exit_code, version) AS exit_code
FROM tool_call_reports
GROUP BY org_id, run_id, call_id
"""

# Columns a table made by an older turnlog lacks, added in place (the view above is replaced to show them).
_ADDED_COLUMNS = tuple(
    f"ALTER TABLE tool_call_reports ADD COLUMN IF NOT EXISTS {column}"
    for column in ("cpu_ms Nullable(UInt64)", "memory_bytes Nullable(UInt64)", "exit_code Nullable(Int32)")
)

_BY_TOOL_HOUR_DDL = """
CREATE VIEW IF NOT EXISTS tool_calls_by_tool_hour AS
SELECT
    org_id,
    tool,
    toStartOfHour(finished_at) AS hour,
    count() AS calls,
    countIf(status != 'completed') AS failures,
    countIf(status != 'completed') / count() AS failure_rate,
    quantile(0.5)(duration_ms) AS p50_duration_ms,
    quantile(0.95)(duration_ms) AS p95_duration_ms
FROM tool_calls
GROUP BY org_id, tool, hour
"""


@dataclass(frozen=True, kw_only=True)
class ToolHour:
    org_id: str
    tool: str
    hour: datetime
    calls: int
    failures: int
    failure_rate: float
    p50_duration_ms: float
    p95_duration_ms: float


class ToolCallLedger:
    """Writes `tool_call_reports` from the runs' tool events and answers the per-tool hours."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        for ddl in (_REPORTS_DDL, *_ADDED_COLUMNS, _TOOL_CALLS_DDL, _BY_TOOL_HOUR_DDL):
            await self._store.execute(ddl)

    def processor(self) -> Processor:
        # Nobody waits on the ledger: gather half a second of calls into one insert (one ClickHouse part).
        return Processor(
            group=TOOL_CALLS_GROUP, topics=(RUN_EVENTS,), react=self.react, max_batch=5_000, linger_s=0.5, durable=False,
            reacts_to=frozenset({ToolCallFinished.__name__}), background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        rows = [
            _row(delivery.envelope, offset=delivery.record.offset)
            for delivery in deliveries
            if isinstance(delivery.envelope.payload, ToolCallFinished)
        ]
        if rows:
            await self._store.insert("tool_call_reports", rows)
        return []

    async def hours(self, org_id: str, *, since: datetime, until: datetime) -> list[ToolHour]:
        """One org's calls per tool and hour in [since, until), oldest first."""
        rows = await self._store.query(
            "SELECT org_id, tool, hour, calls, failures, failure_rate, p50_duration_ms, p95_duration_ms"
            " FROM tool_calls_by_tool_hour WHERE org_id = {org_id:String}"
            " AND hour >= {since:DateTime64(6, 'UTC')} AND hour < {until:DateTime64(6, 'UTC')}"
            " ORDER BY hour, tool",
            {"org_id": org_id, "since": since, "until": until},
        )
        return [ToolHour(**row) for row in rows]


def _row(envelope, *, offset: int) -> dict[str, object]:
    finished: ToolCallFinished = envelope.payload
    return {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "user_id": envelope.actor.user_id,
        "run_id": finished.run_id,
        "call_id": finished.call_id,
        "tool": finished.tool_name,
        "step": finished.step,
        "status": finished.status,
        "attempts": finished.attempt,
        "duration_ms": finished.duration_ms,
        "result_truncated": finished.result_truncated,
        "finished_at": finished.finished_at,
        "version": offset,
        "cpu_ms": finished.cpu_ms,
        "memory_bytes": finished.memory_bytes,
        "exit_code": finished.exit_code,
    }
