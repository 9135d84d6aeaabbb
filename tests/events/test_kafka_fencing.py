"""A process killed inside a transaction, and its successor under the same instance id (a real broker).

Kafka aborts a dead producer's open transaction after `transaction.timeout.ms`; Tansu 0.6 never does, and
until then every read_committed reader on the broker stops at it (all topics, all partitions: the CI failure
of stop 22, where one killed inference worker stalled the whole fleet). A process started again under its
`--instance-id` registers the same transactional id, which fences the dead producer and ends its transaction.
"""

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

import kafka_broker as kafka_harness
from events.topics import RUN_EVENTS
from kernel.log import OutgoingRecord
from turnlog.adapters import build_log
from turnlog.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.alone]

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
