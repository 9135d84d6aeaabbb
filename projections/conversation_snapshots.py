"""Conversation snapshots: each conversation's decider state after each batch of its events, and a watermark per
partition of `conversation-events`, in ClickHouse (commands/snapshots.py says why, projections/snapshots.py how).

Rows name the conversation's owner and are written through `WithoutErased`: an erasure deletes them
(projections/ledger_erasure.py), and a writer still behind the erasure does not write them back. A conversation
whose row is gone loads as one with no events up to the watermark, which is how its history folds too: its sealed
events open no more.
"""

from collections.abc import Awaitable, Callable, Sequence

from commands.decider import ConversationState, evolve
from commands.snapshots import snapshot_from_json
from events.topics import CONVERSATION_EVENTS
from kernel.log import EventLog
from kernel.runtime import Delivery
from kernel.snapshots import snapshot_json
from projections.snapshots import SnapshotTable, SnapshotWriter
from projections.store import SqlStore

CONVERSATION_SNAPSHOTS_GROUP = "conversation-snapshots"
TABLE = "conversation_snapshots"


def conversation_snapshots(store: SqlStore) -> SnapshotTable[ConversationState]:
    """The table, read for the decider's misses (`SnapshotSource`)."""
    return SnapshotTable(store, name=TABLE, encode=snapshot_json, decode=snapshot_from_json, owned=True)


def conversation_snapshot_writer(
    *, store: SqlStore, writes: SqlStore, log: EventLog,
    also: Callable[[Sequence[Delivery]], Awaitable[None]] | None = None, filling: bool = False,
) -> SnapshotWriter[ConversationState]:
    """Writes the table from `conversation-events`; `writes` is `store` without erased subjects' rows. `also` writes
    another table from the same events first (the transcript turns: one consumer opens each event for both)."""
    return SnapshotWriter(
        table=conversation_snapshots(store), store=writes, log=log, topic=CONVERSATION_EVENTS,
        group=CONVERSATION_SNAPSHOTS_GROUP, initial=ConversationState(), evolve=evolve, also=also, filling=filling,
    )
