"""The processor runtime: consume a group's topics, react, append the reactions and the progress atomically.

A reaction and the consumer commit that covers its input land in one append, so a processor that
crashes mid-batch re-reads that batch and nothing is applied twice (exactly-once on the embedded log,
transactions on Kafka). Undecodable messages go to the dead-letter topic with the reason; a message
whose reaction keeps failing does too, so one poison message never stalls a partition.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from events.codec import AvroCodec, UndecodableMessage
from events.envelope import Envelope
from events.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord
from events.outcomes import DeadLetter
from events.topics import DEAD_LETTERS
from events.values import Actor

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = Actor(user_id="turnlog", org_id="", workspace_id="")


@dataclass(frozen=True, kw_only=True)
class Delivery:
    record: LogRecord
    envelope: Envelope


React = Callable[[Sequence[Delivery]], Awaitable[Sequence[OutgoingRecord]]]


@dataclass(frozen=True, kw_only=True)
class Processor:
    """What a processor is: its group, its input topics, its reaction, and how durable its output must be."""

    group: str
    topics: tuple[str, ...]
    react: React
    durable: bool = True
    max_batch: int = 500
    linger_s: float = 0.0
    # Called after each committed batch (e.g. to wake read-your-writes waiters).
    on_committed: Callable[[Sequence[LogRecord]], None] | None = None
    # Called when a batch failed and will be re-read: drop in-memory state derived from it.
    on_reset: Callable[[], None] | None = None
    # Records to append once the reaction is committed, built from where it landed (replies that
    # tell their reader the written offsets). Not atomic with the reaction: losing them is harmless.
    then: Callable[[Sequence[LogRecord]], Sequence[OutgoingRecord]] | None = None


def encode(codec: AvroCodec, envelope: Envelope, *, topic: str) -> OutgoingRecord:
    return OutgoingRecord(topic=topic, key=envelope.key, value=codec.encode(envelope))


def dead_letter(codec: AvroCodec, *, group: str, record: LogRecord, reason: str) -> OutgoingRecord:
    letter = DeadLetter(
        group=group,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        reason=reason,
    )
    return encode(codec, Envelope.wrap(letter, key=record.key, actor=SYSTEM_ACTOR), topic=DEAD_LETTERS)


async def run_processor(processor: Processor, *, log: EventLog, codec: AvroCodec, retry_delay_s: float = 0.5) -> None:
    """Run `processor` until cancelled; after an unexpected failure, start again from the committed position."""
    while True:
        try:
            await _consume(processor, log=log, codec=codec)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("processor %s failed; restarting from its committed position", processor.group)
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)


async def _consume(processor: Processor, *, log: EventLog, codec: AvroCodec) -> None:
    stream = log.consume(
        group=processor.group, topics=processor.topics, max_batch=processor.max_batch, linger_s=processor.linger_s
    )
    try:
        async for batch in stream:
            await process_batch(processor, batch, log=log, codec=codec, commit=ConsumerCommit.through(processor.group, batch))
            if processor.on_committed is not None:
                processor.on_committed(batch)
    finally:
        await stream.aclose()


async def process_batch(
    processor: Processor,
    batch: Sequence[LogRecord],
    *,
    log: EventLog,
    codec: AvroCodec,
    commit: ConsumerCommit | None,
) -> None:
    """Decode, react, and append the reactions (atomically with `commit` where the runtime commits through the log).

    Undecodable records become dead letters; `then`'s follow-ups are appended once the reactions are.
    """
    deliveries: list[Delivery] = []
    outputs: list[OutgoingRecord] = []
    for record in batch:
        try:
            deliveries.append(Delivery(record=record, envelope=codec.decode(record.value)))
        except UndecodableMessage as error:
            logger.warning("dead-lettering %s@%d: %s", record.topic, record.offset, error)
            outputs.append(dead_letter(codec, group=processor.group, record=record, reason=str(error)))
    outputs.extend(await _react_isolating_poison(processor, codec, deliveries))
    written = await log.append(outputs, durable=processor.durable, commit=commit)
    if processor.then is not None:
        follow_ups = processor.then(written)
        if follow_ups:
            await log.append(follow_ups, durable=False)


async def _react_isolating_poison(
    processor: Processor, codec: AvroCodec, deliveries: Sequence[Delivery]
) -> list[OutgoingRecord]:
    if not deliveries:
        return []
    try:
        return list(await processor.react(deliveries))
    except Exception:
        if len(deliveries) == 1:
            raise
    # The batch failed: find the culprit one message at a time, with fresh state.
    logger.exception("processor %s: batch failed; retrying one message at a time", processor.group)
    if processor.on_reset is not None:
        processor.on_reset()
    outputs: list[OutgoingRecord] = []
    for delivery in deliveries:
        try:
            outputs.extend(await processor.react([delivery]))
        except Exception as error:
            logger.exception("dead-lettering %s@%d", delivery.record.topic, delivery.record.offset)
            if processor.on_reset is not None:
                processor.on_reset()
            reason = f"{processor.group} could not handle it: {type(error).__name__}: {error}"
            outputs.append(dead_letter(codec, group=processor.group, record=delivery.record, reason=reason))
    return outputs
