"""The faust runtime on a real Kafka-protocol broker: reactions before commits, poison to dead letters, resume."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from events.kafka.log import KafkaLog
from kernel.log import OutgoingRecord
from kernel.dead_letters import DeadLetter
from kernel.dead_letters import DEAD_LETTERS
from events.topology import turnlog_topics
from processors import faust_runtime
from processors.faust_runtime import processor_app, run_processor_on_faust
from kernel.runtime import MAX_ATTEMPTS, Delivery, Processor, encode
from tests.events.test_log_contract import kafka_log
from tests.kernel.test_runtime import CODEC, beat, echo_processor

pytestmark = pytest.mark.slow  # each test joins a consumer group on the broker (a few seconds)


@pytest.fixture
async def log(kafka_broker) -> AsyncIterator[KafkaLog]:
    adapter = kafka_log(kafka_broker.bootstrap_servers)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


async def settle(log: KafkaLog, group: str, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until `group` has committed through the end of every partition of `topic`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        ends = await log.end_offsets(topic)
        done = await log.committed_offsets(group=group, topic=topic)
        if all(done.get(partition, -1) >= end for partition, end in ends.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{group} did not commit through the end of {topic}")


async def applied_through(applied: asyncio.Queue[Sequence], offset: int) -> None:
    """Wait for the batch that applies `offset` (a transaction may come in more than one batch)."""
    batch = await asyncio.wait_for(applied.get(), 60)
    while max(record.offset for record in batch) < offset:
        batch = await asyncio.wait_for(applied.get(), 60)


async def outputs(log: KafkaLog, keys: Sequence[str]) -> list[str]:
    return [CODEC.decode(r.value).payload.run_id for key in keys for r in await log.read("out", key=key)]


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_reactions_land_before_the_commit_and_a_restart_resumes_after_it(log: KafkaLog, tmp_path: Path) -> None:
    seen: list[str] = []
    await log.append([beat("a"), beat("b")])
    task = asyncio.create_task(run_processor_on_faust(echo_processor(seen), log=log, codec=CODEC, data_dir=tmp_path))
    try:
        await settle(log, "echo", "in")
    finally:
        await stop(task)
    assert sorted(seen) == ["a", "b"]
    assert sorted(await outputs(log, ["a", "b"])) == ["a", "b"]
    again: list[str] = []
    await log.append([beat("c")])
    task = asyncio.create_task(run_processor_on_faust(echo_processor(again), log=log, codec=CODEC, data_dir=tmp_path))
    try:
        await settle(log, "echo", "in")
    finally:
        await stop(task)
    assert again == ["c"]


async def test_poison_goes_to_dead_letters_and_the_agent_goes_on(log: KafkaLog, tmp_path: Path) -> None:
    seen: list[str] = []
    await log.append([beat("ok1"), OutgoingRecord(topic="in", key="bad", value=b"garbage"), beat("poison"), beat("ok2")])
    task = asyncio.create_task(run_processor_on_faust(echo_processor(seen, fail_on="poison"), log=log, codec=CODEC, data_dir=tmp_path))
    try:
        await settle(log, "echo", "in")
    finally:
        await stop(task)
    assert {"ok1", "ok2"} <= set(seen) and "poison" not in seen
    letters = {}
    for key in ("bad", "poison"):
        [record] = await log.read(DEAD_LETTERS, key=key)
        letters[key] = CODEC.decode(record.value).payload
    assert all(isinstance(letter, DeadLetter) for letter in letters.values())
    assert letters["bad"].value == b"garbage" and "magic" in letters["bad"].reason
    assert "cannot handle poison" in letters["poison"].reason
    assert sorted(set(await outputs(log, ["ok1", "ok2", "poison"]))) == ["ok1", "ok2"]


async def test_nothing_is_committed_until_the_reaction_is_written(log: KafkaLog, tmp_path: Path) -> None:
    """A reaction that cannot be written yet keeps its batch uncommitted; once it can, the batch commits."""
    failures: list[str] = []

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        if len(failures) < MAX_ATTEMPTS - 1:
            failures.append("the store is down")
            committed = await log.committed_offsets(group="flaky", topic="in")
            assert all(offset < 0 for offset in committed.values())  # nothing committed while failing
            raise ConnectionError("the store is down")
        return [encode(CODEC, delivery.envelope, topic="out") for delivery in deliveries]

    await log.append([beat("x")])
    task = asyncio.create_task(run_processor_on_faust(Processor(group="flaky", topics=("in",), react=react), log=log, codec=CODEC, data_dir=tmp_path, retry_delay_s=0.05))
    try:
        await settle(log, "flaky", "in")
    finally:
        await stop(task)
    assert len(failures) == MAX_ATTEMPTS - 1
    assert await log.read(DEAD_LETTERS, key="x") == []  # retried, not given up on
    assert await outputs(log, ["x"]) == ["x"]


async def test_a_lone_message_that_keeps_failing_is_dead_lettered_after_its_attempts(log: KafkaLog, tmp_path: Path) -> None:
    seen: list[str] = []
    await log.append([beat("poison")])
    task = asyncio.create_task(
        run_processor_on_faust(echo_processor(seen, fail_on="poison"), log=log, codec=CODEC, data_dir=tmp_path, retry_delay_s=0.05)
    )
    try:
        await settle(log, "echo", "in")
    finally:
        await stop(task)
    [record] = await log.read(DEAD_LETTERS, key="poison")
    assert f"({MAX_ATTEMPTS} attempts)" in CODEC.decode(record.value).payload.reason


def test_each_processor_is_its_own_faust_app_and_consumer_group(tmp_path: Path) -> None:
    from processors.faust_runtime import processor_app

    log = KafkaLog("127.0.0.1:9", topics=None, topic_prefix=f"p{uuid.uuid4().hex[:6]}.")  # never started
    app = processor_app(echo_processor([]), log=log, data_dir=tmp_path / "data")
    assert app.conf.id == log.physical_topic("echo")
    assert app.conf.processing_guarantee.value == "at_least_once"
    # faust's files go under the data directory, never the working directory (read-only in the image).
    assert app.conf.datadir == tmp_path / "data" / "faust" / f"{app.conf.id}-data"
    assert app.conf.datadir.parent.is_dir()


async def test_two_members_share_the_partitions_and_one_takes_over_when_the_other_leaves(log: KafkaLog, tmp_path: Path) -> None:
    seen: list[str] = []
    first = asyncio.create_task(run_processor_on_faust(echo_processor(seen), log=log, codec=CODEC, data_dir=tmp_path))
    second = None
    try:
        await log.append([beat(f"a{i}") for i in range(6)])
        await settle(log, "echo", "in")
        second = asyncio.create_task(run_processor_on_faust(echo_processor(seen), log=log, codec=CODEC, data_dir=tmp_path))
        await log.append([beat(f"b{i}") for i in range(6)])
        await settle(log, "echo", "in")
        await stop(first)  # leaves the group: its partitions move to the second member
        await log.append([beat(f"c{i}") for i in range(6)])
        await settle(log, "echo", "in")
    finally:
        await stop(first)
        if second is not None:
            await stop(second)
    keys = [f"{batch}{i}" for batch in "abc" for i in range(6)]
    assert set(seen) == set(keys)
    assert sorted(set(await outputs(log, keys))) == sorted(keys)


async def test_the_group_offset_reaches_each_transactions_last_record_once_its_batch_is_applied(
    log: KafkaLog, tmp_path: Path
) -> None:
    """Transaction markers take offsets but are never delivered. faust's own commit stopped at the hole a marker
    leaves until a later batch filled it, so the read-your-writes fence, which reads this offset, waited for the
    next write (during a run: its last event)."""
    applied: asyncio.Queue[Sequence] = asyncio.Queue()
    processor = dataclasses.replace(echo_processor([]), group="marker-holes", on_committed=applied.put_nowait)
    task = asyncio.create_task(run_processor_on_faust(processor, log=log, codec=CODEC, data_dir=tmp_path))
    try:
        for size in (1, 3, 2, 1, 4, 2) * 5:  # transactions of a run's sizes, one after another, on one partition
            last = (await log.append([beat("one-key") for _ in range(size)]))[-1]
            await applied_through(applied, last.offset)
            committed = await log.committed_offsets(group="marker-holes", topic="in")
            assert committed.get(last.partition, -1) >= last.offset, (committed, last.offset)
    finally:
        await stop(task)


async def test_faust_s_own_commits_never_move_the_group_s_offset_back(log: KafkaLog, tmp_path: Path, monkeypatch) -> None:
    """faust's periodic commit computes its offsets, then awaits a flush and a hop to the consumer's thread before
    it sends them. When that took longer than the next batch (a loaded machine), its stale offsets landed after the
    batch's commit and moved the group back; with no later record on the partition the read-your-writes fence
    waited for good (the likely cause of a CI flake: `GET /v1/files` 503 for minutes). Here faust's commit comes
    every 5 ms and is held 0.3 s before it sends: only the agent's commits may move the offset, and only forward."""
    from faust.transport.consumer import Consumer

    make_app = faust_runtime.processor_app

    def committing_often(*args, **kwargs):
        app = make_app(*args, **kwargs)
        app.conf.broker_commit_interval = 0.005
        return app

    send_attached = Consumer._handle_attached

    async def held(self, offsets):  # the step of faust's own commit between choosing its offsets and sending them
        await asyncio.sleep(0.3)
        return await send_attached(self, offsets)

    monkeypatch.setattr(faust_runtime, "processor_app", committing_often)
    monkeypatch.setattr(Consumer, "_handle_attached", held)
    applied: asyncio.Queue[Sequence] = asyncio.Queue()
    processor = dataclasses.replace(echo_processor([]), group="one-committer", on_committed=applied.put_nowait)
    seen: list[int] = []

    async def watch(partition: int) -> None:
        while True:
            seen.append((await log.committed_offsets(group="one-committer", topic="in")).get(partition, -1))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(faust_runtime.run_processor_on_faust(processor, log=log, codec=CODEC, data_dir=tmp_path))
    watcher = None
    try:
        for _ in range(20):  # transactions one after another on one partition, as a file's events come
            last = (await log.append([beat("one-key")]))[-1]
            watcher = watcher or asyncio.create_task(watch(last.partition))
            await applied_through(applied, last.offset)
        # (The transactions take over a second: the held commits of the first ones land while the watcher looks.)
    finally:
        if watcher is not None:
            await stop(watcher)
        await stop(task)
    seen.append((await log.committed_offsets(group="one-committer", topic="in")).get(last.partition, -1))
    assert seen == sorted(seen), [offset for offset, before in zip(seen[1:], seen) if offset < before]
    assert seen[-1] == last.offset


