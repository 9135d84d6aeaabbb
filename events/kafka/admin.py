"""The Kafka log's admin client: topics provisioned from their specs, their partition counts, offset lookups."""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition as KafkaTopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from events.topology import TopicSpecs

logger = logging.getLogger(__name__)
# Tansu answers "empty" for as long as a transaction is open on the partition: ask again, for up to this long. Not
# longer: on a loaded machine a busy partition can have one open for seconds (a CI fleet's deciders then answered
# nothing in time with 2 s here), and a caller with a bound it knows to be readable does not ask (`KafkaLog.read`).
_DOUBTFUL_FOR_S = 0.2
_RECHECK_EVERY_S = (0.005, 0.05)  # the first wait, growing by itself to at most the second
_GLANCE_S = 0.05  # for a follow of a partition this process has never seen


class _Admin:
    """What a `KafkaLog` asks of the cluster rather than of a topic's records: topics and offsets."""

    def __init__(
        self,
        *,
        specs: TopicSpecs,
        physical: Callable[[str], str],
        translate: Callable[[KafkaException], Exception],
        timeout_s: float,
    ) -> None:
        self._specs = specs
        self._physical = physical
        self._translate = translate
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: AdminClient | None = None
        self._partitions: dict[str, int] = {}
        self._stable: dict[tuple[str, int], int] = {}  # the highest last stable offset seen, per partition
        self._provisioning: dict[str, asyncio.Future] = {}

    def open(self, config: dict[str, Any], *, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._client = AdminClient(config)

    async def reach(self) -> None:
        """One metadata request: raises `KafkaException` when the cluster cannot be reached."""
        await asyncio.to_thread(self._client.list_topics, timeout=self._timeout_s)

    def close(self) -> None:
        self._client = None

    def partition_count(self, topic: str) -> int:
        """How many partitions `topic` has (it must have been ensured)."""
        return self._partitions[topic]

    async def ensure_topics(self, topics: Iterable[str]) -> None:
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
        if self._client is None:
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
        futures = self._client.create_topics(new_topics, operation_timeout=self._timeout_s, request_timeout=self._timeout_s)
        for physical, future in futures.items():
            try:
                await asyncio.wrap_future(future)
                logger.info("created topic %s", physical)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._translate(error) from error
        for topic, spec in specs.items():
            metadata = await asyncio.to_thread(self._client.list_topics, self._physical(topic), timeout=self._timeout_s)
            count = len(metadata.topics[self._physical(topic)].partitions)
            if count != spec.partitions:
                logger.warning("topic %s has %d partitions, its spec says %d; keeping %d", topic, count, spec.partitions, count)
            self._partitions[topic] = count

    async def offset_ranges(
        self, topic: str, partitions: Iterable[int], *, settled: bool = True
    ) -> dict[int, tuple[int, int]]:
        """Per partition: (log start offset, last stable offset). Only records below the latter are readable.

        Tansu 0.6 answers a read_committed lookup of a partition with a last stable offset of 0 for as long as
        a transaction is open on it, whatever it holds: a scan up to that finds nothing (a run's claim "missing"
        right after its first delta), and a fence up to the highest offset seen before lets a read miss what was
        committed since (a file listed right after its upload, while the ingester's transaction was open). So an
        answer of "empty" for a partition whose high watermark says otherwise is asked again until the
        transaction ends (as a read_committed consumer waits for it too), for up to `_DOUBTFUL_FOR_S`; only then
        does the highest offset this process has seen stand in for it (a last stable offset never moves back, but
        this one may lag: the price of not waiting longer).
        Without `settled` (a follow, which reads on from wherever it starts), the highest offset seen stands in
        at once, and a partition never seen is asked again for `_GLANCE_S` at most: a busy partition of several
        writers may have a transaction open nearly always.
        """
        partitions = list(partitions)
        starts, ends = await asyncio.gather(  # both requests in flight at once
            self._list(topic, partitions, OffsetSpec.earliest(), IsolationLevel.READ_COMMITTED),
            self._list(topic, partitions, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED),
        )
        doubtful = [
            p for p in partitions
            if ends[p] <= starts[p] and (settled or self._stable.get((topic, p), -1) <= starts[p])
        ]
        if doubtful:  # an empty partition is common; one whose high watermark says otherwise is not
            written = await self._list(topic, doubtful, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED)
            doubtful = [p for p in doubtful if written[p] > starts[p]]
        deadline, wait_s = time.monotonic() + (_DOUBTFUL_FOR_S if settled else _GLANCE_S), _RECHECK_EVERY_S[0]
        while doubtful and time.monotonic() < deadline:
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, _RECHECK_EVERY_S[1])
            ends |= await self._list(topic, doubtful, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED)
            doubtful = [p for p in doubtful if ends[p] <= starts[p]]
        if doubtful and settled:
            logger.debug(
                "the broker kept answering %s partitions %s with no stable offset for %g s; using the last seen",
                topic, doubtful, _DOUBTFUL_FOR_S,
            )
        ranges = {}
        for partition in partitions:
            stable = max(ends[partition], self._stable.get((topic, partition), -1))
            self._stable[(topic, partition)] = stable
            ranges[partition] = (starts[partition], stable)
        return ranges

    async def offset_at(self, topic: str, partition: int, when: datetime) -> int:
        """The offset of the partition's first record with a timestamp at or after `when`; -1 when there is none."""
        spec = OffsetSpec.for_timestamp(max(int(when.timestamp() * 1000), 0))  # a time before 1970 is none Kafka takes
        return (await self._list(topic, [partition], spec, IsolationLevel.READ_COMMITTED))[partition]

    async def _list(self, topic: str, partitions: list[int], spec: OffsetSpec, isolation: IsolationLevel) -> dict[int, int]:
        if self._client is None:
            raise RuntimeError("the log is not started")
        positions = {KafkaTopicPartition(self._physical(topic), partition): spec for partition in partitions}
        futures = self._client.list_offsets(positions, isolation_level=isolation, request_timeout=self._timeout_s)
        try:
            return {tp.partition: (await asyncio.wrap_future(future)).offset for tp, future in futures.items()}
        except KafkaException as error:
            raise self._translate(error) from error

    async def committed_offsets(self, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
        if self._client is None:
            raise RuntimeError("the log is not started")
        group = self._physical(group)
        request = ConsumerGroupTopicPartitions(
            group, [KafkaTopicPartition(self._physical(topic), partition) for partition in partitions]
        )
        futures = self._client.list_consumer_group_offsets([request], require_stable=True, request_timeout=self._timeout_s)
        try:
            result = await asyncio.wrap_future(futures[group])
        except KafkaException as error:
            raise self._translate(error) from error
        # Kafka stores the next offset to read; a negative one means "none committed".
        return {
            position.partition: position.offset - 1 if position.offset >= 0 else -1
            for position in result.topic_partitions
        }
