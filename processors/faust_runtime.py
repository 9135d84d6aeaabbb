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
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import faust
from faust.streams import _tracks_buffer_agen
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.futures import notify

from kernel.codec import AvroCodec
from events.kafka.log import KafkaLog
from kernel.log import LogRecord
from kernel.errors import Unavailable
from kernel.runtime import Attempts, Outage, Processor, process_batch

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
# The shortest linger after a batch's first event: faust hands a fetch's records over one by one, so yielding at
# once would split a burst into batches of one.
MIN_LINGER_S = 0.001


class _BatchingStream(faust.Stream):
    """faust's stream, with batches that wait for their first event.

    `noack_take(max, within)` yields every `within` seconds whether anything came or not: at the few milliseconds
    the decider and the prompt builder linger, each idle agent woke 500 times a second (docs/benchmarks.md has the
    processor worker's idle CPU before and after). `noack_batches` waits for a first event without a timeout, then at
    most `linger_s` for the batch to fill. The buffering is faust's own (a passive processor that holds the stream
    while a batch is handled), so acknowledgement and rebalancing behave as with `noack_take`.
    """

    @_tracks_buffer_agen
    async def noack_batches(self, max_: int, linger_s: float):
        buffer: list = []  # events
        started, full, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        consuming: asyncio.Future | None = None
        acks_were_enabled = self.enable_acks

        async def add_to_buffer(value):
            nonlocal consuming
            try:
                if consuming is not None:  # a batch is being handled: hold the stream until it is
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("the batch buffer found no current event")
                buffer.append(event)
                started.set()
                if len(buffer) >= max_:
                    full.set()
                    consumed.clear()
                    await self.wait(consumed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to the batch buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False  # acknowledged by the agent, once the batch's reactions are durable
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))
        try:
            while not self.should_stop:
                await self.wait_for_stopped(started)
                await self.wait_for_stopped(full, timeout=linger_s)
                if not buffer:
                    continue
                consuming = self.loop.create_future()
                try:
                    yield list(buffer)
                finally:
                    buffer.clear()
                    notify(consuming)
                    started.clear()
                    full.clear()
                    consumed.set()
        finally:
            self.enable_acks = acks_were_enabled
            self._processors.remove(add_to_buffer)


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
        consumer_thread_class = thread

        def _new_consumer_thread(self):
            return self.consumer_thread_class(self, loop=self.loop, beacon=self.beacon)

        async def commit(self, *_: object, **__: object) -> bool:
            """faust's own commit (every 2.8 s, on revoke, on stop, on a task's error) commits nothing: the agent
            commits each batch it applied (`commit_applied`). faust's chooses its offsets, then awaits a flush
            and a hop to the consumer's thread before it sends them, so a batch committed in between was seen
            moved back by the stale commit that landed after it: the group's offset fell behind what was applied,
            and with no later record on that partition the read-your-writes fence waited on it for good."""
            return False

    return type("Transport", (faust_aiokafka.Transport,), {"Consumer": _Consumer})


