"""Keyed follows share one reader per partition: the API's streams read a partition once, fanned out by key.

Each SSE stream follows one run's key, and Kafka can only read the key's whole partition. With a consumer per
stream, 64 streams were 64 librdkafka clients (their threads and connections) fetching the same partitions,
each polling the broker. Here the first follow of a partition starts a reader; later follows of any key on it
register with that reader and get their key's records from it. A reader starts at the partition's end, and a
follow that starts before the reader's position first reads its backlog (a scan of what lies between), then
takes the reader's records: registered before the scan, so none falls between the two and none comes twice. A reader whose last follower left
lingers `linger_s` (a stream per turn would otherwise open a client per turn), then closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition as KafkaTopicPartition

from events.kafka.consumers import _checked, _ConsumerThread, _poll_batch
from events.kafka.errors import LogClosed
from kernel.log import LogRecord

logger = logging.getLogger(__name__)

# How long a partition's reader outlives its last follower.
DEFAULT_LINGER_S = 30.0


@dataclass(eq=False, kw_only=True)
class _Follower:
    key: bytes
    records: asyncio.Queue[LogRecord | BaseException] = field(default_factory=asyncio.Queue)


@dataclass(eq=False, kw_only=True)
class _PartitionReader:
    """One partition's consumer and the followers it feeds; `delivered_through`: the last offset handed out."""

    client: _ConsumerThread
    delivered_through: int
    followers: dict[bytes, set[_Follower]] = field(default_factory=lambda: defaultdict(set))
    task: asyncio.Task | None = None
    closing: asyncio.TimerHandle | None = None

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

    async def follow(
        self,
        topic: str,
        partition: int,
        *,
        key: str,
        start: int,
        end: int,
        backlog: Callable[[int, int], Awaitable[list[LogRecord]]],
    ) -> AsyncIterator[LogRecord]:
        """`key`'s records of `topic`[`partition`] from offset `start`, the partition's end being `end` now;
        `backlog(start, stop)` reads the key's records with `start <= offset < stop`."""
        follower = _Follower(key=key.encode())
        reader = self._readers.get((topic, partition))
        if reader is None:
            # At the end, whatever this follower's start: a reader started behind would hold back every later follower
            # of the partition (one reading a run from the partition's start would drag them through days of
            # deltas), and one past the end would skip what a later follower's backlog (which ends there) leaves.
            reader = self._start(topic, partition, start=end)
        # From here, with no await in between: the reader hands this follower everything after `delivered_through`.
        reader.add(follower)
        caught_up_to = reader.delivered_through
        try:
            last = start - 1
            if start <= caught_up_to:
                for record in await backlog(start, caught_up_to + 1):
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
        reader = _PartitionReader(client=self._open_client(), delivered_through=start - 1)
        self._readers[(topic, partition)] = reader
        reader.task = asyncio.create_task(self._read(topic, partition, reader, start), name=f"follow {topic}[{partition}]")
        return reader

    async def _read(self, topic: str, partition: int, reader: _PartitionReader, start: int) -> None:
        try:
            await reader.client.call(Consumer.assign, [KafkaTopicPartition(topic, partition, start)])
            while True:
                messages = await reader.client.call(_poll_batch, 500, 0.0)
                for message in _checked(messages):
                    if message.offset() <= reader.delivered_through:
                        continue
                    reader.delivered_through = message.offset()
                    followers = reader.followers.get(message.key() or b"")
                    if followers:
                        record = self._record(message)
                        for follower in followers:
                            follower.records.put_nowait(record)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the followers fail with it; the next follow starts a new reader
            if self._readers.get((topic, partition)) is reader:
                del self._readers[(topic, partition)]
            _fail(reader, error)
            await self._close_client(reader.client)

    def _leave(self, topic: str, partition: int, reader: _PartitionReader, follower: _Follower) -> None:
        if not reader.remove(follower) or self._readers.get((topic, partition)) is not reader:
            return
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
