"""The prompt builder routes each run: its pool's topic for the prompt's size, the route on the manifest,
fallback when a breaker is open, a clear failure when no pool can take it; breakers fed by the workers."""

import asyncio
from datetime import UTC, datetime

from commands.catalog import FinishRun
from events.catalog import EVENT_TYPES
from commands.catalog import COMMAND_TYPES
from kernel.codec import AvroCodec
from events.conversation import RunRequested, TurnSubmitted
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope
from kernel.log import OutgoingRecord
from events.runs import InferenceRequested, PromptAssembled, UsageRecorded
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS, USAGE
from kernel.envelope import Actor
from events.values import ContentPart
from inference.pools import parse_pools
from processors.pool_health import follow_pool_outcomes
from processors.prompting import PromptBuilder, PromptPolicy
from kernel.runtime import Delivery

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
NOW = datetime(2026, 1, 1, tzinfo=UTC)

POOLS = parse_pools('''
[routing]
short_prompt_max_tokens = 40
long_work_output_tokens = 100

[tenants]
default_tier = "free"
orgs = { org_big = "enterprise" }

[[pools]]
name = "small"
engine = "scripted"
context_tokens = 400
cost_per_1k_tokens = 0.01
capacity = 8

[[pools]]
name = "large"
engine = "scripted"
context_tokens = 4000
cost_per_1k_tokens = 0.05
capacity = 8

[[pools]]
name = "private"
engine = "scripted"
context_tokens = 4000
cost_per_1k_tokens = 0.001
capacity = 8
tiers = ["enterprise"]

[[pools]]
name = "batch"
engine = "scripted"
context_tokens = 4000
latency_tier = "batch"
cost_per_1k_tokens = 0.02
capacity = 8
split_by_size = false

[breaker]
consecutive_failures = 2
cool_down_s = 30
''')


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def builder(log: EmbeddedLog, clock: Clock | None = None, **policy) -> PromptBuilder:
    return PromptBuilder(
        log=log, codec=CODEC, policy=PromptPolicy(**{"system_prompt": "SYS", "max_output_tokens": 50, **policy}), pools=POOLS,
        clock=clock or Clock(),
    )


async def ask(log: EmbeddedLog, prompt_builder: PromptBuilder, question: str, *, org_id: str = "org_a", mode: str = "interactive",
              conversation_id: str = "conv_1") -> tuple[str | None, PromptAssembled, list]:
    """Submit a turn and request its run; the topic the request went to, the manifest, and any commands sent."""
    actor = Actor(user_id="u", org_id=org_id, workspace_id="w")
    submitted = TurnSubmitted(conversation_id=conversation_id, turn_seq=1, content=(ContentPart(type="text", text=question),), submitted_at=NOW)
    requested = RunRequested(conversation_id=conversation_id, run_id=f"run_{conversation_id}", turn_seq=2, parent_turn_seq=1,
                             mode=mode, request_fingerprint="f", created_turn_seq=1, requested_at=NOW)
    envelopes = [Envelope.wrap(event, key=conversation_id, actor=actor) for event in (submitted, requested)]
    records = await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key=conversation_id, value=CODEC.encode(e)) for e in envelopes])
    outputs = await prompt_builder.react([Delivery(record=r, envelope=e) for r, e in zip(records, envelopes)])
    topics = [o.topic for o in outputs if isinstance(CODEC.decode(o.value).payload, InferenceRequested)]
    [manifest] = [CODEC.decode(o.value).payload for o in outputs if o.topic == RUN_EVENTS]
    commands = [CODEC.decode(o.value).payload for o in outputs if o.topic == COMMANDS]
    assert len(topics) <= 1
    return (topics[0] if topics else None), manifest, commands


async def test_a_short_prompt_goes_to_the_cheapest_pool_s_short_queue_and_the_manifest_says_why(embedded_log) -> None:
    topic, manifest, commands = await ask(embedded_log, builder(embedded_log), "why is the sky blue")
    assert topic == "inference-requests.small.short" and commands == []
    assert (manifest.pool, manifest.size_class, manifest.fallback_from) == ("small", "short", None)
    assert "small: the cheapest acceptable pool" in manifest.route_reason


