"""The Kafka log's consumers: group members, followers and partition scans, each on a thread of its own.

Every blocking librdkafka call runs on a thread owned by its client, never on the event loop. Kafka
has no index by key, so reading a key's records scans its partition (`_scan_partition`).
"""

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition as KafkaTopicPartition

from events.kafka.errors import LogClosed
from kernel.log import ConsumerCommit

logger = logging.getLogger(__name__)

# How long a consumer thread blocks in one poll: bounds how long closing a stream waits for it.
_POLL_S = 0.25


class _Consumers:
    """Every consumer a `KafkaLog` opens: group members, followers, scan readers and group handles."""

    def __init__(
        self,
        *,
        config: dict[str, Any],
        client_id: str,
        physical: Callable[[str], str],
        timeout_s: float,
        readers: int,
        group_instance_id: str | None = None,
    ) -> None:
        self._consumer_config = config
        self._group_instance_id = group_instance_id
        self._client_id = client_id
        self._physical = physical
        self._timeout_s = timeout_s
        self._reader_limit = readers
        self._members: dict[str, list[_ConsumerThread]] = defaultdict(list)
        self._group_handles: dict[str, Consumer] = {}
        self._clients: set[_ConsumerThread] = set()
        self._reader_slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        self._reader_slots = asyncio.Semaphore(self._reader_limit)

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in list(self._clients)), return_exceptions=True)
        self._clients.clear()
        self._members.clear()
        handles, self._group_handles = list(self._group_handles.values()), {}
        for handle in handles:
            await asyncio.to_thread(handle.close)

    # -- group members and followers ---------------------------------------------------------

    def join(self, group: str, *, fetch_wait_ms: int | None = None) -> "_ConsumerThread":
        """A consumer for a member of `group`, counted among its members until `leave` closes it."""
        config = {**self._consumer_config, "group.id": self._physical(group)}
        if fetch_wait_ms is not None:
            config["fetch.wait.max.ms"] = fetch_wait_ms
        if self._group_instance_id is not None and not self._members.get(group):
            config["group.instance.id"] = self._group_instance_id  # one static member per group and process
        client = self._open_client(config, name=f"consume-{group}")
        self._members[group].append(client)
        return client

    async def leave(self, group: str, client: "_ConsumerThread") -> None:
        members = self._members.get(group, [])
        if client in members:
            members.remove(client)
        if not members:
            self._members.pop(group, None)
        await self.close_client(client)

    def open_follower(self, topic: str, *, fetch_wait_ms: int | None = None) -> "_ConsumerThread":
        """A group-less consumer for `follow` to assign partitions to; `close_client` closes it."""
        # Starting past the end is out of range: wait there (latest) rather than replay from the beginning.
        config = {**self._consumer_config, "group.id": f"{self._client_id}.followers", "auto.offset.reset": "latest"}
        if fetch_wait_ms is not None:
            config["fetch.wait.max.ms"] = fetch_wait_ms
        return self._open_client(config, name=f"follow-{topic}")

    async def close_client(self, client: "_ConsumerThread") -> None:
        self._clients.discard(client)
        await client.close()

    def _open_client(self, config: dict[str, Any], *, name: str) -> "_ConsumerThread":
        client = _ConsumerThread(config, name=name)
        self._clients.add(client)
        return client

    # -- groups ------------------------------------------------------------------------------

    def member_consumer(self, group: str) -> Consumer | None:
        for client in reversed(self._members.get(group, [])):
            if client.consumer is not None:
                return client.consumer
        return None

    def group_handle(self, group: str) -> Consumer:
        """A consumer that never joins `group`: it commits for it and names it in transactions."""
        handle = self._group_handles.get(group)
        if handle is None:
            handle = Consumer({**self._consumer_config, "group.id": self._physical(group)})
            self._group_handles[group] = handle
        return handle

    def group_metadata(self, group: str) -> object:
        """The group's identity for `send_offsets_to_transaction`: a live member's (with its
        generation, so a member that lost its partitions cannot commit them), else the bare group's.

        A member's is the one its thread took after its last poll: asking its consumer here would wait for the poll
        in progress (librdkafka serializes calls on a handle), up to `_POLL_S`, with the event loop blocked.
        """
        for client in reversed(self._members.get(group, [])):
            if client.group_metadata is not None:
                return client.group_metadata
        return self.group_handle(group).consumer_group_metadata()

    # -- scanning ----------------------------------------------------------------------------

    async def last_record_offset(self, topic: str, partition: int, *, start: int, end: int) -> int:
        window = 8  # a committed transaction ends with one marker, so the last record is usually end - 2
        while True:
            first = max(start, end - window)
            messages = await self.scan(topic, partition, start=first, stop=end, key=None, limit=None)
            if messages:
                return messages[-1].offset()
            if first <= start:
                return -1
            window *= 8

    async def scan(
        self, topic: str, partition: int, *, start: int, stop: int, key: str | None, limit: int | None,
        through: Callable[[Message], bool] | None = None,
    ) -> list[Message]:
        if self._reader_slots is None:
            raise RuntimeError("the log is not started")
        async with self._reader_slots:
            # A fresh reader per scan: a reused one was seen handing out records it had prefetched
            # for its previous assignment (a scan that stopped at its `limit`), which made a scan
            # end early or start at the wrong record.
            reader = self._open_reader()
            try:
                return await reader.call(
                    _scan_partition,
                    self._physical(topic),
                    partition,
                    start,
                    stop,
                    None if key is None else key.encode(),
                    limit,
                    self._timeout_s,
                    through,
                )
            finally:
                await self.close_client(reader)

    def _open_reader(self) -> "_ConsumerThread":
        config = {
            **self._consumer_config,
            "group.id": f"{self._client_id}.readers",  # never joined: readers assign partitions themselves
            "enable.partition.eof": True,
            # A scan ends on "end of partition", which takes one empty fetch when the range ends in a
            # transaction marker (invisible to consumers): keep that fetch short.
            "fetch.wait.max.ms": 1,
            # Little prefetched past a scan's end; but a fetch (up to 1 MB) holds more records than that, and a full
            # queue puts the next fetch off by `fetch.queue.backoff.ms`, 1 s by default: a scan of 100,000 small
            # records took 8-11 s, one second per fetch, and 95 ms with this (benchmarks/keyed_reads.py).
            "queued.min.messages": 1000,
            "fetch.queue.backoff.ms": 1,
        }
        return self._open_client(config, name="reader")


