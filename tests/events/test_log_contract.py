"""The event log contract: every adapter of `kernel.log.EventLog` passes these."""

import asyncio
import time
import contextvars
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ulid import ULID

import kafka_broker as kafka_broker_harness
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from events.embedded import DataDirectoryBusy, EmbeddedLog
from events.kafka.errors import LogClosed, LogUnavailable
from events.kafka.log import KafkaLog
from events.kafka.writer import _PlainWriter, _TransactionalWriter
from kernel.ids import CLOCK_SKEW, written_since
from kernel.log import ConsumerCommit, EventLog, OutgoingRecord
from events.topology import TopicSpec, TopicSpecs, murmur2, partition_for, turnlog_topics

# Several partitions, so the contract holds per key and not only on one partition.
KAFKA_TEST_TOPICS = TopicSpecs(named={}, default=TopicSpec(partitions=3, retention=timedelta(hours=1)))
# Tansu makes a joining member wait about half the session timeout for others (6 s: 3 s; 2 s: 1 s),
# and answers an empty fetch only when fetch.wait.max.ms runs out (the harness says why 50 ms).
KAFKA_TEST_CONSUMERS = {
    "session.timeout.ms": 2000, "heartbeat.interval.ms": 400, "fetch.wait.max.ms": kafka_broker_harness.FETCH_WAIT_MS,
}


def kafka_log(bootstrap_servers: str) -> KafkaLog:
    """A Kafka log whose topics no other test sees."""
    return KafkaLog(
        bootstrap_servers,
        topics=KAFKA_TEST_TOPICS,
        client_id="contract",
        topic_prefix=f"test-{uuid.uuid4().hex[:12]}.",
        consumer_config=KAFKA_TEST_CONSUMERS,
        timeout_s=10,
    )


@pytest.fixture(params=["embedded", "kafka"])
async def log(request, tmp_path: Path) -> AsyncIterator[EventLog]:
    if request.param == "kafka":
        adapter: EventLog = kafka_log(request.getfixturevalue("kafka_broker").bootstrap_servers)
    else:
        adapter = EmbeddedLog(path=tmp_path / "log.db")
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


def record(topic: str, key: str, value: bytes) -> OutgoingRecord:
    return OutgoingRecord(topic=topic, key=key, value=value)


async def test_append_returns_increasing_offsets_in_order(log: EventLog) -> None:
    written = await log.append([record("t", "k", b"1"), record("t", "k", b"2"), record("u", "k", b"3")])
    assert [(r.topic, r.key, r.value) for r in written] == [("t", "k", b"1"), ("t", "k", b"2"), ("u", "k", b"3")]
    first, second, _ = written
    assert first.partition == second.partition  # one key, one partition
    assert 0 <= first.offset < second.offset
    assert [r.value for r in await log.read("t", key="k")] == [b"1", b"2"]


async def test_embedded_offsets_are_global_across_topics(embedded_log: EmbeddedLog) -> None:
    # Embedded-only: one sequence for the whole log (Kafka counts per topic partition).
    written = await embedded_log.append([record("t", "k", b"1"), record("t", "k", b"2"), record("u", "k", b"3")])
    assert [r.offset for r in written] == sorted(r.offset for r in written)
    assert len({r.offset for r in written}) == 3
    assert {r.partition for r in written} == {0}


async def test_read_by_key_keeps_per_key_order_and_bounds(log: EventLog) -> None:
    for index in range(5):
        await log.append([record("t", "a", b"a%d" % index), record("t", "b", b"b%d" % index)])
    a_records = await log.read("t", key="a")
    assert [r.value for r in a_records] == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    middle = await log.read("t", key="a", after=a_records[0].offset, before=a_records[3].offset)
    assert [r.value for r in middle] == [b"a1", b"a2"]
    assert await log.read("t", key="nobody") == []
    assert [r.value for r in await log.read("t", key="a", limit=2)] == [b"a0", b"a1"]


async def test_a_read_through_a_record_ends_with_it(log: EventLog) -> None:
    """A finished run's events end with its last: a lookup stops there, not at the partition's end (days later on Kafka)."""
    await log.append([record("t", "run", b"started"), record("t", "other", b"x"), record("t", "run", b"delta")])
    await log.append([record("t", "run", b"finished"), record("t", "other", b"y")])
    await log.append([record("t", "run", b"an approval too late to matter"), record("t", "other", b"z")])
    def finished(r):
        return r.value == b"finished"
    assert [r.value for r in await log.read("t", key="run", through=finished)] == [b"started", b"delta", b"finished"]
    # Nothing it holds for: every record, as without it; with a limit, whichever ends first.
    assert [r.value for r in await log.read("t", key="other", through=finished)] == [b"x", b"y", b"z"]
    assert [r.value for r in await log.read("t", key="run", through=finished, limit=2)] == [b"started", b"delta"]


