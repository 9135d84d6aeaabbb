"""Governance snapshots: each org's state after each batch of its facts, and a watermark per partition, in ClickHouse.

The governance decider and the API's view load an org from here and fold only what `governance` took after its
partition's watermark (commands/governance/snapshots.py says why). Rows are upserted by key (`ReplacingMergeTree`,
versioned by offset, read with `FINAL`): an org's row under its id, a partition's watermark under `#<partition>`.
The rows of a batch and its watermarks go in one insert (one part), so a reader never sees a watermark without the
rows it covers, and they are written before the group commits past the batch. The request each fact answered goes to
`governance_answers` first (one small row per fact, never rewritten: an org's newest thousand ids inside its snapshot
would be rewritten with every batch of a busy org), kept as long as `governance-requests` keeps a request that could
be delivered again.

A watermark says the rows hold every fact of its partition up to it, which holds only if this writer has seen the
partition from its start. So before writing to a partition it checks that the table and its group agree: no
watermark and nothing committed (a first run), or a watermark at or past the group's position. A table dropped or
restored from an old copy under a group that has moved on fails that check: the partition is left unwritten (readers
then fold from the log, as without snapshots) and the error says how to rebuild it.
"""

import logging
from collections.abc import Sequence

from commands.governance.decider import OrgState, evolve
from commands.governance.snapshots import REMEMBERED_REQUESTS, OrgSnapshot, SavedOrg, snapshot_from_json, snapshot_json
from events.topics import GOVERNANCE
from kernel.log import EventLog
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

logger = logging.getLogger(__name__)

GOVERNANCE_SNAPSHOTS_GROUP = "governance-snapshots"
TABLE = "governance_snapshots"
ANSWERS = "governance_answers"

_SNAPSHOTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key String,
    through Int64,
    snapshot String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key
SETTINGS index_granularity = 256
"""
# A request answers with a fact or a few (a refill, lapsed runs, a suspension): its org's newest thousand requests
# lie among its newest facts.
_FACTS_READ_FOR_ANSWERS = 4 * REMEMBERED_REQUESTS
# A request older than `governance-requests` keeps one (7 days) is never delivered again; a day's margin.
_ANSWERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ANSWERS} (
    org_id String,
    offset Int64,
    request_id String,
    answered_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, offset)
TTL toDateTime(answered_at) + INTERVAL 8 DAY
"""


def watermark_key(partition: int) -> str:
    return f"#{partition}"  # org ids are [A-Za-z0-9_-] (api/bodies.py), so never this


