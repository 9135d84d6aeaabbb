"""Erasure in the analysts' ledgers: an erased subject's rows deleted, and never written again.

The ledgers (usage, runs, charges, safety decisions, tool calls) hold ids, counts and timings, no text, mostly
folded from events that are not sealed (usage, charges, scores): destroying the subject's keys leaves those
readable, so the ledgers drop them instead. Every ledger table has `org_id` and `user_id` columns.

- `LedgerEraser` reads `SubjectErased` on `documents` and deletes the subject's rows (an org's: all of the org's)
  from every ledger table, and from the conversation snapshots and transcript turns kept beside the log on Kafka
  (projections/conversation_snapshots.py, projections/transcript_turns.py).
- `WithoutErased` is the store the ledgers write through: it drops the rows of an erased subject, so a ledger
  still behind the erasure, or a refold of the log (`turnlog replay`), does not write them back.
"""

from collections.abc import Mapping, Sequence

from events.erasure import SubjectErased
from events.topics import DOCUMENTS
from kernel.key_store import KeyStore
from kernel.runtime import Delivery, Processor
from kernel.sealing import Subject
from projections.conversation_snapshots import TABLE as CONVERSATION_SNAPSHOTS
from projections.store import SqlStore
from projections.transcript_turns import TABLE as TRANSCRIPT_TURNS

LEDGER_ERASURE_GROUP = "ledger-erasure"

# The tables every_ledger creates (projections/ledger_replay.py); a test checks the two agree.
LEDGER_TABLES = (
    "usage_ledger", "prompt_manifests", "run_milestones", "run_charges", "safety_decisions", "tool_call_reports",
)


# Other tables whose rows name their owner so (`WithoutErased` writes them too).
OWNED_TABLES = (CONVERSATION_SNAPSHOTS, TRANSCRIPT_TURNS)


async def erase_from_ledgers(store: SqlStore, *, org_id: str, user_id: str | None) -> None:
    """Delete the rows of `user_id` in `org_id` (of the whole org: None) from every ledger and owned table."""
    owned = "org_id = {org_id:String}" + ("" if user_id is None else " AND user_id = {user_id:String}")
    for table in LEDGER_TABLES + OWNED_TABLES:
        await store.execute(f"DELETE FROM {table} WHERE {owned}", {"org_id": org_id, "user_id": user_id or ""})


class LedgerEraser:
    """Deletes an erased subject's rows from the ledgers when its `SubjectErased` arrives."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def processor(self) -> Processor:
        return Processor(
            group=LEDGER_ERASURE_GROUP,
            topics=(DOCUMENTS,),
            react=self.react,
            reacts_to=frozenset({SubjectErased.__name__}),  # uploads and their progress pass undecoded
            durable=False,  # only progress is written; deleting again is harmless
            background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        for delivery in deliveries:
            erased = delivery.envelope.payload
            if isinstance(erased, SubjectErased):
                await erase_from_ledgers(self._store, org_id=erased.org_id, user_id=erased.user_id)
        return []


class WithoutErased:
    """A SqlStore whose inserts leave out the rows (`org_id`, `user_id`) of erased subjects."""

    def __init__(self, store: SqlStore, keys: KeyStore) -> None:
        self._store = store
        self._keys = keys

    async def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        await self._store.execute(sql, parameters)

    async def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> list[dict[str, object]]:
        return await self._store.query(sql, parameters)

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        erased: dict[tuple[str, str], bool] = {}  # asked once per subject in the batch

        def is_erased(row: Mapping[str, object]) -> bool:
            owner = (str(row.get("org_id") or ""), str(row.get("user_id") or ""))
            if owner not in erased:
                erased[owner] = bool(owner[0]) and self._keys.is_erased(Subject(org_id=owner[0], user_id=owner[1] or None))
            return erased[owner]

        await self._store.insert(table, [row for row in rows if not is_erased(row)])

    async def close(self) -> None:
        await self._store.close()
