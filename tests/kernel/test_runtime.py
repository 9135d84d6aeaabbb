"""The processor runtime: reactions and progress land together; poison goes to dead letters."""

import asyncio
from collections.abc import Sequence

import pytest

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope
from kernel.log import OutgoingRecord
from kernel.dead_letters import DeadLetter
from events.runs import AssistantDelta, RunHeartbeat
from kernel.dead_letters import DEAD_LETTERS
from kernel.envelope import Actor
from kernel import runtime
from kernel.runtime import MAX_ATTEMPTS, Delivery, Processor, encode, run_processor

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")


@pytest.fixture
def log(embedded_log: EmbeddedLog) -> EmbeddedLog:
    return embedded_log


def beat(run_id: str) -> OutgoingRecord:
    return encode(CODEC, Envelope.wrap(RunHeartbeat(run_id=run_id, worker_id="w"), key=run_id, actor=ACTOR), topic="in")


def echo_processor(seen: list[str], *, fail_on: str | None = None) -> Processor:
    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs = []
        for delivery in deliveries:
            run_id = delivery.envelope.payload.run_id
            if run_id == fail_on:
                raise ValueError(f"cannot handle {run_id}")
            seen.append(run_id)
            outputs.append(encode(CODEC, delivery.envelope, topic="out"))
        return outputs

    return Processor(group="echo", topics=("in",), react=react)


async def settle(log: EmbeddedLog, group: str, topic: str) -> None:
    for _ in range(100):
        if await log.committed(group=group, topic=topic) >= await log.end_offset(topic):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the processor did not catch up")


async def test_reactions_are_appended_with_the_commit(log: EmbeddedLog) -> None:
    seen: list[str] = []
    await log.append([beat("a"), beat("b")])
    task = asyncio.create_task(run_processor(echo_processor(seen), log=log, codec=CODEC))
    await settle(log, "echo", "in")
    task.cancel()
    assert seen == ["a", "b"]
    assert [CODEC.decode(r.value).payload.run_id for r in await log.read("out", key="a")] == ["a"]
    # A restarted processor resumes after its commit: nothing is handled twice.
    again: list[str] = []
    await log.append([beat("c")])
    task = asyncio.create_task(run_processor(echo_processor(again), log=log, codec=CODEC))
    await settle(log, "echo", "in")
    task.cancel()
    assert again == ["c"]


async def test_undecodable_and_failing_messages_are_dead_lettered(log: EmbeddedLog) -> None:
    seen: list[str] = []
    await log.append([beat("ok1"), OutgoingRecord(topic="in", key="bad", value=b"garbage"), beat("poison"), beat("ok2")])
    task = asyncio.create_task(run_processor(echo_processor(seen, fail_on="poison"), log=log, codec=CODEC))
    await settle(log, "echo", "in")
    task.cancel()
    assert seen.count("ok1") >= 1 and seen[-1] == "ok2"
    letters = {}
    for key in ("bad", "poison"):
        [record] = await log.read(DEAD_LETTERS, key=key)
        letters[key] = CODEC.decode(record.value).payload
    assert all(isinstance(letter, DeadLetter) for letter in letters.values())
    assert "magic" in letters["bad"].reason and letters["bad"].value == b"garbage"
    assert "cannot handle poison" in letters["poison"].reason
    outputs = {CODEC.decode(r.value).payload.run_id for key in ("ok1", "ok2", "poison") for r in await log.read("out", key=key)}
    assert outputs == {"ok1", "ok2"}


async def test_a_lone_message_that_keeps_failing_is_dead_lettered_after_its_attempts(log: EmbeddedLog) -> None:
    seen: list[str] = []
    await log.append([beat("poison")])
    task = asyncio.create_task(run_processor(echo_processor(seen, fail_on="poison"), log=log, codec=CODEC, retry_delay_s=0.01))
    try:
        await settle(log, "echo", "in")
    finally:
        task.cancel()
    [record] = await log.read(DEAD_LETTERS, key="poison")
    assert f"({MAX_ATTEMPTS} attempts)" in CODEC.decode(record.value).payload.reason


async def test_a_processor_is_handed_only_the_types_it_reacts_to_and_commits_past_the_others(log: EmbeddedLog) -> None:
    delta = Envelope.wrap(AssistantDelta(run_id="a", index=0, text="hi"), key="a", actor=ACTOR)
    await log.append([
        beat("a"), encode(CODEC, delta, topic="in"), OutgoingRecord(topic="in", key="bad", value=b"garbage"), beat("b"),
    ])
    handed: list[object] = []

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        handed.extend(delivery.envelope.payload for delivery in deliveries)
        return []

    processor = Processor(group="beats", topics=("in",), react=react, reacts_to=frozenset({"RunHeartbeat"}))
    task = asyncio.create_task(run_processor(processor, log=log, codec=CODEC))
    try:
        await settle(log, "beats", "in")
    finally:
        task.cancel()
    assert [event.run_id for event in handed] == ["a", "b"]
    # Bytes whose type cannot be read are decoded as before: junk is still dead-lettered.
    [record] = await log.read(DEAD_LETTERS, key="bad")
    assert "magic" in CODEC.decode(record.value).payload.reason


def delta(index: int) -> OutgoingRecord:
    return encode(CODEC, Envelope.wrap(AssistantDelta(run_id="a", index=index, text="x"), key="a", actor=ACTOR), topic="in")


async def caught_up(log: EmbeddedLog, group: str, topic: str, *, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await log.committed(group=group, topic=topic) < await log.end_offset(topic):
        assert asyncio.get_running_loop().time() < deadline, "the position was never committed"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("delay_s", [0.5, 60.0])
async def test_batches_that_deliver_nothing_cost_no_write_of_their_own(log: EmbeddedLog, monkeypatch, delay_s) -> None:
    """Every token delta wakes each consumer of `run-events`; one that skips it must not pay a log write for it.
    Its position is committed after a delay (0.5 s) or by the next batch that is delivered (the delay 60 s)."""
    monkeypatch.setattr(runtime, "IDLE_COMMIT_DELAY_S", delay_s)
    append = log.append
    writes: list[int] = []

    async def counted(records, **options):
        writes.append(len(records))
        return await append(records, **options)

    monkeypatch.setattr(log, "append", counted)  # the real log, its writes counted
    handed: list[str] = []

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        handed.extend(delivery.envelope.payload.run_id for delivery in deliveries)
        return []

    processor = Processor(group="beats", topics=("in",), react=react, reacts_to=frozenset({"RunHeartbeat"}))
    task = asyncio.create_task(run_processor(processor, log=log, codec=CODEC))
    try:
        for index in range(5):
            await append([delta(index)])
        if delay_s > 10:
            await append([beat("a")])  # delivered: its write carries the position past the deltas before it
        await caught_up(log, "beats", "in")
        assert writes == [0] and handed == ([] if delay_s < 10 else ["a"])
    finally:
        task.cancel()
