"""The read-model projector: folds `conversation-events` and `documents` into ClickHouse tables, batch by batch.

Rows are upserted by log offset (ReplacingMergeTree), so redelivery after a crash is harmless. After
each batch it wakes the read-your-writes fence, so queries in the same process see their writes at once.
"""

from collections.abc import Sequence

from events.erasure import SubjectErased
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord
from events.topics import CONVERSATION_EVENTS, DOCUMENTS
from kernel.runtime import Delivery, Processor
from projections.fence import ReadYourWritesFence
from projections.folds import RowBatch, fold
from projections.read_models import ReadModels

READ_MODELS_GROUP = "read-models"
PROJECTED_TOPICS = (CONVERSATION_EVENTS, DOCUMENTS)


class ReadModelProjector:
    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        read_models: ReadModels,
        fence: ReadYourWritesFence | None = None,
        linger_s: float = 0.02,
    ) -> None:
        self._codec = codec
        self._read_models = read_models
        self._linger_s = linger_s
        self.fence = fence or ReadYourWritesFence(log=log, group=READ_MODELS_GROUP)

    def processor(self) -> Processor:
        return Processor(
            group=READ_MODELS_GROUP,
            topics=PROJECTED_TOPICS,
            react=self.react,
            max_batch=2_000,
            # Every insert writes a new part, a fixed cost of milliseconds: fewer, larger batches.
            linger_s=self._linger_s,
            durable=False,  # only progress is written; replaying a batch is idempotent
            on_committed=lambda batch: self.fence.notify(),
            span_every_batch=True,  # its work is rows, not envelopes: a turn's trace shows each projection of it
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        rows = RowBatch()
        for delivery in deliveries:
            if isinstance(delivery.envelope.payload, SubjectErased):
                rows = await _erase(self._read_models, rows, delivery.envelope.payload)
                continue
            fold(rows, delivery.envelope, offset=delivery.record.offset)
        await _upsert(self._read_models, rows)
        return []


async def rebuild(*, log: EventLog, codec: AvroCodec, live: ReadModels, fresh: ReadModels, batch_size: int = 5_000) -> int:
    """Replay every projected event into `fresh` tables, then swap them in for `live` (blue/green).

    Replays each partition of each projected topic up to the end it had when the rebuild began,
    commits the projector's progress there (the live projector goes on from it), and returns how
    many events it replayed. The live projector must be stopped meanwhile (`turnlog replay` runs
    with the server stopped).
    """
    await fresh.drop_tables()
    await fresh.create_tables()
    ends = {
        (topic, partition): end
        for topic in PROJECTED_TOPICS
        for partition, end in (await log.end_offsets(topic)).items()
        if end >= 0
    }
    reached: dict[tuple[str, int], int] = {}
    replayed: list[LogRecord] = []
    consumer = log.consume(group=f"{READ_MODELS_GROUP}.rebuild", topics=PROJECTED_TOPICS, max_batch=batch_size)
    try:
        while any(reached.get(position, -1) < end for position, end in ends.items()):
            rows = RowBatch()
            for record in await anext(consumer):
                position = (record.topic, record.partition)
                reached[position] = record.offset
                if record.offset > ends.get(position, -1):
                    continue  # arrived after the rebuild began: the live projector's
                try:
                    envelope = codec.decode(record.value)
                except UndecodableMessage:
                    envelope = None  # the live projector dead-lettered it too
                if envelope is not None and isinstance(envelope.payload, SubjectErased):
                    rows = await _erase(fresh, rows, envelope.payload)
                elif envelope is not None:
                    fold(rows, envelope, offset=record.offset)  # an erased subject's sealed events fold to nothing
                replayed.append(record)
            await _upsert(fresh, rows)
    finally:
        await consumer.aclose()
    await live.exchange_with(fresh)
    await fresh.drop_tables()
    if replayed:
        await log.commit(ConsumerCommit.through(READ_MODELS_GROUP, replayed))
    return len(replayed)


async def _erase(read_models: ReadModels, rows: RowBatch, erased: SubjectErased) -> RowBatch:
    """The rows folded so far written, then the subject's rows deleted; a new batch for what follows."""
    await _upsert(read_models, rows)
    await read_models.erase(org_id=erased.org_id, owner_id=erased.user_id, file_ids=[file.file_id for file in erased.files])
    return RowBatch()


async def _upsert(read_models: ReadModels, rows: RowBatch) -> None:
    await read_models.upsert(
        conversations=rows.conversations, turns=rows.turns, runs=rows.runs, files=rows.files, file_states=rows.file_states
    )
