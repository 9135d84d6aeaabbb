"""Retention of run events: which records are transient, and the task that trims them from the embedded log.

Only the high-volume, provisional records of a run go: its token deltas after the first of each model step, and
its heartbeats. Everything a replay or a fold needs stays forever: a run's start, claims, first token (the run
ledger's `first_token`), tool facts, safety decisions, manifests and finish on `run-events`, and every other topic
(the conversation history, usage, documents, governance). The stored answer is the durable assistant turn; the
deltas only ever streamed it. A run's stream is served while the run is younger than the retention period; after
it, the API answers 410 `stream-expired` (api/runs.py), since the deltas that numbered its events are gone.

Kafka cannot delete by type: there the same period is `retention.ms` of the whole `run-events` topic
(events/topology.py).
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from events.runs import AssistantDelta, RunHeartbeat
from events.topics import RUN_EVENTS
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import utc_now
from kernel.log import LogRecord
from kernel.sealing import Erased

logger = logging.getLogger(__name__)

DEFAULT_RUN_EVENTS_RETENTION = timedelta(days=7)
DEFAULT_TRIM_INTERVAL = timedelta(minutes=5)


def is_transient(event: object) -> bool:
    """Whether a run event may be trimmed once old: a heartbeat, or a delta that is not its step's first."""
    if isinstance(event, RunHeartbeat):
        return True
    if isinstance(event, Erased):  # its subject's key is destroyed: judged by the type its envelope names
        return event.type in _TRANSIENT_TYPES
    return isinstance(event, AssistantDelta) and event.index > 0


_TRANSIENT_TYPES = frozenset({AssistantDelta.__name__, RunHeartbeat.__name__})


def stream_expired(started_at: datetime, *, now: datetime, retention: timedelta | None) -> bool:
    """Whether a run that started at `started_at` has outlived its stream (None: kept forever)."""
    return retention is not None and started_at < now - retention


class TrimmableLog(Protocol):
    """What the trimmer needs of a log: the embedded log's retention primitives."""

    async def trim_candidates(self, topic: str, *, before: datetime, limit: int) -> list[LogRecord]: ...

    async def trim(self, topic: str, *, offsets: Sequence[int], through: int) -> int: ...


@dataclass(frozen=True, kw_only=True)
class TrimPass:
    examined: int
    trimmed: int


class RunEventTrimmer:
    """Trims transient run events older than `retention`, `batch_size` records per transaction."""

    def __init__(
        self,
        *,
        log: TrimmableLog,
        codec: AvroCodec,
        retention: timedelta,
        clock: Callable[[], datetime] = utc_now,
        batch_size: int = 500,
        pause_s: float = 0.01,
    ) -> None:
        if retention <= timedelta(0):
            raise ValueError(f"a retention period must be positive, got {retention}")
        self._log = log
        self._codec = codec
        self._retention = retention
        self._clock = clock
        self._batch_size = batch_size
        self._pause_s = pause_s

    async def trim_once(self) -> TrimPass:
        """Trim everything that is old enough now, batch after batch, until a batch finds nothing older."""
        cutoff = self._clock() - self._retention
        examined = trimmed = 0
        while True:
            candidates = await self._log.trim_candidates(RUN_EVENTS, before=cutoff, limit=self._batch_size)
            if not candidates:
                return TrimPass(examined=examined, trimmed=trimmed)
            transient = [record.offset for record in candidates if self._transient(record)]
            trimmed += await self._log.trim(RUN_EVENTS, offsets=transient, through=candidates[-1].offset)
            examined += len(candidates)
            await asyncio.sleep(self._pause_s)  # room for the API and the processors between batches

    async def run(self, *, interval: timedelta = DEFAULT_TRIM_INTERVAL) -> None:
        """Trim every `interval`, until cancelled; a failed pass (a full disk) is logged and tried again next time."""
        while True:
            try:
                done = await self.trim_once()
                if done.trimmed:
                    logger.info("trimmed %d of %d old run events", done.trimmed, done.examined)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("trimming old run events failed; trying again in %s", interval)
            await asyncio.sleep(interval.total_seconds())

    def _transient(self, record: LogRecord) -> bool:
        try:
            return is_transient(self._codec.decode(record.value).payload)
        except UndecodableMessage:
            return False  # what cannot be read cannot be judged: kept
