"""The governance processor: one writer per org key turns `governance-requests` into facts on `governance`.

For each request it folds the org's history (loaded on a miss, then kept in memory: from its snapshot and what
`governance` took since, where the process has the read-model store, else from the org's whole history), asks the
pure decider, and appends the facts with the request as their cause, together with its consumer progress. The
waiting API instance (or `turnlog credits`) picks the answer caused by its request. Where the runtime delivers
at least once (faust on Kafka), a request delivered again after its facts were written is recognised by their
causation ids and skipped, so a grant is never applied twice.
"""

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from commands.governance.decider import OrgState, decide, evolve
from commands.governance.snapshots import REMEMBERED_REQUESTS, OrgSnapshots, load_org
from commands.governance.tiers_file import GovernanceConfig
from events.topics import GOVERNANCE, GOVERNANCE_REQUESTS, key_of
from kernel.codec import AvroCodec
from kernel.envelope import Envelope
from kernel.log import EventLog, OutgoingRecord
from kernel.runtime import Delivery, Processor, encode
from events.governance import RunCharged
from processors.metrics import CREDITS_CHARGED

logger = logging.getLogger(__name__)

GOVERNANCE_GROUP = "governance"


@dataclass(kw_only=True)
class _Org:
    state: OrgState = field(default_factory=OrgState)
    answered: OrderedDict[str, None] = field(default_factory=OrderedDict)  # recent requests' event ids

    def remember(self, request_id: str) -> None:
        self.answered[request_id] = None
        while len(self.answered) > REMEMBERED_REQUESTS:
            self.answered.popitem(last=False)


class GovernanceDecider:
    """Decides each governance request against its org's state, in the order the log gives."""

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, config: GovernanceConfig, snapshots: OrgSnapshots | None = None,
        capacity: int = 10_000,
    ) -> None:
        self._log = log
        self._codec = codec
        self._config = config
        self._snapshots = snapshots
        self._capacity = capacity
        self._orgs: OrderedDict[str, _Org] = OrderedDict()

    def processor(self) -> Processor:
        return Processor(group=GOVERNANCE_GROUP, topics=(GOVERNANCE_REQUESTS,), react=self.react, on_reset=self._orgs.clear)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            request = delivery.envelope
            org = await self._org(request.key)
            if request.event_id in org.answered:
                logger.info("governance: %s %s was decided already (delivered again)", request.type, request.event_id)
                continue
            decision = decide(request, org.state, self._config)
            if decision.ignored is not None:
                logger.warning("governance: %s for %s changed nothing: %s", request.type, request.key, decision.ignored)
            for event in decision.events:
                envelope = Envelope.wrap(event, key=key_of(event), actor=request.actor, cause=request)
                org.state = evolve(org.state, envelope)
                outputs.append(encode(self._codec, envelope, topic=GOVERNANCE))
                if isinstance(event, RunCharged) and event.units:
                    CREDITS_CHARGED.labels(pool=event.pool or "unknown").inc(event.units)
            if decision.events:
                org.remember(request.event_id)
        return outputs

    async def _org(self, org_id: str) -> _Org:
        """The org's state and recent answers; on a miss, loaded from its snapshot and history (the decider is its only
        writer, so nothing changes it meanwhile)."""
        org = self._orgs.get(org_id)
        if org is None:
            loaded = await load_org(log=self._log, codec=self._codec, org_id=org_id, snapshots=self._snapshots)
            org = _Org(state=loaded.state, answered=OrderedDict.fromkeys(loaded.answered))
            self._orgs[org_id] = org
            while len(self._orgs) > self._capacity:
                self._orgs.popitem(last=False)
        self._orgs.move_to_end(org_id)
        return org
