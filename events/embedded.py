"""The embedded event log: a durable single-node log in one SQLite file (WAL, fsync on durable commits).

One writer thread group-commits every append queued while the previous commit was flushing, so
concurrent appends share one fsync. An append that needs no fsync (a token delta, a consumer's position)
is written on the event loop's own writing connection when the writer thread is idle: a small SQLite
transaction costs less than the two thread hops it saves. WAL checkpoints run on the writer thread only,
never inside a commit on the event loop. Reads run on the event loop's reading connection (WAL readers
never block the writer). Subscribers are woken in-process by the commit itself: no sleep polling.
Every topic has a single partition (0); offsets are global and increase across topics.

Retention (`events/retention.py` decides what): `trim` deletes chosen old records in small transactions on
the same writer thread, between group commits, so appends wait at most one bounded batch; freed pages go
back to the filesystem by incremental vacuum. A full disk (SQLITE_FULL) fails the whole group with
`LogStorageFull` (a 503 with Retry-After at the API) and writes nothing of it; the next append tries again.
"""

import asyncio
import contextvars
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, time_ns

from kernel.errors import Unavailable
from kernel.log import QUIET_WAKE_S, ConsumerCommit, FollowUps, LogRecord, OutgoingRecord
from kernel.metrics import LOG_APPEND_SECONDS

logger = logging.getLogger(__name__)
_APPENDS = {durable: LOG_APPEND_SECONDS.labels(log="embedded", durable=str(durable).lower()) for durable in (True, False)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    timestamp_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_topic ON records (topic, log_offset);
CREATE INDEX IF NOT EXISTS records_by_key ON records (topic, key, log_offset);
CREATE TABLE IF NOT EXISTS trim_positions (
    topic TEXT PRIMARY KEY,
    log_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic)
);
"""


# Appends written on the event loop between two WAL checkpoints (each a transaction of a few pages: about SQLite's
# own 1,000-page interval). Its automatic checkpoint is off on that connection: it would run inside a commit there.
_CHECKPOINT_EVERY = 256
# The writer thread's signal to checkpoint (put on its queue).
_CHECKPOINT = object()

# Pages handed back to the filesystem after each trim batch: bounded, like the batch (4 MiB of 4 KiB pages).
_VACUUM_PAGES = 1_024
# How long a client should wait after a full disk: an operator has to free space first.
FULL_RETRY_AFTER_S = 30
# Free space that ends a full-disk outage (readiness reports the log until then), whatever small appends still fit.
_ROOM_AGAIN_BYTES = 4 * 2**20


class DataDirectoryBusy(RuntimeError):
    """Another process holds this log (the embedded log is single-process)."""


class LogStorageFull(Unavailable):
    """The log's disk (or file size limit) is full: nothing of the append was written; retry once space is freed."""


@dataclass(kw_only=True)
class _PendingTrim:
    topic: str
    offsets: Sequence[int]
    through: int
    done: asyncio.Future


@dataclass(kw_only=True)
class _PendingAppend:
    records: Sequence[OutgoingRecord]
    durable: bool
    commit: ConsumerCommit | None
    done: asyncio.Future
    then: Callable[[Sequence[LogRecord]], Sequence[OutgoingRecord]] | None = None  # run in the caller's context


