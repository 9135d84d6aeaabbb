"""The safety ledger on both stores: every decision once, an org's decisions filtered, actions per day, flagged runs."""

from datetime import UTC, date, datetime, timedelta

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.safety import CategoryScore, SafetyDecision
from events.topics import RUN_EVENTS
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import LogRecord
from kernel.runtime import Delivery
from projections.safety_decisions import FlaggedRun, SafetyDay, SafetyLedger

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
DAY = datetime(2026, 12, 4, 9, tzinfo=UTC)
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")
GLOBEX = Actor(user_id="gus", org_id="globex", workspace_id="lab")


def decision(
    offset: int, run_id: str, *, stage: str = "input", action: str = "allow", triggered: tuple[str, ...] = (),
    actor: Actor = ACME, hours: float = 0, subject: str | None = None, failures: tuple[str, ...] = (),
) -> Delivery:
    event = SafetyDecision(
        run_id=run_id, conversation_id=f"conv_{run_id}", turn_seq=1 if stage == "input" else 2, stage=stage, action=action,
        categories=(CategoryScore(category="pii", score=0.85), CategoryScore(category="harassment", score=0.1)),
        triggered=triggered, classifiers=("pii", "profanity"), signals=("pii:EMAIL_ADDRESS",) if triggered else (),
        policy_id="default", policy_version="2026-12-04.1", reason="pii 0.85 >= 0.5: redact" if triggered else "",
        subject=subject, failures=failures, fail_mode="open" if failures else None, decided_at=DAY + timedelta(hours=hours),
    )
    envelope = Envelope.wrap(event, key=run_id, actor=actor)
    record = LogRecord(topic=RUN_EVENTS, partition=0, offset=offset, key=run_id, value=CODEC.encode(envelope), timestamp=event.decided_at)
    return Delivery(record=record, envelope=envelope)


async def test_each_decision_is_kept_once_with_its_scores_policy_and_owner(store) -> None:
    ledger = SafetyLedger(store)
    await ledger.create_tables()
    await ledger.create_tables()  # idempotent, as on every start
    batch = [
        decision(1, "run_a", action="redact", triggered=("pii",)),
        decision(2, "run_a", stage="output", action="allow", failures=("llm_judge: timed out after 1.5 s",), hours=0.5),
        decision(3, "run_b", stage="context", action="fence", triggered=("prompt_injection",), subject="file_1:0", hours=25),
        decision(4, "run_g", actor=GLOBEX, action="refuse", triggered=("harassment",)),
    ]
    await ledger.react(batch)
    await ledger.react(batch[:2])  # redelivered after a crash

    rows = await ledger.decisions("acme", since=DAY - timedelta(days=1), until=DAY + timedelta(days=2))

    assert [(row.run_id, row.stage, row.action) for row in rows] == [  # newest first
        ("run_b", "context", "fence"), ("run_a", "output", "allow"), ("run_a", "input", "redact"),
    ]
    redacted = next(row for row in rows if row.action == "redact")
    assert (redacted.org_id, redacted.workspace_id, redacted.user_id) == ("acme", "research", "ana")
    assert redacted.category_names == ["pii", "harassment"] and redacted.category_scores == [0.85, 0.1]
    assert redacted.triggered == ["pii"] and redacted.classifiers == ["pii", "profanity"]
    assert (redacted.policy_id, redacted.policy_version, redacted.turn_seq) == ("default", "2026-12-04.1", 1)
    assert redacted.decided_at == DAY and redacted.event_id == batch[0].envelope.event_id
    failed = next(row for row in rows if row.stage == "output")
    assert failed.failures == ["llm_judge: timed out after 1.5 s"] and failed.fail_mode == "open"
    assert next(row for row in rows if row.stage == "context").subject == "file_1:0"

    only = await ledger.decisions("acme", since=DAY, until=DAY + timedelta(days=2), stage="input", action="redact", limit=5)
    assert [row.run_id for row in only] == ["run_a"]
    assert await ledger.decisions("acme", since=DAY, until=DAY + timedelta(hours=1), limit=1) != []
    assert [row.run_id for row in await ledger.decisions("globex", since=DAY, until=DAY + timedelta(days=1))] == ["run_g"]


async def test_actions_per_day_and_flagged_runs(store) -> None:
    ledger = SafetyLedger(store)
    await ledger.create_tables()
    batch = [
        decision(1, "run_a", action="redact", triggered=("pii",)),
        decision(2, "run_a", stage="output", action="allow"),
        decision(3, "run_b", action="redact", triggered=("pii",), hours=1),
        decision(4, "run_b", stage="context", action="fence", triggered=("prompt_injection",), subject="f:0", hours=1),
        decision(5, "run_c", action="allow", hours=26),
        decision(6, "run_g", actor=GLOBEX, action="refuse", triggered=("harassment",)),
    ]
    await ledger.react(batch)
    await ledger.react(batch)

    days = await ledger.days("acme", since=date(2026, 12, 4), until=date(2026, 12, 6))

    assert days == [
        SafetyDay(org_id="acme", stage="context", category="prompt_injection", action="fence", day=date(2026, 12, 4), decisions=1),
        SafetyDay(org_id="acme", stage="input", category="pii", action="redact", day=date(2026, 12, 4), decisions=2),
        SafetyDay(org_id="acme", stage="output", category="", action="allow", day=date(2026, 12, 4), decisions=1),
        SafetyDay(org_id="acme", stage="input", category="", action="allow", day=date(2026, 12, 5), decisions=1),
    ]
    flagged = await ledger.flagged_runs("acme")
    assert flagged == [
        FlaggedRun(org_id="acme", run_id="run_b", conversation_id="conv_run_b", workspace_id="research", user_id="ana",
                   decisions=2, stages=["context", "input"], actions=["fence", "redact"], categories=["pii", "prompt_injection"],
                   first_decided_at=DAY + timedelta(hours=1), last_decided_at=DAY + timedelta(hours=1)),
        FlaggedRun(org_id="acme", run_id="run_a", conversation_id="conv_run_a", workspace_id="research", user_id="ana",
                   decisions=1, stages=["input"], actions=["redact"], categories=["pii"],
                   first_decided_at=DAY, last_decided_at=DAY),
    ]
    assert [run.run_id for run in await ledger.flagged_runs("globex")] == ["run_g"]
