"""Governance snapshots: each org's state after each batch of its facts, and a watermark per partition, in ClickHouse.

The governance decider and the API's view load an org from here and fold only what `governance` took after its
partition's watermark (commands/governance/snapshots.py says why; projections/snapshots.py how the table is kept).
The request each fact answered goes to `governance_answers` first (one small row per fact, never rewritten: an org's
newest thousand ids inside its snapshot would be rewritten with every batch of a busy org), kept as long as
`governance-requests` keeps a request that could be delivered again.
"""

from collections.abc import Sequence

from commands.governance.decider import OrgState, evolve
from commands.governance.snapshots import REMEMBERED_REQUESTS, SavedOrg, snapshot_from_json
from kernel.snapshots import snapshot_json
from events.topics import GOVERNANCE
from kernel.log import EventLog
from kernel.runtime import Delivery
from projections.snapshots import SnapshotTable, SnapshotWriter, StoreGuard
from projections.store import SqlStore

GOVERNANCE_SNAPSHOTS_GROUP = "governance-snapshots"
TABLE = "governance_snapshots"
ANSWERS = "governance_answers"

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


class GovernanceSnapshots:
    """The tables, read for loaders (`OrgSnapshots`)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.table = SnapshotTable[OrgState](store, name=TABLE, encode=snapshot_json, decode=snapshot_from_json)
        self._guard = StoreGuard()

    async def create_tables(self) -> None:
        await self.table.create_table()
        await self._store.execute(_ANSWERS_DDL)

    async def saved(self, org_id: str, *, partition: int, answered: bool) -> SavedOrg:
        return await self._guard.ask(
            lambda: self._saved(org_id, partition, answered), nothing=SavedOrg(snapshot=None), what=ANSWERS
        )

    async def _saved(self, org_id: str, partition: int, answered: bool) -> SavedOrg:
        saved = await self.table.read_saved(org_id, partition)
        answers = (
            await self._store.query(
                # The newest facts first (the table's order, read backwards), so a week of a busy org is not grouped.
                f"SELECT request_id, max(offset) AS last FROM (SELECT request_id, offset FROM {ANSWERS}"
                f" WHERE org_id = {{org:String}} ORDER BY offset DESC LIMIT {_FACTS_READ_FOR_ANSWERS})"
                f" GROUP BY request_id ORDER BY last DESC LIMIT {REMEMBERED_REQUESTS}",
                {"org": org_id},
            )
            # An org without a snapshot answered nothing up to the watermark.
            if answered and saved.snapshot is not None else []
        )
        return SavedOrg(
            snapshot=saved.snapshot, folded_through=saved.folded_through,
            answered=tuple(row["request_id"] for row in reversed(answers)),
        )


def governance_snapshot_writer(*, store: SqlStore, log: EventLog, filling: bool = False) -> SnapshotWriter[OrgState]:
    """Writes the tables from `governance`: each org's row after each batch of its facts, the answers first."""

    async def answers(folded: Sequence[Delivery]) -> None:
        await store.insert(ANSWERS, [
            {"org_id": d.record.key, "offset": d.record.offset, "request_id": d.envelope.causation_id,
             "answered_at": d.envelope.occurred_at}
            for d in folded if d.envelope.causation_id is not None
        ])

    return SnapshotWriter(
        table=GovernanceSnapshots(store).table, store=store, log=log, topic=GOVERNANCE,
        group=GOVERNANCE_SNAPSHOTS_GROUP, initial=OrgState(), evolve=evolve, also=answers, filling=filling,
    )
