"""The processor runtime: consume a group's topics, react, append the reactions and the progress atomically.

A reaction and the consumer commit that covers its input land in one append, so a processor that
crashes mid-batch re-reads that batch and nothing is applied twice (exactly-once on the embedded log,
transactions on Kafka). Undecodable messages go to the dead-letter topic with the reason; a message
whose reaction keeps failing does too, so one poison message never stalls a partition.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Envelope
from kernel.sealing import Erased
from kernel.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord
from kernel.dead_letters import DeadLetter
from kernel.dead_letters import DEAD_LETTERS
from kernel.envelope import Actor
from kernel.errors import Unavailable
from kernel import log_context, tracing
from kernel.metrics import DEAD_LETTERED, PROCESSOR_BATCH_SECONDS, PROCESSOR_RECORDS, PROCESSOR_RESTARTS

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
    # Records built from where the reaction landed (replies that tell their reader the written offsets), written
    # after it in the same append (`EventLog.append`'s `then`: it may be called again if the write is retried).
    then: Callable[[Sequence[LogRecord]], Sequence[OutgoingRecord]] | None = None
    # A reaction's span is recorded where it caused something (an envelope, a span inside it); with this, in every
    # batch, for each trace in it: for processors whose effects are not on the log (the projector's rows).
    span_every_batch: bool = False
    # The payload types (record names) the reaction looks at, where it ignores every other: the others are committed
    # past without being decoded or opened (a token delta costs such a processor no decryption). None: every type.
    reacts_to: frozenset[str] | None = None
    # Deliver payloads whose subject was erased (`Erased`) to the reaction instead of skipping them: for a processor
    # that must answer for them (the decider replies to an erased user's command still in flight).
    sees_erased: bool = False
    # Nothing waits for its output within a request (ledgers, summaries, erasure sweeps): the log may deliver to it
    # less promptly to cost less (`EventLog.consume`'s `background`; on Kafka a longer fetch wait, which matters on
    # a broker that holds every fetch for its whole wait, such as Tansu).
    background: bool = False


def encode(codec: AvroCodec, envelope: Envelope, *, topic: str) -> OutgoingRecord:
    return OutgoingRecord(topic=topic, key=envelope.key, value=codec.encode(envelope))


def dead_letter(codec: AvroCodec, *, group: str, record: LogRecord, reason: str) -> OutgoingRecord:
    DEAD_LETTERED.labels(group=group, topic=record.topic).inc()
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


# A message that fails alone this many times is dead-lettered: a failure that may be transient (a store
# that is down) is retried a few times, but one message never stalls its partition for good.
MAX_ATTEMPTS = 3


class Attempts:
    """Failed attempts per record, kept across a runtime's retries of the same batch."""

    def __init__(self) -> None:
        self._failures: dict[tuple[str, int, int], int] = {}

    def failed(self, record: LogRecord) -> int:
        """Count one more failure of `record`; how many it has had."""
        position = (record.topic, record.partition, record.offset)
        self._failures[position] = self._failures.get(position, 0) + 1
        return self._failures[position]

    def done(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            self._failures.pop((record.topic, record.partition, record.offset), None)


# While a dependency stays down, its outage is logged again this often (one line, no traceback).
OUTAGE_LOG_INTERVAL_S = 30.0


class Outage:
    """A dependency a processor needs is down: one line when it starts, one a while while it lasts, one when it ends.

    The runtime retries every half second; a traceback each time would bury everything else in the log."""

    def __init__(self, group: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._group = group
        self._clock = clock
        self._since: float | None = None
        self._logged_at = 0.0
        self._failures = 0

    def failed(self, error: Unavailable) -> None:
        now = self._clock()
        self._failures += 1
        if self._since is None:
            self._since, self._logged_at = now, now
            logger.warning("processor %s: %s; retrying until it is back", self._group, error.detail)
        elif now - self._logged_at >= OUTAGE_LOG_INTERVAL_S:
            self._logged_at = now
            logger.warning(
                "processor %s: still unavailable after %.0f s (%d tries): %s", self._group, now - self._since,
                self._failures, error.detail,
            )

    def progressed(self) -> None:
        if self._since is not None:
            logger.warning("processor %s: available again after %.0f s", self._group, self._clock() - self._since)
            self._since, self._failures = None, 0


async def run_processor(processor: Processor, *, log: EventLog, codec: AvroCodec, retry_delay_s: float = 0.5) -> None:
    """Run `processor` until cancelled; after an unexpected failure, start again from the committed position."""
    attempts = Attempts()
    outage = Outage(processor.group)
    while True:
        try:
            await _consume(processor, log=log, codec=codec, attempts=attempts, outage=outage)
        except asyncio.CancelledError:
            raise
        except Unavailable as error:
            outage.failed(error)
            PROCESSOR_RESTARTS.labels(group=processor.group).inc()
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)
        except Exception:
            logger.exception("processor %s failed; restarting from its committed position", processor.group)
            PROCESSOR_RESTARTS.labels(group=processor.group).inc()
            if processor.on_reset is not None:
                processor.on_reset()
            await asyncio.sleep(retry_delay_s)


# How long the position past batches that caused nothing may wait for the next append to carry it.
IDLE_COMMIT_DELAY_S = 1.0


class IdleCommits:
    """Positions past batches that caused nothing, committed with the group's next append or after `delay_s`.

    A token delta wakes every consumer of `run-events`, and most skip it unread: committing each such batch on
    its own would cost each of them a write per delta. Losing a position held here to a crash only means
    reading those records again, to the same nothing.
    """

    def __init__(self, log: EventLog, *, delay_s: float) -> None:
        self._log = log
        self._delay_s = delay_s
        self._pending: ConsumerCommit | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task] = set()

    def defer(self, commit: ConsumerCommit) -> None:
        self._pending = _merged(self._pending, commit)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._flush)

    def carried_by(self, commit: ConsumerCommit | None) -> ConsumerCommit | None:
        """`commit` with the positions held here (which it then carries), for the group's next append."""
        if self._pending is None:
            return commit
        carried, self._pending = _merged(self._pending, commit) if commit is not None else self._pending, None
        self._cancel_timer()
        return carried

    def close(self) -> None:
        self._cancel_timer()
        for task in self._flushes:
            task.cancel()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            task = asyncio.get_running_loop().create_task(self._commit(pending))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _commit(self, commit: ConsumerCommit) -> None:
        try:
            await self._log.commit(commit)
        except Exception as error:  # noqa: BLE001 - only a re-read of skipped records is at stake
            logger.warning("could not commit %s's position past skipped records (%s): they may be read again", commit.group, error)


