"""The Kafka log's writers: producers on threads of their own, each pass taking every append queued meanwhile.

`_TransactionalWriter` runs one transaction at a time (the group commit that `events.kafka.log` describes); a failed
shared transaction is retried append by append. `_PlainWriter` produces appends that need no transaction (one record,
no consumer commit, no follow-ups: nothing to be atomic with) on an idempotent producer outside any: as durable
(acks=all), one produce request instead of a transaction's round trips, and no transaction marker for readers to wait
on or step over.
"""

import asyncio
import functools
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition as KafkaTopicPartition

from events.kafka.errors import _is_unavailable
from kernel.log import ConsumerCommit, LogRecord, OutgoingRecord

logger = logging.getLogger(__name__)

# Records (key + value) above this are refused before a transaction starts, so a too-large record
# fails its own append and never aborts a transaction that others share.
MAX_RECORD_BYTES = 1_000_000
_MAX_PASS_RECORDS = 10_000


@dataclass(kw_only=True)
class _PendingAppend:
    records: Sequence[OutgoingRecord]
    commit: ConsumerCommit | None
    group_metadata: object | None
    done: asyncio.Future
    then: Callable[[Sequence[LogRecord]], Sequence[OutgoingRecord]] | None = None  # run in the caller's context

    @property
    def needs_transaction(self) -> bool:
        """Whether it has anything to be atomic with: several records, offsets to commit, or follow-ups."""
        return len(self.records) != 1 or self.commit is not None or self.then is not None


class _ProducerThread(ABC):
    """Owns a producer on a thread of its own; each pass writes every append queued meanwhile (`_write`)."""

    _name = "kafka-log-writer"

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
        """Blocking: create the producer (a transactional one registers its id, fencing any predecessor)."""
        self._producer = self._new_producer()
        self._thread = threading.Thread(target=self._write_forever, name=self._name, daemon=True)
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

    @abstractmethod
    def _new_producer(self) -> Producer:
        """A producer from `_config`, ready to write."""

    @abstractmethod
    def _write(self, batch: list[_PendingAppend]) -> None:
        """Write `batch` and settle each append's future (its records where they landed, or the error)."""

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
            while records < _MAX_PASS_RECORDS:  # group commit: take what was queued meanwhile
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

    def _produce(self, producer: Producer, record: OutgoingRecord, on_delivery: Callable) -> None:
        while True:
            try:
                producer.produce(
                    self._physical(record.topic), key=record.key.encode(), value=record.value, on_delivery=on_delivery
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)


class _TransactionalWriter(_ProducerThread):
    """Runs one transaction at a time, each holding every append queued meanwhile."""

    def _new_producer(self) -> Producer:
        producer = Producer(self._config)
        producer.init_transactions(self._timeout_s)
        return producer

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
        records = [list(item.records) for item in batch]
        reports: list[list[Message | KafkaError | None]] = [[None] * len(item_records) for item_records in records]
        try:
            producer.begin_transaction()
            self._produce_all(producer, records, reports)
            if any(item.then is not None for item in batch):
                # Follow-ups name where the records landed: deliver those first, then produce them in this transaction.
                self._delivered(producer, reports)
                for item, item_records, item_reports in zip(batch, records, reports):
                    if item.then is not None:
                        follow_ups = list(item.then(_all_written(item_records, item_reports)))
                        start = len(item_records)
                        item_records += follow_ups
                        item_reports += [None] * len(follow_ups)
                        self._produce_all(producer, [item_records], [item_reports], start=start)
            for metadata, offsets in _merge_commits(batch, self._physical):
                producer.send_offsets_to_transaction(offsets, metadata, self._timeout_s)
            self._delivered(producer, reports)
            self._commit(producer)
        except BaseException as error:
            self._abort(producer, error)
            raise
        return [_all_written(item_records, item_reports) for item_records, item_reports in zip(records, reports)]

    def _produce_all(self, producer: Producer, records: list[list[OutgoingRecord]], reports: list[list], *, start: int = 0) -> None:
        for item_records, item_reports in zip(records, reports):
            for index in range(start, len(item_records)):
                self._produce(producer, item_records[index], functools.partial(_keep_report, item_reports, index))

    def _delivered(self, producer: Producer, reports: list[list[Message | KafkaError | None]]) -> None:
        """Wait for every record produced so far; raise if one was not delivered."""
        if producer.flush(self._timeout_s) > 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "records were not delivered in time"))
        for item_reports in reports:
            for report in item_reports:
                if not isinstance(report, Message):
                    raise KafkaException(report or KafkaError(KafkaError._FAIL, "no delivery report"))

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


class _PlainWriter(_ProducerThread):
    """Produces appends that need no transaction on an idempotent producer: a pass's records, then one flush.

    An append whose record was not delivered fails; one that timed out may still land later (a produce outside a
    transaction cannot be taken back), which its readers tolerate as they tolerate a redelivery.
    """

    _name = "kafka-log-plain-writer"

    def _new_producer(self) -> Producer:
        # One record per batch: Tansu 0.6.0 moves a partition's high watermark by one for a batch outside a
        # transaction, whatever its length (a transaction's marker sets it right), so the end offsets that reads
        # and fences stop at fell behind what was written (docs/kafka.md). Concurrent appends still share a request.
        # The log's producer settings, less the transactional ones (this producer makes no transactions).
        config = {key: value for key, value in self._config.items() if not key.startswith("transaction")}
        return Producer({**config, "batch.num.messages": 1})

    def _write(self, batch: list[_PendingAppend]) -> None:
        try:
            if self._producer is None:
                self._producer = self._new_producer()
            producer = self._producer
        except KafkaException as error:
            for item in batch:
                self._loop.call_soon_threadsafe(_fail, item.done, error)
            return
        reports: list[list[Message | KafkaError | None]] = [[None] * len(item.records) for item in batch]
        refused: dict[int, KafkaException] = {}
        for position, (item, item_reports) in enumerate(zip(batch, reports)):
            try:
                for index, record in enumerate(item.records):
                    self._produce(producer, record, functools.partial(_keep_report, item_reports, index))
            except KafkaException as error:  # refused at once (a producer in a fatal state, say)
                refused[position] = error
        producer.flush(self._timeout_s)
        for position, (item, item_reports) in enumerate(zip(batch, reports)):
            failed = next((report for report in item_reports if not isinstance(report, Message)), False)
            if position not in refused and failed is False:
                self._loop.call_soon_threadsafe(_settle, item.done, _all_written(item.records, item_reports))
                continue
            error = refused.get(position) or KafkaException(
                failed or KafkaError(KafkaError._MSG_TIMED_OUT, "the record was not delivered in time")
            )
            if error.args[0].fatal():  # the idempotent producer's sequence is broken (the broker lost its state, say)
                logger.error("the idempotent producer failed fatally (%s); starting a new one", error.args[0].str())
                self._producer = None
            self._loop.call_soon_threadsafe(_fail, item.done, error)


def _keep_report(reports: list, index: int, error: KafkaError | None, message: Message) -> None:
    reports[index] = error if error is not None else message


def _all_written(records: Sequence[OutgoingRecord], reports: Sequence[Message | KafkaError | None]) -> list[LogRecord]:
    return [_written(record, report) for record, report in zip(records, reports)]


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
