"""The inference worker against the real embedded log and the scripted engine."""

import asyncio
import contextlib

import pytest

from commands.catalog import COMMAND_TYPES, FinishRun
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.conversation import RunCancellationRequested
from events.embedded import EmbeddedLog, LogStorageFull
from kernel.envelope import Envelope
from kernel.log import OutgoingRecord
from kernel.dead_letters import DeadLetter
from events.runs import AssistantDelta, GenerationStarted, InferenceRequested, UsageRecorded
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS, USAGE, inference_topic
from kernel.dead_letters import DEAD_LETTERS
from kernel.envelope import Actor
from events.values import ChatMessage
from inference.openai_compatible import OpenAICompatibleEngine
from inference.pools import PoolConfig
from inference.scripted import ScriptedEngine
from inference.worker import InferenceWorker

ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))


@pytest.fixture
def log(embedded_log: EmbeddedLog) -> EmbeddedLog:
    return embedded_log


async def request(log: EmbeddedLog, run_id: str, question: str = "why is the sky blue") -> None:
    payload = InferenceRequested(run_id=run_id, conversation_id=f"conv_{run_id}", turn_seq=2, pool="interactive",
                                 messages=(ChatMessage(role="user", content=question),), max_output_tokens=64)
    envelope = Envelope.wrap(payload, key=run_id, actor=ACTOR)
    await log.append([OutgoingRecord(topic=inference_topic("interactive"), key=run_id, value=CODEC.encode(envelope))])


async def next_payload(log: EmbeddedLog, topic: str, kind: type, *, key: str | None = None, timeout: float = 5.0):
    follower = log.follow(topic, key=key)
    try:
        async with asyncio.timeout(timeout):
            async for record in follower:
                payload = CODEC.decode(record.value).payload
                if isinstance(payload, kind):
                    return payload
    finally:
        await follower.aclose()


async def payloads(log: EmbeddedLog, topic: str, key: str) -> list:
    return [CODEC.decode(record.value).payload for record in await log.read(topic, key=key)]


@pytest.fixture
async def start_worker(log: EmbeddedLog):
    tasks = []

    async def start(engine: ScriptedEngine) -> InferenceWorker:
        worker = InferenceWorker(log=log, codec=CODEC, engine=engine, max_tokens_per_delta=4, max_delta_delay_s=0.05)
        tasks.append(asyncio.create_task(worker.run()))
        await asyncio.sleep(0.01)
        return worker

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_request_is_claimed_streamed_and_finished(log: EmbeddedLog, start_worker) -> None:
    worker = await start_worker(ScriptedEngine(answer_tokens=10))
    await request(log, "run_1")
    finish = await next_payload(log, COMMANDS, FinishRun)
    assert (finish.run_id, finish.status, finish.usage.output_tokens) == ("run_1", "completed", 10)
    events = await payloads(log, RUN_EVENTS, "run_1")
    assert isinstance(events[0], GenerationStarted) and events[0].worker_id == worker.worker_id
    deltas = [event for event in events if isinstance(event, AssistantDelta)]
    assert len(deltas[0].text.split()) == 1  # the first token goes out alone, at once
    assert all(len(delta.text.split()) <= 4 for delta in deltas)  # then coalesced
    assert "".join(delta.text for delta in deltas) == finish.text
    assert [delta.index for delta in deltas] == list(range(len(deltas)))


async def test_cancellation_stops_generation_and_keeps_the_partial_text(log: EmbeddedLog, start_worker) -> None:
    await start_worker(ScriptedEngine(answer_tokens=500, token_delay_s=0.01))
    await request(log, "run_c")
    await next_payload(log, RUN_EVENTS, AssistantDelta, key="run_c")
    cancel = Envelope.wrap(RunCancellationRequested(conversation_id="conv_run_c", run_id="run_c"), key="conv_run_c", actor=ACTOR)
    await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="conv_run_c", value=CODEC.encode(cancel))])
    finish = await next_payload(log, COMMANDS, FinishRun)
    assert finish.status == "cancelled"
    assert finish.text and len(finish.text.split()) < 500


