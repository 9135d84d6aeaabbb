"""Re-folding a ledger: every record the log still holds on its topics, through its reaction again, in place.

The ledgers (usage, tool calls, safety decisions, runs, charges) key their rows by what the event is about
and version them by log offset, so folding an event again rewrites its row (same key, same version: the
newer insert wins) and never counts it twice. (`tool_call_reports` keeps every report, so it gains a copy;
its views take one per call.) That is why this refolds in place rather than into fresh tables as the read
models' rebuild does: `run-events` keeps days, not forever (events/topology.py), and a fresh table would
lose every row whose events the log no longer holds. Rows of a fold that changed are rewritten; rows a
changed fold no longer writes are left (drop the table first to lose them). A new or dropped table fills
from the whole log. The server must be stopped (`turnlog replay` runs with the server stopped).
"""

from typing import Protocol

from kernel.codec import AvroCodec, UndecodableMessage
from kernel.log import ConsumerCommit, EventLog, TopicPartition
from kernel.runtime import Delivery, Processor
from projections.run_charges import ChargeLedger
from projections.run_ledger import RunLedger
from projections.safety_decisions import SafetyLedger
from projections.store import SqlStore
from projections.tool_calls import ToolCallLedger
from projections.usage_ledger import UsageLedger


async def refold(*, log: EventLog, codec: AvroCodec, processor: Processor, batch_size: int = 5_000) -> int:
    """Feed `processor` every record of its topics up to their ends now, then commit its group there.

    Returns how many records were read. The reaction must write only to its store (a ledger's does):
    whatever records it returns are dropped, never appended.
    """
    ends = {
        TopicPartition(topic=topic, partition=partition): end
        for topic in processor.topics
        for partition, end in (await log.end_offsets(topic)).items()
        if end >= 0
    }
    if not ends:
        return 0
    reached: dict[TopicPartition, int] = {}
    read = 0
    consumer = log.consume(group=f"{processor.group}.refold", topics=processor.topics, max_batch=batch_size)
    try:
        while any(reached.get(position, -1) < end for position, end in ends.items()):
            deliveries: list[Delivery] = []
            for record in await anext(consumer):
                position = TopicPartition(topic=record.topic, partition=record.partition)
                reached[position] = record.offset
                if record.offset > ends.get(position, -1):
                    continue  # appended after the refold began
                read += 1
                try:
                    deliveries.append(Delivery(record=record, envelope=codec.decode(record.value)))
                except UndecodableMessage:
                    pass  # the live processor dead-lettered it
            if deliveries:
                await processor.react(deliveries)
    finally:
        await consumer.aclose()
    # Only the highest offset per partition is kept, never the records: run-events hold every delta.
    await log.commit(ConsumerCommit(group=processor.group, offsets=ends))
    return read


class Ledger(Protocol):
    """A ledger: tables of its own in the store, filled by a processor that only writes there."""

    async def create_tables(self) -> None: ...

    def processor(self) -> Processor: ...


def every_ledger(store: SqlStore) -> tuple[Ledger, ...]:
    """Every ledger on `store`, in the order their tables are created (`run_latency` joins `usage_ledger`)."""
    return (UsageLedger(store), ToolCallLedger(store), SafetyLedger(store), RunLedger(store), ChargeLedger(store))


async def refold_ledgers(*, log: EventLog, codec: AvroCodec, store: SqlStore) -> dict[str, int]:
    """Refold every ledger (their tables must exist); how many records each read, by consumer group."""
    read: dict[str, int] = {}
    for ledger in every_ledger(store):
        processor = ledger.processor()
        read[processor.group] = await refold(log=log, codec=codec, processor=processor)
    return read
