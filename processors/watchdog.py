"""The run watchdog: a claimed run whose worker falls silent for a whole lease is ended as failed.

Workers renew a run's lease with every delta or heartbeat. When a lease lapses (the worker crashed,
hung, or the whole process was killed), the watchdog commits the run with the text streamed so far
and a reason, so no run stays in progress forever. It is a consumer group (several watchdogs share the
partitions of `run-events`), and its committed progress is, per partition, the low-water mark of the
runs it still watches: after a restart it re-reads exactly what it needs, and every lease starts afresh.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from commands.catalog import FinishRun
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Envelope
from kernel.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord, TopicPartition
from events.runs import AssistantDelta, GenerationStarted, RunFinished, RunHeartbeat, RunStarted
from events.topics import COMMANDS, RUN_EVENTS
from events.values import Usage
from kernel.runtime import encode

logger = logging.getLogger(__name__)
WATCHDOG_GROUP = "run-watchdog"
_LEASE_RENEWALS = frozenset({AssistantDelta.__name__, RunHeartbeat.__name__})


@dataclass(kw_only=True)
class WatchedRun:
    run_id: str
    conversation_id: str
    started: Envelope
    partition: int
    first_offset: int
    claimed: bool = False
    last_seen: float = 0.0
    reported: bool = False


def lapsed(runs: dict[str, WatchedRun], *, now: float, lease_s: float) -> list[WatchedRun]:
    """Claimed runs not yet reported whose lease ran out."""
    return [run for run in runs.values() if run.claimed and not run.reported and now - run.last_seen > lease_s]


class RunWatchdog:
    def __init__(
        self, *, log: EventLog, codec: AvroCodec, lease_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._codec = codec
        self._lease_s = lease_s
        self._clock = clock
        self._runs: dict[str, WatchedRun] = {}
        self._positions: dict[int, int] = {}  # per partition of run-events: the last offset read

    async def run(self) -> None:
        sweeper = asyncio.create_task(self._sweep_forever(owner=asyncio.current_task()))
        # Deltas need not wake it one by one: a generating worker also beats every third of the lease, and the deltas
        # themselves arrive within the log's quiet interval (a second). For the same reason it is a background
        # consumer: a lease is seconds long, so a delivery half a second late changes nothing.
        stream = self._log.consume(
            group=WATCHDOG_GROUP, topics=(RUN_EVENTS,), wake_for=self._wakes_for, background=True
        )
        try:
            async for batch in stream:
                for record in batch:
                    self._positions[record.partition] = record.offset
                    # A delta or heartbeat only renews its run's lease (the record's key is the run): no decoding,
                    # no decryption. Only the starts, claims and ends of runs are opened.
                    if self._codec.envelope_type(record.value) in _LEASE_RENEWALS:
                        self._renew(record.key)
                        continue
                    try:
                        envelope = self._codec.decode(record.value)
                    except UndecodableMessage:
                        continue  # the processors that act on run events dead-letter it
                    self._observe(envelope, record.partition, record.offset)
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await stream.aclose()

    def _wakes_for(self, record: LogRecord) -> bool:
        return self._codec.envelope_type(record.value) != AssistantDelta.__name__

    def _observe(self, envelope: Envelope, partition: int, offset: int) -> None:
        event = envelope.payload
        now = self._clock()
        match event:
            case RunStarted():
                self._runs[event.run_id] = WatchedRun(
                    run_id=event.run_id,
                    conversation_id=event.conversation_id,
                    started=envelope,
                    partition=partition,
                    first_offset=offset,
                )
                return
            case RunFinished():
                self._runs.pop(event.run_id, None)
                return
        if isinstance(event, (GenerationStarted, AssistantDelta, RunHeartbeat)):
            self._renew(event.run_id, claimed=isinstance(event, GenerationStarted), now=now)

    def _renew(self, run_id: str, *, claimed: bool = False, now: float | None = None) -> None:
        """Any sign of life renews the run's lease; a claim also starts it."""
        run = self._runs.get(run_id)
        if run is None:
            return
        run.last_seen = self._clock() if now is None else now
        run.claimed = run.claimed or claimed

    async def _sweep_forever(self, *, owner: asyncio.Task | None) -> None:
        while True:
            await asyncio.sleep(max(self._lease_s / 4, 0.05))
            try:
                await self.sweep()
            except Exception:
                if owner is not None and owner.cancelling():
                    # Stopping: the stream is closed before this task is, and on Kafka closing it leaves the group,
                    # so a sweep's commit in between fails (Unknown member). The next start sweeps from the last commit.
                    return
                logger.exception("watchdog sweep failed; will retry")

    async def _streamed_text(self, run: WatchedRun) -> str:
        """The text the run streamed before it fell silent: read back from the log, rarely (only for a lapsed run)."""
        parts = []
        for record in await self._log.read(RUN_EVENTS, key=run.run_id, after=run.first_offset - 1):
            if self._codec.envelope_type(record.value) not in (AssistantDelta.__name__, None):
                continue
            try:
                event = self._codec.decode(record.value).payload
            except UndecodableMessage:
                continue
            if isinstance(event, AssistantDelta):
                parts.append(event.text)
        return "".join(parts)

    async def sweep(self) -> None:
        """End lapsed runs, then commit the low-water mark of the runs still watched."""
        outputs: list[OutgoingRecord] = []
        for run in lapsed(self._runs, now=self._clock(), lease_s=self._lease_s):
            silent_s = self._lease_s
            command = FinishRun(
                conversation_id=run.conversation_id,
                run_id=run.run_id,
                status="failed",
                text=await self._streamed_text(run),
                reason=f"interrupted: its worker stopped responding (no output for {silent_s:.0f}s)",
                usage=Usage(output_tokens=0),
            )
            envelope = Envelope.wrap(command, key=run.conversation_id, actor=run.started.actor, cause=run.started)
            outputs.append(encode(self._codec, envelope, topic=COMMANDS))
            run.reported = True
            logger.warning("run %s lapsed its lease; ending it as failed", run.run_id)
        low_water = dict(self._positions)
        for run in self._runs.values():
            low_water[run.partition] = min(low_water.get(run.partition, run.first_offset), run.first_offset - 1)
        offsets = {TopicPartition(topic=RUN_EVENTS, partition=partition): offset for partition, offset in low_water.items()}
        if outputs or offsets:
            commit = ConsumerCommit(group=WATCHDOG_GROUP, offsets=offsets)
            await self._log.append(outputs, commit=commit, durable=bool(outputs))
