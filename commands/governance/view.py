"""Each org's governance state as a reader sees it: `governance` folded per org with the decider's own `evolve`.

The API answers `GET /v1/usage` and the rate-limit fields of answers that are not admissions from it. An org is
loaded on first use (its snapshot and what `governance` took since, or its whole history where the process has no
read-model store: commands/governance/snapshots.py), then kept current by the governance bus, which
hands over every record it follows (`observe`). Records that arrive while an org is loading are held and folded
after the load, so none falls between the read and the follow. It never decides anything: the decider does.
"""

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from commands.governance.decider import OrgState, evolve
from commands.governance.snapshots import OrgSnapshots, load_org
from kernel.codec import AvroCodec
from kernel.envelope import Envelope
from kernel.log import EventLog, LogRecord


@dataclass(frozen=True, kw_only=True)
class _Folded:
    state: OrgState
    offset: int  # the last record of the org folded in (all of an org's records share a partition)


class GovernanceView:
    """`OrgState` per org, loaded on a miss and then updated from the records the bus follows."""

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, snapshots: OrgSnapshots | None = None, capacity: int = 10_000
    ) -> None:
        self._log = log
        self._codec = codec
        self._snapshots = snapshots
        self._capacity = capacity
        self._orgs: OrderedDict[str, _Folded] = OrderedDict()
        self._loading: dict[str, list[tuple[LogRecord, Envelope]]] = {}
        self._loads: dict[str, asyncio.Future[OrgState]] = {}

    def watches(self, org_id: str) -> bool:
        """Whether a record of this org changes the view (the bus decodes only those, and its own answers)."""
        return org_id in self._orgs or org_id in self._loading

    def observe(self, record: LogRecord, envelope: Envelope) -> None:
        """One record the bus followed on `governance`."""
        org_id = record.key
        held = self._loading.get(org_id)
        if held is not None:
            held.append((record, envelope))
            return
        folded = self._orgs.get(org_id)
        if folded is not None and record.offset > folded.offset:
            self._orgs[org_id] = _Folded(state=evolve(folded.state, envelope), offset=record.offset)

    def cached(self, org_id: str) -> OrgState | None:
        """The org's state if it is loaded (no I/O)."""
        folded = self._orgs.get(org_id)
        return None if folded is None else folded.state

    async def state_of(self, org_id: str) -> OrgState:
        """The org's state, loaded from the log on a miss."""
        folded = self._orgs.get(org_id)
        if folded is not None:
            self._orgs.move_to_end(org_id)
            return folded.state
        pending = self._loads.get(org_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OrgState] = asyncio.get_running_loop().create_future()
        self._loads[org_id] = future
        try:
            state = await self._load(org_id)
            future.set_result(state)
            return state
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters (if any) raise it themselves
            raise
        finally:
            self._loads.pop(org_id, None)

    async def _load(self, org_id: str) -> OrgState:
        self._loading[org_id] = []
        try:
            loaded = await load_org(
                log=self._log, codec=self._codec, org_id=org_id, snapshots=self._snapshots, answered=False
            )
        finally:
            held = self._loading.pop(org_id)
        state, offset = loaded.state, loaded.offset
        for record, envelope in held:
            if record.offset > offset:
                state, offset = evolve(state, envelope), record.offset
        self._orgs[org_id] = _Folded(state=state, offset=offset)
        while len(self._orgs) > self._capacity:
            self._orgs.popitem(last=False)
        return state
