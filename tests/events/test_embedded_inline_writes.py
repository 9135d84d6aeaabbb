"""Appends that need no fsync are written on the event loop when the writer thread is idle: never at the cost of
the loop waiting (for another process's lock, for a group's fsync), of the WAL growing, or of durable appends waiting."""

import asyncio
import sqlite3
import time
from pathlib import Path

from events.embedded import EmbeddedLog
from kernel.log import OutgoingRecord


def delta(index: int, *, size: int = 300) -> OutgoingRecord:
    return OutgoingRecord(topic="run-events", key=f"run_{index % 7}", value=b"d" * size)


async def test_another_process_holding_the_write_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    other = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a writer outside this process (say, a sqlite3 shell)
        append = asyncio.create_task(log.append([delta(1)], durable=False))
        started = time.monotonic()
        for _ in range(3):  # the append's first steps run in these yields: had it waited for the lock here, the loop
            await asyncio.sleep(0)  # would have stood still for the connection's busy timeout (seconds)
        assert time.monotonic() - started < 2 and not append.done()  # it waits, on the writer thread
        other.execute("COMMIT")
        written = await asyncio.wait_for(append, timeout=30)
        assert [record.value for record in await log.read("run-events", key="run_1")] == [written[0].value]
    finally:
        other.close()
        await log.close()


async def test_the_wal_stays_bounded_when_every_append_is_written_on_the_loop(tmp_path: Path) -> None:
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    try:
        for index in range(3_000):  # ~16 KiB of WAL frames each: ~48 MiB without checkpoints
            await log.append([delta(index, size=1_000)], durable=False)
        for _ in range(2):  # through the writer thread's queue twice: a checkpoint asked for meanwhile has run
            await log.append([OutgoingRecord(topic="commands", key="conv_1", value=b"c")])
        assert (tmp_path / "log.db-wal").stat().st_size <= 16 * 2**20  # the WAL is reused after each checkpoint
        assert len(await log.read("run-events", key="run_3")) == len(range(3, 3_000, 7))
    finally:
        await log.close()


async def test_a_stream_of_loop_appends_does_not_keep_durable_appends_waiting(tmp_path: Path) -> None:
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    streaming = True

    async def stream() -> int:
        count = 0
        while streaming:
            await log.append([delta(count)], durable=False)
            count += 1
        return count

    try:
        streams = [asyncio.create_task(stream()) for _ in range(4)]
        accepted = [
            await asyncio.wait_for(log.append([OutgoingRecord(topic="commands", key="conv_1", value=b"c%d" % n)]), timeout=30)
            for n in range(20)
        ]
        streaming = False
        assert all(await asyncio.gather(*streams))
        offsets = [written[0].offset for written in accepted]
        assert offsets == sorted(offsets) and len(await log.read("commands", key="conv_1")) == 20
    finally:
        streaming = False
        await log.close()
