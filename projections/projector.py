"""The read-model projector: folds `conversation-events` into ClickHouse tables, batch by batch.

Rows are upserted by log offset (ReplacingMergeTree), so redelivery after a crash is harmless. The
projector also keeps the read-your-writes fence: a query first waits until the projection has
applied everything the log held when the query arrived.
"""

import asyncio
from collections.abc import Sequence

from events.codec import AvroCodec, UndecodableMessage
from events.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord, TopicPartition
from events.topics import CONVERSATION_EVENTS
from processors.runtime import Delivery, Processor
from projections.folds import RowBatch, fold
from projections.read_models import ReadModels
from turnlog.errors import Unavailable

READ_MODELS_GROUP = "read-models"


class ReadModelProjector:
    def __init__(self, *, log: EventLog, codec: AvroCodec, read_models: ReadModels, linger_s: float = 0.02) -> None:
        self._log = log
        self._linger_s = linger_s
        self._codec = codec
        self._read_models = read_models
        self._applied = -1
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def processor(self) -> Processor:
        return Processor(
            group=READ_MODELS_GROUP,
            topics=(CONVERSATION_EVENTS,),
            react=self.react,
            max_batch=2_000,
            # Every insert writes a new part, a fixed cost of milliseconds: fewer, larger batches.
            linger_s=self._linger_s,
            durable=False,  # only progress is written; replaying a batch is idempotent
            on_committed=self._committed,
        )

    async def start(self) -> None:
        self._applied = await self._log.committed(group=READ_MODELS_GROUP, topic=CONVERSATION_EVENTS)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        rows = RowBatch()
        for delivery in deliveries:
            fold(rows, delivery.envelope, offset=delivery.record.offset)
        await self._read_models.upsert(conversations=rows.conversations, turns=rows.turns, runs=rows.runs)
        return []

    def _committed(self, batch: Sequence[LogRecord]) -> None:
        self._applied = max(self._applied, max(record.offset for record in batch))
        still_waiting = []
        for target, waiter in self._waiters:
            if target <= self._applied:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._waiters = still_waiting

    async def caught_up(self, *, key: str | None = None, timeout_s: float = 5.0) -> None:
        """Wait until every conversation event on the log now (for `key`'s partition) is queryable."""
        target = await self._log.end_offset(CONVERSATION_EVENTS, key=key)
        if self._applied >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise Unavailable(detail="the read models are catching up with the log; retry shortly", retry_after_s=1) from None


async def rebuild(*, log: EventLog, codec: AvroCodec, live: ReadModels, fresh: ReadModels, batch_size: int = 5_000) -> int:
    """Replay every conversation event into `fresh` tables, then swap them in for `live` (blue/green).

    Returns the offset of the last event replayed; the live projector goes on from there.
    """
    await fresh.drop_tables()
    await fresh.create_tables()
    last = -1
    end = await log.end_offset(CONVERSATION_EVENTS)
    consumer = log.consume(group=f"{READ_MODELS_GROUP}.rebuild", topics=(CONVERSATION_EVENTS,), max_batch=batch_size)
    try:
        while last < end:
            batch = await anext(consumer)
            rows = RowBatch()
            for record in batch:
                if record.offset > end:
                    break
                try:
                    fold(rows, codec.decode(record.value), offset=record.offset)
                except UndecodableMessage:
                    pass  # the live projector dead-lettered it too
                last = record.offset
            await fresh.upsert(conversations=rows.conversations, turns=rows.turns, runs=rows.runs)
    finally:
        await consumer.aclose()
    await live.exchange_with(fresh)
    await fresh.drop_tables()
    if last >= 0:
        progress = {TopicPartition(topic=CONVERSATION_EVENTS, partition=0): last}
        await log.commit(ConsumerCommit(group=READ_MODELS_GROUP, offsets=progress))
    return last
