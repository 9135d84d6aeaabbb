"""The usage ledger on both stores: one row per run whatever the redeliveries, totals by org and hour."""

from datetime import UTC, datetime, timedelta

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from kernel.envelope import Envelope
from kernel.log import LogRecord
from events.runs import UsageRecorded
from events.topics import USAGE
from kernel.envelope import Actor
from kernel.runtime import Delivery
from projections.usage_ledger import UsageLedger, UsageTotals

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
HOUR = datetime(2026, 11, 24, 9, tzinfo=UTC)
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")
GLOBEX = Actor(user_id="gus", org_id="globex", workspace_id="ops")


def delivery(offset: int, actor: Actor, run_id: str, *, at: datetime, pool: str = "interactive", prompt: int = 100, output: int = 20) -> Delivery:
    usage = UsageRecorded(run_id=run_id, conversation_id="conv", pool=pool, engine="scripted", status="completed",
                          prompt_tokens=prompt, cached_tokens=prompt // 2, output_tokens=output, recorded_at=at)
    envelope = Envelope.wrap(usage, key=run_id, actor=actor)
    record = LogRecord(topic=USAGE, partition=0, offset=offset, key=run_id, value=CODEC.encode(envelope), timestamp=at)
    return Delivery(record=record, envelope=envelope)


async def test_runs_are_summed_per_org_hour_and_pool_and_counted_once(store) -> None:
    ledger = UsageLedger(store)
    await ledger.create_tables()
    await ledger.create_tables()  # idempotent, as on every start
    batch = [
        delivery(1, ACME, "run_1", at=HOUR + timedelta(minutes=5)),
        delivery(2, ACME, "run_2", at=HOUR + timedelta(minutes=50), output=30),
        delivery(3, ACME, "run_3", at=HOUR + timedelta(hours=1, minutes=1), pool="long"),
        delivery(4, GLOBEX, "run_4", at=HOUR + timedelta(minutes=7), prompt=999),
    ]
    await ledger.react(batch)
    await ledger.react(batch[:2])  # redelivered after a crash: still one row per run

    totals = await ledger.totals("acme", since=HOUR, until=HOUR + timedelta(hours=2))

    assert totals == [
        UsageTotals(org_id="acme", hour=HOUR, pool="interactive", engine="scripted", runs=2,
                    prompt_tokens=200, cached_tokens=100, output_tokens=50),
        UsageTotals(org_id="acme", hour=HOUR + timedelta(hours=1), pool="long", engine="scripted", runs=1,
                    prompt_tokens=100, cached_tokens=50, output_tokens=20),
    ]
    assert [t.prompt_tokens for t in await ledger.totals("globex", since=HOUR, until=HOUR + timedelta(hours=1))] == [999]
