"""The Kafka event log: the `EventLog` port on confluent-kafka, with transactions and per-key partitions.

Writes: one idempotent, transactional producer (acks=all) per process, driven by one writer thread.
Every append queued while the previous transaction was committing joins the next one (group commit),
so concurrent appends share a transaction; an append that carries a `ConsumerCommit` puts the group's
offsets in the same transaction (`send_offsets_to_transaction`), which is what makes a processor's
reaction and its progress land together or not at all. Records are partitioned with Kafka's murmur2
(`events.topology.partition_for`), the Java client's partitioner, so any reader finds a key's partition.

Reads: `consume` is a consumer-group member (read_committed; offsets move only by `append`/`commit`);
`read`, `follow` and `end_offset` use group-less consumers assigned to the partitions they need.
Kafka has no index by key: `read` scans the key's partition from `after` (see its docstring).
Every blocking librdkafka call runs on a thread owned by its client, never on the event loop.

Offsets differ from the embedded log's: they count per partition, not globally, so an offset alone
names a record only together with its topic and partition. Where the port takes one offset for a
whole topic (`follow`, `end_offset` and `committed` without a key) the docstrings say what it means.
"""

import asyncio
import functools
import logging
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition as KafkaTopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from kernel.log import ConsumerCommit, LogRecord, OutgoingRecord
from events.topology import TopicSpecs, partition_for
from kernel.errors import Unavailable

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger(f"{__name__}.librdkafka")

# How long a consumer thread blocks in one poll: bounds how long closing a stream waits for it.
_POLL_S = 0.25
# Records (key + value) above this are refused before a transaction starts, so a too-large record
# fails its own append and never aborts a transaction that others share.
MAX_RECORD_BYTES = 1_000_000
_MAX_TRANSACTION_RECORDS = 10_000
_UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)


# -- errors --------------------------------------------------------------------------------------


class LogUnavailable(Unavailable):
    """The Kafka cluster cannot be reached or did not answer in time."""

    def __init__(self, *, bootstrap_servers: str, reason: str) -> None:
        super().__init__(detail="the event log is unavailable; retry shortly", retry_after_s=1)
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason

    def __str__(self) -> str:  # for operators' logs; `detail` is what a client may see
        return f"the Kafka cluster at {self.bootstrap_servers} is unavailable: {self.reason}"


class LogClosed(RuntimeError):
    """The log was closed while a stream was still reading from it."""


def _is_unavailable(error: BaseException) -> bool:
    return isinstance(error, KafkaException) and error.args[0].code() in _UNAVAILABLE_CODES


# -- the log -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _PendingAppend:
    records: Sequence[OutgoingRecord]
    commit: ConsumerCommit | None
    group_metadata: object | None
    done: asyncio.Future