async def test_a_poison_request_is_dead_lettered_and_the_worker_goes_on(log: EmbeddedLog, start_worker) -> None:
    await start_worker(ScriptedEngine(answer_tokens=3))
    await log.append([OutgoingRecord(topic=inference_topic("interactive"), key="junk", value=b"\x00not avro")])
    await request(log, "run_after")
    letter = await next_payload(log, DEAD_LETTERS, DeadLetter)
    assert letter.key == "junk" and "magic" in letter.reason
    assert (await next_payload(log, COMMANDS, FinishRun)).run_id == "run_after"


async def test_requests_waiting_together_are_claimed_in_one_append(log: EmbeddedLog, start_worker) -> None:
    """Each append is a transaction on Kafka: claimed one by one, the last of 16 waited for 15 transactions first."""
    for index in range(8):
        await request(log, f"run_w{index}")
    appended: list[list[str]] = []
    append = log.append

    async def counting_append(records, **options):
        appended.append([type(CODEC.decode(record.value).payload).__name__ for record in records if record.topic == RUN_EVENTS])
        return await append(records, **options)

    log.append = counting_append  # observes the real log's appends: which claims go in which
    await start_worker(ScriptedEngine(answer_tokens=3))
    for index in range(8):
        await next_payload(log, RUN_EVENTS, GenerationStarted, key=f"run_w{index}")
    claims = [names.count("GenerationStarted") for names in appended if "GenerationStarted" in names]
    assert claims == [8], claims


async def test_a_run_a_full_log_interrupts_ends_once_the_log_takes_writes_again(log: EmbeddedLog, start_worker) -> None:
    """The disk fills mid-run: the next delta fails the run, and its end is retried until the log takes it (before, the
    end was dropped and the run stayed open until the watchdog saw its lease lapse)."""
    await start_worker(ScriptedEngine(answer_tokens=500, token_delay_s=0.01))
    await request(log, "run_f")
    await next_payload(log, RUN_EVENTS, AssistantDelta, key="run_f")
    end_refused = asyncio.Event()  # the step's end (its FinishRun command) was refused at least once
    space_back = asyncio.Event()
    append = log.append

    async def full_disk(records, **options):  # the real log behind a full disk: it takes nothing, and says so
        if not space_back.is_set():
            if any(record.topic == COMMANDS for record in records):
                end_refused.set()
            raise LogStorageFull(detail="the event log's disk is full; nothing was written", retry_after_s=30)
        return await append(records, **options)

    log.append = full_disk
    async with asyncio.timeout(30):
        await end_refused.wait()
    space_back.set()
    finish = await next_payload(log, COMMANDS, FinishRun, key="conv_run_f", timeout=30)
    assert finish.status == "failed" and "LogStorageFull" in finish.reason, finish.reason
    assert finish.text and len(finish.text.split()) < 500  # what streamed before the disk filled


async def test_no_more_claims_than_the_engine_can_run(log: EmbeddedLog, start_worker) -> None:
    await start_worker(ScriptedEngine(answer_tokens=20, token_delay_s=0.01, max_concurrency=1))
    await request(log, "run_a")
    await request(log, "run_b")
    await next_payload(log, RUN_EVENTS, GenerationStarted, key="run_a")
    await asyncio.sleep(0.05)
    assert not [e for e in await payloads(log, RUN_EVENTS, "run_b") if isinstance(e, GenerationStarted)]
    await next_payload(log, RUN_EVENTS, GenerationStarted, key="run_b")  # claimed once run_a is done
    a_finish = [e for e in await payloads(log, RUN_EVENTS, "run_a")]
    assert a_finish  # run_a streamed before run_b was claimed


async def test_a_claimed_request_is_not_generated_again_after_a_restart(log: EmbeddedLog, start_worker) -> None:
    await start_worker(ScriptedEngine(answer_tokens=3))
    await request(log, "run_once")
    await next_payload(log, COMMANDS, FinishRun)
    await start_worker(ScriptedEngine(answer_tokens=3))  # a second worker of the same group
    await asyncio.sleep(0.1)
    claims = [e for e in await payloads(log, RUN_EVENTS, "run_once") if isinstance(e, GenerationStarted)]
    assert len(claims) == 1


