"""The embedded log on a disk that fills up: a group that does not fit is refused whole, and appends work again once
space is freed. The disk is real: a size-limited tmpfs (mounting one needs root; the test is skipped without)."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.embedded import FULL_RETRY_AFTER_S, EmbeddedLog, LogStorageFull
from kernel.errors import Unavailable
from kernel.log import ConsumerCommit, OutgoingRecord, TopicPartition


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def records(count: int, *, size: int = 16 * 1024) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic="t", key=f"k{index}", value=b"x" * size) for index in range(count)]


@pytest.mark.parametrize("durable", [True, False], ids=["durable (the writer thread)", "not durable (on the event loop)"])
async def test_a_group_that_does_not_fit_is_refused_whole_and_the_log_recovers(small_disk: Path, durable: bool) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (512 * 1024))  # what the operator frees later
    log = EmbeddedLog(path=small_disk / "log.db")
    await log.start()
    try:
        landed = 0
        with pytest.raises(LogStorageFull) as full:
            while True:
                commit = ConsumerCommit(group="g", offsets={TopicPartition(topic="t", partition=0): landed})
                await log.append(records(8), commit=commit, durable=durable)
                landed = await log.end_offset("t")
        assert isinstance(full.value, Unavailable) and full.value.retry_after_s == FULL_RETRY_AFTER_S
        end, committed, stored = await log.end_offset("t"), await log.committed(group="g", topic="t"), await count(log)
        assert stored % 8 == 0 and committed < end  # whole groups only; the refused group's commit did not land
        with pytest.raises(LogStorageFull):  # still full: refused again, nothing of it written
            await log.append(records(8), commit=ConsumerCommit(group="g", offsets={TopicPartition(topic="t", partition=0): end}),
                             durable=durable)
        assert (await count(log), await log.committed(group="g", topic="t")) == (stored, committed)

        ballast.unlink()
        written = await log.append(records(8), durable=durable)
        assert [record.offset for record in written] == list(range(written[0].offset, written[0].offset + 8))
        assert written[0].offset > end
    finally:
        await log.close()


async def count(log: EmbeddedLog) -> int:
    """The records stored, read back from the file (not the log's cached end offset)."""
    return sum([len(await log.read("t", key=f"k{index}")) for index in range(8)])
