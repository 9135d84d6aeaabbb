"""The safety ledger: every safety stage's decision in ClickHouse, and views of actions per day and of flagged runs.

Every `SafetyDecision` on `run-events` becomes a row of `safety_decisions`, keyed by the event's id and
upserted by log offset (`ReplacingMergeTree(version)`, read with `FINAL`), so a redelivered or replayed
decision counts once. Each row carries the owner's org, workspace and user (the envelope's actor), the
run, conversation and turn, the stage and action, every category scored (names and scores as two arrays,
highest first), the triggered categories, the classifiers that ran and those that failed, and the policy
id and version that decided. Analysts query `safety_decisions`, `safety_actions_by_day` (decisions per org,
stage, category, action and day; a decision over several categories counts under each, one that triggered
none under '') or `flagged_runs` (per run, every decision that did something other than allow), with plain
ClickHouse SQL; the API answers an org's administrators from `decisions` (`GET /v1/admin/safety-decisions`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from events.safety import SafetyDecision
from events.topics import RUN_EVENTS
from kernel.envelope import Envelope
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

SAFETY_LEDGER_GROUP = "safety-ledger"

_DECISIONS_DDL = """
CREATE TABLE IF NOT EXISTS safety_decisions (
    org_id String,
    workspace_id String,
    user_id String,
    run_id String,
    conversation_id String,
    turn_seq UInt32,
    event_id String,
    stage LowCardinality(String),
    action LowCardinality(String),
    subject String,
    category_names Array(String),
    category_scores Array(Float64),
    triggered Array(String),
    classifiers Array(String),
    signals Array(String),
    failures Array(String),
    fail_mode LowCardinality(String),
    policy_id String,
    policy_version String,
    reason String,
    decided_at DateTime64(6, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, run_id, event_id)
"""

# FINAL inside the views: a decision delivered twice still counts once.
_BY_DAY_DDL = """
CREATE OR REPLACE VIEW safety_actions_by_day AS
SELECT org_id, stage, category, action, toDate(decided_at) AS day, count() AS decisions
FROM (
    SELECT org_id, stage, action, decided_at, arrayJoin(if(empty(triggered), [''], triggered)) AS category
    FROM safety_decisions FINAL
)
GROUP BY org_id, stage, category, action, day
"""

_FLAGGED_RUNS_DDL = """
CREATE OR REPLACE VIEW flagged_runs AS
SELECT
    org_id,
    run_id,
    any(conversation_id) AS conversation_id,
    any(workspace_id) AS workspace_id,
    any(user_id) AS user_id,
    count() AS decisions,
    arraySort(groupUniqArray(stage)) AS stages,
    arraySort(groupUniqArray(action)) AS actions,
    arraySort(arrayDistinct(arrayFlatten(groupArray(triggered)))) AS categories,
    min(decided_at) AS first_decided_at,
    max(decided_at) AS last_decided_at
FROM safety_decisions FINAL
WHERE action != 'allow'
GROUP BY org_id, run_id
"""

_COLUMNS = (
    "org_id, workspace_id, user_id, run_id, conversation_id, turn_seq, event_id, stage, action, subject, category_names,"
    " category_scores, triggered, classifiers, signals, failures, fail_mode, policy_id, policy_version, reason, decided_at"
)


@dataclass(frozen=True, kw_only=True)
class SafetyDecisionRow:
    """One decision as the ledger holds it."""

    org_id: str
    workspace_id: str
    user_id: str
    run_id: str
    conversation_id: str
    turn_seq: int
    event_id: str
    stage: str
    action: str
    subject: str
    category_names: list[str]
    category_scores: list[float]
    triggered: list[str]
    classifiers: list[str]
    signals: list[str]
    failures: list[str]
    fail_mode: str
    policy_id: str
    policy_version: str
    reason: str
    decided_at: datetime


@dataclass(frozen=True, kw_only=True)
class SafetyDay:
    org_id: str
    stage: str
    category: str
    action: str
    day: date
    decisions: int


@dataclass(frozen=True, kw_only=True)
class FlaggedRun:
    org_id: str
    run_id: str
    conversation_id: str
    workspace_id: str
    user_id: str
    decisions: int
    stages: list[str]
    actions: list[str]
    categories: list[str]
    first_decided_at: datetime
    last_decided_at: datetime


class SafetyLedger:
    """Writes `safety_decisions` from the runs' events and answers an org's decisions, days and flagged runs."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        for ddl in (_DECISIONS_DDL, _BY_DAY_DDL, _FLAGGED_RUNS_DDL):
            await self._store.execute(ddl)

    def processor(self) -> Processor:
        # Nobody waits on the ledger: gather half a second of decisions into one insert (one ClickHouse part).
        return Processor(
            group=SAFETY_LEDGER_GROUP, topics=(RUN_EVENTS,), react=self.react, max_batch=5_000, linger_s=0.5, durable=False,
            reacts_to=frozenset({SafetyDecision.__name__}), background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        rows = [
            _row(delivery.envelope, offset=delivery.record.offset)
            for delivery in deliveries
            if isinstance(delivery.envelope.payload, SafetyDecision)
        ]
        if rows:
            await self._store.insert("safety_decisions", rows)
        return []

    async def decisions(
        self,
        org_id: str,
        *,
        since: datetime,
        until: datetime,
        stage: str | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[SafetyDecisionRow]:
        """One org's decisions in [since, until), newest first, optionally of one stage and one action."""
        parameters: dict[str, object] = {"org_id": org_id, "since": since, "until": until, "limit": limit}
        filters = ""
        for column, value in (("stage", stage), ("action", action)):
            if value is not None:
                filters += f" AND {column} = {{{column}:String}}"
                parameters[column] = value
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM safety_decisions FINAL WHERE org_id = {{org_id:String}}"
            " AND decided_at >= {since:DateTime64(6, 'UTC')} AND decided_at < {until:DateTime64(6, 'UTC')}"
            f"{filters} ORDER BY decided_at DESC, event_id LIMIT {{limit:UInt32}}",
            parameters,
        )
        return [SafetyDecisionRow(**row) for row in rows]

    async def days(self, org_id: str, *, since: date, until: date) -> list[SafetyDay]:
        """One org's decisions per stage, category, action and day in [since, until), oldest first."""
        rows = await self._store.query(
            "SELECT org_id, stage, category, action, day, decisions FROM safety_actions_by_day"
            " WHERE org_id = {org_id:String} AND day >= {since:Date} AND day < {until:Date}"
            " ORDER BY day, stage, category, action",
            {"org_id": org_id, "since": since.isoformat(), "until": until.isoformat()},
        )
        return [SafetyDay(**row) for row in rows]

    async def flagged_runs(self, org_id: str, *, limit: int = 100) -> list[FlaggedRun]:
        """One org's runs with a decision other than allow, the most recently decided first."""
        rows = await self._store.query(
            "SELECT org_id, run_id, conversation_id, workspace_id, user_id, decisions, stages, actions, categories,"
            " first_decided_at, last_decided_at FROM flagged_runs WHERE org_id = {org_id:String}"
            " ORDER BY last_decided_at DESC, run_id LIMIT {limit:UInt32}",
            {"org_id": org_id, "limit": limit},
        )
        return [FlaggedRun(**row) for row in rows]


def _row(envelope: Envelope[SafetyDecision], *, offset: int) -> dict[str, object]:
    decision = envelope.payload
    return {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "user_id": envelope.actor.user_id,
        "run_id": decision.run_id,
        "conversation_id": decision.conversation_id,
        "turn_seq": decision.turn_seq,
        "event_id": envelope.event_id,
        "stage": decision.stage,
        "action": decision.action,
        "subject": decision.subject or "",
        "category_names": [score.category for score in decision.categories],
        "category_scores": [score.score for score in decision.categories],
        "triggered": list(decision.triggered),
        "classifiers": list(decision.classifiers),
        "signals": list(decision.signals),
        "failures": list(decision.failures),
        "fail_mode": decision.fail_mode or "",
        "policy_id": decision.policy_id,
        "policy_version": decision.policy_version,
        "reason": decision.reason,
        "decided_at": decision.decided_at,
        "version": offset,
    }