async def test_consume_resumes_after_commit_and_sees_only_its_topics(log: EventLog) -> None:
    await log.append([record("t", "k", b"1"), record("other", "k", b"x"), record("t", "k", b"2")])
    stream = log.consume(group="g", topics=["t"])
    batch = await anext(stream)
    assert [r.value for r in batch] == [b"1", b"2"]
    await log.commit(ConsumerCommit.through("g", batch[:1]))
    await stream.aclose()
    again = log.consume(group="g", topics=["t"])
    assert [r.value for r in await anext(again)] == [b"2"]
    await again.aclose()
    assert await log.committed(group="g", topic="t") == batch[0].offset


async def test_a_background_consumer_gets_every_record_too(log: EventLog) -> None:
    """`background` may make delivery less prompt (a longer fetch wait on Kafka), never lose or reorder anything."""
    await log.append([record("t", "k", b"1"), record("t", "k", b"2")])
    stream = log.consume(group="g", topics=["t"], background=True)
    values = []
    while len(values) < 3:
        batch = await anext(stream)
        values += [r.value for r in batch]
        if values == [b"1", b"2"]:
            await log.append([record("t", "k", b"3")])
    assert values == [b"1", b"2", b"3"]
    await stream.aclose()


async def test_a_background_follow_gets_every_record_too(log: EventLog) -> None:
    """The same hint on `follow`: records before and after the follow starts, none lost or reordered."""
    await log.append([record("t", "k", b"1"), record("t", "other", b"2")])
    stream = log.follow("t", after=-1, background=True)
    values = [(await anext(stream)).value for _ in range(2)]
    await log.append([record("t", "k", b"3")])
    values.append((await asyncio.wait_for(anext(stream), timeout=30)).value)
    await stream.aclose()
    assert sorted(values[:2]) == [b"1", b"2"] and values[2] == b"3"


async def test_consumer_wakes_on_append_without_polling(log: EventLog) -> None:
    stream = log.consume(group="g", topics=["t"])
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await log.append([record("t", "k", b"new")])
    batch = await asyncio.wait_for(waiting, timeout=2)
    assert [r.value for r in batch] == [b"new"]
    await stream.aclose()


async def test_append_with_commit_is_atomic(log: EventLog) -> None:
    [source] = await log.append([record("in", "k", b"command")])
    await log.append([record("out", "k", b"event")], commit=ConsumerCommit.through("proc", [source]))
    assert await log.committed(group="proc", topic="in") == source.offset
    assert [r.value for r in await log.read("out", key="k")] == [b"event"]


async def test_lag_counts_the_records_after_the_groups_commit(log: EventLog) -> None:
    # Kafka's count includes the commit marker of the transaction that wrote them (one offset; one partition here).
    markers = 1 if isinstance(log, KafkaLog) else 0

    async def lag_is(topic: str, records: int) -> bool:
        return records <= await log.lag(group="g", topic=topic) <= records + markers

    assert await log.lag(group="g", topic="t") == 0  # nothing written yet
    written = await log.append([record("t", "k", b"1"), record("other", "k", b"x"), record("t", "k", b"2"), record("t", "k", b"3")])
    in_t = [r for r in written if r.topic == "t"]
    assert await lag_is("t", 3)  # never committed: all of it, and only this topic's
    await log.commit(ConsumerCommit.through("g", in_t[:1]))
    assert await lag_is("t", 2)
    await log.commit(ConsumerCommit.through("g", in_t))
    assert await lag_is("t", 0)
    assert await lag_is("other", 1)  # a topic the group never read


async def test_failed_append_writes_nothing(log: EventLog) -> None:
    with pytest.raises(Exception):
        await log.append([record("t", "k", b"ok"), record("t", None, b"no key")])  # type: ignore[arg-type]
    assert await log.read("t", key="k") == []


async def test_follow_key_replays_then_tails(log: EventLog) -> None:
    await log.append([record("runs", "r1", b"a"), record("runs", "r2", b"other")])
    follower = log.follow("runs", key="r1")
    assert (await anext(follower)).value == b"a"
    pending = asyncio.create_task(anext(follower))
    await log.append([record("runs", "r2", b"not mine")])
    await asyncio.sleep(0.02)
    assert not pending.done()
    await log.append([record("runs", "r1", b"b")])
    assert (await asyncio.wait_for(pending, 2)).value == b"b"
    await follower.aclose()


