"""The tool-call ledger on both stores: each call's first report, once, and each tool's failures and latency by hour."""

import dataclasses
from datetime import UTC, datetime, timedelta

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.tools import ToolCallFinished
from events.topics import RUN_EVENTS
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import LogRecord
from kernel.runtime import Delivery
from projections.tool_calls import ToolCallLedger, ToolHour

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
HOUR = datetime(2026, 12, 4, 9, tzinfo=UTC)
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")


def report(offset: int, call_id: str, *, tool: str = "search", status: str = "completed", ms: int = 100, minute: int = 5) -> Delivery:
    finished = ToolCallFinished(
        run_id=f"run_{call_id}", call_id=call_id, step=1, tool_name=tool, status=status, result="...", attempt=1,
        duration_ms=ms, finished_at=HOUR + timedelta(minutes=minute), runner_id="r",
    )
    envelope = Envelope.wrap(finished, key=finished.run_id, actor=ACME)
    record = LogRecord(topic=RUN_EVENTS, partition=0, offset=offset, key=finished.run_id, value=CODEC.encode(envelope),
                       timestamp=finished.finished_at)
    return Delivery(record=record, envelope=envelope)


async def test_a_call_counts_once_as_its_first_report_and_tools_are_summed_per_hour(store) -> None:
    ledger = ToolCallLedger(store)
    await ledger.create_tables()
    await ledger.create_tables()  # idempotent, as on every start
    batch = [
        report(1, "a", ms=100),
        report(2, "b", ms=300),
        report(3, "c", status="timed_out", ms=30_000),
        report(4, "c", status="completed", ms=31_000),  # a runner's late report of a call the loop had ended
        report(5, "d", tool="weather", ms=50, minute=70),
    ]
    await ledger.react(batch)
    await ledger.react(batch[:2])  # redelivered after a crash

    hours = await ledger.hours("acme", since=HOUR, until=HOUR + timedelta(hours=2))

    [search, weather] = hours
    assert (search.tool, search.hour, search.calls, search.failures) == ("search", HOUR, 3, 1)
    assert abs(search.failure_rate - 1 / 3) < 1e-9 and search.p50_duration_ms == 300
    assert weather == ToolHour(org_id="acme", tool="weather", hour=HOUR + timedelta(hours=1), calls=1, failures=0,
                               failure_rate=0.0, p50_duration_ms=50.0, p95_duration_ms=50.0)
    [c] = await store.query("SELECT status, duration_ms FROM tool_calls WHERE call_id = 'c'", {})
    assert c == {"status": "timed_out", "duration_ms": 30_000}
    assert await ledger.hours("globex", since=HOUR, until=HOUR + timedelta(hours=2)) == []


async def test_what_a_call_used_is_kept_for_analysts(store) -> None:
    ledger = ToolCallLedger(store)
    await ledger.create_tables()
    plain = report(1, "plain")
    sandboxed = report(2, "code", tool="code_interpreter", status="failed")
    used = dataclasses.replace(sandboxed.envelope.payload, cpu_ms=730, memory_bytes=41_000_000, exit_code=1)
    envelope = dataclasses.replace(sandboxed.envelope, payload=used)
    await ledger.react([plain, Delivery(record=sandboxed.record, envelope=envelope)])

    rows = await store.query("SELECT call_id, cpu_ms, memory_bytes, exit_code FROM tool_calls ORDER BY call_id", {})
    assert rows == [
        {"call_id": "code", "cpu_ms": 730, "memory_bytes": 41_000_000, "exit_code": 1},
        {"call_id": "plain", "cpu_ms": None, "memory_bytes": None, "exit_code": None},
    ]