def _merged(earlier: ConsumerCommit | None, later: ConsumerCommit) -> ConsumerCommit:
    if earlier is None:
        return later
    offsets = dict(earlier.offsets)
    for position, offset in later.offsets.items():
        offsets[position] = max(offsets.get(position, -1), offset)
    return ConsumerCommit(group=later.group, offsets=offsets)


async def _consume(
    processor: Processor, *, log: EventLog, codec: AvroCodec, attempts: Attempts, outage: Outage | None = None
) -> None:
    stream = log.consume(
        group=processor.group, topics=processor.topics, max_batch=processor.max_batch, linger_s=processor.linger_s,
        wake_for=None if processor.reacts_to is None else functools.partial(_reacted_to, codec, processor.reacts_to),
        background=processor.background,
    )
    idle = IdleCommits(log, delay_s=IDLE_COMMIT_DELAY_S)
    try:
        async for batch in stream:
            commit = ConsumerCommit.through(processor.group, batch)
            await process_batch(processor, batch, log=log, codec=codec, commit=commit, attempts=attempts, idle=idle)
            if outage is not None:
                outage.progressed()
            if processor.on_committed is not None:
                processor.on_committed(batch)
    finally:
        idle.close()
        await stream.aclose()


def _reacted_to(codec: AvroCodec, reacts_to: frozenset[str], record: LogRecord) -> bool:
    """Whether the processor reacts to the record (one it cannot tell without decoding counts as one)."""
    event_type = codec.envelope_type(record.value)
    return event_type is None or event_type in reacts_to