class _NoTables(TableManager):
    """faust's table manager sleeps a second before recovery starts, for tables declared late; turnlog declares
    none, and that second was spent at every worker start (a restarted worker's partitions waited for it)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


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
        broker_client_id=log.client_id,  # `turnlog-<instance id>`: how a restart finds its predecessor's members
        TableManager=_NoTables,
        # Partitions are spread by faust's round-robin assignor; no tables, so no leader topic needed.
        topic_disable_leader=True,
        topic_allow_declare=False,  # turnlog's log provisions its topics with their specs
        # The log's own consumer timings: the same group-join and fetch latency tradeoffs apply.
        broker_session_timeout=log.consumer_timing_ms("session.timeout.ms") / 1000,
        broker_heartbeat_interval=log.consumer_timing_ms("heartbeat.interval.ms") / 1000,
        # Static membership when the log names this process (each app is a group of its own, so one id serves all).
        consumer_group_instance_id=log.group_instance_id,
        # A rebalance waits for the batch in hand to be written and acknowledged, so a partition
        # never has two members deciding it at once.
        stream_wait_empty=True,
        Stream=_BatchingStream,
        loghandlers=[],
        datadir=str(faust_dir / "{conf.name}-data"),
    )
    app.transport_class = _transport_for(log.fetch_wait_ms(background=processor.background))
    return app


async def run_processor_on_faust(
    processor: Processor, *, log: KafkaLog, codec: AvroCodec, data_dir: Path, retry_delay_s: float = 0.5
) -> None:
    """Run `processor` as a faust agent until cancelled; faust's own files go under `data_dir`."""
    await log.ensure_topics(processor.topics)
    await log.end_predecessors(processor.group)
    app = processor_app(processor, log=log, data_dir=data_dir)
    topic = app.topic(*(log.physical_topic(name) for name in processor.topics), key_serializer="raw", value_serializer="raw")

    async def on_revoked(*_: object, **__: object) -> None:
        # Another worker may write these keys next: in-memory state folded from them is stale.
        if processor.on_reset is not None:
            processor.on_reset()

    app.on_partitions_revoked.connect(on_revoked)
    attempts = Attempts()

    async def agent(stream: faust.Stream) -> None:
        async for events in stream.noack_batches(processor.max_batch, max(processor.linger_s, MIN_LINGER_S)):
            batch = [_record(event.message, log) for event in events]
            await _process_until_durable(processor, batch, log=log, codec=codec, attempts=attempts, retry_delay_s=retry_delay_s)
            for event in events:
                await stream.ack(event)
            await commit_applied(app.consumer, applied_positions(event.message for event in events))
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
    outage = Outage(processor.group)
    while True:
        try:
            await process_batch(processor, batch, log=log, codec=codec, commit=None, attempts=attempts)
            outage.progressed()
            return
        except asyncio.CancelledError:
            raise
        except Unavailable as error:  # a dependency is down: one line now and then, not a traceback each retry
            outage.failed(error)
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)
        except Exception:
            logger.exception("processor %s failed on a batch; retrying it", processor.group)
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)


def applied_positions(messages: Iterable[faust.types.Message]) -> dict[faust.types.TP, int]:
    """Per partition, the offset to commit once `messages` are applied: Kafka's "next to read"."""
    positions: dict[faust.types.TP, int] = {}
    for message in messages:
        positions[message.tp] = max(positions.get(message.tp, 0), message.offset + 1)
    return positions


async def commit_applied(consumer: faust.types.ConsumerT, positions: dict[faust.types.TP, int]) -> None:
    """Commit exactly what the batch applied (the batches of a partition are applied in order, and this is the
    only committer: faust's own `commit()` is switched off, see `_transport_for`).

    faust's own `commit()` returns without committing while another commit is in flight (its periodic
    one, every 2.8 s), and otherwise commits what its list of acknowledged offsets allows, which a
    transaction marker's hole (an offset never delivered) can hold back. Either way the group's offset
    trailed what was applied until a later commit, and the read-your-writes fence, which reads that
    offset, waited for it: 2-3 s for a read or a cancel during a run. `_commit_offsets` is faust's own
    commit step: it skips partitions no longer assigned and records what it committed.
    """
    newer = {tp: offset for tp, offset in positions.items() if consumer._should_commit(tp, offset)}
    if newer:
        await consumer._commit_offsets(newer)
    for tp, offset in positions.items():
        # What faust's own commit would prune (it never runs here, and its lists would grow for ever): acknowledged
        # offsets and holes below the committed one.
        acked = consumer._acked[tp]
        done = [acked_offset for acked_offset in acked if acked_offset < offset]
        if done:
            acked[:] = [acked_offset for acked_offset in acked if acked_offset >= offset]
            consumer._acked_index[tp].difference_update(done)
        consumer._gap[tp].chop(0, offset)


def _record(message: faust.types.Message, log: KafkaLog) -> LogRecord:
    return LogRecord(
        topic=log.logical_topic(message.topic),
        partition=message.partition,
        offset=message.offset,
        key=(message.key or b"").decode("utf-8", "replace"),
        value=message.value or b"",
        timestamp=datetime.fromtimestamp(message.timestamp, UTC),
    )