async def test_follow_resumes_after_an_offset(log: EventLog) -> None:
    written = await log.append([record("runs", "r", bytes([i])) for i in range(4)])
    follower = log.follow("runs", key="r", after=written[1].offset)
    assert [(await anext(follower)).value for _ in range(2)] == [bytes([2]), bytes([3])]
    await follower.aclose()


async def test_follow_after_the_end_waits_for_later_offsets(log: EventLog) -> None:
    [written] = await log.append([record("runs", "r", b"a")])
    follower = log.follow("runs", key="r", after=written.offset + 1000)
    pending = asyncio.create_task(anext(follower))
    await log.append([record("runs", "r", b"b")])
    await asyncio.sleep(0.3)
    assert not pending.done()  # neither replayed from the beginning nor offset <= after
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await follower.aclose()


async def test_cancelled_follower_leaves_no_waiter(log: EventLog) -> None:
    follower = log.follow("runs", key="idle")
    task = asyncio.create_task(anext(follower))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await log.append([record("runs", "idle", b"late")])  # must not fail on a stale waiter


async def test_a_keys_records_lie_in_the_partition_named_for_it(log: EventLog) -> None:
    keys = [f"org_{index}" for index in range(8)]
    written = await log.append([record("t", key, b"x") for key in keys])
    assert [await log.partition_of("t", key=key) for key in keys] == [landed.partition for landed in written]


async def test_end_offset_tracks_appends(log: EventLog) -> None:
    assert await log.end_offset("t") == -1
    written = await log.append([record("t", "k", b"1")])
    assert await log.end_offset("t", key="k") == written[-1].offset


async def test_concurrent_appends_all_land_once(log: EventLog) -> None:
    await asyncio.gather(*(log.append([record("t", f"k{i % 7}", b"%d" % i)]) for i in range(300)))
    seen = []
    for key in range(7):
        seen.extend(r.value for r in await log.read("t", key=f"k{key}"))
    assert sorted(seen) == sorted(b"%d" % i for i in range(300))


async def test_embedded_log_survives_reopen_and_is_single_process(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    first = EmbeddedLog(path=path)
    await first.start()
    await first.append([record("t", "k", b"kept")])
    second = EmbeddedLog(path=path)
    with pytest.raises(DataDirectoryBusy):
        await second.start()
    await first.close()
    reopened = EmbeddedLog(path=path)
    await reopened.start()
    assert [r.value for r in await reopened.read("t", key="k")] == [b"kept"]
    await reopened.close()


async def test_linger_gathers_records_that_arrive_meanwhile(log: EventLog) -> None:
    await log.append([record("t", "k", b"1")])
    stream = log.consume(group="g", topics=["t"], linger_s=0.2)
    pending = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.05)
    await log.append([record("t", "k", b"2")])
    assert [r.value for r in await asyncio.wait_for(pending, 2)] == [b"1", b"2"]
    await stream.aclose()


async def test_records_a_consumer_skips_all_arrive_in_order_with_the_next_it_wants(log: EventLog) -> None:
    """`wake_for` is a hint: whatever a log makes of it, every record is delivered once, in order."""
    stream = log.consume(group="g", topics=["t"], wake_for=lambda r: not r.value.startswith(b"skip"))
    seen: list[bytes] = []

    async def read_until(last: bytes) -> None:
        while not seen or seen[-1] != last:
            seen.extend(r.value for r in await anext(stream))

    await log.append([record("t", "k", b"skip 1")])
    await log.append([record("t", "k", b"skip 2")])
    await log.append([record("t", "k", b"wanted")])
    await asyncio.wait_for(read_until(b"wanted"), 30)
    await log.append([record("t", "k", b"skip 3")])  # nothing it wants follows: delivered within the quiet interval
    await asyncio.wait_for(read_until(b"skip 3"), 30)
    assert seen == [b"skip 1", b"skip 2", b"wanted", b"skip 3"]
    await stream.aclose()


async def test_embedded_skipped_records_do_not_wake_the_consumer_one_by_one(tmp_path: Path) -> None:
    log = EmbeddedLog(path=tmp_path / "log.db", quiet_wake_s=3600)  # no quiet interval runs out during the test
    await log.start()
    stream = log.consume(group="g", topics=["t"], wake_for=lambda r: r.value != b"delta")
    try:
        await log.append([record("t", "r", b"started")])
        assert [r.value for r in await asyncio.wait_for(anext(stream), 10)] == [b"started"]
        pending = asyncio.create_task(anext(stream))
        for _ in range(5):
            await log.append([record("t", "r", b"delta")])
        assert not pending.done()
        await log.append([record("t", "r", b"finished")])
        # One batch for the lot: the deltas waited for the record the consumer wants.
        assert [r.value for r in await asyncio.wait_for(pending, 10)] == [b"delta"] * 5 + [b"finished"]
    finally:
        await stream.aclose()
        await log.close()