class GovernanceSnapshots:
    """The table, read for loaders (`OrgSnapshots`)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        await self._store.execute(_SNAPSHOTS_DDL)
        await self._store.execute(_ANSWERS_DDL)

    async def rows(self, keys: list[str]) -> dict[str, dict[str, object]]:
        """The rows of `keys` (org ids, watermark keys) that the table holds, by key: `through` and `snapshot`."""
        rows = await self._store.query(
            f"SELECT key, through, snapshot FROM {TABLE} FINAL WHERE key IN {{keys:Array(String)}}", {"keys": keys}
        )
        return {row["key"]: row for row in rows}

    async def saved(self, org_id: str, *, partition: int, answered: bool) -> SavedOrg:
        by_key = await self.rows([org_id, watermark_key(partition)])
        mark = by_key.get(watermark_key(partition))
        if mark is None:  # nothing said about the partition: no row can be trusted to be whole
            return SavedOrg(snapshot=None)
        org = by_key.get(org_id)
        answers = (
            await self._store.query(
                # The newest facts first (the table's order, read backwards), so a week of a busy org is not grouped.
                f"SELECT request_id, max(offset) AS last FROM (SELECT request_id, offset FROM {ANSWERS}"
                f" WHERE org_id = {{org:String}} ORDER BY offset DESC LIMIT {_FACTS_READ_FOR_ANSWERS})"
                f" GROUP BY request_id ORDER BY last DESC LIMIT {REMEMBERED_REQUESTS}",
                {"org": org_id},
            )
            if answered and org is not None else []  # an org without a snapshot answered nothing up to the watermark
        )
        return SavedOrg(
            snapshot=None if org is None else snapshot_from_json(org["snapshot"]),
            answered=tuple(row["request_id"] for row in reversed(answers)),
            folded_through=mark["through"],
        )


class GovernanceSnapshotWriter:
    """Writes the table from `governance`: each org's row after each batch of its facts, and the watermarks."""

    def __init__(self, *, store: SqlStore, log: EventLog, capacity: int = 10_000) -> None:
        self._store = store
        self._table = GovernanceSnapshots(store)
        self._log = log
        self._capacity = capacity
        self._orgs: dict[str, OrgSnapshot] = {}  # a cache of the rows this writer last wrote or read
        self._complete: dict[int, bool] = {}  # per partition: whether the table holds it from its start

    def processor(self) -> Processor:
        # A loader folds what the writer has not reached yet from the log: lingering costs it a longer scan, no error.
        return Processor(
            group=GOVERNANCE_SNAPSHOTS_GROUP, topics=(GOVERNANCE,), react=self.react, max_batch=5_000, linger_s=0.5,
            on_reset=self._reset, background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        partitions = {delivery.record.partition for delivery in deliveries}
        writable = {partition for partition in partitions if await self._is_complete(partition)}
        wanted = [d for d in deliveries if d.record.partition in writable]
        await self._load([d.record.key for d in wanted if d.record.key not in self._orgs])
        touched: dict[str, OrgSnapshot] = {}
        marks: dict[int, int] = {}
        answers = []
        for delivery in wanted:
            record, fact = delivery.record, delivery.envelope
            marks[record.partition] = max(marks.get(record.partition, -1), record.offset)
            org = self._orgs[record.key]
            if record.offset <= org.through:
                continue  # delivered again after a restart: already folded
            org = self._orgs[record.key] = OrgSnapshot(state=evolve(org.state, fact), through=record.offset)
            if fact.causation_id is not None:
                answers.append(
                    {"org_id": record.key, "offset": record.offset, "request_id": fact.causation_id,
                     "answered_at": fact.occurred_at}
                )
            touched[record.key] = org
        rows = [
            {"key": org_id, "through": org.through, "version": org.through, "snapshot": snapshot_json(org)}
            for org_id, org in touched.items()
        ]
        rows += [
            {"key": watermark_key(partition), "through": offset, "version": offset, "snapshot": ""}
            for partition, offset in marks.items()
        ]
        await self._store.insert(ANSWERS, answers)  # first: a watermark covers the answers below it
        await self._store.insert(TABLE, rows)
        self._forget_beyond_capacity()
        return []

    async def _is_complete(self, partition: int) -> bool:
        known = self._complete.get(partition)
        if known is None:
            row = (await self._table.rows([watermark_key(partition)])).get(watermark_key(partition))
            mark = None if row is None else row["through"]
            done = (await self._log.committed_offsets(group=GOVERNANCE_SNAPSHOTS_GROUP, topic=GOVERNANCE)).get(partition, -1)
            known = (mark is None and done < 0) or (mark is not None and mark >= done)
            if not known:
                logger.error(
                    "governance snapshots: table %s lacks partition %d of governance up to offset %d, where group %s "
                    "stands (dropped, or restored from an older copy?); it is not written, so orgs there load from "
                    "the log. To rebuild: stop the processors, drop the table, delete the group, start again.",
                    TABLE, partition, done, GOVERNANCE_SNAPSHOTS_GROUP,
                )
            self._complete[partition] = known
        return known

    async def _load(self, org_ids: list[str]) -> None:
        """The orgs' last written snapshots (a new org has none)."""
        org_ids = list(dict.fromkeys(org_ids))
        if not org_ids:
            return
        saved = await self._table.rows(org_ids)
        for org_id in org_ids:
            row = saved.get(org_id)
            self._orgs[org_id] = OrgSnapshot(state=OrgState()) if row is None else snapshot_from_json(row["snapshot"])

    def _forget_beyond_capacity(self) -> None:
        # Only as a cache: every org's row is in the table, read again on its next fact.
        while len(self._orgs) > self._capacity:
            del self._orgs[next(iter(self._orgs))]

    def _reset(self) -> None:
        self._orgs.clear()
        self._complete.clear()
