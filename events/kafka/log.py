"""The Kafka event log: the `EventLog` port on confluent-kafka, with transactions and per-key partitions.

Writes: one idempotent, transactional producer (acks=all) per process, driven by one writer thread.
Every append queued while the previous transaction was committing joins the next one (group commit),
so concurrent appends share a transaction; an append that carries a `ConsumerCommit` puts the group's
offsets in the same transaction (`send_offsets_to_transaction`), which is what makes a processor's
reaction and its progress land together or not at all. An append of one record with no commit and no
follow-ups (a token delta, a heartbeat, a command) has nothing to be atomic with: a second, idempotent
producer outside any transaction writes those, as durably, in one request and with no marker. Records
are partitioned with Kafka's murmur2 (`events.topology.partition_for`), the Java client's partitioner,
so any reader finds a key's partition.

Reads: `consume` is a consumer-group member (read_committed; offsets move only by `append`/`commit`);
`read`, `follow` and `end_offset` use group-less consumers assigned to the partitions they need.
Kafka has no index by key: `read` scans the key's partition from `after` (see its docstring).
Every blocking librdkafka call runs on a thread owned by its client, never on the event loop.

Offsets differ from the embedded log's: they count per partition, not globally, so an offset alone
names a record only together with its topic and partition. Where the port takes one offset for a
whole topic (`follow`, `end_offset` and `committed` without a key) the docstrings say what it means.
"""

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition as KafkaTopicPartition

from events.kafka.admin import _Admin
from events.kafka.consumers import _checked, _Consumers, _kafka_offsets, _poll_batch, _poll_member_batch
from events.kafka.errors import LogUnavailable, _is_unavailable
from events.kafka.followers import PartitionFollowers
from events.kafka.predecessors import end_predecessors
from events.kafka.writer import MAX_RECORD_BYTES, _PendingAppend, _PlainWriter, _TransactionalWriter, _validate
from events.topology import TopicSpecs, partition_for
from kernel.ids import written_since
from kernel.log import ConsumerCommit, FollowUps, LogRecord, OutgoingRecord
from kernel.metrics import LOG_APPEND_SECONDS

logger = logging.getLogger(__name__)
_APPENDS = {durable: LOG_APPEND_SECONDS.labels(log="kafka", durable=str(durable).lower()) for durable in (True, False)}
# A background consumer's fetch wait at least (`EventLog.consume`'s `background`): its output is waited for by no
# request, and on Tansu each consumer's polls cost the broker CPU in proportion to its partitions over its wait.
BACKGROUND_FETCH_WAIT_MS = 500
# Keeps the name it had before the adapter became a package.
_librdkafka_logger = logging.getLogger(f"{__package__}.librdkafka")