class _LateNotices(EmbeddedLog):
    """An embedded log whose commit notices reach the event loop only when the test lets them: a writer thread
    descheduled on a loaded machine between its COMMIT and its call into the loop does the same."""

    def __init__(self, **keywords) -> None:
        super().__init__(**keywords)
        self.held: list[tuple] = []

    def _committed(self, batch, results) -> None:
        self.held.append((batch, results))

    def deliver_notices(self) -> None:
        held, self.held = self.held, []
        for batch, results in held:
            super()._committed(batch, results)


async def test_embedded_end_offset_covers_every_record_a_reader_was_given(tmp_path: Path) -> None:
    # The read-your-writes fence trusts end_offset: a client that saw a run's last event (one topic) and then
    # reads the read models must have the turn written in the same commit (another topic) counted in the end.
    log = _LateNotices(path=tmp_path / "log.db")
    await log.start()
    try:
        first = asyncio.create_task(log.append([record("turns", "c", b"submitted")]))
        deadline = asyncio.get_running_loop().time() + 10
        while not first.done():  # its notice is held like the others: let it through once the writer has posted it
            assert asyncio.get_running_loop().time() < deadline, "the first append never committed"
            log.deliver_notices()
            await asyncio.sleep(0.01)
        assert await log.end_offset("turns", key="c") == first.result()[0].offset
        appended = asyncio.create_task(log.append([record("turns", "c", b"finished"), record("runs", "r", b"ended")]))
        deadline = asyncio.get_running_loop().time() + 10
        while not await log.read("runs", key="r"):  # committed, visible to readers, not yet announced
            assert asyncio.get_running_loop().time() < deadline, "the append never committed"
            await asyncio.sleep(0.01)
        [seen] = await log.read("runs", key="r")
        assert await log.end_offset("turns", key="c") == seen.offset - 1
        assert await log.readable("turns", key="c", offset=seen.offset - 1)
        log.deliver_notices()
        assert [r.value for r in await asyncio.wait_for(appended, 10)] == [b"finished", b"ended"]
    finally:
        log.deliver_notices()
        await log.close()


# -- Kafka only ----------------------------------------------------------------------------------


@pytest.fixture
async def kafka(kafka_broker) -> AsyncIterator[KafkaLog]:
    adapter = kafka_log(kafka_broker.bootstrap_servers)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


