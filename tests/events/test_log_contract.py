"""The event log contract: every adapter of `events.log.EventLog` passes these."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.embedded import DataDirectoryBusy, EmbeddedLog
from events.log import ConsumerCommit, EventLog, OutgoingRecord


@pytest.fixture(params=["embedded"])
async def log(request, tmp_path: Path) -> AsyncIterator[EventLog]:
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
    assert [r.value for r in written] == [b"1", b"2", b"3"]
    assert [r.offset for r in written] == sorted(r.offset for r in written)
    assert len({r.offset for r in written}) == 3


async def test_read_by_key_keeps_per_key_order_and_bounds(log: EventLog) -> None:
    for index in range(5):
        await log.append([record("t", "a", b"a%d" % index), record("t", "b", b"b%d" % index)])
    a_records = await log.read("t", key="a")
    assert [r.value for r in a_records] == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    middle = await log.read("t", key="a", after=a_records[0].offset, before=a_records[3].offset)
    assert [r.value for r in middle] == [b"a1", b"a2"]
    assert await log.read("t", key="nobody") == []
    assert [r.value for r in await log.read("t", key="a", limit=2)] == [b"a0", b"a1"]


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


async def test_cancelled_follower_leaves_no_waiter(log: EventLog) -> None:
    follower = log.follow("runs", key="idle")
    task = asyncio.create_task(anext(follower))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await log.append([record("runs", "idle", b"late")])  # must not fail on a stale waiter


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
