"""The governance processor and the settlement router on the embedded log: answers, refills by event time,
exactly-once charging however often a request comes, and a history that replays to the same balance."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from commands.catalog import COMMAND_TYPES
from commands.governance.bus import GovernanceBus
from commands.governance.decider import OrgState, evolve
from commands.governance.tiers_file import GovernanceConfig, Limits, Price, Tier
from commands.governance.violations import FLAGGED_INPUT, GovernanceViolations, IgnoredViolations
from events.catalog import EVENT_TYPES
from events.conversation import AssistantTurnFinished
from events.embedded import EmbeddedLog
from events.governance import (
    AdmissionDecided,
    AdmissionRequested,
    CreditsGranted,
    CreditsGrantRequested,
    CreditsRefilled,
    RunCharged,
    RunSettlementRequested,
    ViolationRecorded,
)
from events.runs import UsageRecorded
from events.topics import CONVERSATION_EVENTS, GOVERNANCE, GOVERNANCE_REQUESTS, USAGE, topic_of
from events.values import Usage
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import OutgoingRecord
from kernel.runtime import run_processor
from processors.governance import GovernanceDecider
from processors.settlement import SettlementRouter

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ORG = "org_acme"
ANA = Actor(user_id="user_ana", org_id=ORG, workspace_id="ws")
MAY = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)
CONFIG = GovernanceConfig(
    tiers={"free": Tier(name="free", start_balance=100, monthly_refill=100, reservation_units=5, user=Limits(concurrent_runs=5))},
    prices={"default": Price(prompt=1, cached=0, output=3)},
)
DEADLINE_S = 20.0


@asynccontextmanager
async def governance_running(log: EmbeddedLog, *, config: GovernanceConfig = CONFIG) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(run_processor(GovernanceDecider(log=log, codec=CODEC, config=config).processor(), log=log, codec=CODEC)),
        asyncio.create_task(run_processor(SettlementRouter(log=log, codec=CODEC).processor(), log=log, codec=CODEC)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def append(log: EmbeddedLog, envelope: Envelope, *, topic: str | None = None) -> None:
    await log.append([OutgoingRecord(topic=topic or topic_of(envelope.payload), key=envelope.key, value=CODEC.encode(envelope))])


def request(payload: object, *, at: datetime | None = None) -> Envelope:
    return Envelope.wrap(payload, key=ORG, actor=ANA, occurred_at=at)


async def facts(log: EmbeddedLog) -> list[Envelope]:
    return [CODEC.decode(record.value) for record in await log.read(GOVERNANCE, key=ORG)]


async def until_facts(log: EmbeddedLog, count: int) -> list[Envelope]:
    """The org's facts once there are at least `count` of them."""
    deadline = time.monotonic() + DEADLINE_S
    while len(found := await facts(log)) < count:
        assert time.monotonic() < deadline, f"only {len(found)} facts: {[fact.type for fact in found]}"
        await asyncio.sleep(0.01)
    return found


async def test_an_admission_asked_through_the_bus_is_answered_and_the_view_follows(embedded_log: EmbeddedLog) -> None:
    bus = GovernanceBus(log=embedded_log, codec=CODEC)
    await bus.start()
    try:
        async with governance_running(embedded_log):
            answer = await bus.ask(AdmissionRequested(org_id=ORG, user_id=ANA.user_id, run_id="run_1"), actor=ANA)
            assert isinstance(answer.fact, AdmissionDecided) and answer.fact.admitted
            assert [type(fact).__name__ for fact in answer.facts] == ["CreditsGranted", "RefillScheduled", "AdmissionDecided"]
            assert answer.envelope.key == ORG
            state = await bus.view.state_of(ORG)
            assert (state.balance, state.reserved_on(None)) == (100, 5)
            granted = await bus.ask(CreditsGrantRequested(org_id=ORG, units=40, reason="invoice 7", by="op_kim"), actor=ANA)
            assert granted.fact == CreditsGranted(
                org_id=ORG, units=40, reason="invoice 7", by="op_kim", granted_at=granted.fact.granted_at
            )
            assert bus.view.cached(ORG).balance == 140  # folded by the bus before the answer was handed over
    finally:
        await bus.close()


async def test_a_request_delivered_twice_is_decided_once(embedded_log: EmbeddedLog) -> None:
    grant = request(CreditsGrantRequested(org_id=ORG, units=40, reason="invoice 7", by="op_kim"))
    async with governance_running(embedded_log):
        await append(embedded_log, grant)
        await until_facts(embedded_log, 1)
    # A restarted decider knows it from the log: the same request again (a redelivery) changes nothing.
    await append(embedded_log, grant)
    marker = request(CreditsGrantRequested(org_id=ORG, units=1, reason="marker", by="op_kim"))
    await append(embedded_log, marker)
    async with governance_running(embedded_log):
        found = await until_facts(embedded_log, 4)  # a new org's start balance and refill, the grant, the marker
    grants = [fact.payload.reason for fact in found if isinstance(fact.payload, CreditsGranted)]
    assert grants == ["start balance of tier free", "invoice 7", "marker"]
    assert [fact.causation_id for fact in found] == [grant.event_id] * 3 + [marker.event_id]


