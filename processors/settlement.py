"""The settlement router: every run that ends asks its org's governance to charge it, at its final usage.

A run ends with exactly one `AssistantTurnFinished` on `conversation-events` (the conversation decider writes it
in the same append as the run's `RunFinished`, once; the watchdog sees to it that every run ends). The router reads
the run's `usage` records, which are on the log by then (a worker appends its last one together with the
`FinishRun` that leads to the end; a run ended by the watchdog or the tool loop records nothing more), and appends
`RunSettlementRequested` with the last of them to `governance-requests`, keyed by the owner's org. The decider
charges a run only while its reservation is open, so a settlement sent twice (a redelivery, a replay) charges once.

It follows `conversation-events` rather than `run-events`: the same end, without a run's stream of deltas.
"""

from collections.abc import Sequence

from commands.governance.quota import settlement_request
from events.conversation import AssistantTurnFinished
from events.runs import UsageRecorded
from events.topics import CONVERSATION_EVENTS, GOVERNANCE_REQUESTS, USAGE
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Envelope
from kernel.log import EventLog, OutgoingRecord
from kernel.runtime import Delivery, Processor, encode

SETTLEMENT_GROUP = "settlement"


class SettlementRouter:
    """`AssistantTurnFinished` -> `RunSettlementRequested(final usage)` for the run's org."""

    def __init__(self, *, log: EventLog, codec: AvroCodec) -> None:
        self._log = log
        self._codec = codec

    def processor(self) -> Processor:
        # Not flushed: the requests and the router's progress land together, so a power cut loses both and the
        # router sends them again (the decider charges a run once); a flush per finished run would be paid for nothing.
        return Processor(group=SETTLEMENT_GROUP, topics=(CONVERSATION_EVENTS,), react=self.react, durable=False)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            finished = delivery.envelope.payload
            if not isinstance(finished, AssistantTurnFinished):
                continue
            owner = delivery.envelope.actor  # the conversation's owner: the user and the org who pay
            request = settlement_request(
                org_id=owner.org_id, user_id=owner.user_id, run_id=finished.run_id, status=finished.state,
                usage_records=await self._usage_records(finished.run_id),
            )
            envelope = Envelope.wrap(request, key=owner.org_id, actor=owner, cause=delivery.envelope)
            outputs.append(encode(self._codec, envelope, topic=GOVERNANCE_REQUESTS))
        return outputs

    async def _usage_records(self, run_id: str) -> list[UsageRecorded]:
        """The run's usage records, oldest first (each holds the run's totals so far)."""
        records = []
        for record in await self._log.read(USAGE, key=run_id):
            try:
                payload = self._codec.decode(record.value).payload
            except UndecodableMessage:
                continue
            if isinstance(payload, UsageRecorded):
                records.append(payload)
        return records
