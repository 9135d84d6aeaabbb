"""The run watchdog ends runs whose worker fell silent, and only those."""

import asyncio
import logging

import pytest

from commands.catalog import COMMAND_TYPES, FinishRun
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope
from kernel.log import OutgoingRecord
from events.runs import AssistantDelta, GenerationStarted, RunFinished, RunHeartbeat, RunStarted
from events.topics import COMMANDS, RUN_EVENTS
from kernel.envelope import Actor
from events.values import Usage
from processors.watchdog import WATCHDOG_GROUP, RunWatchdog, WatchedRun, lapsed

ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))


@pytest.fixture
def log(embedded_log: EmbeddedLog) -> EmbeddedLog:
    return embedded_log


async def emit(log: EmbeddedLog, *events: object) -> None:
    await log.append([
        OutgoingRecord(topic=RUN_EVENTS, key=event.run_id, value=CODEC.encode(Envelope.wrap(event, key=event.run_id, actor=ACTOR)))
        for event in events
    ])


async def finish_commands(log: EmbeddedLog, conversation_id: str) -> list[FinishRun]:
    return [CODEC.decode(r.value).payload for r in await log.read(COMMANDS, key=conversation_id)]


def test_only_claimed_silent_unreported_runs_lapse() -> None:
    started = Envelope.wrap(RunStarted(run_id="r", conversation_id="c", turn_seq=2), key="r", actor=ACTOR)
    runs = {
        "queued": WatchedRun(run_id="queued", conversation_id="c", started=started, partition=0, first_offset=1, last_seen=0),
        "silent": WatchedRun(run_id="silent", conversation_id="c", started=started, partition=0, first_offset=2, claimed=True, last_seen=0),
        "alive": WatchedRun(run_id="alive", conversation_id="c", started=started, partition=0, first_offset=3, claimed=True, last_seen=9),
        "told": WatchedRun(run_id="told", conversation_id="c", started=started, partition=0, first_offset=4, claimed=True, reported=True),
    }
    assert [run.run_id for run in lapsed(runs, now=10, lease_s=5)] == ["silent"]


async def run_watchdog(log: EmbeddedLog, lease_s: float) -> asyncio.Task:
    task = asyncio.create_task(RunWatchdog(log=log, codec=CODEC, lease_s=lease_s).run())
    await asyncio.sleep(0.01)
    return task


async def test_a_silent_run_ends_failed_with_its_partial_text(log: EmbeddedLog) -> None:
    await emit(log, RunStarted(run_id="r1", conversation_id="c1", turn_seq=2),
               GenerationStarted(run_id="r1", worker_id="w", pool="p"),
               AssistantDelta(run_id="r1", index=0, text="Hello"), AssistantDelta(run_id="r1", index=1, text=" wor"))
    task = await run_watchdog(log, lease_s=0.2)
    try:
        for _ in range(50):
            if await finish_commands(log, "c1"):
                break
            await asyncio.sleep(0.05)
        [finish] = await finish_commands(log, "c1")
        assert (finish.status, finish.text) == ("failed", "Hello wor")
        assert finish.reason.startswith("interrupted")
    finally:
        task.cancel()


async def test_heartbeats_and_finished_runs_are_left_alone(log: EmbeddedLog) -> None:
    await emit(log, RunStarted(run_id="done", conversation_id="c2", turn_seq=2),
               GenerationStarted(run_id="done", worker_id="w", pool="p"),
               RunFinished(run_id="done", conversation_id="c2", turn_seq=2, status="completed", usage=Usage()),
               RunStarted(run_id="beating", conversation_id="c2", turn_seq=4),
               GenerationStarted(run_id="beating", worker_id="w", pool="p"))
    task = await run_watchdog(log, lease_s=0.3)
    try:
        for _ in range(8):
            await emit(log, RunHeartbeat(run_id="beating", worker_id="w"))
            await asyncio.sleep(0.1)
        assert await finish_commands(log, "c2") == []
    finally:
        task.cancel()


async def test_after_a_restart_the_watchdog_still_knows_the_open_runs(log: EmbeddedLog) -> None:
    await emit(log, RunStarted(run_id="old", conversation_id="c3", turn_seq=2),
               GenerationStarted(run_id="old", worker_id="w", pool="p"))
    first = await run_watchdog(log, lease_s=60)
    await asyncio.sleep(0.1)  # it commits its low-water mark
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await emit(log, *[RunStarted(run_id=f"noise{i}", conversation_id="cx", turn_seq=2) for i in range(3)])
    second = await run_watchdog(log, lease_s=0.2)
    try:
        for _ in range(50):
            if await finish_commands(log, "c3"):
                break
            await asyncio.sleep(0.05)
        [finish] = await finish_commands(log, "c3")
        assert finish.run_id == "old"
    finally:
        second.cancel()


class LeavingLog(EmbeddedLog):
    """The embedded log, with a Kafka member's way of stopping: closing a stream leaves its group (a round trip to
    the broker, here held until a commit has come), and the group's commits fail from then on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.left = False
        self.committed_after_leaving = asyncio.Event()

    async def consume(self, **kwargs):
        try:
            async for batch in super().consume(**kwargs):
                yield batch
        finally:
            self.left = True
            async with asyncio.timeout(10):
                await self.committed_after_leaving.wait()

    async def append(self, records, *, commit=None, **kwargs):
        if commit is not None and self.left:
            self.committed_after_leaving.set()
            raise RuntimeError("Commit failed: Broker: Unknown member")
        return await super().append(records, commit=commit, **kwargs)


async def test_a_sweep_that_fails_while_the_watchdog_stops_is_not_an_error(tmp_path, caplog) -> None:
    """Seen on every few Kafka fleets' stops: a traceback logged as an error for a commit that could only fail."""
    log = LeavingLog(path=tmp_path / "log.db")
    await log.start()
    try:
        await emit(log, RunStarted(run_id="r", conversation_id="c", turn_seq=2))
        task = await run_watchdog(log, lease_s=0.2)
        async with asyncio.timeout(10):
            while max((await log.committed_offsets(group=WATCHDOG_GROUP, topic=RUN_EVENTS)).values(), default=-1) < 0:
                await asyncio.sleep(0.01)  # a first sweep has committed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert log.committed_after_leaving.is_set()  # a sweep did commit while the stream was closing
    finally:
        await log.close()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
