"""An org's governance state saved beside the log, so that loading an org does not fold its whole history.

`governance` is kept forever and Kafka has no index by key: folding an org from its history scans the org's
partition from its start, and an org id is no id turnlog made, so nothing bounds that scan. It happened for every
org new to the decider (a new org's first admission, every org after a restart), with the decider's other requests
waiting behind it. A snapshot is an org's state as folded through one of its facts; the store also says through
which offset it folded the org's whole partition (the watermark), so an org with no snapshot had no fact up to there,
and keeps the request each fact answered, by which the decider recognises a request delivered again. Loading an org
costs the store's answer and a scan of what its partition took after the watermark: the snapshot writer's lag
(projections/governance_snapshots.py writes them).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from commands.governance.decider import OrgState, Reservation, Score, Suspension, evolve
from events.topics import GOVERNANCE
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.log import EventLog
from kernel.snapshots import Saved, Snapshot, parsed_time

# Requests a runtime may deliver again are those after its last commit: at most a batch of them.
REMEMBERED_REQUESTS = 1_000


# An org as folded through its fact at offset `through`.
OrgSnapshot = Snapshot[OrgState]


@dataclass(frozen=True, kw_only=True)
class SavedOrg(Saved[OrgState]):
    """What the store holds for an org: its snapshot and its partition's watermark (kernel/snapshots.py), and its
    newest answered requests (oldest first)."""

    answered: tuple[str, ...] = ()


class OrgSnapshots(Protocol):
    """Where snapshots are read (the read-model store)."""

    async def saved(self, org_id: str, *, partition: int, answered: bool) -> SavedOrg:
        """The org's snapshot and the watermark of its partition (of topic `governance`); its answered requests too
        where `answered` asks (the decider needs them, a reader does not)."""
        ...


@dataclass(frozen=True, kw_only=True)
class LoadedOrg:
    """An org loaded for deciding or reading: its state, newest answered requests, and last offset folded."""

    state: OrgState
    answered: tuple[str, ...]
    offset: int  # every fact of the org up to here is in `state` (-1: none)


async def load_org(
    *, log: EventLog, codec: AvroCodec, org_id: str, snapshots: OrgSnapshots | None, answered: bool = True
) -> LoadedOrg:
    """The org's snapshot and the facts after its partition's watermark; without snapshots, its whole history.
    Without `answered`, what it answered may be left out (a reader that decides nothing)."""
    saved = SavedOrg(snapshot=None)
    if snapshots is not None:
        partition = await log.partition_of(GOVERNANCE, key=org_id)
        saved = await snapshots.saved(org_id, partition=partition, answered=answered)
    start = saved.resume(OrgState())
    state, offset, answers = start.state, start.through, saved.answered
    tail = await log.read(GOVERNANCE, key=org_id, after=offset)
    causes: list[str] = list(answers)
    for record in tail:
        try:
            fact = codec.decode(record.value)
        except UndecodableMessage:
            continue  # the decider writes nothing undecodable; a foreign record changes nothing
        state, offset = evolve(state, fact), record.offset
        if fact.causation_id is not None:
            causes.append(fact.causation_id)
    return LoadedOrg(state=state, answered=newest(causes), offset=offset)


def newest(request_ids: Iterable[str]) -> tuple[str, ...]:
    """The newest `REMEMBERED_REQUESTS` distinct ids, oldest first (a request's several facts share one)."""
    return tuple(dict.fromkeys(request_ids))[-REMEMBERED_REQUESTS:]


# -- as stored: JSON (kernel/snapshots.py) ---------------------------------------------------------------------


def snapshot_from_json(text: str) -> OrgSnapshot:
    document = json.loads(text)
    state = document["state"]
    return OrgSnapshot(
        through=document["through"],
        state=OrgState(
            org_id=state["org_id"],
            clock=parsed_time(state["clock"]),
            balance=state["balance"],
            user_balances=state["user_balances"],
            monthly_token_budget=state["monthly_token_budget"],
            month=state["month"],
            month_tokens=state["month_tokens"],
            refill_units=state["refill_units"],
            refill_by=state["refill_by"],
            refilled_period=state["refilled_period"],
            reservations={
                run_id: Reservation(
                    run_id=r["run_id"], user_id=r["user_id"], units=r["units"], estimated_tokens=r["estimated_tokens"],
                    wallet_user_id=r["wallet_user_id"], admitted_at=parsed_time(r["admitted_at"]),
                )
                for run_id, r in state["reservations"].items()
            },
            windows={key: parsed_time(at) for key, at in state["windows"].items()},
            scores={
                user: Score(value=s["value"], at=parsed_time(s["at"]), forgotten_at=parsed_time(s["forgotten_at"]))
                for user, s in state["scores"].items()
            },
            suspensions={
                user: Suspension(until=parsed_time(s["until"]), reason=s["reason"], by=s["by"])
                for user, s in state["suspensions"].items()
            },
        ),
    )

