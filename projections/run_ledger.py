"""The run ledger: each run's prompt manifest (route, passages, token counts) and its milestones in ClickHouse.

Read from `run-events`, for analysts. `prompt_manifests` holds every `PromptAssembled` (one per run, two if
the prompt builder retried its batch): the pool the router chose, the fallback and why, the prompt's token
counts, the passages that went in and what the context stage fenced or dropped. `run_milestones` holds the
moments of a run's life: `started` (RunStarted), `generation_started` (a worker claimed a model step: step,
pool, worker, model), `first_token` (the first delta of a step), `searched` (the prompt builder's file_search:
status, summary), `backgrounded` (reason) and `finished` (RunFinished: status, reason). Every other delta is
skipped: only a step's first one says anything a table needs. Both tables are keyed by event id and upserted
by log offset (`ReplacingMergeTree(version)`, read with `FINAL`), so a redelivered or replayed event counts
once. The view `run_latency` folds the milestones into one row per run (queue wait, time to first token,
duration, pool, model, and the engine from `usage_ledger`, which must exist first).
"""

from collections.abc import Sequence

from events.runs import (
    AssistantDelta,
    GenerationStarted,
    PromptAssembled,
    RunBackgrounded,
    RunFinished,
    RunStarted,
    ToolReturned,
)
from events.topics import RUN_EVENTS
from kernel.envelope import Envelope
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

RUN_LEDGER_GROUP = "run-ledger"
FILE_SEARCH = "file_search"  # the prompt builder's own search, reported as ToolCalled/ToolReturned

_MANIFESTS_DDL = """
CREATE TABLE IF NOT EXISTS prompt_manifests (
    org_id String,
    workspace_id String,
    user_id String,
    run_id String,
    conversation_id String,
    event_id String,
    pool LowCardinality(String),
    size_class LowCardinality(String),
    fallback_from LowCardinality(String),
    route_reason String,
    tokenizer LowCardinality(String),
    budget_tokens UInt32,
    prompt_tokens UInt32,
    tool_tokens UInt32,
    system_tokens UInt32,
    summary_tokens UInt32,
    history_tokens UInt32,
    source_tokens UInt32,
    question_tokens UInt32,
    summary_version Nullable(UInt32),
    turn_seqs Array(UInt32),
    chunk_ids Array(String),
    fenced_chunk_ids Array(String),
    dropped_chunk_ids Array(String),
    redacted_turn_seqs Array(UInt32),
    assembled_at DateTime64(6, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, run_id, event_id)
"""

_MILESTONES_DDL = """
CREATE TABLE IF NOT EXISTS run_milestones (
    org_id String,
    workspace_id String,
    user_id String,
    run_id String,
    event_id String,
    milestone LowCardinality(String),
    step UInt16,
    pool LowCardinality(String),
    worker_id String,
    model LowCardinality(String),
    status LowCardinality(String),
    detail String,
    at DateTime64(6, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, run_id, event_id)
"""

# A table made by an older turnlog lacks the model: added in place ('' on its rows, as on claims that predate it).
_ADDED_COLUMNS = ("ALTER TABLE run_milestones ADD COLUMN IF NOT EXISTS model LowCardinality(String) AFTER worker_id",)

# Times are microseconds apart on the log, so differences are kept as fractional milliseconds. A run that
# never reached a milestone has NULL there (and in what is measured from it), never a 1970 date.
_LATENCY_DDL = """
CREATE OR REPLACE VIEW run_latency AS
SELECT
    m.org_id AS org_id,
    m.run_id AS run_id,
    m.workspace_id AS workspace_id,
    m.user_id AS user_id,
    m.pool AS pool,
    u.engine AS engine,
    m.model AS model,
    m.steps AS steps,
    m.searched AS searched,
    m.status AS status,
    m.reason AS reason,
    m.started_at AS started_at,
    m.first_token_at AS first_token_at,
    m.finished_at AS finished_at,
    (toUnixTimestamp64Micro(m.generation_started_at) - toUnixTimestamp64Micro(m.started_at)) / 1000 AS queue_ms,
    (toUnixTimestamp64Micro(m.first_token_at) - toUnixTimestamp64Micro(m.started_at)) / 1000 AS ttft_ms,
    (toUnixTimestamp64Micro(m.finished_at) - toUnixTimestamp64Micro(m.started_at)) / 1000 AS duration_ms
FROM (
    SELECT
        org_id,
        run_id,
        any(workspace_id) AS workspace_id,
        any(user_id) AS user_id,
        argMinIf(pool, at, milestone = 'generation_started') AS pool,
        argMinIf(model, at, milestone = 'generation_started') AS model,
        maxIf(step, milestone = 'generation_started') AS steps,
        toBool(countIf(milestone = 'searched') > 0) AS searched,
        argMaxIf(status, at, milestone = 'finished') AS status,
        argMaxIf(detail, at, milestone = 'finished') AS reason,
        minIfOrNull(at, milestone = 'started') AS started_at,
        minIfOrNull(at, milestone = 'generation_started') AS generation_started_at,
        minIfOrNull(at, milestone = 'first_token') AS first_token_at,
        maxIfOrNull(at, milestone = 'finished') AS finished_at
    FROM run_milestones FINAL
    GROUP BY org_id, run_id
) AS m
LEFT JOIN (SELECT org_id, run_id, engine FROM usage_ledger FINAL) AS u ON u.org_id = m.org_id AND u.run_id = m.run_id
"""