def _kafka_offsets(commit: ConsumerCommit, physical: Callable[[str], str]) -> list[KafkaTopicPartition]:
    return [
        KafkaTopicPartition(physical(position.topic), position.partition, offset + 1)
        for position, offset in commit.offsets.items()
    ]


class _ConsumerThread:
    """A confluent consumer and the one thread that makes every blocking call on it."""

    def __init__(self, config: dict[str, Any], *, name: str) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{name}")
        self._closed = False
        self.consumer: Consumer | None = None
        self.group_metadata: object | None = None  # a group member's, as of its last poll (`_poll_batch`)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function(consumer, *args)` on this consumer's thread (creating the consumer first)."""
        if self._closed:
            raise LogClosed("the log was closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, function, args)

    def _run(self, function: Callable[..., Any], args: tuple) -> Any:
        if self._closed:
            raise LogClosed("the log was closed")
        if self.consumer is None:
            self.consumer = Consumer(self._config)
        return function(self.consumer, *args)

    async def close(self) -> None:
        """Close once the call in progress returns (at most one poll); runs to the end even if cancelled."""
        if self._closed:
            return
        self._closed = True
        closing = self._executor.submit(self._close_consumer)
        self._executor.shutdown(wait=False)
        await asyncio.shield(asyncio.wrap_future(closing))

    def _close_consumer(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except RuntimeError:  # already closed
                pass


def _poll_batch(consumer: Consumer, max_batch: int, linger_s: float) -> list[Message]:
    """Up to `max_batch` messages: wait for the first, take what is already fetched, then linger."""
    first = consumer.poll(_POLL_S)
    if first is None:
        return []
    messages = [first]
    if max_batch > 1:
        # `consume` waits for a full batch or its timeout, so it only drains (timeout 0) or lingers.
        messages.extend(consumer.consume(max_batch - 1, 0))
    if linger_s > 0 and len(messages) < max_batch:
        messages.extend(consumer.consume(max_batch - len(messages), linger_s))
    return messages


def _poll_member_batch(consumer: Consumer, max_batch: int, linger_s: float) -> tuple[list[Message], object]:
    """A group member's `_poll_batch`, with its group metadata as of this poll (a rebalance happens inside one)."""
    return _poll_batch(consumer, max_batch, linger_s), consumer.consumer_group_metadata()


def _checked(messages: list[Message]) -> list[Message]:
    """The records among `messages`; consumer errors are informational unless fatal (librdkafka recovers)."""
    records = []
    for message in messages:
        error = message.error()
        if error is None:
            records.append(message)
        elif error.fatal():
            raise KafkaException(error)
        elif error.code() != KafkaError._PARTITION_EOF:
            logger.warning("kafka consumer: %s", error.str())
    return records


def _scan_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    stop: int,
    key: bytes | None,
    limit: int | None,
    timeout_s: float,
    through: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Records of one partition with `start <= offset < stop` (of `key`, if given; the first `limit`; up to the first
    that `through` holds for)."""
    consumer.assign([KafkaTopicPartition(topic, partition, start)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for message in _poll_batch(consumer, 500, 0.0):
                # A reused reader can still hand out what it fetched for an earlier assignment (an
                # earlier scan that stopped at its `limit`): only this partition's range counts.
                if message.topic() != topic or message.partition() != partition:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.offset() >= stop:
                            return found  # the end at fetch time, at or past `stop`
                        continue  # an earlier scan's end of partition, not ours
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                if message.offset() < start:
                    continue
                if message.offset() >= stop:
                    return found
                if key is None or message.key() == key:
                    found.append(message)
                    if (limit is not None and len(found) >= limit) or (through is not None and through(message)):
                        return found
            # Transaction markers are never delivered but move the position past them.
            [position] = consumer.position([KafkaTopicPartition(topic, partition)])
            if position.offset >= stop:
                return found
            if time.monotonic() > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic}[{partition}] timed out"))
    finally:
        consumer.unassign()