def test_murmur2_matches_kafkas_reference_vectors() -> None:
    # From Kafka's UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107
    assert partition_for("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12


async def test_kafka_partitions_keys_as_computed_and_keeps_each_keys_order(kafka: KafkaLog) -> None:
    keys = [f"conversation-{index}" for index in range(40)]
    written = []
    for round_ in range(3):  # concurrent appends: several land in one transaction
        batches = await asyncio.gather(*(kafka.append([record("t", key, b"%d" % round_)]) for key in keys))
        written.extend(r for batch in batches for r in batch)
    assert {r.partition for r in written} == {0, 1, 2}
    for key in keys:
        mine = [r for r in written if r.key == key]
        assert {r.partition for r in mine} == {partition_for(key, 3)}  # librdkafka agrees with murmur2
        assert [r.value for r in mine] == [b"0", b"1", b"2"]
        assert [r.offset for r in mine] == sorted(r.offset for r in mine)
        assert [(r.offset, r.value) for r in await kafka.read("t", key=key)] == [(r.offset, r.value) for r in mine]


def counted(monkeypatch, writer: type, method: str) -> list[int]:
    """The sizes of the batches `writer.method` is given from now on."""
    sizes: list[int] = []
    original = getattr(writer, method)

    def counting(self, batch):
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(writer, method, counting)
    return sizes


async def test_kafka_concurrent_appends_share_transactions(kafka: KafkaLog, monkeypatch) -> None:
    transactions = counted(monkeypatch, _TransactionalWriter, "_transact")
    await asyncio.gather(*(kafka.append([record("t", f"k{i}", b"x"), record("u", f"k{i}", b"y")]) for i in range(200)))
    assert sum(transactions) == 200
    assert len(transactions) < 200


async def test_kafka_single_records_without_a_commit_are_produced_outside_transactions(
    kafka: KafkaLog, monkeypatch
) -> None:
    """Nothing to be atomic with: no transaction (one produce request, no marker), and concurrent ones share a flush.
    Appended in turn with transactions on the same key, they keep the order they were appended in."""
    transactions = counted(monkeypatch, _TransactionalWriter, "_transact")
    passes = counted(monkeypatch, _PlainWriter, "_write")
    written = await asyncio.gather(*(kafka.append([record("t", f"k{i}", b"x")]) for i in range(200)))
    assert transactions == [] and sum(passes) == 200 and len(passes) < 200
    assert [(r.key, r.partition) for [r] in written] == [(f"k{i}", partition_for(f"k{i}", 3)) for i in range(200)]
    for turn in range(3):
        await kafka.append([record("t", "k", b"plain %d" % turn)])
        await kafka.append([record("t", "k", b"transacted %d" % turn), record("u", "k", b"with it")])
    assert transactions == [1, 1, 1]
    assert [r.value for r in await kafka.read("t", key="k", after=written[0][0].offset)] == [
        b"plain 0", b"transacted 0", b"plain 1", b"transacted 1", b"plain 2", b"transacted 2",
    ]
    stream = kafka.consume(group="plain-readers", topics=["t"])  # read_committed, as every processor reads
    try:
        seen: set[str] = set()
        while len(seen) < 200:
            seen |= {r.key for r in await asyncio.wait_for(anext(stream), 60) if r.value == b"x"}
    finally:
        await stream.aclose()


async def test_kafka_open_transaction_is_invisible_and_commits_nothing(kafka: KafkaLog) -> None:
    """A writer that dies mid-transaction: neither its records nor its offsets are visible."""
    [source] = await kafka.append([record("in", "k", b"command")])
    assert await kafka.end_offset("out") == -1  # provisions the topic (a bare producer would auto-create it)
    crashed = Producer({"bootstrap.servers": kafka._bootstrap, "transactional.id": f"crashed-{uuid.uuid4().hex}"})
    crashed.init_transactions(10)
    crashed.begin_transaction()
    crashed.produce(kafka._physical("out"), key=b"k", value=b"half-done", partition=partition_for("k", 3))
    metadata = Consumer({"bootstrap.servers": kafka._bootstrap, "group.id": "proc"}).consumer_group_metadata()
    crashed.send_offsets_to_transaction([KafkaTopicPartition(kafka._physical("in"), source.partition, source.offset + 1)], metadata, 10)
    assert crashed.flush(10) == 0
    # ...and the process dies here, before commit_transaction.
    assert await kafka.committed(group="proc", topic="in", key="k") == -1
    assert await kafka.read("out", key="k") == []
    assert await kafka.end_offset("out", key="k") == -1
    crashed.abort_transaction(10)  # what the broker does when the transaction times out


async def test_kafka_failed_commit_aborts_the_records_and_the_offsets(kafka: KafkaLog, monkeypatch) -> None:
    [source] = await kafka.append([record("in", "k", b"command")])

    def broken(self, producer):
        raise KafkaException(KafkaError(KafkaError._FAIL, "simulated failure before commit"))

    monkeypatch.setattr(_TransactionalWriter, "_commit", broken)
    with pytest.raises(KafkaException):
        await kafka.append([record("out", "k", b"event")], commit=ConsumerCommit.through("proc", [source]))
    assert await kafka.committed(group="proc", topic="in", key="k") == -1
    monkeypatch.undo()
    await kafka.append([record("out", "k", b"retried")], commit=ConsumerCommit.through("proc", [source]))
    assert await kafka.committed(group="proc", topic="in", key="k") == source.offset


async def test_kafka_a_members_commit_in_a_transaction_names_it_without_asking_its_polling_consumer(
    kafka: KafkaLog,
) -> None:
    """librdkafka serializes calls on a consumer: asking a polling member for its group metadata waited for the poll
    (250 ms, with the event loop blocked) on every claim. The metadata its thread took after its last poll is used."""
    [source] = await kafka.append([record("in", "k", b"request")])
    stream = kafka.consume(group="proc", topics=["in"])
    try:
        batch = await asyncio.wait_for(anext(stream), 60)
        assert [r.value for r in batch] == [b"request"]
        [member] = kafka._consumers._members["proc"]
        assert member.group_metadata is not None
        assert kafka._consumers.group_metadata("proc") is member.group_metadata
        await kafka.append([record("out", "k", b"claimed")], commit=ConsumerCommit.through("proc", batch))
        assert await kafka.committed(group="proc", topic="in", key="k") == source.offset
    finally:
        await stream.aclose()


async def test_kafka_consume_commits_per_partition(kafka: KafkaLog) -> None:
    keys = ["a", "b", "c", "d", "e", "f"]
    assert len({partition_for(key, 3) for key in keys}) == 3
    written = await kafka.append([record("t", key, key.encode()) for key in keys])
    stream = kafka.consume(group="g", topics=["t"])
    seen = []
    while len(seen) < len(keys):
        seen.extend(await asyncio.wait_for(anext(stream), 10))
    assert sorted(r.value for r in seen) == sorted(key.encode() for key in keys)
    done = [r for r in written if r.key in ("a", "b", "c")]
    await kafka.append([record("out", "x", b"y")], commit=ConsumerCommit.through("g", done))
    await stream.aclose()
    for r in done:
        assert await kafka.committed(group="g", topic="t", key=r.key) >= r.offset
    again = kafka.consume(group="g", topics=["t"])
    rest = []
    while len(rest) < 3:
        rest.extend(await asyncio.wait_for(anext(again), 10))
    await again.aclose()
    assert sorted(r.key for r in rest) == ["d", "e", "f"]


async def test_kafka_follow_without_key_from_the_end_sees_only_new_records(kafka: KafkaLog) -> None:
    # Partitions at different ends: the keyless "after" is per partition, clamped to each one's end.
    await kafka.append([record("t", "a", bytes([i])) for i in range(5)] + [record("t", "c", b"c")])
    end = await kafka.end_offset("t")
    follower = kafka.follow("t", after=end)
    pending = asyncio.create_task(anext(follower))
    await asyncio.sleep(0.2)
    assert not pending.done()
    keys = ["b", "c", "d", "e"]
    await kafka.append([record("t", key, b"new") for key in keys])
    seen = [await asyncio.wait_for(pending, 5)]
    while len(seen) < len(keys):
        seen.append(await asyncio.wait_for(anext(follower), 5))
    await follower.aclose()
    assert sorted(r.key for r in seen) == keys and {r.value for r in seen} == {b"new"}


async def test_kafka_keyed_follows_of_a_partition_share_one_reader_and_each_gets_its_key_once_in_order(kafka: KafkaLog) -> None:
    keys = [key for key in (f"run{n}" for n in range(200)) if partition_for(key, 3) == 0][:6]
    opened = []
    open_follower = kafka._consumers.open_follower
    kafka._consumers.open_follower = lambda topic, **settings: opened.append(topic) or open_follower(topic, **settings)
    await kafka.append([record("t", key, b"old %d" % n) for n in range(3) for key in keys])

    async def followed(key: str, after: int) -> list[tuple[int, bytes]]:
        """The key's records until its last one, `end`."""
        seen: list[tuple[int, bytes]] = []
        follower = kafka.follow("t", key=key, after=after)
        try:
            while not seen or seen[-1][1] != b"end":
                got = await asyncio.wait_for(anext(follower), 20)
                assert got.key == key
                seen.append((got.offset, got.value))
        finally:
            await follower.aclose()
        return seen

    # The first follow from the partition's end starts its reader there.
    async def until(condition) -> None:
        async with asyncio.timeout(20):
            while not condition():
                await asyncio.sleep(0.01)

    first = asyncio.create_task(followed(keys[0], await kafka.end_offset("t", key=keys[0])))
    await until(lambda: kafka._followers._readers)
    [fresh] = await kafka.append([record("t", keys[1], b"new, before its stream opened")])
    [reader] = kafka._followers._readers.values()
    await until(lambda: any(kept.offset == fresh.offset for kept in reader.history))  # the next follow takes it from memory
    later = [
        asyncio.create_task(followed(keys[1], fresh.offset - 1)),  # a stream opened after its run's first record
        asyncio.create_task(followed(keys[2], -1)),  # from before the reader began: reads on its own
    ]
    for n in range(20):  # interleaved with the joins: the keys' new records, several in one append
        await kafka.append([record("t", key, b"new %d" % n) for key in keys[: 2 + n % 5]] + [record("t", keys[4], b"x")])
    await kafka.append([record("t", key, b"end") for key in keys])
    results = await asyncio.gather(first, *later)

    on_log = {key: [(r.offset, r.value) for r in await kafka.read("t", key=key)] for key in keys[:3]}
    assert results[0] == on_log[keys[0]][3:]
    assert results[1] == [entry for entry in on_log[keys[1]] if entry[0] >= fresh.offset]
    assert results[2] == on_log[keys[2]]
    assert len(opened) == 2  # the partition's reader, shared by the first two, and the third one's own


@pytest.mark.slow  # 16 streams of short runs for 8 s on the broker
async def test_kafka_streams_opened_right_after_their_runs_start_miss_nothing(kafka: KafkaLog) -> None:
    """As the API does: a run's first record appended, its stream follows it from there while its deltas land."""
    lost: list[tuple[str, list[bytes]]] = []
    expected = [b"start", *(b"delta %d" % i for i in range(10)), b"end"]

    async def one_run() -> None:
        key = f"run_{uuid.uuid4().hex[:10]}"
        [started] = await kafka.append([record("t", key, b"start")])
        follower = kafka.follow("t", key=key, after=started.offset - 1)

        async def generate() -> None:
            for value in expected[1:]:
                await kafka.append([record("t", key, value)])

        generating = asyncio.create_task(generate())
        seen: list[bytes] = []
        try:
            while not seen or seen[-1] != b"end":
                seen.append((await asyncio.wait_for(anext(follower), 20)).value)
        except TimeoutError:
            seen.append(b"(nothing more within 20 s)")  # a lost record leaves the stream waiting: reported below
        finally:
            await follower.aclose()
            await generating
        if seen != expected:
            lost.append((key, seen))

    async def stream(until: float) -> int:
        runs = 0
        while time.monotonic() < until:
            await one_run()
            runs += 1
        return runs

    until = time.monotonic() + 8
    runs = sum(await asyncio.gather(*(stream(until) for _ in range(16))))
    assert runs > 16 and lost == []


async def test_kafka_provisions_topics_from_their_specs(kafka_broker) -> None:
    topics = turnlog_topics(partitions=4)
    adapter = KafkaLog(kafka_broker.bootstrap_servers, topics=topics, topic_prefix=f"spec-{uuid.uuid4().hex[:8]}.")
    await adapter.start()
    await adapter.append([record("inference-requests.small", "r", b"x")])
    await adapter.close()
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for topic in ["conversation-events", "run-events", "command-outcomes", "dead-letters", "inference-requests.small"]:
        spec = topics.spec_for(topic)
        physical = adapter._physical(topic)
        assert len(admin.list_topics(physical, timeout=5).topics[physical].partitions) == spec.partitions
        [described] = admin.describe_configs([ConfigResource("topic", physical)]).values()
        config = {name: entry.value for name, entry in described.result().items()}
        assert config["cleanup.policy"] == "delete"
        assert config["retention.ms"] == spec.topic_config()["retention.ms"]
    assert topics.spec_for("conversation-events").topic_config()["retention.ms"] == "-1"
    again = KafkaLog(kafka_broker.bootstrap_servers, topics=topics, topic_prefix=adapter._prefix)
    await again.start()  # existing topics are left as they are
    await again.close()


async def test_kafka_unreachable_broker_fails_start_with_the_address() -> None:
    address = f"127.0.0.1:{kafka_broker_harness.free_port()}"
    adapter = KafkaLog(address, topics=KAFKA_TEST_TOPICS, timeout_s=1)
    with pytest.raises(LogUnavailable, match=address.replace(".", r"\.")):
        await adapter.start()


@pytest.mark.alone  # a broker of its own, stopped under the log
async def test_kafka_appends_to_a_broker_gone_away_fail_as_unavailable_on_both_writers(tmp_path: Path) -> None:
    """`Unavailable`, not librdkafka's error: a processor retries its batch instead of counting a good message as
    poison, and the API answers 503 with Retry-After."""
    broker = kafka_broker_harness.TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    adapter = KafkaLog(broker.bootstrap_servers, topics=KAFKA_TEST_TOPICS, timeout_s=2)
    try:
        await adapter.start()
        await adapter.append([record("t", "k", b"before")])
        broker.stop()
        with pytest.raises(LogUnavailable):
            await adapter.append([record("t", "k", b"plain")])
        with pytest.raises(LogUnavailable):
            await adapter.append([record("t", "k", b"transacted"), record("u", "k", b"with it")])
    finally:
        broker.stop()
        await adapter.close()


async def test_kafka_closing_the_log_ends_its_streams(kafka_broker) -> None:
    adapter = kafka_log(kafka_broker.bootstrap_servers)
    await adapter.start()
    follower = adapter.follow("runs", key="r")
    pending = asyncio.create_task(anext(follower))
    await asyncio.sleep(0.2)
    await asyncio.wait_for(adapter.close(), 5)
    with pytest.raises(LogClosed):
        await asyncio.wait_for(pending, 5)


async def test_appended_records_are_readable_where_they_landed(log: EventLog) -> None:
    [written] = await log.append([record("t", "k", b"x")])
    assert await log.readable("t", key="k", offset=written.offset)
    assert not await log.readable("t", key="k", offset=written.offset + 1000)


REQUEST = contextvars.ContextVar("request", default="none")


async def test_follow_ups_are_built_from_where_the_records_landed_and_written_with_them(log: EventLog) -> None:
    """The decider's reply names the offsets its events landed at, in the same append (one transaction on Kafka)."""
    await log.append([record("r", "warm-up", b"the replies' topic exists")])
    REQUEST.set("req-1")  # the follow-ups are built in the caller's context (its trace), wherever the writer runs

    def replies(landed):
        return [record("r", "reply", f"{landed[-1].offset} {REQUEST.get()}".encode())]

    written = await log.append([record("t", "k", b"1"), record("t", "k", b"2")], then=replies)
    assert [(r.topic, r.value) for r in written[:2]] == [("t", b"1"), ("t", b"2")]
    assert [(r.topic, r.value) for r in written[2:]] == [("r", f"{written[1].offset} req-1".encode())]
    assert [r.value for r in await log.read("r", key="reply")] == [f"{written[1].offset} req-1".encode()]

    # No records of its own (a rejected command): the follow-ups are still written.
    written = await log.append([], then=lambda landed: [record("r", "reply", b"rejected, nothing landed")])
    assert [r.value for r in written] == [b"rejected, nothing landed"]


async def test_a_follow_up_that_fails_fails_the_whole_append(embedded_log: EmbeddedLog) -> None:
    # Embedded only: Tansu delivers an aborted transaction's records to read_committed readers (docs/kafka.md).
    def broken(landed):
        raise ValueError("cannot build the reply")

    with pytest.raises(ValueError, match="cannot build the reply"):
        await embedded_log.append([record("t", "k", b"never")], then=broken)
    assert await embedded_log.read("t", key="k") == []


async def test_a_read_since_a_time_holds_every_record_written_from_then(log: EventLog) -> None:
    await log.append([record("t", "k", b"before")])
    since = datetime.now(UTC)
    await asyncio.sleep(0.01)  # the next record's timestamp (milliseconds on Kafka) is past `since`
    await log.append([record("t", "k", b"after")])
    assert [r.value for r in await log.read("t", key="k", since=since - timedelta(days=1))] == [b"before", b"after"]
    assert [r.value for r in await log.read("t", key="k", since=since)][-1:] == [b"after"]
    assert await log.read("t", key="k", since=datetime.now(UTC) + timedelta(minutes=1)) in ([], await log.read("t", key="k"))


async def test_kafka_starts_a_read_since_a_time_at_its_time_index(kafka_broker) -> None:
    """A run looked up by its id scans what was written since the id was made, not the partition's whole retention."""
    log = kafka_log(kafka_broker.bootstrap_servers)
    await log.start()
    try:
        await log.append([record("t", "k", b"old")])
        # Well apart from both records and the old one's commit marker: Tansu answers a time within a few
        # milliseconds of a marker with offset 0 (the read is then a whole scan: right, only slower).
        await asyncio.sleep(0.05)
        since = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await log.append([record("t", "k", b"new")])
        deadline = asyncio.get_running_loop().time() + 30
        while (found := [r.value for r in await log.read("t", key="k", since=since)]) != [b"new"]:
            assert found == [b"old", b"new"], found
            assert asyncio.get_running_loop().time() < deadline, "the read never started at the time index"
            await asyncio.sleep(0.05)
        assert [r.value for r in await log.read("t", key="k")] == [b"old", b"new"]
    finally:
        await log.close()


async def test_kafka_reads_a_key_that_is_an_id_from_where_the_id_was_made(kafka_broker) -> None:
    """No caller passes a bound, and none can forget one: a settlement's usage, a tool step's request, a conversation's
    summary, each looked up by an id, cost a scan of what was written since the id was made."""
    log = kafka_log(kafka_broker.bootstrap_servers)
    await log.start()
    try:
        start = datetime.now(UTC)
        # Made (by its ULID) so that its minting time less the clock skew falls between the two records: the first,
        # older than the id, cannot be one of its own, and the scan need not reach it.
        key = f"run_{ULID.from_datetime(start + CLOCK_SKEW + timedelta(milliseconds=100))}"
        assert written_since(key) is not None
        await log.append([record("t", key, b"older than the id")])
        while datetime.now(UTC) < start + timedelta(milliseconds=200):  # past the bound, and well apart from the
            await asyncio.sleep(0.02)  # first record's commit marker (Tansu answers a time near one with offset 0)
        await log.append([record("t", key, b"new")])
        deadline = asyncio.get_running_loop().time() + 30
        while (found := [r.value for r in await log.read("t", key=key)]) != [b"new"]:
            assert found == [b"older than the id", b"new"], found
            assert asyncio.get_running_loop().time() < deadline, "the read never started where the id was made"
            await asyncio.sleep(0.05)
        # A key that is no id is read from the partition's start.
        await log.append([record("t", "org-acme", b"a name, not an id")])
        assert [r.value for r in await log.read("t", key="org-acme")] == [b"a name, not an id"]
    finally:
        await log.close()
