"""Transcript turns: each conversation turn's transcript entry, one row per turn with the offset of the event that
made it, and a watermark per partition of `conversation-events`, in ClickHouse (processors/transcript_turns.py
writes and reads them).

A transcript is a map of turns, each made once by one event, so the transcript as of any record is the rows below
its offset: one table answers a fold "as of" any record, which the prompt builder asks (its transcript as of the run
it prompts), and a turn is written once, not again with every later turn as a whole-state snapshot would be. The
watermark and completeness rules are the snapshots' (projections/snapshots.py): the watermark row is
`#<partition>`, turn 0, its offset the watermark. Rows hold the turns' words, as `turns` does, and name the
conversation's owner: an erasure deletes them (projections/ledger_erasure.py).
"""

from projections.snapshots import watermark_key
from projections.store import SqlStore

TABLE = "transcript_turns"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    conversation_id String,
    turn_seq UInt32,
    offset Int64,
    role LowCardinality(String),
    text String,
    parent_turn_seq Nullable(UInt32),
    attachments Array(String),
    org_id String,
    user_id String
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (conversation_id, turn_seq)
"""


class TranscriptTurnRows:
    """The table: created, and read as of a record."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_table(self) -> None:
        await self._store.execute(_DDL)

    async def as_of(self, conversation_id: str, *, partition: int, before: int | None) -> tuple[int, list[dict]] | None:
        """The offset through which the rows hold the conversation (the watermark, below `before`), and its rows
        through there, by turn; None where the table says nothing of the partition."""
        rows = await self._store.query(
            f"SELECT conversation_id, turn_seq, offset, role, text, parent_turn_seq, attachments FROM {TABLE} FINAL"
            " WHERE conversation_id IN ({keys:Array(String)})",
            {"keys": [conversation_id, watermark_key(partition)]},
        )
        marks = [row["offset"] for row in rows if row["conversation_id"] != conversation_id]
        if not marks:
            return None
        through = marks[0] if before is None else min(marks[0], before - 1)
        turns = [row for row in rows if row["conversation_id"] == conversation_id and row["offset"] <= through]
        return through, sorted(turns, key=lambda row: row["offset"])

    async def watermark(self, partition: int) -> int | None:
        rows = await self._store.query(
            f"SELECT offset FROM {TABLE} FINAL WHERE conversation_id = {{key:String}}", {"key": watermark_key(partition)}
        )
        return int(rows[0]["offset"]) if rows else None
