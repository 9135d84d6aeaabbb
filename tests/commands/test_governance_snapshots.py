"""An org's snapshot as the store keeps it: every field of its state; and the newest answered requests kept."""

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta

from commands.governance.decider import OrgState, Reservation, Score, Suspension
from commands.governance.snapshots import REMEMBERED_REQUESTS, OrgSnapshot, newest, snapshot_from_json
from kernel.snapshots import snapshot_json

AT = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)

EVERY_FIELD_SET = OrgState(
    org_id="org_acme",
    clock=AT,
    balance=-7,
    user_balances={"user_ana": 40, "user_bo": 0},
    monthly_token_budget=1_000_000,
    month="2026-12",
    month_tokens=12_345,
    refill_units=500,
    refill_by="tier:team",
    refilled_period="2026-12",
    reservations={
        "run_1": Reservation(run_id="run_1", user_id="user_ana", units=20, estimated_tokens=900, wallet_user_id="user_ana", admitted_at=AT),
        "run_2": Reservation(run_id="run_2", user_id="user_bo", units=20, estimated_tokens=10, wallet_user_id=None, admitted_at=AT),
    },
    windows={"user-requests:user_ana": AT + timedelta(seconds=1.5), "org-tokens": AT},
    scores={"user_bo": Score(value=7.25, at=AT, forgotten_at=AT + timedelta(hours=2))},
    suspensions={"user_bo": Suspension(until=AT + timedelta(minutes=5), reason="abuse", by="system")},
)


def test_a_snapshot_keeps_every_field_of_the_state() -> None:
    snapshot = OrgSnapshot(state=EVERY_FIELD_SET, through=41)
    stored = snapshot_json(snapshot)
    assert set(json.loads(stored)["state"]) == {field.name for field in fields(OrgState)}  # a new field must be stored
    assert snapshot_from_json(stored) == snapshot


def test_an_empty_org_round_trips() -> None:
    assert snapshot_from_json(snapshot_json(OrgSnapshot(state=OrgState()))) == OrgSnapshot(state=OrgState())


def test_the_newest_answered_requests_are_kept_once_each_oldest_first() -> None:
    assert newest(["evt_1", "evt_2", "evt_2", "evt_3"]) == ("evt_1", "evt_2", "evt_3")
    many = [f"evt_{index}" for index in range(REMEMBERED_REQUESTS + 5)]
    assert newest(many) == tuple(many[5:])
