"""A process killed, and its successor under the same instance id (a real broker): the transaction and the group
memberships the dead process left are ended by its successor, not waited out.

Kafka aborts a dead producer's open transaction after `transaction.timeout.ms`; Tansu 0.6 never does, and
until then every read_committed reader on the broker stops at it (all topics, all partitions: the CI failure
of stop 22, where one killed inference worker stalled the whole fleet). A process started again under its
`--instance-id` registers the same transactional id, which fences the dead producer and ends its transaction.
"""

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import kafka_broker as kafka_harness
from events.topics import RUN_EVENTS
from kernel.log import OutgoingRecord
from turnlog.adapters import build_log
from turnlog.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.alone]
REPO_ROOT = Path(__file__).resolve().parents[2]

# The child opens a transaction the way the log's writer does, writes one record in it, and waits to be killed.
HOLDS_A_TRANSACTION_OPEN = """
import sys, time
from confluent_kafka import Producer
producer = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[2], "partitioner": "murmur2_random",
                     "transaction.timeout.ms": 10000})
producer.init_transactions(15)
producer.begin_transaction()
producer.produce(sys.argv[3], key=sys.argv[4].encode(), value=b"written by the process that dies")
producer.flush(15)
print("open", flush=True)
time.sleep(600)
"""


@pytest.fixture
def broker(tmp_path) -> Iterator[kafka_harness.TansuBroker]:
    """A broker of its own: a transaction left open would hold back every other test's readers."""
    broker = kafka_harness.TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_process_started_again_under_its_instance_id_ends_the_transaction_its_crash_left_open(broker) -> None:
    settings = Settings(log_url=f"kafka://{broker.bootstrap_servers}", instance_id="inference-0")
    other = build_log(Settings(log_url=f"kafka://{broker.bootstrap_servers}"))
    await other.start()  # provisions the topics
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDS_A_TRANSACTION_OPEN, broker.bootstrap_servers, "turnlog-inference-0",
             other.physical_topic(RUN_EVENTS), "run_1"],
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"open"
        finally:
            child.kill()
            child.wait(timeout=10)

        [committed] = await other.append([OutgoingRecord(topic=RUN_EVENTS, key="run_1", value=b"committed after the crash")])
        held_back = await other.read(RUN_EVENTS, key="run_1")
        assert committed.offset not in [record.offset for record in held_back]  # behind the dead transaction

        successor = build_log(settings)
        await successor.start()  # registers the same transactional id: the dead producer is fenced
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while committed.offset not in [record.offset for record in await other.read(RUN_EVENTS, key="run_1")]:
                assert asyncio.get_running_loop().time() < deadline, "the record stayed behind the dead transaction"
                await asyncio.sleep(0.1)
        finally:
            await successor.close()
    finally:
        await other.close()


# The child joins a consumer group as a worker named `worker-0` does, reads its first batch, and waits to be killed.
JOINS_A_GROUP = """
import asyncio, sys
from turnlog.adapters import build_log
from turnlog.settings import Settings

async def main():
    log = build_log(Settings(log_url=sys.argv[1], instance_id="worker-0"))
    await log.start()
    async for _ in log.consume(group="projector-like", topics=("run-events",)):
        print("joined", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_process_started_again_under_its_instance_id_ends_the_group_memberships_its_crash_left(
    broker, caplog
) -> None:
    """Without this the successor's join waits until the dead member's session runs out: on the test fleet (6 s
    sessions) commands sent during a restart were answered 503 after the bus's 10 s, half the time (docs/kafka.md)."""
    settings = Settings(log_url=f"kafka://{broker.bootstrap_servers}", instance_id="worker-0")
    other = build_log(Settings(log_url=f"kafka://{broker.bootstrap_servers}"))
    await other.start()  # provisions the topics
    try:
        await other.append([OutgoingRecord(topic=RUN_EVENTS, key="run_1", value=b"x")])
        child = subprocess.Popen(
            # A 10 s session: the dead member is still in the group when its successor looks (Tansu's joins pause
            # for half the group's session, so a longer one only slows the test).
            [sys.executable, "-c", JOINS_A_GROUP, f"kafka://{broker.bootstrap_servers}?session.timeout.ms=10000"],
            stdout=subprocess.PIPE, cwd=REPO_ROOT,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"joined"
        finally:
            child.kill()
            child.wait(timeout=10)
        group = other.physical_topic("projector-like")
        [dead] = await broker.member_ids(group)
        assert dead.startswith("turnlog-worker-0-")

        successor = build_log(settings)
        await successor.start()
        stream = successor.consume(group="projector-like", topics=(RUN_EVENTS,))
        try:
            with caplog.at_level(logging.INFO, logger="events.kafka.predecessors"):
                async with asyncio.timeout(60):
                    await anext(stream)
            # The successor ended the dead member before it joined (not its session running out), and is alone.
            ended = [record.getMessage() for record in caplog.records if record.name == "events.kafka.predecessors"]
            assert len(ended) == 1 and dead in ended[0]
            [member] = await broker.member_ids(group)
            assert member != dead and member.startswith("turnlog-worker-0-")
        finally:
            await stream.aclose()
            await successor.close()
    finally:
        await other.close()
