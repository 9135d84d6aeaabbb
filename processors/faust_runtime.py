"""The processor runtime on faust-streaming: each processor is a faust agent, its app its consumer group.

faust owns consumption and partition balancing across `turnlog worker` processes; the reactions are
written through turnlog's Kafka log (transactional, acks=all). An agent acknowledges a batch only
once its reactions are durable and then commits at once, so a committed offset never runs ahead of
the output it caused. That is at-least-once (faust's exactly-once mode would need its own producer
and transactions, which the brokers turnlog is tested on do not all support), so every reaction
is idempotent: the decider answers a redelivered command from its history instead of applying it
again, the projections upsert by offset, and an inference worker claims a run once.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from kernel.codec import AvroCodec
from events.kafka.log import KafkaLog
from kernel.log import LogRecord
from kernel.runtime import Attempts, Processor, process_batch

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # faust reads uncommitted records unless it runs its own transactions, and waits up to 1.5 s
    # per empty fetch. turnlog's writers are transactional: a reaction to a record of an aborted
    # transaction would act on something that never happened.
    fetch_wait_max_ms = 100

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # both read when the consumer starts
        consumer._fetch_max_wait_ms = self.fetch_wait_max_ms
        return consumer


def _transport_for(fetch_wait_max_ms: int) -> type[faust_aiokafka.Transport]:
    thread = type("ConsumerThread", (_ReadCommittedConsumerThread,), {"fetch_wait_max_ms": fetch_wait_max_ms})

    class _Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self):
            return thread(self, loop=self.loop, beacon=self.beacon)

    return type("Transport", (faust_aiokafka.Transport,), {"Consumer": _Consumer})


class _TurnlogApp(faust.App):
    transport_class: type[faust_aiokafka.Transport] = faust_aiokafka.Transport

    def _new_transport(self):
        return self.transport_class(self.conf.broker_consumer, self)


def processor_app(processor: Processor, *, log: KafkaLog, data_dir: Path) -> faust.App:
    """A faust app for one processor: its id is the processor's consumer group (with the log's prefix).

    faust keeps a data directory per app (for tables turnlog does not use); it goes under `data_dir`,
    never the working directory, which in the image is the read-only application.
    """
    faust_dir = data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = _TurnlogApp(
        log.physical_topic(processor.group),
        broker=f"kafka://{log.bootstrap_servers}",
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Partitions are spread by faust's round-robin assignor; no tables, so no leader topic needed.
        topic_disable_leader=True,
        topic_allow_declare=False,  # turnlog's log provisions its topics with their specs
        # The log's own consumer timings: the same group-join and fetch latency tradeoffs apply.
        broker_session_timeout=log.consumer_timing_ms("session.timeout.ms") / 1000,
        broker_heartbeat_interval=log.consumer_timing_ms("heartbeat.interval.ms") / 1000,
        # A rebalance waits for the batch in hand to be written and acknowledged, so a partition
        # never has two members deciding it at once.
        stream_wait_empty=True,
        loghandlers=[],
        datadir=str(faust_dir / "{conf.name}-data"),
    )
    app.transport_class = _transport_for(log.consumer_timing_ms("fetch.wait.max.ms"))
    return app


async def run_processor_on_faust(
    processor: Processor, *, log: KafkaLog, codec: AvroCodec, data_dir: Path, retry_delay_s: float = 0.5
) -> None:
    """Run `processor` as a faust agent until cancelled; faust's own files go under `data_dir`."""
    await log.ensure_topics(processor.topics)
    app = processor_app(processor, log=log, data_dir=data_dir)
    topic = app.topic(*(log.physical_topic(name) for name in processor.topics), key_serializer="raw", value_serializer="raw")

    async def on_revoked(*_: object, **__: object) -> None:
        # Another worker may write these keys next: in-memory state folded from them is stale.
        if processor.on_reset is not None:
            processor.on_reset()

    app.on_partitions_revoked.connect(on_revoked)
    attempts = Attempts()

    async def agent(stream: faust.Stream) -> None:
        # Linger at least a little: faust hands events over one by one.
        async for events in stream.noack_take(processor.max_batch, within=max(processor.linger_s, 0.002)):
            batch = [_record(event.message, log) for event in events]
            await _process_until_durable(processor, batch, log=log, codec=codec, attempts=attempts, retry_delay_s=retry_delay_s)
            for event in events:
                await stream.ack(event)
            await app.consumer.commit()
            if processor.on_committed is not None:
                processor.on_committed(batch)

    app.agent(topic, name=f"{processor.group}-agent")(agent)
    await app.start()
    try:
        await asyncio.Event().wait()  # the agent runs until this task is cancelled
    finally:
        # Bounded: at interpreter or loop shutdown faust's own tasks may already be cancelled.
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await app.stop()
        except TimeoutError:
            logger.warning("faust app %s did not stop within %.0f s", app.conf.id, STOP_TIMEOUT_S)


async def _process_until_durable(
    processor: Processor, batch: Sequence[LogRecord], *, log: KafkaLog, codec: AvroCodec, attempts: Attempts, retry_delay_s: float
) -> None:
    # The batch stays unacknowledged (so uncommitted) until its reactions are written: retry here
    # rather than let faust move past it.
    while True:
        try:
            await process_batch(processor, batch, log=log, codec=codec, commit=None, attempts=attempts)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("processor %s failed on a batch; retrying it", processor.group)
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)


def _record(message: faust.types.Message, log: KafkaLog) -> LogRecord:
    return LogRecord(
        topic=log.logical_topic(message.topic),
        partition=message.partition,
        offset=message.offset,
        key=(message.key or b"").decode("utf-8", "replace"),
        value=message.value or b"",
        timestamp=datetime.fromtimestamp(message.timestamp, UTC),
    )