class KafkaLog:
    """The `EventLog` port on a Kafka cluster (any broker speaking the Kafka protocol with transactions)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: TopicSpecs,
        client_id: str = "turnlog",
        topic_prefix: str = "",
        transactional_id: str | None = None,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        timeout_s: float = 15.0,
        readers: int = 4,
    ) -> None:
        """`transactional_id` defaults to one unique to this instance. A stable one (say, a pod's name)
        lets a restarted process fence its crashed predecessor and abort its open transaction at once,
        instead of its partitions' readers waiting `transaction.timeout.ms` for it to expire.
        `topic_prefix` is prepended to every topic and consumer group name on the broker (tests and shared clusters).
        """
        self._bootstrap = bootstrap_servers
        self._specs = topics
        self._client_id = client_id
        self._prefix = topic_prefix
        self._timeout_s = timeout_s
        self._reader_limit = readers
        common = {"bootstrap.servers": bootstrap_servers, "client.id": client_id, "logger": _librdkafka_logger}
        self._producer_config = {
            **common,
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": transactional_id or f"{client_id}-{uuid.uuid4().hex}",
            "partitioner": "murmur2_random",
            "transaction.timeout.ms": 10_000,
            "message.max.bytes": MAX_RECORD_BYTES + 100_000,
            **(producer_config or {}),
        }
        self._consumer_config = {
            **common,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,  # the group join waits for other members for about half of it
            "heartbeat.interval.ms": 2000,  # a third of the session: two heartbeats may be lost
            # Tansu answers an empty fetch only when this runs out (a real broker answers when data
            # arrives), so it bounds the produce -> consume latency there; 100 ms is cheap for Kafka.
            "fetch.wait.max.ms": 100,
            **(consumer_config or {}),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admin: AdminClient | None = None
        self._writer: _TransactionalWriter | None = None
        self._partitions: dict[str, int] = {}
        self._provisioning: dict[str, asyncio.Future] = {}
        self._members: dict[str, list[_ConsumerThread]] = defaultdict(list)
        self._group_handles: dict[str, Consumer] = {}
        self._clients: set[_ConsumerThread] = set()
        self._reader_slots: asyncio.Semaphore | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader_slots = asyncio.Semaphore(self._reader_limit)
        self._admin = AdminClient({k: v for k, v in self._producer_config.items() if k in ("bootstrap.servers", "client.id", "logger")})
        try:
            await asyncio.to_thread(self._admin.list_topics, timeout=self._timeout_s)
        except KafkaException as error:
            raise LogUnavailable(bootstrap_servers=self._bootstrap, reason=error.args[0].str()) from error
        await self._ensure_topics(self._specs.named)
        writer = _TransactionalWriter(
            config=self._producer_config, loop=self._loop, physical=self._physical, timeout_s=self._timeout_s
        )
        try:
            await asyncio.to_thread(writer.start)
        except KafkaException as error:
            raise LogUnavailable(bootstrap_servers=self._bootstrap, reason=error.args[0].str()) from error
        self._writer = writer

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
            self._writer = None
        await asyncio.gather(*(client.close() for client in list(self._clients)), return_exceptions=True)
        self._clients.clear()
        self._members.clear()
        handles, self._group_handles = list(self._group_handles.values()), {}
        for handle in handles:
            await asyncio.to_thread(handle.close)
        self._admin = None

    # -- writes ------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[OutgoingRecord],
        *,
        durable: bool = True,
        commit: ConsumerCommit | None = None,
    ) -> list[LogRecord]:
        """One transaction for the records and the commit (shared with appends queued meanwhile).

        Kafka appends are always acks=all, so `durable=False` buys nothing here. An append of no
        records commits the offsets directly: there is nothing for them to be atomic with.
        """
        if self._writer is None or self._loop is None:
            raise RuntimeError("the log is not started")
        _validate(records)
        if not records:
            if commit is not None:
                await self.commit(commit)
            return []
        await self._ensure_topics({record.topic for record in records})
        done = self._loop.create_future()
        metadata = self._group_metadata(commit.group) if commit is not None and commit.offsets else None
        self._writer.submit(_PendingAppend(records=records, commit=commit, group_metadata=metadata, done=done))
        return await done

    async def commit(self, commit: ConsumerCommit) -> None:
        """Commit the group's offsets (Kafka's are "next to read": each is the port's offset + 1)."""
        offsets = _kafka_offsets(commit, self._physical)
        if not offsets:
            return
        consumer = self._member_consumer(commit.group) or self._group_handle(commit.group)
        try:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as error:
            raise self._translate(error) from error

    # -- reads -------------------------------------------------------------------------------

    async def consume(
        self, *, group: str, topics: Sequence[str], max_batch: int = 500, linger_s: float = 0.0
    ) -> AsyncIterator[list[LogRecord]]:
        """Batches for this member of `group`: Kafka assigns it partitions (the first join takes a
        few seconds) and each starts after the group's committed offset. Closing the stream leaves the group.
        """
        await self._ensure_topics(topics)
        config = {**self._consumer_config, "group.id": self._physical(group)}
        client = self._open_client(config, name=f"consume-{group}")
        self._members[group].append(client)
        # After a rebalance a partition restarts from the committed offset; what this stream already
        # handed out is not handed out again (a failed commit raises, and the caller starts a new stream).
        delivered: dict[tuple[str, int], int] = {}
        try:
            await client.call(Consumer.subscribe, [self._physical(topic) for topic in topics])
            while True:
                messages = await client.call(_poll_batch, max_batch, linger_s)
                batch = []
                for message in _checked(messages):
                    position = (message.topic(), message.partition())
                    if message.offset() <= delivered.get(position, -1):
                        continue
                    delivered[position] = message.offset()
                    batch.append(self._record(message))
                if batch:
                    yield batch
        finally:
            members = self._members.get(group, [])
            if client in members:
                members.remove(client)
            if not members:
                self._members.pop(group, None)
            await self._close_client(client)

    async def read(
        self, topic: str, *, key: str, after: int = -1, before: int | None = None, limit: int | None = None
    ) -> list[LogRecord]:
        """The key's records in `after < offset < before`, by scanning its partition from `after + 1`.

        Kafka keeps no index by key, so this reads every record of the partition in that range (and
        of every other key sharing the partition) up to `before` or the partition's end at call time.
        It is exact and fine for bounded ranges (a run's events, one conversation's recent turns); state
        kept per key at scale belongs in a changelog table, not in repeated scans.
        """
        await self._ensure_topics([topic])
        partition = partition_for(key, self._partitions[topic])
        log_start, stable_end = (await self._offset_ranges(topic, [partition]))[partition]
        start = max(after + 1, log_start)
        stop = stable_end if before is None else min(before, stable_end)
        if start >= stop or limit == 0:
            return []
        messages = await self._scan(topic, partition, start=start, stop=stop, key=key, limit=limit)
        return [self._record(message) for message in messages]

    async def follow(self, topic: str, *, key: str | None = None, after: int = -1) -> AsyncIterator[LogRecord]:
        """Records of `key` (its partition, from `after + 1`), or of every partition when `key` is None.

        Without a key, `after` is read as "the end I saw": each partition starts after `after` or at
        its end now, whichever is first. So `follow(t, after=await end_offset(t))` yields what arrives
        from now on, and `after=-1` replays everything. An offset of one partition means nothing in
        another, so resuming a keyless follow at an exact position needs a key (or one partition).
        """
        await self._ensure_topics([topic])
        count = self._partitions[topic]
        partitions = [partition_for(key, count)] if key is not None else range(count)
        # Explicit offsets: librdkafka's own lookup of "the beginning" can cost a 500 ms retry.
        ranges = await self._offset_ranges(topic, partitions)
        if key is not None or after < 0:
            starts = {partition: max(after + 1, log_start) for partition, (log_start, _) in ranges.items()}
        else:
            starts = {partition: max(min(after + 1, end), log_start) for partition, (log_start, end) in ranges.items()}
        wanted = None if key is None else key.encode()
        # Starting past the end is out of range: wait there (latest) rather than replay from the beginning.
        config = {**self._consumer_config, "group.id": f"{self._client_id}.followers", "auto.offset.reset": "latest"}
        client = self._open_client(config, name=f"follow-{topic}")
        try:
            assignment = [KafkaTopicPartition(self._physical(topic), partition, start) for partition, start in starts.items()]
            await client.call(Consumer.assign, assignment)
            while True:
                messages = await client.call(_poll_batch, 500, 0.0)
                for message in _checked(messages):
                    if message.offset() >= starts[message.partition()] and wanted in (None, message.key()):
                        yield self._record(message)
        finally:
            await self._close_client(client)

    async def end_offset(self, topic: str, *, key: str | None = None) -> int:
        """The offset of the last committed record in the key's partition (-1 when it has none).

        Without a key: the highest such offset over all partitions. That is a per-partition number
        too, good for `follow(topic, after=...)` (see there) and exact for single-partition topics;
        `end_offsets` gives every partition's.
        """
        await self._ensure_topics([topic])
        count = self._partitions[topic]
        partitions = [partition_for(key, count)] if key is not None else range(count)
        return max((await self._last_record_offsets(topic, partitions)).values(), default=-1)

    async def readable(self, topic: str, *, key: str, offset: int) -> bool:
        """Below the last stable offset, a committed record is readable: one offsets lookup, no scan."""
        await self._ensure_topics([topic])
        partition = partition_for(key, self._partitions[topic])
        _, stable_end = (await self._offset_ranges(topic, [partition]))[partition]
        return offset < stable_end

    async def end_offsets(self, topic: str) -> dict[int, int]:
        await self._ensure_topics([topic])
        return await self._last_record_offsets(topic, range(self._partitions[topic]))

    async def _last_record_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Transaction markers occupy offsets too, so the last record is found by reading back from
        each partition's last stable offset (usually one short fetch; none for an empty partition)."""
        ranges = await self._offset_ranges(topic, partitions)
        return {
            partition: await self._last_record_offset(topic, partition, start=start, end=end) if end > start else -1
            for partition, (start, end) in ranges.items()
        }

    async def committed(self, *, group: str, topic: str, key: str | None = None) -> int:
        """The last offset the group finished in the key's partition (-1 when none).

        Without a key: the highest over all partitions (exact for single-partition topics);
        `committed_offsets` gives every partition's.
        """
        await self._ensure_topics([topic])
        count = self._partitions[topic]
        partitions = [partition_for(key, count)] if key is not None else list(range(count))
        return max((await self._committed_offsets(group, topic, partitions)).values(), default=-1)

    async def committed_offsets(self, *, group: str, topic: str) -> dict[int, int]:
        await self._ensure_topics([topic])
        return await self._committed_offsets(group, topic, list(range(self._partitions[topic])))

    async def _committed_offsets(self, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
        if self._admin is None:
            raise RuntimeError("the log is not started")
        group = self._physical(group)
        request = ConsumerGroupTopicPartitions(
            group, [KafkaTopicPartition(self._physical(topic), partition) for partition in partitions]
        )
        futures = self._admin.list_consumer_group_offsets([request], require_stable=True, request_timeout=self._timeout_s)
        try:
            result = await asyncio.wrap_future(futures[group])
        except KafkaException as error:
            raise self._translate(error) from error
        # Kafka stores the next offset to read; a negative one means "none committed".
        return {
            position.partition: position.offset - 1 if position.offset >= 0 else -1
            for position in result.topic_partitions
        }

    # -- topics ------------------------------------------------------------------------------

    # -- for clients that consume the same topics by themselves (the faust runtime) ----------

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap

    def consumer_timing_ms(self, setting: str) -> int:
        """A consumer timing this log runs with (`session.timeout.ms`, `fetch.wait.max.ms`, ...)."""
        return int(self._consumer_config[setting])

    def physical_topic(self, topic: str) -> str:
        """The topic's name on the broker (with this log's prefix)."""
        return self._physical(topic)

    def logical_topic(self, physical: str) -> str:
        return self._logical(physical)

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Provision `topics` from their specs if this process has not yet."""
        await self._ensure_topics(topics)

    def _physical(self, topic: str) -> str:
        return self._prefix + topic

    def _logical(self, physical: str) -> str:
        return physical[len(self._prefix) :]

    async def _ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics this process has not seen yet, from their specs; learn their partition counts."""
        missing = [topic for topic in dict.fromkeys(topics) if topic not in self._partitions]
        if not missing:
            return
        waiting = [self._provisioning[topic] for topic in missing if topic in self._provisioning]
        mine = [topic for topic in missing if topic not in self._provisioning]
        if mine:
            future = self._loop.create_future()
            for topic in mine:
                self._provisioning[topic] = future
            try:
                await self._provision(mine)
                future.set_result(None)
            except BaseException as error:
                future.set_exception(error)
                future.exception()  # retrieved: the waiters (if any) raise it themselves
                raise
            finally:
                for topic in mine:
                    self._provisioning.pop(topic, None)
        for future in waiting:
            await future

    async def _provision(self, topics: list[str]) -> None:
        if self._admin is None:
            raise RuntimeError("the log is not started")
        specs = {topic: self._specs.spec_for(topic) for topic in topics}
        new_topics = [
            NewTopic(
                self._physical(topic),
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                config=spec.topic_config(),
            )
            for topic, spec in specs.items()
        ]
        futures = self._admin.create_topics(new_topics, operation_timeout=self._timeout_s, request_timeout=self._timeout_s)
        for physical, future in futures.items():
            try:
                await asyncio.wrap_future(future)
                logger.info("created topic %s", physical)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._translate(error) from error
        for topic, spec in specs.items():
            metadata = await asyncio.to_thread(self._admin.list_topics, self._physical(topic), timeout=self._timeout_s)
            count = len(metadata.topics[self._physical(topic)].partitions)
            if count != spec.partitions:
                logger.warning("topic %s has %d partitions, its spec says %d; keeping %d", topic, count, spec.partitions, count)
            self._partitions[topic] = count

    async def _offset_ranges(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Per partition: (log start offset, last stable offset). Only records below the latter are readable."""
        if self._admin is None:
            raise RuntimeError("the log is not started")
        positions = [KafkaTopicPartition(self._physical(topic), partition) for partition in partitions]
        options = {"isolation_level": IsolationLevel.READ_COMMITTED, "request_timeout": self._timeout_s}
        earliest = self._admin.list_offsets({position: OffsetSpec.earliest() for position in positions}, **options)
        latest = self._admin.list_offsets({position: OffsetSpec.latest() for position in positions}, **options)
        try:
            starts = {tp.partition: (await asyncio.wrap_future(f)).offset for tp, f in earliest.items()}
            ends = {tp.partition: (await asyncio.wrap_future(f)).offset for tp, f in latest.items()}
        except KafkaException as error:
            raise self._translate(error) from error
        return {partition: (starts[partition], ends[partition]) for partition in ends}

    # -- scanning ----------------------------------------------------------------------------

    async def _last_record_offset(self, topic: str, partition: int, *, start: int, end: int) -> int:
        window = 8  # a committed transaction ends with one marker, so the last record is usually end - 2
        while True:
            first = max(start, end - window)
            messages = await self._scan(topic, partition, start=first, stop=end, key=None, limit=None)
            if messages:
                return messages[-1].offset()
            if first <= start:
                return -1
            window *= 8

    async def _scan(
        self, topic: str, partition: int, *, start: int, stop: int, key: str | None, limit: int | None
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
                )
            finally:
                await self._close_client(reader)

    def _open_reader(self) -> "_ConsumerThread":
        config = {
            **self._consumer_config,
            "group.id": f"{self._client_id}.readers",  # never joined: readers assign partitions themselves
            "enable.partition.eof": True,
            # A scan ends on "end of partition", which takes one empty fetch when the range ends in a
            # transaction marker (invisible to consumers): keep that fetch short.
            "fetch.wait.max.ms": 1,
            "queued.min.messages": 1000,
        }
        return self._open_client(config, name="reader")

    # -- consumers ---------------------------------------------------------------------------

    def _open_client(self, config: dict[str, Any], *, name: str) -> "_ConsumerThread":
        client = _ConsumerThread(config, name=name)
        self._clients.add(client)
        return client

    async def _close_client(self, client: "_ConsumerThread") -> None:
        self._clients.discard(client)
        await client.close()

    def _member_consumer(self, group: str) -> Consumer | None:
        for client in reversed(self._members.get(group, [])):
            if client.consumer is not None:
                return client.consumer
        return None

    def _group_handle(self, group: str) -> Consumer:
        """A consumer that never joins `group`: it commits for it and names it in transactions."""
        handle = self._group_handles.get(group)
        if handle is None:
            handle = Consumer({**self._consumer_config, "group.id": self._physical(group)})
            self._group_handles[group] = handle
        return handle

    def _group_metadata(self, group: str) -> object:
        """The group's identity for `send_offsets_to_transaction`: a live member's (with its
        generation, so a member that lost its partitions cannot commit them), else the bare group's."""
        consumer = self._member_consumer(group) or self._group_handle(group)
        return consumer.consumer_group_metadata()

    def _record(self, message: Message) -> LogRecord:
        _, timestamp_ms = message.timestamp()
        return LogRecord(
            topic=self._logical(message.topic()),
            partition=message.partition(),
            offset=message.offset(),
            key=(message.key() or b"").decode("utf-8", "replace"),
            value=message.value() or b"",
            timestamp=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        )

    def _translate(self, error: KafkaException) -> Exception:
        if _is_unavailable(error):
            return LogUnavailable(bootstrap_servers=self._bootstrap, reason=error.args[0].str())
        return error


# -- the writer thread ---------------------------------------------------------------------------


class _TransactionalWriter:
    """Owns the producer: runs one transaction at a time, each holding every append queued meanwhile."""

    def __init__(
        self,
        *,
        config: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        physical: Callable[[str], str],
        timeout_s: float,
    ) -> None:
        self._config = config
        self._loop = loop
        self._physical = physical
        self._timeout_s = timeout_s
        self._pending: queue.SimpleQueue[_PendingAppend | None] = queue.SimpleQueue()
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Blocking: create the producer and register its transactional id (fencing any predecessor)."""
        self._producer = self._new_producer()
        self._thread = threading.Thread(target=self._write_forever, name="kafka-log-writer", daemon=True)
        self._thread.start()

    def submit(self, item: _PendingAppend) -> None:
        self._pending.put(item)

    def stop(self) -> None:
        """Blocking: finish what is queued, then stop."""
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join()
            self._thread = None
        if self._producer is not None:
            self._producer.flush(self._timeout_s)
            self._producer = None

    def _new_producer(self) -> Producer:
        producer = Producer(self._config)
        producer.init_transactions(self._timeout_s)
        return producer

    def _write_forever(self) -> None:
        while True:
            try:
                first = self._pending.get(timeout=1.0)
            except queue.Empty:
                if self._producer is not None:
                    self._producer.poll(0)  # serve librdkafka's logs and callbacks while idle
                continue
            if first is None:
                return
            batch, records, stop = [first], len(first.records), False
            while records < _MAX_TRANSACTION_RECORDS:  # group commit: take what was queued meanwhile
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                records += len(item.records)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_PendingAppend]) -> None:
        try:
            results = self._transact(batch)
        except Exception as error:
            if len(batch) > 1 and not _is_unavailable(error):
                for item in batch:  # one bad append must not fail the others that shared its transaction
                    self._write([item])
                return
            for item in batch:
                self._loop.call_soon_threadsafe(_fail, item.done, error)
            return
        for item, written in zip(batch, results):
            self._loop.call_soon_threadsafe(_settle, item.done, written)

    def _transact(self, batch: list[_PendingAppend]) -> list[list[LogRecord]]:
        if self._producer is None:
            self._producer = self._new_producer()
        producer = self._producer
        reports: list[list[Message | KafkaError | None]] = [[None] * len(item.records) for item in batch]
        try:
            producer.begin_transaction()
            for item, item_reports in zip(batch, reports):
                for index, record in enumerate(item.records):
                    self._produce(producer, record, functools.partial(_keep_report, item_reports, index))
            for metadata, offsets in _merge_commits(batch, self._physical):
                producer.send_offsets_to_transaction(offsets, metadata, self._timeout_s)
            if producer.flush(self._timeout_s) > 0:
                raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "records were not delivered in time"))
            for item_reports in reports:
                for report in item_reports:
                    if not isinstance(report, Message):
                        raise KafkaException(report or KafkaError(KafkaError._FAIL, "no delivery report"))
            self._commit(producer)
        except BaseException as error:
            self._abort(producer, error)
            raise
        return [
            [_written(record, report) for record, report in zip(item.records, item_reports)]
            for item, item_reports in zip(batch, reports)
        ]

    def _produce(self, producer: Producer, record: OutgoingRecord, on_delivery: Callable) -> None:
        while True:
            try:
                producer.produce(
                    self._physical(record.topic), key=record.key.encode(), value=record.value, on_delivery=on_delivery
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)

    def _commit(self, producer: Producer) -> None:
        for attempt in range(3):
            try:
                producer.commit_transaction(self._timeout_s)
                return
            except KafkaException as error:
                if not error.args[0].retriable() or attempt == 2:
                    raise

    def _abort(self, producer: Producer, error: BaseException) -> None:
        kafka_error = error.args[0] if isinstance(error, KafkaException) else None
        if kafka_error is not None and kafka_error.fatal():
            logger.error("the transactional producer failed fatally (%s); starting a new one", kafka_error.str())
            self._producer = None
            return
        try:
            producer.abort_transaction(self._timeout_s)
        except KafkaException as abort_error:
            logger.error("could not abort a transaction (%s); starting a new producer", abort_error.args[0].str())
            self._producer = None


def _keep_report(reports: list, index: int, error: KafkaError | None, message: Message) -> None:
    reports[index] = error if error is not None else message


def _written(record: OutgoingRecord, report: Message) -> LogRecord:
    _, timestamp_ms = report.timestamp()
    return LogRecord(
        topic=record.topic,
        partition=report.partition(),
        offset=report.offset(),
        key=record.key,
        value=record.value,
        timestamp=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
    )


def _merge_commits(batch: list[_PendingAppend], physical: Callable[[str], str]) -> list[tuple[object, list]]:
    """One offset list per group over the whole transaction (the highest offset per partition wins)."""
    merged: dict[str, tuple[object, dict[tuple[str, int], int]]] = {}
    for item in batch:
        if item.commit is None or not item.commit.offsets:
            continue
        _, offsets = merged.get(item.commit.group, (None, {}))
        for position, offset in item.commit.offsets.items():
            where = (physical(position.topic), position.partition)
            offsets[where] = max(offsets.get(where, -1), offset + 1)
        merged[item.commit.group] = (item.group_metadata, offsets)
    return [
        (metadata, [KafkaTopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()])
        for metadata, offsets in merged.values()
    ]


def _kafka_offsets(commit: ConsumerCommit, physical: Callable[[str], str]) -> list[KafkaTopicPartition]:
    return [
        KafkaTopicPartition(physical(position.topic), position.partition, offset + 1)
        for position, offset in commit.offsets.items()
    ]


def _validate(records: Sequence[OutgoingRecord]) -> None:
    """Refuse what Kafka would, before any transaction starts (so a bad append fails alone)."""
    for record in records:
        if not isinstance(record.topic, str) or not record.topic:
            raise TypeError(f"a record's topic must be a non-empty string, not {record.topic!r}")
        if not isinstance(record.key, str):
            raise TypeError(f"a record's key must be a string, not {type(record.key).__name__}")
        if not isinstance(record.value, bytes):
            raise TypeError(f"a record's value must be bytes, not {type(record.value).__name__}")
        size = len(record.key.encode()) + len(record.value)
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"a record of {size} bytes is over the {MAX_RECORD_BYTES}-byte limit")


def _settle(future: asyncio.Future, result: object) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


# -- consumer threads ----------------------------------------------------------------------------


class _ConsumerThread:
    """A confluent consumer and the one thread that makes every blocking call on it."""

    def __init__(self, config: dict[str, Any], *, name: str) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{name}")
        self._closed = False
        self.consumer: Consumer | None = None

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
) -> list[Message]:
    """Records of one partition with `start <= offset < stop` (of `key`, if given; the first `limit`)."""
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
                    if limit is not None and len(found) >= limit:
                        return found
            # Transaction markers are never delivered but move the position past them.
            [position] = consumer.position([KafkaTopicPartition(topic, partition)])
            if position.offset >= stop:
                return found
            if time.monotonic() > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic}[{partition}] timed out"))
    finally:
        consumer.unassign()