async def test_the_first_request_of_a_month_refills_by_event_time(embedded_log: EmbeddedLog) -> None:
    async with governance_running(embedded_log):
        await append(embedded_log, request(AdmissionRequested(org_id=ORG, user_id=ANA.user_id, run_id="run_may"), at=MAY))
        await append(embedded_log, request(RunSettlementRequested(
            org_id=ORG, user_id=ANA.user_id, run_id="run_may", status="completed", pool="interactive",
            prompt_tokens=10_000, output_tokens=10_000,
        ), at=MAY + timedelta(minutes=1)))
        await append(embedded_log, request(AdmissionRequested(org_id=ORG, user_id=ANA.user_id, run_id="run_june"), at=JUNE))
        found = await until_facts(embedded_log, 6)
    kinds = [fact.type for fact in found]
    assert kinds == ["CreditsGranted", "RefillScheduled", "AdmissionDecided", "RunCharged", "CreditsRefilled", "AdmissionDecided"]
    charged, refilled = found[3].payload, found[4].payload
    assert charged.units == 40  # 10,000 prompt tokens at 1 and 10,000 output at 3, per 1,000
    assert refilled == CreditsRefilled(org_id=ORG, units=40, period="2026-06", refilled_at=JUNE)
    assert found[5].payload.balance == 100  # topped up to the refill


async def test_runs_that_end_are_charged_once_at_their_last_usage_and_the_history_replays_to_the_same_balance(
    embedded_log: EmbeddedLog,
) -> None:
    log = embedded_log
    decider = GovernanceDecider(log=log, codec=CODEC, config=CONFIG)
    task = asyncio.create_task(run_processor(decider.processor(), log=log, codec=CODEC))
    router = asyncio.create_task(run_processor(SettlementRouter(log=log, codec=CODEC).processor(), log=log, codec=CODEC))
    try:
        for number in (1, 2):
            await append(log, request(AdmissionRequested(org_id=ORG, user_id=ANA.user_id, run_id=f"run_{number}")))
        await until_facts(log, 4)  # start balance, refill, two admissions
        # Run 1 took two model steps (each record holds the run's totals so far); run 2 ended before any step.
        for prompt, output, status in ((1000, 100, "tool_calls"), (3000, 500, "completed")):
            usage = UsageRecorded(run_id="run_1", conversation_id="conv_1", pool="interactive", engine="scripted", status=status,
                                  prompt_tokens=prompt, output_tokens=output, recorded_at=MAY)
            await append(log, Envelope.wrap(usage, key="run_1", actor=ANA), topic=USAGE)
        for run_id, state in (("run_1", "completed"), ("run_2", "cancelled")):
            finished = AssistantTurnFinished(
                conversation_id="conv_1", run_id=run_id, turn_seq=2, parent_turn_seq=1, state=state, content=(),
                usage=Usage(), mode="stream", requested_at=MAY, finished_at=MAY,
            )
            await append(log, Envelope.wrap(finished, key="conv_1", actor=ANA), topic=CONVERSATION_EVENTS)
        found = await until_facts(log, 6)
        # The router's requests replayed (a redelivery, a rebuild): nothing more is charged.
        for record in await log.read(GOVERNANCE_REQUESTS, key=ORG):
            if isinstance(CODEC.decode(record.value).payload, RunSettlementRequested):
                await log.append([OutgoingRecord(topic=GOVERNANCE_REQUESTS, key=ORG, value=record.value)])
        marker = request(CreditsGrantRequested(org_id=ORG, units=1, reason="marker", by="op"))
        await append(log, marker)
        found = await until_facts(log, 7)
        in_memory = (await decider._org(ORG)).state
    finally:
        for running in (task, router):
            running.cancel()
        await asyncio.gather(task, router, return_exceptions=True)

    charges = {fact.payload.run_id: fact.payload for fact in found if isinstance(fact.payload, RunCharged)}
    assert {run_id: (charge.status, charge.units, charge.prompt_tokens) for run_id, charge in charges.items()} == {
        "run_1": ("completed", 5, 3000),  # (3000 * 1 + 500 * 3) / 1000 = 4.5, rounded up; the last record only
        "run_2": ("cancelled", 0, 0),
    }
    assert found[-1].causation_id == marker.event_id
    replayed = OrgState()
    for fact in found:
        replayed = evolve(replayed, fact)
    assert replayed == in_memory
    assert replayed.balance == 100 + 1 - sum(charge.units for charge in charges.values()) and replayed.reservations == {}


async def test_an_ignored_request_writes_nothing_but_its_upkeep(embedded_log: EmbeddedLog) -> None:
    async with governance_running(embedded_log):
        await append(embedded_log, request(CreditsGrantRequested(org_id=ORG, units=0, reason="nothing", by="op")))
        await append(embedded_log, request(CreditsGrantRequested(org_id=ORG, units=2, reason="marker", by="op")))
        found = await until_facts(embedded_log, 3)
    assert [fact.payload.reason for fact in found if isinstance(fact.payload, CreditsGranted)] == [
        "start balance of tier free", "marker",
    ]


async def test_a_reported_violation_counts_against_its_user(embedded_log: EmbeddedLog) -> None:
    assert IgnoredViolations().records(actor=ANA, kind=FLAGGED_INPUT, detail="d", by="moderation") == []
    reporter = GovernanceViolations(log=embedded_log, codec=CODEC)
    async with governance_running(embedded_log):
        await reporter.report(actor=ANA, kind=FLAGGED_INPUT, detail="asked for a weapon", by="moderation")
        found = await until_facts(embedded_log, 3)
    recorded = found[-1].payload
    assert isinstance(recorded, ViolationRecorded)
    assert (recorded.user_id, recorded.kind, recorded.points, recorded.detail) == (ANA.user_id, FLAGGED_INPUT, 5, "asked for a weapon")