async def test_a_long_prompt_queues_apart_from_short_ones_and_one_too_big_for_a_pool_skips_it(embedded_log) -> None:
    topic, manifest, _ = await ask(embedded_log, builder(embedded_log), "word " * 60)
    assert topic == "inference-requests.small.long" and manifest.size_class == "long"
    topic, manifest, _ = await ask(embedded_log, builder(embedded_log), "word " * 500, conversation_id="conv_2")
    assert topic == "inference-requests.large.long"  # 500 words and 50 to answer do not fit small's 400


async def test_a_paying_tenant_reaches_the_pool_that_serves_its_tier(embedded_log) -> None:
    topic, manifest, _ = await ask(embedded_log, builder(embedded_log), "hello", org_id="org_big")
    assert topic == "inference-requests.private.short" and manifest.pool == "private"


async def test_background_runs_go_to_the_batch_pool(embedded_log) -> None:
    topic, manifest, _ = await ask(embedded_log, builder(embedded_log), "summarise everything", mode="background")
    assert topic == "inference-requests.batch" and manifest.pool == "batch"
    assert manifest.route_reason.startswith("batch work (a background run)")


async def test_asking_for_a_long_answer_is_long_work_for_the_batch_pool(embedded_log) -> None:
    topic, _, _ = await ask(embedded_log, builder(embedded_log, max_output_tokens=200, context_tokens=4000), "write a book")
    assert topic == "inference-requests.batch"


async def test_a_pool_whose_engine_keeps_failing_is_skipped_and_the_fallback_is_recorded(embedded_log) -> None:
    clock = Clock()
    prompt_builder = builder(embedded_log, clock)
    for _ in range(2):  # what the workers report, as the health feed folds it
        prompt_builder.health.record_failure("small", clock())
    topic, manifest, _ = await ask(embedded_log, prompt_builder, "hello")
    assert topic == "inference-requests.large.short"
    assert manifest.fallback_from == "small" and "skipped small (breaker open)" in manifest.route_reason
    clock.now += 31  # cooled down: small gets a probe
    topic, _, _ = await ask(embedded_log, prompt_builder, "hello again", conversation_id="conv_2")
    assert topic == "inference-requests.small.short"


async def test_a_run_no_pool_can_take_fails_with_each_pool_s_reason(embedded_log) -> None:
    topic, manifest, commands = await ask(embedded_log, builder(embedded_log), "word " * 5000)
    assert topic is None and manifest.pool == ""
    [finish] = commands
    assert isinstance(finish, FinishRun) and finish.status == "failed" and finish.run_id == "run_conv_1"
    assert finish.reason.startswith("no inference pool can take this run")
    assert "small: its context of 400 tokens cannot hold" in finish.reason and "private: " in finish.reason
    assert manifest.route_reason == finish.reason


async def test_the_workers_outcomes_open_and_close_a_pool_s_breaker(embedded_log) -> None:
    clock = Clock()
    prompt_builder = builder(embedded_log, clock)
    feed = asyncio.create_task(follow_pool_outcomes(log=embedded_log, codec=CODEC, health=prompt_builder.health, clock=clock))
    await asyncio.sleep(0.05)

    async def outcome(run_id: str, *, status: str, unavailable: bool) -> None:
        usage = UsageRecorded(run_id=run_id, conversation_id="c", pool="small", engine="openai-compatible", status=status,
                              prompt_tokens=1, output_tokens=0, recorded_at=NOW, engine_unavailable=unavailable)
        envelope = Envelope.wrap(usage, key=run_id, actor=Actor(user_id="u", org_id="o", workspace_id="w"))
        await embedded_log.append([OutgoingRecord(topic=USAGE, key=run_id, value=CODEC.encode(envelope))])

    try:
        await outcome("run_1", status="failed", unavailable=True)
        await outcome("run_2", status="failed", unavailable=False)  # a refused prompt says nothing about the pool
        await outcome("run_3", status="failed", unavailable=True)
        async with asyncio.timeout(5):
            while prompt_builder.health.state("small", clock()) != "open":
                await asyncio.sleep(0.01)
        clock.now += 31
        assert prompt_builder.health.allows("small", clock())  # the half-open probe
        await outcome("run_4", status="completed", unavailable=False)
        async with asyncio.timeout(5):
            while prompt_builder.health.state("small", clock()) != "closed":
                await asyncio.sleep(0.01)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