async def process_batch(
    processor: Processor,
    batch: Sequence[LogRecord],
    *,
    log: EventLog,
    codec: AvroCodec,
    commit: ConsumerCommit | None,
    attempts: Attempts,
    idle: IdleCommits | None = None,
) -> None:
    """Decode, react, and append the reactions (atomically with `commit` where the runtime commits through the log).

    Undecodable records become dead letters; `then`'s follow-ups are written with the reactions. With `idle`,
    the commit of a batch that delivered nothing (every record of a type the processor ignores) waits there.
    """
    started = time.perf_counter()
    deliveries: list[Delivery] = []
    outputs: list[OutgoingRecord] = []
    reacts_to = processor.reacts_to
    for record in batch:
        if reacts_to is not None and not _reacted_to(codec, reacts_to, record):
            continue
        try:
            envelope = codec.decode(record.value)
            if isinstance(envelope.payload, Erased) and not processor.sees_erased:
                continue  # its subject's key is destroyed (docs/encryption.md): nothing left to react to
            deliveries.append(Delivery(record=record, envelope=envelope))
        except UndecodableMessage as error:
            logger.warning("dead-lettering %s@%d: %s", record.topic, record.offset, error)
            outputs.append(dead_letter(codec, group=processor.group, record=record, reason=str(error)))
    # Log lines written while reacting name what the batch's envelopes share (its run, its org, ...); what the
    # reaction causes continues its causes' traces (`kernel/tracing.py`), and its spans end once that is appended.
    reaction = tracing.reaction(
        processor.group, (delivery.envelope for delivery in deliveries),
        attributes=_span_attributes(processor.group, processor.topics),
        every_trace=processor.span_every_batch,
    )
    with reaction:
        with log_context.bound_to(delivery.envelope for delivery in deliveries):
            outputs.extend(await _react_isolating_poison(processor, codec, deliveries, attempts))
        # A batch that caused nothing (every record skipped: types the processor ignores, erased payloads) needs no
        # flush of its own: losing its commit to a crash only means reading those records again, to the same nothing.
        if idle is not None and commit is not None and not deliveries and not outputs:
            idle.defer(commit)
        else:
            if idle is not None:
                commit = idle.carried_by(commit)
            durable = processor.durable and bool(deliveries or outputs)
            await log.append(outputs, durable=durable, commit=commit, then=processor.then)
    attempts.done(batch)
    batch_seconds, records = _batch_metrics(processor.group)
    batch_seconds.observe(time.perf_counter() - started)
    records.inc(len(batch))


@functools.cache
def _span_attributes(group: str, topics: tuple[str, ...]) -> dict[str, str]:
    """What a reaction's span says about the processor (OpenTelemetry's messaging conventions)."""
    return {"messaging.consumer.group.name": group, "messaging.destination.name": ",".join(topics)}


@functools.cache
def _batch_metrics(group: str) -> tuple:
    """A group's batch-duration and record-count series, looked up once (they are observed on every batch)."""
    return PROCESSOR_BATCH_SECONDS.labels(group=group), PROCESSOR_RECORDS.labels(group=group)


async def _react_isolating_poison(
    processor: Processor, codec: AvroCodec, deliveries: Sequence[Delivery], attempts: Attempts
) -> list[OutgoingRecord]:
    if not deliveries:
        return []
    try:
        return list(await processor.react(deliveries))
    except Unavailable:
        raise  # a dependency is down (the store, a full disk), not a poison message: retry the batch, never dead-letter
    except Exception as error:
        if len(deliveries) == 1:
            [delivery] = deliveries
            if attempts.failed(delivery.record) < MAX_ATTEMPTS:
                raise  # maybe transient: the runtime retries the batch
            logger.exception("dead-lettering %s@%d after %d attempts", delivery.record.topic, delivery.record.offset, MAX_ATTEMPTS)
            if processor.on_reset is not None:
                processor.on_reset()
            reason = f"{processor.group} could not handle it ({MAX_ATTEMPTS} attempts): {type(error).__name__}: {error}"
            return [dead_letter(codec, group=processor.group, record=delivery.record, reason=reason)]
    # The batch failed: find the culprit one message at a time, with fresh state.
    logger.exception("processor %s: batch failed; retrying one message at a time", processor.group)
    if processor.on_reset is not None:
        processor.on_reset()
    outputs: list[OutgoingRecord] = []
    for delivery in deliveries:
        try:
            with log_context.bound_to([delivery.envelope]):
                outputs.extend(await processor.react([delivery]))
        except Unavailable:
            raise
        except Exception as error:
            logger.exception("dead-lettering %s@%d", delivery.record.topic, delivery.record.offset)
            if processor.on_reset is not None:
                processor.on_reset()
            reason = f"{processor.group} could not handle it: {type(error).__name__}: {error}"
            outputs.append(dead_letter(codec, group=processor.group, record=delivery.record, reason=reason))
    return outputs
