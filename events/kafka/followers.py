"""Keyed follows share one reader per partition: the API's streams read a partition once, fanned out by key.

Each SSE stream follows one run's key, and Kafka can only read the key's whole partition. With a consumer per
stream, 64 streams were 64 librdkafka clients (their threads and connections) fetching the same partitions,
each polling the broker. Here the first follow of a partition starts a reader at the partition's end (or at
that follower's start, if it is near the end); the reader keeps the records it reads lately (every key's,
bounded), and each follower registers with it and takes its key's
records: those kept since its start, in memory, then the rest as they are read. Registering and taking the kept
ones happen together, with no await between, so no record is missed or repeated. A follow that starts before
what the reader keeps (a stream opened long after its run began, a resume from far back) is left to read the
partition with a consumer of its own (`follow` returns None). A reader whose last follower left lingers
`linger_s` (a stream per turn would otherwise open a client per turn), then closes.

No scan fills the gap instead: Tansu's lookup of a partition's stable end can lag what its consumers already
see, and a scan bounded by it missed records (a stress of 16 concurrent streams lost a run's first events).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition as KafkaTopicPartition

from events.kafka.consumers import _checked, _ConsumerThread, _poll_batch
from events.kafka.errors import LogClosed
from kernel.log import LogRecord

logger = logging.getLogger(__name__)

# How long a partition's reader outlives its last follower.
DEFAULT_LINGER_S = 30.0
# The records a reader keeps for followers that start behind it (every key's): a run's stream opened after its
# first events, a resume. Older starts read the partition with a consumer of their own.
HISTORY_RECORDS = 5_000
HISTORY_BYTES = 2 * 2**20  # a process follows up to 12 partitions of run-events: 24 MiB at most
# How far before the partition's end a new reader may start, for the follower that starts it (offsets).
NEAR_THE_END = 1_000


@dataclass(eq=False, kw_only=True)
class _Follower:
    key: bytes
    records: asyncio.Queue[LogRecord | BaseException] = field(default_factory=asyncio.Queue)


@dataclass(eq=False, kw_only=True)
class _PartitionReader:
    """One partition's consumer, the followers it feeds, and the records it read lately (every key's).

    `history` holds every record the reader read at `history_from` or later, in order: a follower starting there
    or later takes its backlog from it, in memory, with no scan.
    """

    client: _ConsumerThread
    history_from: int
    history: deque[LogRecord] = field(default_factory=deque)
    history_bytes: int = 0
    followers: dict[bytes, set[_Follower]] = field(default_factory=lambda: defaultdict(set))
    task: asyncio.Task | None = None
    closing: asyncio.TimerHandle | None = None

    def remember(self, record: LogRecord) -> None:
        self.history.append(record)
        self.history_bytes += len(record.value)
        while len(self.history) > HISTORY_RECORDS or self.history_bytes > HISTORY_BYTES:
            oldest = self.history.popleft()
            self.history_bytes -= len(oldest.value)
            self.history_from = oldest.offset + 1

    def backlog(self, key: str, start: int) -> list[LogRecord]:
        return [record for record in self.history if record.offset >= start and record.key == key]

    def add(self, follower: _Follower) -> None:
        self.followers[follower.key].add(follower)
        if self.closing is not None:
            self.closing.cancel()
            self.closing = None

    def remove(self, follower: _Follower) -> bool:
        """Unregister `follower`; whether the reader has none left."""
        keyed = self.followers.get(follower.key)
        if keyed is not None:
            keyed.discard(follower)
            if not keyed:
                del self.followers[follower.key]
        return not self.followers


class PartitionFollowers:
    """The shared readers of one `KafkaLog`, by (physical topic, partition)."""

    def __init__(
        self,
        *,
        open_client: Callable[[], _ConsumerThread],
        close_client: Callable[[_ConsumerThread], Awaitable[None]],
        record: Callable[[Message], LogRecord],
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        self._open_client = open_client
        self._close_client = close_client
        self._record = record
        self._linger_s = linger_s
        self._readers: dict[tuple[str, int], _PartitionReader] = {}
        self._retiring: set[asyncio.Task] = set()

    def follow(
        self, topic: str, partition: int, *, key: str, start: int, end: int,
    ) -> AsyncIterator[LogRecord] | None:
        """`key`'s records of `topic`[`partition`] from offset `start` (the partition's end being `end` now), from the
        partition's shared reader; None when `start` is older than what the reader keeps (read it alone)."""
        reader = self._readers.get((topic, partition))
        if reader is None:
            # At this follower's start when that is close to the end, else at the end: a reader started far behind
            # would hold back every later follower (one reading a run from the partition's start would drag them all
            # through days of deltas).
            reader = self._start(topic, partition, start=start if 0 <= end - start <= NEAR_THE_END else end)
        if start < reader.history_from:
            if not reader.followers and reader.closing is None:
                self._schedule_retire(topic, partition, reader)  # made for later followers: it goes if none come
            return None
        # From here, with no await in between: the backlog is what the reader kept, the rest comes as it reads.
        follower = _Follower(key=key.encode())
        reader.add(follower)
        return self._followed(topic, partition, reader, follower, reader.backlog(key, start), start)

    async def _followed(
        self, topic: str, partition: int, reader: _PartitionReader, follower: _Follower, backlog: list[LogRecord],
        start: int,
    ) -> AsyncIterator[LogRecord]:
        try:
            last = start - 1
            for record in backlog:
                last = record.offset
                yield record
            while True:
                item = await follower.records.get()
                if isinstance(item, BaseException):
                    raise item
                if item.offset > last:
                    last = item.offset
                    yield item
        finally:
            self._leave(topic, partition, reader, follower)

    async def close(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for task in list(self._retiring):
            task.cancel()
        for reader in readers:
            if reader.closing is not None:
                reader.closing.cancel()
            _fail(reader, LogClosed("the log was closed"))
            await self._stop(reader)

    # -- readers -------------------------------------------------------------------------------

    def _start(self, topic: str, partition: int, *, start: int) -> _PartitionReader:
        reader = _PartitionReader(client=self._open_client(), history_from=start)
        self._readers[(topic, partition)] = reader
        reader.task = asyncio.create_task(self._read(topic, partition, reader, start), name=f"follow {topic}[{partition}]")
        return reader

    async def _read(self, topic: str, partition: int, reader: _PartitionReader, start: int) -> None:
        try:
            await reader.client.call(Consumer.assign, [KafkaTopicPartition(topic, partition, start)])
            while True:
                messages = await reader.client.call(_poll_batch, 500, 0.0)
                for message in _checked(messages):
                    if reader.history and message.offset() <= reader.history[-1].offset:
                        continue
                    record = self._record(message)
                    reader.remember(record)
                    for follower in reader.followers.get(message.key() or b"", ()):
                        follower.records.put_nowait(record)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the followers fail with it; the next follow starts a new reader
            if self._readers.get((topic, partition)) is reader:
                del self._readers[(topic, partition)]
            _fail(reader, error)
            await self._close_client(reader.client)

    def _leave(self, topic: str, partition: int, reader: _PartitionReader, follower: _Follower) -> None:
        if reader.remove(follower) and self._readers.get((topic, partition)) is reader:
            self._schedule_retire(topic, partition, reader)

    def _schedule_retire(self, topic: str, partition: int, reader: _PartitionReader) -> None:
        reader.closing = asyncio.get_running_loop().call_later(self._linger_s, self._retire_later, topic, partition, reader)

    def _retire_later(self, topic: str, partition: int, reader: _PartitionReader) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(topic, partition, reader))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, topic: str, partition: int, reader: _PartitionReader) -> None:
        if reader.followers or self._readers.get((topic, partition)) is not reader:
            return  # someone followed it meanwhile
        del self._readers[(topic, partition)]
        await self._stop(reader)

    async def _stop(self, reader: _PartitionReader) -> None:
        if reader.task is not None:
            reader.task.cancel()
            await asyncio.gather(reader.task, return_exceptions=True)
        await self._close_client(reader.client)


def _fail(reader: _PartitionReader, error: BaseException) -> None:
    for keyed in reader.followers.values():
        for follower in keyed:
            follower.records.put_nowait(error)
