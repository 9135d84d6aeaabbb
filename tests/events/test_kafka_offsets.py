"""The Kafka log's offset lookups on a real broker: what a fresh process reads while transactions are open."""

import asyncio
import threading
import uuid

import pytest
from confluent_kafka import Producer

from events.kafka.consumers import _Consumers
from events.kafka.log import KafkaLog
from kernel.log import OutgoingRecord
from events.topics import DOCUMENTS, RUN_EVENTS
from events.topology import partition_for, turnlog_topics
from tests.events.test_log_contract import KAFKA_TEST_CONSUMERS

pytestmark = pytest.mark.slow


async def test_a_fresh_reader_sees_committed_records_while_a_transaction_is_open_on_their_partition(kafka_broker) -> None:
    """Tansu 0.6 now and then answered a fresh client's read_committed offset lookup with 0 for such a partition,
    so a read of a run's claim right after its first delta found nothing (the CI flake at stop 21): ~1 read in 30."""
    writer = KafkaLog(
        kafka_broker.bootstrap_servers, topics=turnlog_topics(), client_id="writer",
        topic_prefix=f"test-{uuid.uuid4().hex[:12]}.", consumer_config=KAFKA_TEST_CONSUMERS, timeout_s=10,
    )
    await writer.start()
    try:
        for run in range(15):
            key = f"run_{run}"
            [claim] = await writer.append([OutgoingRecord(topic=RUN_EVENTS, key=key, value=b"claim")])
            streaming = asyncio.Event()

            async def deltas(key: str = key, streaming: asyncio.Event = streaming) -> None:
                while True:  # the run streams: one transaction after another on the claim's partition
                    await writer.append([OutgoingRecord(topic=RUN_EVENTS, key=key, value=b"delta")])
                    streaming.set()
                    await asyncio.sleep(0.02)  # a worker's coalesced deltas

            task = asyncio.create_task(deltas())
            try:
                await streaming.wait()
                await asyncio.sleep(0.1)  # a few deltas in: the reader comes at the first delta it saw
                for _ in range(3):
                    reader = KafkaLog(
                        kafka_broker.bootstrap_servers, topics=turnlog_topics(), client_id="fresh-reader",
                        topic_prefix=writer.physical_topic(""), consumer_config=KAFKA_TEST_CONSUMERS, timeout_s=10,
                    )
                    await reader.start()
                    try:
                        found = await reader.read(RUN_EVENTS, key=key)
                    finally:
                        await reader.close()
                    assert claim.offset in [record.offset for record in found], (run, claim.offset, len(found))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await writer.close()


async def test_a_warm_reader_sees_what_was_committed_since_its_last_look_while_a_transaction_is_open(kafka_broker):
    """Tansu answers a last stable offset of 0 while any transaction is open on the partition. A reader that had
    looked before stood on the offset it saw then, so a file uploaded since was missing from a listing made while
    the ingester's transaction was open on its partition (the CI flake at stop 39)."""
    writer = KafkaLog(
        kafka_broker.bootstrap_servers, topics=turnlog_topics(), client_id="writer",
        topic_prefix=f"test-{uuid.uuid4().hex[:12]}.", consumer_config=KAFKA_TEST_CONSUMERS, timeout_s=10,
    )
    reader = KafkaLog(
        kafka_broker.bootstrap_servers, topics=turnlog_topics(), client_id="reader",
        topic_prefix=writer.physical_topic(""), consumer_config=KAFKA_TEST_CONSUMERS, timeout_s=10,
    )
    await writer.start()
    await reader.start()
    ingester = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": uuid.uuid4().hex})
    try:
        [first] = await writer.append([OutgoingRecord(topic=DOCUMENTS, key="file_a", value=b"uploaded")])
        assert await reader.end_offset(DOCUMENTS, key="file_a") == first.offset  # the reader has looked once
        [uploaded] = await writer.append([OutgoingRecord(topic=DOCUMENTS, key="file_a", value=b"uploaded again")])

        partition = partition_for("file_a", reader._admin.partition_count(DOCUMENTS))
        await asyncio.to_thread(ingester.init_transactions, 10)
        ingester.begin_transaction()
        ingester.produce(writer.physical_topic(DOCUMENTS), b"chunks", key=b"file_b", partition=partition)
        await asyncio.to_thread(ingester.flush, 10)
        ends = threading.Timer(0.1, ingester.commit_transaction)  # the ingester's transaction lasts a while
        ends.start()
        try:
            assert await reader.end_offset(DOCUMENTS, key="file_a") >= uploaded.offset
            assert uploaded.offset in [record.offset for record in await reader.read(DOCUMENTS, key="file_a")]
        finally:
            ends.join()
    finally:
        ingester.close()
        await reader.close()
        await writer.close()


async def test_a_scan_reader_never_waits_out_the_fetch_queue_backoff() -> None:
    """A scan reader keeps little prefetched (a scan ends somewhere), and librdkafka puts the next fetch off by
    `fetch.queue.backoff.ms` whenever its queue holds more: at the 1 s default a scan crawled one fetch a second."""
    consumers = _Consumers(config={}, client_id="contract", physical=str, timeout_s=1, readers=1)
    reader = consumers._open_reader()
    try:
        assert int(reader._config["fetch.queue.backoff.ms"]) <= int(reader._config["fetch.wait.max.ms"])
    finally:
        await consumers.close()
