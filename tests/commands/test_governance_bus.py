"""The governance bus and view: answers are picked by their cause and kind, a view misses no fact between its read
and its follow, and a request nobody answers is a 503 with Retry-After rather than a hang."""

import asyncio
from datetime import UTC, datetime

import pytest

from commands.catalog import COMMAND_TYPES
from commands.governance.bus import GovernanceBus, answers
from commands.governance.view import GovernanceView
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.governance import (
    AdmissionDecided,
    AdmissionRequested,
    CreditsGranted,
    CreditsGrantRequested,
    RefillChangeRequested,
    RefillScheduled,
    RunCharged,
)
from events.topics import GOVERNANCE
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.errors import Unavailable
from kernel.log import OutgoingRecord

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ORG = "org_acme"
OPERATOR = Actor(user_id="op", org_id=ORG, workspace_id="")
T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


def granted(units: int, *, by: str = "op", reason: str = "r") -> CreditsGranted:
    return CreditsGranted(org_id=ORG, units=units, reason=reason, by=by, granted_at=T0)


async def write(log: EmbeddedLog, *facts: object) -> None:
    await log.append([
        OutgoingRecord(topic=GOVERNANCE, key=ORG, value=CODEC.encode(Envelope.wrap(fact, key=ORG, actor=OPERATOR)))
        for fact in facts
    ])


def test_the_answer_is_the_fact_of_the_requests_kind_not_the_upkeep_before_it() -> None:
    grant = CreditsGrantRequested(org_id=ORG, units=5, reason="invoice", by="op")
    assert not answers(grant, granted(100, by="system", reason="start balance of tier free"))
    assert answers(grant, granted(5, reason="invoice"))
    admission = AdmissionRequested(org_id=ORG, user_id="ana", run_id="run_2")
    lapsed = RunCharged(org_id=ORG, user_id="ana", run_id="run_1", status="lapsed", units=0, reserved_units=1, charged_at=T0)
    assert not answers(admission, lapsed)
    decided = AdmissionDecided(org_id=ORG, user_id="ana", run_id="run_2", admitted=True, balance=1, available=1, decided_at=T0)
    assert answers(admission, decided)
    operators = RefillChangeRequested(org_id=ORG, units=50, by="op")
    assert not answers(operators, RefillScheduled(org_id=ORG, units=0, by="tier:free", scheduled_at=T0))
    assert answers(operators, RefillScheduled(org_id=ORG, units=50, by="op", scheduled_at=T0))


class HeldReads:
    """The log, whose `read` returns only when let go: a fact can land between the view's read and its return."""

    def __init__(self, log: EmbeddedLog) -> None:
        self._log = log
        self.read_done = asyncio.Event()
        self.let_go = asyncio.Event()

    async def read(self, *args, **kwargs):
        records = await self._log.read(*args, **kwargs)
        self.read_done.set()
        await self.let_go.wait()
        return records


async def test_a_view_misses_no_fact_written_while_it_loads(embedded_log: EmbeddedLog) -> None:
    held = HeldReads(embedded_log)
    view = GovernanceView(log=held, codec=CODEC)  # type: ignore[arg-type]
    await write(embedded_log, granted(10))
    followed = []

    async def follow() -> None:
        async for record in embedded_log.follow(GOVERNANCE, after=-1):
            view.observe(record, CODEC.decode(record.value))
            followed.append(record.offset)

    follower = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(10):
            while not followed:  # the first fact went by before anyone asked for the org: not held
                await asyncio.sleep(0.005)
            loading = asyncio.create_task(view.state_of(ORG))
            await held.read_done.wait()
            await write(embedded_log, granted(5))  # after the read, before the load ends: the follower hands it over
            while len(followed) < 2:
                await asyncio.sleep(0.005)
            held.let_go.set()
            assert (await loading).balance == 15
            await write(embedded_log, granted(1))  # after the load: folded as it is followed
            while len(followed) < 3:
                await asyncio.sleep(0.005)
        assert view.cached(ORG).balance == 16  # each fact once, whichever way it came
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)


async def test_a_request_nobody_answers_is_unavailable_with_retry_after(embedded_log: EmbeddedLog) -> None:
    bus = GovernanceBus(log=embedded_log, codec=CODEC, answer_timeout_s=0.2)
    await bus.start()
    try:
        with pytest.raises(Unavailable) as unanswered:
            await bus.ask(CreditsGrantRequested(org_id=ORG, units=5, reason="r", by="op"), actor=OPERATOR)
    finally:
        await bus.close()
    assert unanswered.value.retry_after_s == 1 and "did not answer CreditsGrantRequested" in unanswered.value.detail
