"""The governance bus: append a request to `governance-requests`, then wait for the decider's answer on `governance`.

The decider answers each request with facts whose envelopes name the request as their cause; the bus follows
`governance` (every partition: requests of any org may come from this process) and resolves the waiting caller
with the fact that answers its request (an `AdmissionDecided` for an admission, a `CreditsGranted` for a grant,
...), together with the upkeep facts the same decision wrote before it. It keeps the `GovernanceView` current too.
"""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field, replace

from opentelemetry.trace import SpanKind

from commands.governance.snapshots import OrgSnapshots
from commands.governance.view import GovernanceView
from events.governance import (
    AdmissionDecided,
    AdmissionRequested,
    AdmissionWithdrawn,
    BudgetChangeRequested,
    BudgetSet,
    CreditsGranted,
    CreditsGrantRequested,
    GovernanceRequest,
    RefillChangeRequested,
    RefillScheduled,
    ReinstatementRequested,
    RunCharged,
    RunSettlementRequested,
    SuspensionRequested,
    UserReinstated,
    UserSuspended,
    ViolationRecorded,
    ViolationReported,
)
from events.topics import GOVERNANCE, GOVERNANCE_REQUESTS
from kernel import tracing
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Actor, Envelope
from kernel.errors import Unavailable
from kernel.log import EventLog, OutgoingRecord

logger = logging.getLogger(__name__)

# Admissions wait on one more durable round trip through a decider that may be busy: be generous.
DEFAULT_ANSWER_TIMEOUT_S = 15.0


@dataclass(frozen=True, kw_only=True)
class Answer:
    """The fact that answers a request, and every fact its decision wrote (upkeep first, the answer last)."""

    fact: object
    facts: tuple[object, ...]
    envelope: Envelope


@dataclass(kw_only=True)
class _Waiting:
    request: object
    org_id: str
    answered: asyncio.Future[Answer]
    facts: list[object] = field(default_factory=list)


class GovernanceBus:
    """Sends governance requests and resolves each with the decider's answer, read from `governance`."""

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, snapshots: OrgSnapshots | None = None,
        answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S,
    ) -> None:
        self._log = log
        self._codec = codec
        self._answer_timeout_s = answer_timeout_s
        self.view = GovernanceView(log=log, codec=codec, snapshots=snapshots)
        self._waiting: dict[str, _Waiting] = {}
        self._waiting_orgs: Counter[str] = Counter()
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        start_after = await self._log.end_offset(GOVERNANCE)
        self._listener = asyncio.create_task(self._listen(start_after), name="governance-bus-answers")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def ask(self, request: GovernanceRequest, *, actor: Actor, trace_parent: str | None = None) -> Answer:
        """Append `request` durably and return the decider's answer; `Unavailable` (503) when none comes in time."""
        name = type(request).__name__
        with tracing.span(f"governance {name}", kind=SpanKind.PRODUCER, attributes={"turnlog.command": name}):
            return await self._ask(request, actor=actor, trace_parent=trace_parent)

    async def _ask(self, request: GovernanceRequest, *, actor: Actor, trace_parent: str | None) -> Answer:
        envelope = Envelope.wrap(request, key=request.org_id, actor=actor)  # in the trace of the span in hand
        if trace_parent is not None:
            envelope = replace(envelope, trace_parent=trace_parent)
        waiting = _Waiting(request=request, org_id=request.org_id, answered=asyncio.get_running_loop().create_future())
        self._waiting[envelope.event_id] = waiting
        self._waiting_orgs[request.org_id] += 1
        try:
            # Not flushed: the decider's answer is (and, on the embedded log, its flush covers this record too); a
            # request lost in a power cut is never answered, which the caller sees as a 503 and retries.
            await self._append(envelope, durable=False)
            async with asyncio.timeout(self._answer_timeout_s):
                return await asyncio.shield(waiting.answered)
        except TimeoutError:
            raise Unavailable(
                detail=f"governance did not answer {type(request).__name__} within {self._answer_timeout_s:g} s; retry shortly",
                retry_after_s=1,
            ) from None
        finally:
            self._waiting.pop(envelope.event_id, None)
            self._waiting_orgs[request.org_id] -= 1
            if self._waiting_orgs[request.org_id] <= 0:
                del self._waiting_orgs[request.org_id]

    async def tell(self, request: GovernanceRequest, *, actor: Actor, cause: Envelope | None = None) -> None:
        """Append `request` durably without waiting for its answer (withdrawals: a lost one would hold a slot a day)."""
        await self._append(Envelope.wrap(request, key=request.org_id, actor=actor, cause=cause))

    async def _append(self, envelope: Envelope, *, durable: bool = True) -> None:
        record = OutgoingRecord(topic=GOVERNANCE_REQUESTS, key=envelope.key, value=self._codec.encode(envelope))
        await self._log.append([record], durable=durable)

    async def _listen(self, after: int) -> None:
        async for record in self._log.follow(GOVERNANCE, after=after):
            # Decode only what someone here is waiting for or the view holds: the topic carries every org.
            if record.key not in self._waiting_orgs and not self.view.watches(record.key):
                continue
            try:
                envelope = self._codec.decode(record.value)
            except UndecodableMessage as error:
                logger.error("undecodable governance record at %d: %s", record.offset, error)
                continue
            self.view.observe(record, envelope)  # before the waiter wakes: its caller reads the view next
            waiting = self._waiting.get(envelope.causation_id or "")
            if waiting is None or waiting.answered.done():
                continue
            waiting.facts.append(envelope.payload)
            if answers(waiting.request, envelope.payload):
                waiting.answered.set_result(Answer(fact=envelope.payload, facts=tuple(waiting.facts), envelope=envelope))


def answers(request: object, fact: object) -> bool:
    """Whether `fact` (caused by `request`) is its answer rather than upkeep the same decision wrote before it."""
    match request:
        case AdmissionRequested():
            return isinstance(fact, AdmissionDecided) and fact.run_id == request.run_id
        case AdmissionWithdrawn() | RunSettlementRequested():
            return isinstance(fact, RunCharged) and fact.run_id == request.run_id
        case CreditsGrantRequested():
            # A new org's start balance is a grant caused by the same request: by `system`, to the org.
            return isinstance(fact, CreditsGranted) and (fact.user_id, fact.units, fact.reason, fact.by) == (
                request.user_id, request.units, request.reason, request.by,
            )
        case BudgetChangeRequested():
            return isinstance(fact, BudgetSet)
        case RefillChangeRequested():
            return isinstance(fact, RefillScheduled) and (request.units is None or fact.by == request.by)
        case ViolationReported():
            return isinstance(fact, ViolationRecorded) and fact.user_id == request.user_id
        case SuspensionRequested():
            return isinstance(fact, UserSuspended) and (fact.user_id, fact.by) == (request.user_id, request.by)
        case ReinstatementRequested():
            return isinstance(fact, UserReinstated) and fact.user_id == request.user_id
    return False
