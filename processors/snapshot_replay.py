"""Rebuilding the snapshot tables from the log: emptied, then every record of their topics folded again.

The snapshot tables hold state folded from a topic so that a loader reads a row, not a partition's history
(docs/kafka.md): the decider's conversations and the transcripts' turns from `conversation-events`, the orgs'
governance from `governance`. Their writers write a partition only where the table holds it from its start, so a
table that was lost, or restored from an older copy, stops being written (its keys load from the log) until it is
rebuilt. This is that rebuild, for `turnlog replay` (the processors stopped): the tables dropped and made again, each
writer fed every record its topic holds, and its group committed at the end it reached, where the live writer goes on.
"""

from kernel.codec import AvroCodec
from kernel.log import EventLog
from processors.transcript_turns import TranscriptTurnWriter
from projections.conversation_snapshots import (
    CONVERSATION_SNAPSHOTS_GROUP, TABLE as CONVERSATION_SNAPSHOTS, conversation_snapshot_writer, conversation_snapshots,
)
from projections.governance_snapshots import ANSWERS, TABLE as GOVERNANCE, GovernanceSnapshots, governance_snapshot_writer
from projections.ledger_replay import refold
from projections.store import SqlStore
from projections.transcript_turns import TABLE as TRANSCRIPT_TURNS, TranscriptTurnRows

GOVERNANCE_TABLES = (GOVERNANCE, ANSWERS)
TABLES = (CONVERSATION_SNAPSHOTS, TRANSCRIPT_TURNS, *GOVERNANCE_TABLES)


async def rebuild_snapshots(
    *, log: EventLog, codec: AvroCodec, store: SqlStore, writes: SqlStore, conversations: bool = True
) -> dict[str, int]:
    """Drop and refill the snapshot tables; how many records each writer read, by consumer group. `writes` is `store`
    without erased subjects' rows (`WithoutErased`), as the live writers write the owned tables. Without
    `conversations` (a log that reads a key through an index: no live writer keeps those tables) only governance's."""
    for table in TABLES if conversations else GOVERNANCE_TABLES:
        await store.execute(f"DROP TABLE IF EXISTS {table}")
    writers = []
    if conversations:
        await conversation_snapshots(store).create_table()
        await TranscriptTurnRows(store).create_table()
        turns = TranscriptTurnWriter(store=store, writes=writes, log=log, group=CONVERSATION_SNAPSHOTS_GROUP, filling=True)
        writers.append(conversation_snapshot_writer(store=store, writes=writes, log=log, also=turns.write, filling=True))
    await GovernanceSnapshots(store).create_tables()
    writers.append(governance_snapshot_writer(store=store, log=log, filling=True))
    read = {}
    for writer in writers:
        processor = writer.processor()
        read[processor.group] = await refold(log=log, codec=codec, processor=processor)
    return read
