"""The charge ledger on both stores: each run's charge once, from governance's facts, nothing from the others."""

from datetime import UTC, datetime

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.governance import CreditsGranted, RunCharged
from events.topics import GOVERNANCE
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import LogRecord
from kernel.runtime import Delivery
from projections.run_charges import ChargeLedger

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
AT = datetime(2026, 12, 4, 9, tzinfo=UTC)
GOVERNANCE_ACTOR = Actor(user_id="turnlog", org_id="acme", workspace_id="")


def delivered(offset: int, fact: object) -> Delivery:
    envelope = Envelope.wrap(fact, key="acme", actor=GOVERNANCE_ACTOR, occurred_at=AT)
    record = LogRecord(topic=GOVERNANCE, partition=0, offset=offset, key="acme", value=CODEC.encode(envelope), timestamp=AT)
    return Delivery(record=record, envelope=envelope)


def charged(run_id: str, *, units: int, status: str = "completed", wallet_user_id: str | None = None) -> RunCharged:
    return RunCharged(
        org_id="acme", user_id="ana", run_id=run_id, status=status, pool="steady", units=units, prompt_tokens=40,
        cached_tokens=8, output_tokens=12, reserved_units=20, wallet_user_id=wallet_user_id, charged_at=AT,
    )


async def test_each_charge_is_one_row_and_other_governance_facts_are_skipped(store) -> None:
    ledger = ChargeLedger(store)
    await ledger.create_tables()
    await ledger.create_tables()  # idempotent, as on every start
    batch = [
        delivered(1, CreditsGranted(org_id="acme", units=1000, reason="start", by="system", granted_at=AT)),
        delivered(2, charged("run_a", units=52)),
        delivered(3, charged("run_b", units=0, status="failed", wallet_user_id="ana")),
    ]
    await ledger.react(batch)
    await ledger.react(batch[1:2])  # redelivered

    rows = await store.query(
        "SELECT org_id, user_id, run_id, status, pool, units, prompt_tokens, cached_tokens, output_tokens, reserved_units,"
        " wallet_user_id, charged_at FROM run_charges FINAL ORDER BY run_id"
    )

    assert rows == [
        {
            "org_id": "acme", "user_id": "ana", "run_id": "run_a", "status": "completed", "pool": "steady", "units": 52,
            "prompt_tokens": 40, "cached_tokens": 8, "output_tokens": 12, "reserved_units": 20, "wallet_user_id": "",
            "charged_at": AT,
        },
        {
            "org_id": "acme", "user_id": "ana", "run_id": "run_b", "status": "failed", "pool": "steady", "units": 0,
            "prompt_tokens": 40, "cached_tokens": 8, "output_tokens": 12, "reserved_units": 20, "wallet_user_id": "ana",
            "charged_at": AT,
        },
    ]