async def test_a_run_requested_twice_is_generated_once(log: EmbeddedLog, start_worker) -> None:
    """An at-least-once prompt builder may repeat a request; the worker claims the run only once."""
    await start_worker(ScriptedEngine(answer_tokens=3))
    await request(log, "run_twice")
    await request(log, "run_twice")
    await request(log, "run_next")
    await next_payload(log, COMMANDS, FinishRun, key="conv_run_twice")
    await next_payload(log, COMMANDS, FinishRun, key="conv_run_next")  # claimed after the repeat was seen
    claims = [e for e in await payloads(log, RUN_EVENTS, "run_twice") if isinstance(e, GenerationStarted)]
    assert len(claims) == 1
    assert [f.run_id for f in await payloads(log, COMMANDS, "conv_run_twice")] == ["run_twice"]


async def test_a_worker_shutting_down_ends_its_runs_as_interrupted(log: EmbeddedLog) -> None:
    worker = InferenceWorker(log=log, codec=CODEC, engine=ScriptedEngine(answer_tokens=500, token_delay_s=0.01))
    task = asyncio.create_task(worker.run())
    await request(log, "run_s")
    await next_payload(log, RUN_EVENTS, AssistantDelta, key="run_s")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    [finish] = [CODEC.decode(r.value).payload for r in await log.read(COMMANDS, key="conv_run_s")]
    assert finish.status == "failed" and finish.reason.startswith("interrupted")
    assert finish.text


async def test_a_cancel_between_claim_and_start_still_reports_the_run(log: EmbeddedLog) -> None:
    worker = InferenceWorker(log=log, codec=CODEC, engine=ScriptedEngine(answer_tokens=50, token_delay_s=0.01))
    await request(log, "run_early")
    [record] = await log.read(inference_topic("interactive"), key="run_early")
    [lane] = worker._lanes()
    waiting = lane.read_ahead.add(record, tenant_id=ACTOR.org_id, payload=CODEC.decode(record.value))
    lane.read_ahead.resolve(waiting)
    landed = asyncio.get_running_loop().create_future()
    task = worker._start(lane, waiting.payload, landed)  # its task has not run a single line yet
    worker._cancel_requested.add("run_early")  # what the listener records for a run it finds not started
    landed.set_result(True)
    await asyncio.wait_for(task, 5)
    [finish] = [CODEC.decode(r.value).payload for r in await log.read(COMMANDS, key="conv_run_early")]
    assert finish.status == "cancelled" and finish.text == ""


