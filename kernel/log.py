"""The event log port: durable, ordered per key, atomic multi-record appends, consumer groups.

Adapters: `events.embedded` (SQLite, one machine) and the Kafka adapter (a fleet). Both pass
`tests/events/test_log_contract.py`. The log moves bytes; `kernel.codec` gives them meaning.
"""

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class OutgoingRecord:
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, kw_only=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    timestamp: datetime


@dataclass(frozen=True, kw_only=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, kw_only=True)
class ConsumerCommit:
    """Positions a consumer group has finished: the next read starts after each offset."""

    group: str
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)

    @classmethod
    def through(cls, group: str, records: Sequence[LogRecord]) -> "ConsumerCommit":
        """A commit covering every record given (the highest offset per partition)."""
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            position = TopicPartition(topic=record.topic, partition=record.partition)
            offsets[position] = max(offsets.get(position, -1), record.offset)
        return cls(group=group, offsets=offsets)


# Records built from where an append's records landed, written in the same append (see `EventLog.append`).
FollowUps = Callable[[Sequence[LogRecord]], Sequence[OutgoingRecord]]

# How long records a consumer skips may wait to be delivered when nothing it wants follows them (`consume`'s
# `wake_for`): its position, and its lag, stay that fresh.
QUIET_WAKE_S = 1.0


class EventLog(Protocol):
    """An append-only log of keyed records in topics."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(
        self,
        records: Sequence[OutgoingRecord],
        *,
        durable: bool = True,
        commit: ConsumerCommit | None = None,
        then: FollowUps | None = None,
    ) -> list[LogRecord]:
        """Append all records and the consumer commit atomically, or none of them.

        With `durable`, returns only once the records survive a machine crash (fsync / acks=all);
        without, once they survive a process crash (for provisional data such as token deltas).
        `then` builds more records from where `records` landed (a reply naming its events' offsets); they are
        written after them in the same atomic append and returned after them. It runs on the log's writer, in
        the caller's context: it must only build records.
        """
        ...

    async def commit(self, commit: ConsumerCommit) -> None:
        """Record a consumer group's progress without appending anything."""
        ...

    def consume(
        self, *, group: str, topics: Sequence[str], max_batch: int = 500, linger_s: float = 0.0,
        wake_for: Callable[[LogRecord], bool] | None = None, background: bool = False,
    ) -> AsyncIterator[list[LogRecord]]:
        """Batches of records after the group's committed positions, waiting (without polling) for more.

        With `linger_s`, a batch that is not full waits that long for more records first (fewer,
        larger batches for consumers whose writes have a high fixed cost).
        With `wake_for`, a hint: records it rejects (what the consumer skips, e.g. token deltas) need not wake the
        consumer; the log may hold them back until a record it accepts arrives, or for up to `QUIET_WAKE_S`.
        With `background`, a hint: nothing waits for this consumer's output within a request, so the log may deliver
        less promptly to cost less (on Kafka a longer fetch wait: `BACKGROUND_FETCH_WAIT_MS`).
        """
        ...

    async def read(
        self, topic: str, *, key: str, after: int = -1, before: int | None = None, limit: int | None = None,
        since: datetime | None = None, through: Callable[[LogRecord], bool] | None = None,
    ) -> list[LogRecord]:
        """The records of `key` in `topic` with `after < offset < before`, in order (the first `limit`).

        `before` is an offset readers were given (a fold as of the record in hand): everything below it is readable,
        so the log need not look its readable end up.

        `through`: the records end with the first for which it holds (a run's last event), so a scan ends there,
        not at the partition's end; it may be called on another thread, so it must be pure.

        A log without an index by key (Kafka) scans the key's partition, and starts where no record of the key can
        be older: for a key that is an id turnlog made, its minting time less a margin for clocks
        (`kernel.ids.written_since`), found in the log's time index; with `since`, the caller's later bound. Records
        written before either may be left out. So a lookup by id costs a scan of what was written since the id was
        made, not of the partition's whole retention, whoever calls it.
        """
        ...

    def follow(
        self, topic: str, *, key: str | None = None, after: int = -1, background: bool = False
    ) -> AsyncIterator[LogRecord]:
        """Records of `topic` (of one `key`, if given) after `after`, then new ones as they arrive, forever.

        With `background`, a hint as for `consume`: nothing waits for these records within a request.
        """
        ...

    async def partition_of(self, topic: str, *, key: str) -> int:
        """The partition that holds `key`'s records (their `LogRecord.partition`)."""
        ...

    async def end_offset(self, topic: str, *, key: str | None = None) -> int:
        """The offset of the last record in the partition holding `key` (-1 when empty)."""
        ...

    async def committed(self, *, group: str, topic: str, key: str | None = None) -> int:
        """The group's committed offset for the partition holding `key` (-1 when none)."""
        ...

    async def readable(self, topic: str, *, key: str, offset: int) -> bool:
        """Whether readers of the partition holding `key` see the record at `offset` yet."""
        ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition: the offset of its last record (-1 when empty)."""
        ...

    async def committed_offsets(self, *, group: str, topic: str) -> dict[int, int]:
        """Per partition: the group's committed offset (-1 when none)."""
        ...

    async def lag(self, *, group: str, topic: str) -> int:
        """How many records of `topic` lie after the group's committed positions (0: caught up).

        For metrics and readiness: cheap enough to ask every few seconds. On Kafka, transaction markers count
        too (a caught-up group may show one per partition).
        """
        ...
