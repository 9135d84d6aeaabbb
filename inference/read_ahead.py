"""An inference worker's read-ahead: the requests it has read but not yet claimed, and how far it may commit.

A worker reads up to `limit` requests past its commit point, so that when a slot frees it can
choose between tenants (`Admission.next_tenant`) instead of taking whatever is next in the topic.
Claims therefore happen out of order, and a commit never passes a request still waiting: each
partition commits through the record just before its oldest waiting request.

So a worker that dies can leave claimed requests past its commit point, and the next reader of the
partition gets them again. Those can only be among the first `limit` records after a break in what
a reader sees (its start, a redelivery, a partition that another worker moved on), and only among those
already in the log when the break was seen (the caller says up to where: an earlier reader cannot have
read what was written after it); such records are marked `check`, and the worker looks in the log for a
claim before it generates one. Elsewhere the log's order already proves a request new. Pure
bookkeeping: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Generic, TypeVar

from kernel.log import LogRecord, TopicPartition

Payload = TypeVar("Payload")

# Kafka gives a transaction's commit marker an offset: consecutive requests of two transactions are two apart.
_MAX_STEP = 2


@dataclass(frozen=True, kw_only=True)
class Waiting(Generic[Payload]):
    """A request read and not yet claimed; `payload` is None when it could not be decoded."""

    record: LogRecord
    tenant_id: str
    payload: Payload | None
    check: bool  # it may have been claimed by an earlier reader: look in the log before generating it
    problem: str = ""  # why `payload` is None


class ReadAhead(Generic[Payload]):
    """Requests read past the commit point, by partition; who waits, and what may be committed."""

    def __init__(self, *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._past_commit: dict[TopicPartition, dict[int, Waiting[Payload] | None]] = defaultdict(dict)  # None: resolved
        self._committed: dict[TopicPartition, int] = {}
        self._last_seen: dict[TopicPartition, int] = {}
        self._checks_left: dict[TopicPartition, int] = {}
        self._checked_through: dict[TopicPartition, int | None] = {}  # None: no bound was given

    def __len__(self) -> int:
        """Records past the commit point, resolved or not: what bounds the reading."""
        return sum(len(records) for records in self._past_commit.values())

    @property
    def full(self) -> bool:
        return len(self) >= self.limit

    def breaks_at(self, record: LogRecord) -> bool:
        """Whether `record` starts a break in what this reader sees (its first record of a partition, a jump, a
        redelivery): the caller then gives `add` the partition's last offset as of now."""
        last = self._last_seen.get(TopicPartition(topic=record.topic, partition=record.partition))
        return last is None or record.offset <= last or record.offset > last + _MAX_STEP

    def add(
        self, record: LogRecord, *, tenant_id: str, payload: Payload | None, problem: str = "",
        written_through: int | None = None,
    ) -> Waiting[Payload]:
        """Take in a record read from the topic (records of one partition arrive in offset order); an
        undecodable one comes with no payload and the `problem` it has. At a break, `written_through` is the
        partition's last offset when the break was seen: later records are new to every reader, so never checked
        (without it, the `limit` records after the break are)."""
        position = TopicPartition(topic=record.topic, partition=record.partition)
        if self.breaks_at(record):
            self._checks_left[position] = self.limit  # a break: an earlier reader may have claimed what follows
            self._checked_through[position] = written_through
        self._last_seen[position] = record.offset
        through = self._checked_through.get(position)
        check = self._checks_left.get(position, 0) > 0 and (through is None or record.offset <= through)
        if check:
            self._checks_left[position] -= 1
        waiting = Waiting(record=record, tenant_id=tenant_id, payload=payload, check=check, problem=problem)
        if record.offset > self._committed.get(position, -1):
            self._past_commit[position][record.offset] = waiting
        return waiting

    def waiting(self) -> list[Waiting[Payload]]:
        """Every request waiting for a claim, oldest first within each partition."""
        return [
            waiting for records in self._past_commit.values() for _, waiting in sorted(records.items()) if waiting is not None
        ]

    def waiting_tenants(self) -> list[str]:
        return [waiting.tenant_id for waiting in self.waiting() if waiting.payload is not None]

    def undecodable(self) -> Waiting[Payload] | None:
        """A waiting record that could not be decoded (it needs no slot: it is dead-lettered at once)."""
        return next((waiting for waiting in self.waiting() if waiting.payload is None), None)

    def oldest_of(self, tenant_id: str) -> Waiting[Payload] | None:
        """The tenant's request that came first (by record timestamp, then position)."""
        mine = [waiting for waiting in self.waiting() if waiting.payload is not None and waiting.tenant_id == tenant_id]
        return min(mine, key=lambda waiting: (waiting.record.timestamp, waiting.record.partition, waiting.record.offset), default=None)

    def resolve(self, waiting: Waiting[Payload]) -> None:
        """The request is claimed (or skipped, or dead-lettered): it no longer holds the commit back."""
        position = TopicPartition(topic=waiting.record.topic, partition=waiting.record.partition)
        records = self._past_commit.get(position, {})
        if waiting.record.offset in records:
            records[waiting.record.offset] = None

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit through, where it moved: the record before the oldest waiting
        request, or the last record read when none waits. Records it covers leave the read-ahead."""
        moved: dict[TopicPartition, int] = {}
        for position, records in self._past_commit.items():
            through = self._committed.get(position, -1)
            for offset in sorted(records):
                if records[offset] is not None:
                    through = max(through, offset - 1)
                    break
                through = offset
            for offset in [offset for offset in records if offset <= through]:
                del records[offset]
            if through > self._committed.get(position, -1):
                self._committed[position] = moved[position] = through
        return moved