def test_a_process_named_in_the_log_url_is_a_static_member_of_its_groups_and_only_there(tmp_path: Path) -> None:
    """`?group.instance.id=` (a pod's name): its faust agents and its own group members rejoin as that member after
    a restart; scan readers and followers never join a group, and a group handle must not pose as the member."""
    log = KafkaLog("127.0.0.1:9", topics=turnlog_topics(), consumer_config={"group.instance.id": "worker-1"})
    assert log.group_instance_id == "worker-1"
    assert processor_app(echo_processor([]), log=log, data_dir=tmp_path).conf.consumer_group_instance_id == "worker-1"
    consumers = log._consumers
    assert consumers.join("decider")._config["group.instance.id"] == "worker-1"
    assert "group.instance.id" not in consumers.join("decider")._config  # a second member of one group: dynamic
    assert "group.instance.id" not in consumers._open_reader()._config
    assert "group.instance.id" not in consumers.open_follower("run-events")._config
    unnamed = KafkaLog("127.0.0.1:9", topics=turnlog_topics())
    assert unnamed.group_instance_id is None
    assert processor_app(echo_processor([]), log=unnamed, data_dir=tmp_path).conf.consumer_group_instance_id is None


def test_a_background_processor_fetches_with_a_long_wait_and_the_others_with_the_logs(tmp_path: Path) -> None:
    """Tansu holds every fetch for its whole wait and reads storage for each: consumers whose output no request waits
    for (ledgers, summaries, sweeps) poll it less (docs/kafka.md); on Kafka a fetch returns when data arrives."""
    from events.kafka.log import BACKGROUND_FETCH_WAIT_MS

    log = KafkaLog("127.0.0.1:9", topics=turnlog_topics(), consumer_config={"fetch.wait.max.ms": 10})
    hot = echo_processor([])
    background = dataclasses.replace(hot, background=True)

    def fetch_wait(processor: Processor) -> int:
        app = processor_app(processor, log=log, data_dir=tmp_path)
        return app.transport_class.Consumer.consumer_thread_class.fetch_wait_max_ms

    assert (fetch_wait(hot), fetch_wait(background)) == (10, BACKGROUND_FETCH_WAIT_MS)
    consumers = log._consumers
    assert consumers.join("decider", fetch_wait_ms=log.fetch_wait_ms())._config["fetch.wait.max.ms"] == 10
    waited = consumers.join("usage-ledger", fetch_wait_ms=log.fetch_wait_ms(background=True))._config["fetch.wait.max.ms"]
    assert waited == BACKGROUND_FETCH_WAIT_MS
    patient = KafkaLog("127.0.0.1:9", topics=turnlog_topics(), consumer_config={"fetch.wait.max.ms": 900})
    assert patient.fetch_wait_ms(background=True) == 900  # never shorter than the log's own