class EmbeddedLog:
    """The `EventLog` port on SQLite."""

    def __init__(self, *, path: Path, quiet_wake_s: float = QUIET_WAKE_S) -> None:
        self._path = path
        self._quiet_wake_s = quiet_wake_s
        self._pending: queue.SimpleQueue[_PendingAppend | _PendingTrim | object | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_offset: dict[str, int] = {}
        self._waiters: dict[tuple[str, str | None], list[asyncio.Future]] = defaultdict(list)
        # Consumers that wait for a record they want, per topic (`consume`'s `wake_for`): the test and the waiter.
        self._wanted_waiters: dict[str, list[tuple[Callable[[LogRecord], bool], asyncio.Future]]] = defaultdict(list)
        # The writer connection's `PRAGMA synchronous`, set only when a group needs another (the writer thread's own).
        self._synchronous: str | None = None
        # Held while a connection writes: by the writer thread for its groups and trims, and by an append written
        # on the event loop (`_write_inline`), which only ever tries it, so the loop never waits for a group's fsync.
        self._write_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None  # the event loop's writing connection
        self._inline_since_checkpoint = 0  # guarded by `_write_lock`
        # Set while the writer thread waits for the lock: the loop then queues its appends behind, so a stream of
        # deltas written on the loop cannot keep a group of durable appends (a turn's acceptance) waiting.
        self._writer_waiting = False
        # Since when appends fail for want of space (None: the last write fit); readiness reports it.
        self.full_since: datetime | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_file)
            self._lock_file = None
            raise DataDirectoryBusy(f"another turnlog process is using {self._path}") from None
        self._loop = asyncio.get_running_loop()
        writer = _connect(self._path)
        writer.executescript(_SCHEMA)
        self._reader = _connect(self._path)
        self._inline = _connect(self._path)
        self._inline.execute("PRAGMA busy_timeout = 0")  # another process writing: leave it to the writer thread
        self._inline.execute("PRAGMA synchronous = NORMAL")
        self._inline.execute("PRAGMA wal_autocheckpoint = 0")
        self._writer = threading.Thread(target=self._write_forever, args=(writer,), name="embedded-log-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._pending.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()
        for entries in self._wanted_waiters.values():
            for _, waiter in entries:
                if not waiter.done():
                    waiter.cancel()
        self._wanted_waiters.clear()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    # -- writes ------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[OutgoingRecord],
        *,
        durable: bool = True,
        commit: ConsumerCommit | None = None,
        then: FollowUps | None = None,
    ) -> list[LogRecord]:
        if self._writer is None or self._loop is None:
            raise RuntimeError("the log is not started")
        started = perf_counter()
        done = self._loop.create_future()
        follow_ups = functools.partial(contextvars.copy_context().run, then) if then is not None else None
        item = _PendingAppend(records=records, durable=durable, commit=commit, done=done, then=follow_ups)
        if durable or not self._write_inline(item):
            self._pending.put(item)
            written = await done
        else:
            await asyncio.sleep(0)  # a batch of such appends still lets the loop's other tasks run between them
            written = done.result()
        _APPENDS[durable].observe(perf_counter() - started)
        return written

    async def commit(self, commit: ConsumerCommit) -> None:
        await self.append((), durable=False, commit=commit)

    def _write_forever(self, connection: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._pending.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while True:  # group commit: take everything queued meanwhile
                    try:
                        item = self._pending.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                appends = [item for item in batch if isinstance(item, _PendingAppend)]
                self._writer_waiting = True
                with self._write_lock:
                    self._writer_waiting = False
                    if appends:
                        self._write_batch(connection, appends)
                    for item in batch:
                        if isinstance(item, _PendingTrim):
                            self._write_trim(connection, item)
                    if any(item is _CHECKPOINT for item in batch):
                        self._checkpoint(connection)
                if stop:
                    return
        finally:
            with self._write_lock:
                connection.close()

    def _write_inline(self, item: _PendingAppend) -> bool:
        """Write a non-durable append here, on the event loop, if no other write is under way; whether it did.

        Its outcome is set on `item.done` (written, or the storage error). Not written when the writer thread has work
        or holds the lock (a group commit or its fsync in progress), or another process holds SQLite's write lock.
        """
        if self._inline is None or self._writer_waiting or not self._pending.empty():
            return False  # behind what is queued, in the writer thread's next group
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            try:
                results = self._write_group(self._inline, [item])
            except Exception as error:
                if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                    return False  # another process writes: the writer thread waits for it, the loop must not
                _fail(item.done, error)
                return True
            self._inline_since_checkpoint += 1
            if self._inline_since_checkpoint == _CHECKPOINT_EVERY:
                self._pending.put(_CHECKPOINT)
        finally:
            self._write_lock.release()
        self._committed([item], results)
        return True

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        """Copy the WAL back into the database (PASSIVE: waits for no reader), on the writer thread."""
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:  # a full disk, say: the next checkpoint tries again
            logger.warning("checkpointing the event log %s failed: %s", self._path, error)
        self._inline_since_checkpoint = 0

    def _write_batch(self, connection: sqlite3.Connection, batch: list[_PendingAppend]) -> None:
        """The writer thread's group commit: its outcome reaches the appends on the event loop."""
        try:
            self._set_synchronous(connection, "FULL" if any(item.durable for item in batch) else "NORMAL")
            results = self._write_group(connection, batch)
        except Exception as error:
            for item in batch:
                self._loop.call_soon_threadsafe(_fail, item.done, error)
            return
        self._loop.call_soon_threadsafe(self._committed, batch, results)

    def _write_group(self, connection: sqlite3.Connection, batch: list[_PendingAppend]) -> list[list[LogRecord]]:
        """Write appends in one transaction: all of them, or (raising) none; what each wrote. Under `_write_lock`."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            results: list[list[LogRecord]] = []
            timestamp_us = time_ns() // 1000
            timestamp = datetime.fromtimestamp(timestamp_us / 1_000_000, UTC)
            for item in batch:
                written = self._insert(connection, item.records, timestamp_us=timestamp_us, timestamp=timestamp)
                if item.then is not None:  # built from where the records landed, written with them
                    written += self._insert(connection, item.then(written), timestamp_us=timestamp_us, timestamp=timestamp)
                if item.commit is not None:
                    connection.executemany(
                        "INSERT INTO consumer_offsets (group_id, topic, log_offset) VALUES (?, ?, ?) "
                        "ON CONFLICT (group_id, topic) DO UPDATE SET log_offset = max(log_offset, excluded.log_offset)",
                        [(item.commit.group, position.topic, offset) for position, offset in item.commit.offsets.items()],
                    )
                results.append(written)
            connection.execute("COMMIT")
        except Exception as error:  # the whole group fails together; nothing of it was written
            _roll_back(connection)
            converted = _storage_error(error)
            if isinstance(converted, LogStorageFull) and self.full_since is None:
                self.full_since = datetime.now(UTC)
                logger.error("the event log %s is out of space (SQLITE_FULL): appends fail until space is freed", self._path)
            if converted is error:
                raise
            raise converted from error
        if self.full_since is not None and _has_room(self._path):
            logger.warning("the event log %s has space again: appends succeed", self._path)
            self.full_since = None
        return results

    @staticmethod
    def _insert(
        connection: sqlite3.Connection, records: Sequence[OutgoingRecord], *, timestamp_us: int, timestamp: datetime
    ) -> list[LogRecord]:
        written = []
        for record in records:
            cursor = connection.execute(
                "INSERT INTO records (topic, key, value, timestamp_us) VALUES (?, ?, ?, ?)",
                (record.topic, record.key, record.value, timestamp_us),
            )
            written.append(
                LogRecord(
                    topic=record.topic, partition=0, offset=cursor.lastrowid, key=record.key, value=record.value,
                    timestamp=timestamp,
                )
            )
        return written

    def _write_trim(self, connection: sqlite3.Connection, item: _PendingTrim) -> None:
        try:
            self._set_synchronous(connection, "NORMAL")  # a trim lost to a crash is simply done again
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "DELETE FROM records WHERE log_offset = ? AND topic = ?", [(offset, item.topic) for offset in item.offsets]
            )
            connection.execute(
                "INSERT INTO trim_positions (topic, log_offset) VALUES (?, ?) "
                "ON CONFLICT (topic) DO UPDATE SET log_offset = max(log_offset, excluded.log_offset)",
                (item.topic, item.through),
            )
            connection.execute("COMMIT")
            # A page per step of the statement: executescript steps it to the end, execute() only once.
            connection.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES});")
        except Exception as error:
            _roll_back(connection)
            self._loop.call_soon_threadsafe(_fail, item.done, _storage_error(error))
            return
        self._loop.call_soon_threadsafe(_resolve, item.done, len(item.offsets))

    def _set_synchronous(self, connection: sqlite3.Connection, level: str) -> None:
        if self._synchronous != level:
            connection.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level

    def _committed(self, batch: list[_PendingAppend], results: list[list[LogRecord]]) -> None:
        """Runs on the event loop: resolve the appends, then wake whoever waits for these topics and keys."""
        # In the order the records were written, so a record's readers wake before those of the records after it: a
        # turn's prompt builder (conversation-events) before the reply to its command (command-outcomes).
        woken: dict[tuple[str, str | None], None] = {}
        for item, written in zip(batch, results):
            if not item.done.done():
                item.done.set_result(written)
            for record in written:
                self._last_offset[record.topic] = record.offset
                woken[(record.topic, None)] = None
                woken[(record.topic, record.key)] = None
        for waiter_key in woken:
            for waiter in self._waiters.pop(waiter_key, ()):
                if not waiter.done():
                    waiter.set_result(None)
        if self._wanted_waiters:
            for written in results:
                for record in written:
                    for wanted, waiter in self._wanted_waiters.get(record.topic, ()):
                        if not waiter.done() and wanted(record):
                            waiter.set_result(None)

    # -- retention ---------------------------------------------------------------------------

    async def trim_candidates(self, topic: str, *, before: datetime, limit: int) -> list[LogRecord]:
        """Up to `limit` records of `topic` after its trim position, written before `before`, oldest first.

        The topic's newest record is never one: its offset is the topic's end, which readers compare with.
        """
        (position,) = self._connection().execute(
            "SELECT coalesce((SELECT log_offset FROM trim_positions WHERE topic = ?), -1)", (topic,)
        ).fetchone()
        end = await self.end_offset(topic)
        before_us = int(before.timestamp() * 1_000_000)
        candidates = []
        # Append times grow with offsets (one writer), so the first record too young ends the scan.
        for record in self._select_topic(topic, after=position, limit=limit):
            if record.offset >= end or _timestamp_us(record) >= before_us:
                break
            candidates.append(record)
        return candidates

    async def trim(self, topic: str, *, offsets: Sequence[int], through: int) -> int:
        """Delete the records of `topic` at `offsets` and note that it was trimmed through `through` (one transaction).

        It queues behind the appends already waiting, and the appends queued after it wait only for this batch.
        """
        if self._writer is None or self._loop is None:
            raise RuntimeError("the log is not started")
        done = self._loop.create_future()
        self._pending.put(_PendingTrim(topic=topic, offsets=tuple(offsets), through=through, done=done))
        return await done

    async def rewrite_values(self, transform: Callable[[bytes], bytes | None], *, batch: int = 500) -> int:
        """Replace each record's value with `transform(value)` where that is not None; returns how many changed.

        Maintenance for a stopped server (`turnlog reseal`): the log is immutable to everything else. The old
        values are overwritten on disk, not only superseded (secure_delete, then a checkpoint that truncates the
        WAL), since the point of a rewrite is that the old bytes are gone.
        """
        if self._writer is None:
            raise RuntimeError("the log is not started")
        return await asyncio.to_thread(self._rewrite_values, transform, batch)

    def _rewrite_values(self, transform: Callable[[bytes], bytes | None], batch: int) -> int:
        connection = _connect(self._path)
        try:
            connection.execute("PRAGMA secure_delete = ON")  # freed cells and pages are zeroed, not left behind
            connection.execute("PRAGMA synchronous = FULL")
            changed, after = 0, -1
            while True:
                rows = connection.execute(
                    "SELECT log_offset, value FROM records WHERE log_offset > ? ORDER BY log_offset LIMIT ?", (after, batch)
                ).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                updates = [(new, offset) for offset, value in rows if (new := transform(bytes(value))) is not None]
                if updates:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.executemany("UPDATE records SET value = ? WHERE log_offset = ?", updates)
                    connection.execute("COMMIT")
                    changed += len(updates)
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return changed
        finally:
            connection.close()

    def file_pages(self) -> tuple[int, int]:
        """The log file's pages: in all, and free (freed by trims, not yet handed back to the filesystem)."""
        connection = self._connection()
        return connection.execute("PRAGMA page_count").fetchone()[0], connection.execute("PRAGMA freelist_count").fetchone()[0]

    # -- reads -------------------------------------------------------------------------------

    async def consume(
        self, *, group: str, topics: Sequence[str], max_batch: int = 500, linger_s: float = 0.0,
        wake_for: Callable[[LogRecord], bool] | None = None, background: bool = False,  # a wait here costs nothing
    ) -> AsyncIterator[list[LogRecord]]:
        positions = {topic: await self.committed(group=group, topic=topic) for topic in topics}
        while True:
            batch = self._select_after(topics, positions, max_batch)
            if not batch:
                await self._wait_for_any(topics, positions)
                continue
            if wake_for is not None and len(batch) < max_batch and not any(map(wake_for, batch)):
                # Only records the consumer skips (a run's token deltas): let them gather rather than wake it for
                # each; the next record it wants, or the quiet interval, delivers them together.
                await self._wait_for_wanted(topics, wake_for, timeout_s=self._quiet_wake_s)
                batch = self._select_after(topics, positions, max_batch)
            if linger_s > 0 and len(batch) < max_batch:
                await asyncio.sleep(linger_s)
                batch = self._select_after(topics, positions, max_batch)
            for record in batch:
                positions[record.topic] = max(positions[record.topic], record.offset)
            yield batch

    def _select_after(self, topics: Sequence[str], positions: dict[str, int], limit: int) -> list[LogRecord]:
        batch: list[LogRecord] = []
        for topic in topics:
            batch.extend(self._select_topic(topic, after=positions[topic], limit=limit))
        batch.sort(key=lambda record: record.offset)
        return batch[:limit]

    async def read(
        self, topic: str, *, key: str, after: int = -1, before: int | None = None, limit: int | None = None,
        since: datetime | None = None,  # unused: the records are indexed by key
        through: Callable[[LogRecord], bool] | None = None,
    ) -> list[LogRecord]:
        rows = self._connection().execute(
            "SELECT log_offset, key, value, timestamp_us FROM records "
            "WHERE topic = ? AND key = ? AND log_offset > ? AND log_offset < ? ORDER BY log_offset LIMIT ?",
            (topic, key, after, before if before is not None else 2**63 - 1, -1 if limit is None else limit),
        )
        records = [_record(topic, row) for row in rows]
        if through is not None:
            last = next((index for index, record in enumerate(records) if through(record)), len(records) - 1)
            del records[last + 1:]
        return records

    async def follow(
        self, topic: str, *, key: str | None = None, after: int = -1, background: bool = False  # every follow here is woken by appends: no hint needed
    ) -> AsyncIterator[LogRecord]:
        position = after
        while True:
            if key is None:
                records = self._select_topic(topic, after=position, limit=500)
            else:
                records = await self.read(topic, key=key, after=position)
            for record in records:
                position = record.offset
                yield record
            if not records:
                await self._wait(topic, key)

    async def partition_of(self, topic: str, *, key: str) -> int:
        return 0  # one partition per topic

    async def end_offset(self, topic: str, *, key: str | None = None) -> int:
        # Read from the file, not only from the commit notices: a reader can see a commit before its notice reaches
        # the loop (the writer thread may be descheduled in between), and the read-your-writes fence must count
        # every record any reader was given. The remembered end keeps it from moving back after a trim.
        row = self._connection().execute("SELECT max(log_offset) FROM records WHERE topic = ?", (topic,)).fetchone()
        end = max(self._last_offset.get(topic, -1), row[0] if row[0] is not None else -1)
        self._last_offset[topic] = end
        return end

    async def committed(self, *, group: str, topic: str, key: str | None = None) -> int:
        row = self._connection().execute(
            "SELECT log_offset FROM consumer_offsets WHERE group_id = ? AND topic = ?", (group, topic)
        ).fetchone()
        return row[0] if row else -1

    async def readable(self, topic: str, *, key: str, offset: int) -> bool:
        return offset <= await self.end_offset(topic)  # a commit is visible to every reader at once

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {0: await self.end_offset(topic)}

    async def committed_offsets(self, *, group: str, topic: str) -> dict[int, int]:
        return {0: await self.committed(group=group, topic=topic)}

    async def lag(self, *, group: str, topic: str) -> int:
        # Offsets are global across topics here: count the records (an index range, as long as the lag).
        row = self._connection().execute(
            "SELECT count(*) FROM records WHERE topic = ? AND log_offset > coalesce("
            "(SELECT log_offset FROM consumer_offsets WHERE group_id = ? AND topic = ?), -1)",
            (topic, group, topic),
        ).fetchone()
        return row[0]

    def _select_topic(self, topic: str, *, after: int, limit: int) -> list[LogRecord]:
        rows = self._connection().execute(
            "SELECT log_offset, key, value, timestamp_us FROM records "
            "WHERE topic = ? AND log_offset > ? ORDER BY log_offset LIMIT ?",
            (topic, after, limit),
        )
        return [_record(topic, row) for row in rows]

    async def _wait(self, topic: str, key: str | None) -> None:
        """Sleep until the next commit touching `topic` (and `key`).

        Callers read, find nothing, and call this with no await in between, so no commit can
        slip through the gap: commits are delivered by callbacks on this same event loop.
        """
        await self._await_waiter([(topic, key)])

    async def _wait_for_any(self, topics: Sequence[str], positions: dict[str, int]) -> None:
        for topic in topics:
            if await self.end_offset(topic) > positions[topic]:
                return
        await self._await_waiter([(topic, None) for topic in topics])

    async def _wait_for_wanted(self, topics: Sequence[str], wanted: Callable[[LogRecord], bool], *, timeout_s: float) -> None:
        """Sleep until a commit brings a record of `topics` that `wanted` accepts, or for `timeout_s`."""
        waiter = self._loop.create_future()
        entry = (wanted, waiter)
        for topic in topics:
            self._wanted_waiters[topic].append(entry)
        try:
            await asyncio.wait((waiter,), timeout=timeout_s)
        finally:
            for topic in topics:
                _unregister(self._wanted_waiters, topic, entry)

    async def _await_waiter(self, waiter_keys: list[tuple[str, str | None]]) -> None:
        waiter = self._loop.create_future()
        for waiter_key in waiter_keys:
            self._waiters[waiter_key].append(waiter)
        try:
            await waiter
        finally:  # a cancelled follower (a closed stream) must not stay registered
            if not waiter.done():
                for waiter_key in waiter_keys:
                    _unregister(self._waiters, waiter_key, waiter)

    def _connection(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the log is not started")
        return self._reader


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Trimmed pages go back to the filesystem. Only a new file takes this, and only before WAL is on; an older
    # file keeps reusing its freed pages instead, so it stops growing all the same (docs/architecture.md).
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back to 64 MiB after a checkpoint
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def _record(topic: str, row: tuple) -> LogRecord:
    offset, key, value, timestamp_us = row
    return LogRecord(
        topic=topic,
        partition=0,
        offset=offset,
        key=key,
        value=bytes(value),
        timestamp=datetime.fromtimestamp(timestamp_us / 1_000_000, UTC),
    )


def _unregister(registry: dict, key: object, entry: object) -> None:
    """Take a waiter's entry off `registry[key]`, and the key with it once nothing waits there."""
    entries = registry.get(key)
    if entries and entry in entries:
        entries.remove(entry)
        if not entries:
            del registry[key]


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _resolve(future: asyncio.Future, result: object) -> None:
    if not future.done():
        future.set_result(result)


def _timestamp_us(record: LogRecord) -> int:
    return int(record.timestamp.timestamp() * 1_000_000)


def _has_room(path: Path) -> bool:
    """Whether the log's filesystem has room again: a small append can fit in a full disk's WAL, so its success alone
    does not say so."""
    stats = os.statvfs(path.parent)
    return stats.f_bavail * stats.f_frsize >= _ROOM_AGAIN_BYTES


def _roll_back(connection: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it may, after SQLITE_FULL)."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing of it was committed either way


def _storage_error(error: Exception) -> Exception:
    """SQLITE_FULL (the disk, or a file size limit) as a typed 503; every other error as it is."""
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return LogStorageFull(
            detail="the event log's disk is full, so nothing was written; retry later (operators: free space on its volume)",
            retry_after_s=FULL_RETRY_AFTER_S,
        )
    return error
