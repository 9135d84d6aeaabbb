"""Reporting violations: how moderation, the tool sandbox or anything else tells governance a user did wrong.

A report is a `ViolationReported` request on `governance-requests`; the governance decider adds the kind's points
(`[abuse.points]` of the tiers file) to the user's score and suspends them past the threshold. Callers get a
`ViolationReporter` from the composition root (`turnlog.system.violation_reporter`): with a tiers file it writes
the request, without one it drops it (nothing would read it), so a caller never needs to know whether governance
is on. A processor puts `records(...)` among its outputs, so the report is appended with its progress (once); other
code `await`s `report(...)`.
"""

from typing import Protocol

from events.governance import ViolationReported
from events.topics import GOVERNANCE_REQUESTS
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import EventLog, OutgoingRecord

# The kinds the tiers file weighs by name (any other kind weighs `other`).
FLAGGED_INPUT = "flagged_input"
SANDBOX_ESCAPE = "sandbox_escape"


class ViolationReporter(Protocol):
    """Where reports of a user's violations go."""

    def records(
        self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None
    ) -> list[OutgoingRecord]:
        """The report as records for a processor's outputs (empty when governance is off)."""
        ...

    async def report(self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None) -> None:
        """Append the report now, durably (nothing when governance is off)."""
        ...


class GovernanceViolations:
    """Reports become `ViolationReported` on `governance-requests`, keyed by the user's org."""

    def __init__(self, *, log: EventLog, codec: AvroCodec) -> None:
        self._log = log
        self._codec = codec

    def records(
        self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None
    ) -> list[OutgoingRecord]:
        reported = ViolationReported(org_id=actor.org_id, user_id=actor.user_id, kind=kind, detail=detail[:1000], by=by)
        envelope = Envelope.wrap(reported, key=actor.org_id, actor=actor, cause=cause)
        return [OutgoingRecord(topic=GOVERNANCE_REQUESTS, key=envelope.key, value=self._codec.encode(envelope))]

    async def report(self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None) -> None:
        await self._log.append(self.records(actor=actor, kind=kind, detail=detail, by=by, cause=cause))


class IgnoredViolations:
    """Governance is off (no tiers file): reports go nowhere."""

    def records(
        self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None
    ) -> list[OutgoingRecord]:
        return []

    async def report(self, *, actor: Actor, kind: str, detail: str, by: str, cause: Envelope | None = None) -> None:
        return None