async def until(condition, *, timeout_s: float = 10.0) -> None:
    """Wait for `condition()` to hold (a deadline generous for a loaded two-core machine)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def holding_claims(log: EmbeddedLog, hold) -> None:
    """Make the log await `hold(run_ids)` before it writes an append that claims runs (the real append after)."""
    append = log.append

    async def held(records, **options):
        claimed = [payload.run_id for payload in (CODEC.decode(r.value).payload for r in records if r.topic == RUN_EVENTS)
                   if isinstance(payload, GenerationStarted)]
        if claimed:
            await hold(claimed)
        return await append(records, **options)

    log.append = held


async def test_the_engine_is_asked_while_the_claim_is_written(log: EmbeddedLog, start_worker) -> None:
    """The engine's prefill overlaps the claim's write (a transaction on Kafka): the claim here is written only once
    the engine has the request, which waited for the claim before."""
    engine = ScriptedEngine(answer_tokens=5, token_delay_s=0.01)

    async def until_the_engine_has_them(run_ids: list[str]) -> None:
        await until(lambda: set(run_ids) <= engine._running_request_ids)

    holding_claims(log, until_the_engine_has_them)
    await start_worker(engine)
    await request(log, "run_overlap")
    finish = await next_payload(log, COMMANDS, FinishRun, key="conv_run_overlap", timeout=15)
    assert finish.status == "completed" and finish.text
    events = await payloads(log, RUN_EVENTS, "run_overlap")
    assert isinstance(events[0], GenerationStarted), events  # nothing of the run went before its claim
    assert sum(isinstance(event, AssistantDelta) for event in events) >= 1


async def test_a_cancel_while_the_claim_is_written_ends_the_run_cancelled_after_its_claim(log: EmbeddedLog) -> None:
    worker = InferenceWorker(log=log, codec=CODEC, engine=ScriptedEngine(answer_tokens=50, token_delay_s=0.01))

    async def cancel_first(run_ids: list[str]) -> None:
        cancel = Envelope.wrap(RunCancellationRequested(conversation_id="conv_run_c", run_id="run_c"), key="conv_run_c",
                               actor=ACTOR)
        await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="conv_run_c", value=CODEC.encode(cancel))])
        await until(lambda: "run_c" in worker._cancel_requested)  # the worker's listener has seen it

    holding_claims(log, cancel_first)
    task = asyncio.create_task(worker.run())
    try:
        await request(log, "run_c")
        finish = await next_payload(log, COMMANDS, FinishRun, key="conv_run_c", timeout=15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert finish.status == "cancelled"
    events = await payloads(log, RUN_EVENTS, "run_c")
    assert isinstance(events[0], GenerationStarted), events
    assert not any(isinstance(event, AssistantDelta) for event in events)


async def test_a_claim_the_log_refuses_stops_its_generation_unreported_and_the_run_is_claimed_again(
    log: EmbeddedLog, start_worker
) -> None:
    engine = ScriptedEngine(answer_tokens=5, token_delay_s=0.01)
    refused: list[str] = []

    async def refuse_the_first(run_ids: list[str]) -> None:
        if not refused:
            await until(lambda: set(run_ids) <= engine._running_request_ids)  # its generation has begun: the refusal must stop it
            refused.extend(run_ids)
            raise LogStorageFull(detail="the event log's disk is full; nothing was written", retry_after_s=30)

    holding_claims(log, refuse_the_first)
    await start_worker(engine)
    await request(log, "run_r")
    finish = await next_payload(log, COMMANDS, FinishRun, key="conv_run_r", timeout=15)
    assert refused == ["run_r"]
    assert finish.status == "completed"
    events = await payloads(log, RUN_EVENTS, "run_r")
    assert [type(event).__name__ for event in events].count("GenerationStarted") == 1
    assert isinstance(events[0], GenerationStarted), events
    assert len([f for f in await payloads(log, COMMANDS, "conv_run_r")]) == 1  # the refused generation reported nothing
    assert not engine._running_request_ids



async def test_a_refused_claim_s_generation_ending_late_leaves_the_next_claim_s_generation_registered(log: EmbeddedLog) -> None:
    """The log refused a claim and the request was claimed again before the first generation had ended: the first one's
    end must not unregister the second (cancels find a run's generation by its id)."""
    engine = ScriptedEngine(answer_tokens=50, token_delay_s=0.01)
    worker = InferenceWorker(log=log, codec=CODEC, engine=engine)
    await request(log, "run_twice_claimed")
    [record] = await log.read(inference_topic("interactive"), key="run_twice_claimed")
    [lane] = worker._lanes()
    waiting = lane.read_ahead.add(record, tenant_id=ACTOR.org_id, payload=CODEC.decode(record.value))
    refused, landed = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
    first = worker._start(lane, waiting.payload, refused)
    await until(lambda: "run_twice_claimed" in engine._running_request_ids)  # the first generation is under way
    second = worker._start(lane, waiting.payload, landed)  # claimed again, while the first has not ended
    refused.set_result(False)
    await asyncio.wait_for(first, 5)
    assert worker._generations["run_twice_claimed"] is second
    landed.set_result(True)
    await asyncio.wait_for(second, 5)
    assert "run_twice_claimed" not in worker._generations
    finishes = [CODEC.decode(r.value).payload for r in await log.read(COMMANDS, key="conv_run_twice_claimed")]
    assert [finish.status for finish in finishes] == ["completed"]  # the refused generation reported nothing

# --- pools: fairness, size classes, repeated claims, breaker outcomes -----------------------------


async def request_for(log: EmbeddedLog, run_id: str, *, org_id: str, topic: str) -> None:
    payload = InferenceRequested(run_id=run_id, conversation_id=f"conv_{run_id}", turn_seq=2, pool="p",
                                 messages=(ChatMessage(role="user", content="hello"),), max_output_tokens=64)
    actor = Actor(user_id=f"user_{org_id}", org_id=org_id, workspace_id="w")
    envelope = Envelope.wrap(payload, key=run_id, actor=actor)
    await log.append([OutgoingRecord(topic=topic, key=run_id, value=CODEC.encode(envelope))])


async def claims_in_order(log: EmbeddedLog, count: int, *, timeout: float = 10.0) -> list[str]:
    claimed: list[str] = []
    follower = log.follow(RUN_EVENTS)
    try:
        async with asyncio.timeout(timeout):
            async for record in follower:
                payload = CODEC.decode(record.value).payload
                if isinstance(payload, GenerationStarted):
                    claimed.append(payload.run_id)
                    if len(claimed) == count:
                        return claimed
    finally:
        await follower.aclose()


def pool(**overrides) -> PoolConfig:
    values = dict(name="p", engine="scripted", context_tokens=None, capacity=2, split_by_size=False, tenant_share=0.5)
    return PoolConfig(**{**values, **overrides})


@contextlib.asynccontextmanager
async def serving(log: EmbeddedLog, config: PoolConfig):
    """A worker of `config` on a scripted engine whose answers take half a second, while the block runs."""
    engine = ScriptedEngine(answer_tokens=10, token_delay_s=0.05)
    await engine.start()
    task = asyncio.create_task(InferenceWorker(log=log, codec=CODEC, engine=engine, pool=config).run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_tenant_with_many_requests_waiting_does_not_hold_the_slots_another_tenant_needs(log: EmbeddedLog) -> None:
    config = pool(capacity=2)  # one slot per tenant while another waits
    for index in range(6):
        await request_for(log, f"run_hog{index}", org_id="org_hog", topic=config.topic("short"))
    async with serving(log, config):
        assert await claims_in_order(log, 2) == ["run_hog0", "run_hog1"]  # alone, it may borrow the whole pool
        await request_for(log, "run_quiet", org_id="org_quiet", topic=config.topic("short"))
        order = await claims_in_order(log, 4)
    # The next slot to free goes to the tenant holding none, ahead of the four requests queued before it.
    assert order.index("run_quiet") == 2, order


async def test_long_prompts_take_only_their_share_and_a_short_one_passes_them(log: EmbeddedLog) -> None:
    config = pool(capacity=4, long_capacity=1, split_by_size=True, tenant_share=1.0)
    assert config.topics() == ("inference-requests.p.short", "inference-requests.p.long")
    for index in range(3):
        await request_for(log, f"run_long{index}", org_id="org", topic=config.topic("long"))
    async with serving(log, config):
        assert await claims_in_order(log, 1) == ["run_long0"]
        await request_for(log, "run_short", org_id="org", topic=config.topic("short"))
        order = await claims_in_order(log, 3)
    assert order[:2] == ["run_long0", "run_short"], order  # the long ones wait for the long slot


async def test_a_request_an_earlier_reader_claimed_is_not_generated_again(log: EmbeddedLog) -> None:
    # A worker claimed run_done out of order and died before its commit passed it: the request comes again.
    earlier = Envelope.wrap(GenerationStarted(run_id="run_done", worker_id="dead-worker", pool="interactive"), key="run_done", actor=ACTOR)
    await log.append([OutgoingRecord(topic=RUN_EVENTS, key="run_done", value=CODEC.encode(earlier))])
    await request(log, "run_done")
    await request(log, "run_new")
    engine = ScriptedEngine(answer_tokens=3)
    await engine.start()
    task = asyncio.create_task(InferenceWorker(log=log, codec=CODEC, engine=engine).run())
    try:
        await next_payload(log, COMMANDS, FinishRun, key="conv_run_new")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    claims = [p for p in await payloads(log, RUN_EVENTS, "run_done") if isinstance(p, GenerationStarted)]
    assert [claim.worker_id for claim in claims] == ["dead-worker"]
    assert await log.read(COMMANDS, key="conv_run_done") == []
    end = await log.end_offset(inference_topic("interactive"))
    assert await log.committed(group="inference-workers.interactive", topic=inference_topic("interactive")) == end


async def test_an_unreachable_engine_is_recorded_for_the_pool_s_breaker(log: EmbeddedLog, unused_tcp_port: int) -> None:
    engine = OpenAICompatibleEngine(base_url=f"http://127.0.0.1:{unused_tcp_port}/v1", model="m")
    await engine.start()
    task = asyncio.create_task(InferenceWorker(log=log, codec=CODEC, engine=engine).run())
    try:
        await request(log, "run_down")
        usage = await next_payload(log, USAGE, UsageRecorded, key="run_down")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.close()
    assert usage.status == "failed" and usage.engine_unavailable
