"""Transcripts beside the log: written turn by turn, read as of a record (projections/transcript_turns.py).

The prompt builder and the summarizer keep the transcripts of the conversations they saw lately. Any other (evicted,
or every conversation after a restart or a rebalance) was folded on its next event from `conversation-events`, on
Kafka a scan of its partition from the conversation id's minting time: for a months-old conversation, minutes of
records on the first token's path. On Kafka they load from here instead: the turns below the record in hand and
the partition's watermark, then the conversation's events between the watermark and the record, from the log.
"""

from collections.abc import Sequence

from events.topics import CONVERSATION_EVENTS
from kernel.log import EventLog
from kernel.runtime import Delivery
from kernel.snapshots import Saved, Snapshot
from processors.transcripts import Transcript, TranscriptTurn, evolve_transcript
from projections.snapshots import StoreGuard, WholePartitions, watermark_key
from projections.store import SqlStore
from projections.transcript_turns import TABLE, TranscriptTurnRows


class TranscriptTurns:
    """Transcripts as the table holds them, as of a record: the `SnapshotSource` of the transcripts' caches."""

    def __init__(self, store: SqlStore) -> None:
        self._rows = TranscriptTurnRows(store)
        self._guard = StoreGuard()

    async def saved(self, key: str, *, partition: int, before: int | None = None) -> Saved[Transcript]:
        return await self._guard.ask(lambda: self._saved(key, partition, before), nothing=Saved(snapshot=None), what=TABLE)

    async def _saved(self, key: str, partition: int, before: int | None) -> Saved[Transcript]:
        found = await self._rows.as_of(key, partition=partition, before=before)
        if found is None:
            return Saved(snapshot=None)
        through, rows = found
        if not rows:  # no turn up to the watermark
            return Saved(snapshot=None, folded_through=through)
        turns = {
            row["turn_seq"]: TranscriptTurn(
                role=row["role"], text=row["text"], parent_turn_seq=row["parent_turn_seq"],
                attachments=tuple(row["attachments"]),
            )
            for row in rows
        }
        return Saved(snapshot=Snapshot(state=Transcript(turns=turns), through=rows[-1]["offset"]), folded_through=through)


class TranscriptTurnWriter:
    """Writes the table from `conversation-events`: each turn once, with its event's offset, and the watermarks.

    It rides with the conversation snapshots' writer (its `also`), so one consumer reads and opens each event for both
    tables; `group` is that writer's, whose position the table's watermarks are checked against. `writes` is the
    store without erased subjects' rows (`WithoutErased`): a writer behind an erasure writes none.
    """

    def __init__(self, *, store: SqlStore, writes: SqlStore, log: EventLog, group: str, filling: bool = False) -> None:
        """`filling`: as `WholePartitions`' (the table is being filled again from the log's start)."""
        self._rows = TranscriptTurnRows(store)
        self._writes = writes
        self._whole = WholePartitions(
            log=log, group=group, topic=CONVERSATION_EVENTS, table=TABLE, watermark=self._rows.watermark, filling=filling
        )

    async def write(self, deliveries: Sequence[Delivery]) -> None:
        rows: list[dict[str, object]] = []
        marks: dict[int, int] = {}
        for delivery in deliveries:
            record, envelope = delivery.record, delivery.envelope
            if not await self._whole.holds(record.partition):
                continue
            marks[record.partition] = max(marks.get(record.partition, -1), record.offset)
            for turn_seq, turn in evolve_transcript(Transcript(), envelope).turns.items():
                rows.append({
                    "conversation_id": record.key, "turn_seq": turn_seq, "offset": record.offset, "role": turn.role,
                    "text": turn.text, "parent_turn_seq": turn.parent_turn_seq, "attachments": list(turn.attachments),
                    "org_id": envelope.actor.org_id, "user_id": envelope.actor.user_id,  # the conversation's owner
                })
        rows += [
            {"conversation_id": watermark_key(partition), "turn_seq": 0, "offset": offset, "role": "", "text": "",
             "parent_turn_seq": None, "attachments": [], "org_id": "", "user_id": ""}
            for partition, offset in marks.items()
        ]
        await self._writes.insert(TABLE, rows)  # one insert: no watermark is seen without the rows below it