class KafkaLog:
    """The `EventLog` port on a Kafka cluster (any broker speaking the Kafka protocol with transactions)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: TopicSpecs,
        client_id: str = "turnlog",
        topic_prefix: str = "",
        instance_id: str | None = None,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        timeout_s: float = 15.0,
        readers: int = 4,
    ) -> None:
        """`instance_id` is this process's stable name (say, a pod's), unique per live process. It names the
        transactional producer and the clients `turnlog-<instance_id>`, so a process restarted under it fences its
        crashed predecessor's open transaction at once, instead of its partitions' readers waiting
        `transaction.timeout.ms`, and ends the predecessor's group memberships before it joins (`predecessors.py`).
        Without one, each process gets a producer of its own and waits out a dead predecessor's sessions.
        `topic_prefix` is prepended to every topic and consumer group name on the broker (tests and shared clusters).
        """
        if instance_id is not None:
            client_id = f"turnlog-{instance_id}"
        self._stable_client_id = client_id if instance_id is not None else None
        self._predecessors_ended: set[str] = set()  # the groups this process has cleared before its first join
        self._bootstrap = bootstrap_servers
        self._specs = topics
        self._prefix = topic_prefix
        self._timeout_s = timeout_s
        common = {"bootstrap.servers": bootstrap_servers, "client.id": client_id, "logger": _librdkafka_logger}
        self._producer_config = {
            **common,
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": client_id if instance_id is not None else f"{client_id}-{uuid.uuid4().hex}",
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
        # Static membership (KIP-345), for group members only: a process restarted with the same id takes
        # its predecessor's place at once instead of the group waiting out the dead member's session. It
        # must be unique per process (a pod's name); a scan reader or a group handle must never carry it.
        self._group_instance_id: str | None = self._consumer_config.pop("group.instance.id", None) or None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _TransactionalWriter | None = None
        self._plain: _PlainWriter | None = None
        self._admin = _Admin(specs=topics, physical=self._physical, translate=self._translate, timeout_s=timeout_s)
        self._followers = PartitionFollowers(
            open_client=lambda: self._consumers.open_follower("shared"),
            close_client=lambda client: self._consumers.close_client(client),
            record=self._record,
        )
        self._consumers = _Consumers(
            config=self._consumer_config,
            client_id=client_id,
            physical=self._physical,
            timeout_s=timeout_s,
            readers=readers,
            group_instance_id=self._group_instance_id,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumers.start()
        admin_config = {
            k: v for k, v in self._producer_config.items() if k in ("bootstrap.servers", "client.id", "logger")
        }
        self._admin.open(admin_config, loop=self._loop)
        try:
            await self._admin.reach()
        except KafkaException as error:
            raise LogUnavailable(bootstrap_servers=self._bootstrap, reason=error.args[0].str()) from error
        await self._admin.ensure_topics(self._specs.named)
        writer = _TransactionalWriter(
            config=self._producer_config, loop=self._loop, physical=self._physical, timeout_s=self._timeout_s
        )
        plain = _PlainWriter(
            config=self._producer_config, loop=self._loop, physical=self._physical, timeout_s=self._timeout_s
        )
        try:
            await asyncio.to_thread(writer.start)
            await asyncio.to_thread(plain.start)
        except KafkaException as error:
            raise LogUnavailable(bootstrap_servers=self._bootstrap, reason=error.args[0].str()) from error
        self._writer, self._plain = writer, plain

    async def close(self) -> None:
        for writer in (self._writer, self._plain):
            if writer is not None:
                await asyncio.to_thread(writer.stop)
        self._writer = self._plain = None
        await self._followers.close()
        await self._consumers.close()
        self._admin.close()

    # -- writes ------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[OutgoingRecord],
        *,
        durable: bool = True,
        commit: ConsumerCommit | None = None,
        then: FollowUps | None = None,
    ) -> list[LogRecord]:
        """One transaction for the records and the commit (shared with appends queued meanwhile).

        Kafka appends are always acks=all, so `durable=False` buys nothing here. An append of no
        records commits the offsets directly, and one of a single record with no commit and no `then`
        is produced outside a transaction: there is nothing for them to be atomic with. `then`'s
        records are produced in the same transaction once the records' offsets are known, to topics
        the log already has (its own are provisioned at start).
        """
        if self._writer is None or self._plain is None or self._loop is None:
            raise RuntimeError("the log is not started")
        _validate(records)
        if not records and then is None:
            if commit is not None:
                await self.commit(commit)
            return []
        started = time.perf_counter()
        await self._admin.ensure_topics({record.topic for record in records})
        done = self._loop.create_future()
        metadata = self._consumers.group_metadata(commit.group) if commit is not None and commit.offsets else None
        follow_ups = functools.partial(contextvars.copy_context().run, then) if then is not None else None
        item = _PendingAppend(records=records, commit=commit, group_metadata=metadata, done=done, then=follow_ups)
        (self._writer if item.needs_transaction else self._plain).submit(item)
        try:
            written = await done
        except KafkaException as error:  # the cluster unreachable is `Unavailable`: retried, never a poison message
            raise self._translate(error) from error
        _APPENDS[durable].observe(time.perf_counter() - started)
        return written

    async def commit(self, commit: ConsumerCommit) -> None:
        """Commit the group's offsets (Kafka's are "next to read": each is the port's offset + 1)."""
        offsets = _kafka_offsets(commit, self._physical)
        if not offsets:
            return
        consumer = self._consumers.member_consumer(commit.group) or self._consumers.group_handle(commit.group)
        try:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as error:
            raise self._translate(error) from error

    # -- reads -------------------------------------------------------------------------------

    async def consume(
        self, *, group: str, topics: Sequence[str], max_batch: int = 500, linger_s: float = 0.0,
        wake_for: Callable[[LogRecord], bool] | None = None,  # unused: a fetch returns whatever has arrived
        background: bool = False,
    ) -> AsyncIterator[list[LogRecord]]:
        """Batches for this member of `group`: Kafka assigns it partitions (the first join takes a
        few seconds) and each starts after the group's committed offset. Closing the stream leaves the group.
        """
        await self._admin.ensure_topics(topics)
        await self.end_predecessors(group)
        client = self._consumers.join(group, fetch_wait_ms=self.fetch_wait_ms(background=background))
        # After a rebalance a partition restarts from the committed offset; what this stream already
        # handed out is not handed out again (a failed commit raises, and the caller starts a new stream).
        delivered: dict[tuple[str, int], int] = {}
        try:
            await client.call(Consumer.subscribe, [self._physical(topic) for topic in topics])
            while True:
                messages, client.group_metadata = await client.call(_poll_member_batch, max_batch, linger_s)
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
            await self._consumers.leave(group, client)

    async def read(
        self, topic: str, *, key: str, after: int = -1, before: int | None = None, limit: int | None = None,
        since: datetime | None = None, through: Callable[[LogRecord], bool] | None = None,
    ) -> list[LogRecord]:
        """The key's records in `after < offset < before`, by scanning its partition from `after + 1`.

        Kafka keeps no index by key, so this reads every record of the partition in that range (and
        of every other key sharing the partition) up to `before`, the key's record `through` holds for, or
        the partition's end at call time.
        The scan starts at the partition's first record written since the later of `since` and, for a
        key that is an id turnlog made, the id's minting time less the clock skew, found in the
        broker's time index: a run's, a conversation's or a file's records cost a scan of what was
        written since the id was made, not of the partition's whole retention.
        """
        partition = await self.partition_of(topic, key=key)
        since = max((bound for bound in (since, written_since(key)) if bound is not None), default=None)
        # Below a record a read_committed consumer was given, every transaction is decided: with such a `before`
        # (a fold as of the record in hand) the scan needs no stable offset, which Tansu answers late (admin.py).
        settled = before is None
        if since is None:
            log_start, stable_end = (await self._admin.offset_ranges(topic, [partition], settled=settled))[partition]
            start = max(after + 1, log_start)
        else:
            ranges, first_since = await asyncio.gather(
                self._admin.offset_ranges(topic, [partition], settled=settled),
                self._admin.offset_at(topic, partition, since),
            )
            log_start, stable_end = ranges[partition]
            # -1: nothing was written since (Tansu answers 0 instead, which only costs the whole scan).
            nothing_since = stable_end if before is None else min(stable_end, before)
            start = max(after + 1, log_start, first_since if first_since >= 0 else nothing_since)
        stop = stable_end if before is None else before
        if start >= stop or limit == 0:
            return []
        ends = None if through is None else lambda message: through(self._record(message))
        messages = await self._consumers.scan(
            topic, partition, start=start, stop=stop, key=key, limit=limit, through=ends
        )
        return [self._record(message) for message in messages]

    async def follow(
        self, topic: str, *, key: str | None = None, after: int = -1, background: bool = False
    ) -> AsyncIterator[LogRecord]:
        """Records of `key` (its partition, from `after + 1`), or of every partition when `key` is None.

        Without a key, `after` is read as "the end I saw": each partition starts after `after` or at
        its end now, whichever is first. So `follow(t, after=await end_offset(t))` yields what arrives
        from now on, and `after=-1` replays everything. An offset of one partition means nothing in
        another, so resuming a keyless follow at an exact position needs a key (or one partition).
        """
        await self._admin.ensure_topics([topic])
        count = self._admin.partition_count(topic)
        partitions = [partition_for(key, count)] if key is not None else range(count)
        # Explicit offsets: librdkafka's own lookup of "the beginning" can cost a 500 ms retry. A follow reads on from
        # wherever it starts, so an end that lags (Tansu's during a transaction) costs it a little more reading at most.
        ranges = await self._admin.offset_ranges(topic, partitions, settled=False)
        if key is not None:
            # A key's records come from its partition's reader, shared with every other keyed follow of it here,
            # unless the follow starts before what that reader keeps (then it reads on its own, below).
            [(partition, (log_start, end))] = ranges.items()
            shared = self._followers.follow(
                self._physical(topic), partition, key=key, start=max(after + 1, log_start), end=end
            )
            if shared is not None:
                try:
                    async for record in shared:
                        yield record
                finally:
                    await shared.aclose()
                return
        if key is not None or after < 0:
            starts = {partition: max(after + 1, log_start) for partition, (log_start, _) in ranges.items()}
        else:
            starts = {partition: max(min(after + 1, end), log_start) for partition, (log_start, end) in ranges.items()}
        wanted = None if key is None else key.encode()
        client = self._consumers.open_follower(topic, fetch_wait_ms=self.fetch_wait_ms(background=background))
        try:
            assignment = [KafkaTopicPartition(self._physical(topic), partition, start) for partition, start in starts.items()]
            await client.call(Consumer.assign, assignment)
            while True:
                messages = await client.call(_poll_batch, 500, 0.0)
                for message in _checked(messages):
                    if message.offset() >= starts[message.partition()] and wanted in (None, message.key()):
                        yield self._record(message)
        finally:
            await self._consumers.close_client(client)

    async def partition_of(self, topic: str, *, key: str) -> int:
        await self._admin.ensure_topics([topic])
        return partition_for(key, self._admin.partition_count(topic))

    async def end_offset(self, topic: str, *, key: str | None = None) -> int:
        """The offset of the last committed record in the key's partition (-1 when it has none).

        Without a key: the highest such offset over all partitions. That is a per-partition number
        too, good for `follow(topic, after=...)` (see there) and exact for single-partition topics;
        `end_offsets` gives every partition's.
        """
        await self._admin.ensure_topics([topic])
        count = self._admin.partition_count(topic)
        partitions = [partition_for(key, count)] if key is not None else range(count)
        return max((await self._last_record_offsets(topic, partitions)).values(), default=-1)

    async def readable(self, topic: str, *, key: str, offset: int) -> bool:
        """Below the last stable offset, a committed record is readable: one offsets lookup, no scan."""
        partition = await self.partition_of(topic, key=key)
        _, stable_end = (await self._admin.offset_ranges(topic, [partition]))[partition]
        return offset < stable_end

    async def end_offsets(self, topic: str) -> dict[int, int]:
        await self._admin.ensure_topics([topic])
        return await self._last_record_offsets(topic, range(self._admin.partition_count(topic)))

    async def _last_record_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Transaction markers occupy offsets too, so the last record is found by reading back from
        each partition's last stable offset (usually one short fetch; none for an empty partition)."""
        ranges = await self._admin.offset_ranges(topic, partitions)
        return {
            partition: (
                await self._consumers.last_record_offset(topic, partition, start=start, end=end) if end > start else -1
            )
            for partition, (start, end) in ranges.items()
        }

    async def committed(self, *, group: str, topic: str, key: str | None = None) -> int:
        """The last offset the group finished in the key's partition (-1 when none).

        Without a key: the highest over all partitions (exact for single-partition topics);
        `committed_offsets` gives every partition's.
        """
        await self._admin.ensure_topics([topic])
        count = self._admin.partition_count(topic)
        partitions = [partition_for(key, count)] if key is not None else list(range(count))
        return max((await self._admin.committed_offsets(group, topic, partitions)).values(), default=-1)

    async def committed_offsets(self, *, group: str, topic: str) -> dict[int, int]:
        await self._admin.ensure_topics([topic])
        return await self._admin.committed_offsets(group, topic, list(range(self._admin.partition_count(topic))))

    async def lag(self, *, group: str, topic: str) -> int:
        """Two lookups, no fetch: below each partition's last stable offset, what is after the group's position.

        Transaction markers take offsets too, so a caught-up group shows one per partition its last transaction
        wrote to (as Kafka's own lag tools do); finding the last record instead would cost a fetch per partition.
        """
        await self._admin.ensure_topics([topic])
        partitions = list(range(self._admin.partition_count(topic)))
        ranges = await self._admin.offset_ranges(topic, partitions)
        done = await self._admin.committed_offsets(group, topic, partitions)
        return sum(max(0, end - max(done.get(partition, -1) + 1, start)) for partition, (start, end) in ranges.items())

    # -- for clients that consume the same topics by themselves (the faust runtime) ----------

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap

    def consumer_timing_ms(self, setting: str) -> int:
        """A consumer timing this log runs with (`session.timeout.ms`, `fetch.wait.max.ms`, ...)."""
        return int(self._consumer_config[setting])

    def fetch_wait_ms(self, *, background: bool = False) -> int:
        """A consumer's `fetch.wait.max.ms`: the log's, or for a background consumer at least
        `BACKGROUND_FETCH_WAIT_MS` (a broker answers a fetch when data arrives, so this costs such a consumer no
        latency there; Tansu holds every fetch for its whole wait and reads storage for each, docs/kafka.md)."""
        wait = self.consumer_timing_ms("fetch.wait.max.ms")
        return max(wait, BACKGROUND_FETCH_WAIT_MS) if background else wait

    async def end_predecessors(self, group: str) -> None:
        """Before this process's first member of `group` joins: end the memberships a crashed predecessor under
        the same instance id left there, so the join does not wait out a dead member's session (`predecessors.py`).

        Only with an instance id and without static membership (whose broker does this itself); once per group
        and process. Best effort: if it fails the join goes on and waits out the dead member's session, as before.
        """
        if self._stable_client_id is None or self._group_instance_id is not None or group in self._predecessors_ended:
            return
        self._predecessors_ended.add(group)
        try:
            async with asyncio.timeout(self._timeout_s):
                await end_predecessors(self._bootstrap, group=self._physical(group), client_id=self._stable_client_id)
        except Exception as error:  # noqa: BLE001 - a join that waits out a session beats one that never happens
            logger.warning("could not end a crashed predecessor's members of group %s: %r", group, error)

    @property
    def client_id(self) -> str:
        """The client id this process's Kafka clients carry (`turnlog-<instance id>` when it has one)."""
        return str(self._consumer_config["client.id"])

    @property
    def group_instance_id(self) -> str | None:
        """This process's static group membership id (`?group.instance.id=` in the log URL), if it has one."""
        return self._group_instance_id

    def physical_topic(self, topic: str) -> str:
        """The topic's name on the broker (with this log's prefix)."""
        return self._physical(topic)

    def logical_topic(self, physical: str) -> str:
        return self._logical(physical)

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Provision `topics` from their specs if this process has not yet."""
        await self._admin.ensure_topics(topics)

    def _physical(self, topic: str) -> str:
        return self._prefix + topic

    def _logical(self, physical: str) -> str:
        return physical[len(self._prefix) :]

    # -- records and errors ------------------------------------------------------------------

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