class RunLedger:
    """Writes `prompt_manifests` and `run_milestones` from the runs' events; `run_latency` reads them."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        """Idempotent; after the usage ledger's tables, which `run_latency` joins."""
        for ddl in (_MANIFESTS_DDL, _MILESTONES_DDL, *_ADDED_COLUMNS, _LATENCY_DDL):
            await self._store.execute(ddl)

    def processor(self) -> Processor:
        # Nobody waits on the ledger: gather half a second of events into one insert per table (one part each).
        return Processor(
            group=RUN_LEDGER_GROUP, topics=(RUN_EVENTS,), react=self.react, max_batch=5_000, linger_s=0.5, durable=False,
            background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        manifests: list[dict[str, object]] = []
        milestones: list[dict[str, object]] = []
        for delivery in deliveries:
            envelope, offset = delivery.envelope, delivery.record.offset
            if isinstance(envelope.payload, PromptAssembled):
                manifests.append(_manifest_row(envelope, offset=offset))
                continue
            milestone = _milestone_row(envelope, offset=offset)
            if milestone is not None:
                milestones.append(milestone)
        if manifests:
            await self._store.insert("prompt_manifests", manifests)
        if milestones:
            await self._store.insert("run_milestones", milestones)
        return []


def _owner(envelope: Envelope) -> dict[str, object]:
    return {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "user_id": envelope.actor.user_id,
    }


def _manifest_row(envelope: Envelope[PromptAssembled], *, offset: int) -> dict[str, object]:
    manifest = envelope.payload
    return {
        **_owner(envelope),
        "run_id": manifest.run_id,
        "conversation_id": manifest.conversation_id,
        "event_id": envelope.event_id,
        "pool": manifest.pool,  # "" when no pool could take the run
        "size_class": manifest.size_class,
        "fallback_from": manifest.fallback_from or "",
        "route_reason": manifest.route_reason,
        "tokenizer": manifest.tokenizer,
        "budget_tokens": manifest.budget_tokens,
        "prompt_tokens": manifest.prompt_tokens,
        "tool_tokens": manifest.tool_tokens,
        "system_tokens": manifest.system_tokens,
        "summary_tokens": manifest.summary_tokens,
        "history_tokens": manifest.history_tokens,
        "source_tokens": manifest.source_tokens,
        "question_tokens": manifest.question_tokens,
        "summary_version": manifest.summary_version,
        "turn_seqs": list(manifest.turn_seqs),
        "chunk_ids": list(manifest.chunk_ids),
        "fenced_chunk_ids": list(manifest.fenced_chunk_ids),
        "dropped_chunk_ids": list(manifest.dropped_chunk_ids),
        "redacted_turn_seqs": list(manifest.redacted_turn_seqs),
        "assembled_at": envelope.occurred_at,
        "version": offset,
    }


def _milestone_row(envelope: Envelope, *, offset: int) -> dict[str, object] | None:
    """The milestone `envelope` marks, or None for an event that marks none (most deltas, the tool loop's events)."""
    event = envelope.payload
    fields: dict[str, object]
    match event:
        case RunStarted():
            fields = {"milestone": "started"}
        case GenerationStarted():
            fields = {
                "milestone": "generation_started", "step": event.step, "pool": event.pool, "worker_id": event.worker_id,
                "model": event.model,
            }
        case AssistantDelta() if event.index == 0:  # a step's deltas count from 0
            fields = {"milestone": "first_token"}
        case ToolReturned() if event.tool_name == FILE_SEARCH:
            fields = {"milestone": "searched", "status": event.status, "detail": event.summary}
        case RunBackgrounded():
            fields = {"milestone": "backgrounded", "detail": event.reason, "at": event.at}
        case RunFinished():
            fields = {"milestone": "finished", "status": event.status, "detail": event.reason}
        case _:
            return None
    row: dict[str, object] = {
        **_owner(envelope),
        "run_id": event.run_id,
        "event_id": envelope.event_id,
        "milestone": "",
        "step": 0,
        "pool": "",
        "worker_id": "",
        "model": "",
        "status": "",
        "detail": "",
        "at": envelope.occurred_at,
        "version": offset,
    }
    row.update(fields)  # every row of a batch names the same columns in the same order: only values change
    return row
