"""The run ledger on both stores: manifests and milestones once each, and `run_latency` measured from them."""

from datetime import UTC, datetime, timedelta

import pytest

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.runs import (
    AssistantDelta,
    GenerationStarted,
    PromptAssembled,
    RunBackgrounded,
    RunFinished,
    RunHeartbeat,
    RunStarted,
    ToolReturned,
    UsageRecorded,
)
from events.topics import RUN_EVENTS, USAGE
from events.values import Usage
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import LogRecord
from kernel.runtime import Delivery
from projections.run_ledger import RunLedger
from projections.usage_ledger import UsageLedger

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
START = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")
GLOBEX = Actor(user_id="gus", org_id="globex", workspace_id="lab")


def delivered(offset: int, event: object, *, ms: float, actor: Actor = ACME, topic: str = RUN_EVENTS) -> Delivery:
    """`event` as the log delivers it: at offset `offset`, appended `ms` milliseconds after START."""
    envelope = Envelope.wrap(event, key=event.run_id, actor=actor, occurred_at=START + timedelta(milliseconds=ms))
    record = LogRecord(topic=topic, partition=0, offset=offset, key=event.run_id, value=CODEC.encode(envelope), timestamp=envelope.occurred_at)
    return Delivery(record=record, envelope=envelope)


def manifest(run_id: str, *, pool: str, fallback_from: str | None = None, chunk_ids: tuple[str, ...] = ()) -> PromptAssembled:
    return PromptAssembled(
        run_id=run_id, conversation_id=f"conv_{run_id}", pool=pool, tokenizer="words", budget_tokens=7936, prompt_tokens=42,
        tool_tokens=5, system_tokens=20, turn_seqs=(1,), history_tokens=0, chunk_ids=chunk_ids, source_tokens=9 if chunk_ids else 0,
        question_tokens=8, size_class="short", fallback_from=fallback_from,
        route_reason="cheapest pool that fits" + (f"; skipped {fallback_from} (breaker open)" if fallback_from else ""),
        fenced_chunk_ids=chunk_ids[:1],
    )


def a_searched_run(first: int = 1) -> list[Delivery]:
    """run_a (acme): searched, routed to `steady` past `cheap`, two model steps, text from the first; 250 ms in all."""
    return [
        delivered(first, RunStarted(run_id="run_a", conversation_id="conv_run_a", turn_seq=2), ms=0),
        delivered(first + 1, ToolReturned(run_id="run_a", call_id="tc_a", tool_name="file_search", status="completed", summary="2 passage(s) found"), ms=20),
        delivered(first + 2, manifest("run_a", pool="steady", fallback_from="cheap", chunk_ids=("file_1:0", "file_1:1")), ms=30),
        delivered(first + 3, GenerationStarted(run_id="run_a", worker_id="w1", pool="steady", step=1), ms=40),
        delivered(first + 4, AssistantDelta(run_id="run_a", index=0, text=" Spring"), ms=52.5),
        delivered(first + 5, AssistantDelta(run_id="run_a", index=1, text=" tides"), ms=60),
        delivered(first + 6, RunHeartbeat(run_id="run_a", worker_id="w1"), ms=70),
        delivered(first + 7, GenerationStarted(run_id="run_a", worker_id="w2", pool="steady", step=2), ms=150),
        delivered(first + 8, AssistantDelta(run_id="run_a", index=0, text=" and"), ms=160),
        delivered(first + 9, RunFinished(run_id="run_a", conversation_id="conv_run_a", turn_seq=2, status="completed", usage=Usage()), ms=250),
    ]


def a_failed_run(first: int) -> list[Delivery]:
    """run_g (globex): routed to `cheap`, claimed, failed before any token; backgrounded on the way."""
    return [
        delivered(first, RunStarted(run_id="run_g", conversation_id="conv_run_g", turn_seq=2), ms=1000, actor=GLOBEX),
        delivered(first + 1, manifest("run_g", pool="cheap"), ms=1010, actor=GLOBEX),
        delivered(first + 2, GenerationStarted(run_id="run_g", worker_id="w9", pool="cheap"), ms=1030, actor=GLOBEX),
        delivered(first + 3, RunBackgrounded(run_id="run_g", reason="a long tool", at=START + timedelta(milliseconds=1040)), ms=1041, actor=GLOBEX),
        delivered(
            first + 4,
            RunFinished(
                run_id="run_g", conversation_id="conv_run_g", turn_seq=2, status="failed",
                reason="inference failed: EngineUnavailable: connection refused", usage=Usage(),
            ),
            ms=1100, actor=GLOBEX,
        ),
    ]


def usage(offset: int, run_id: str, *, pool: str, engine: str, actor: Actor) -> Delivery:
    recorded = UsageRecorded(
        run_id=run_id, conversation_id=f"conv_{run_id}", pool=pool, engine=engine, status="completed", prompt_tokens=40,
        output_tokens=10, recorded_at=START,
    )
    return delivered(offset, recorded, ms=0, actor=actor, topic=USAGE)


@pytest.fixture
async def ledger(store) -> RunLedger:
    await UsageLedger(store).create_tables()  # run_latency joins it
    ledger = RunLedger(store)
    await ledger.create_tables()
    await ledger.create_tables()  # idempotent, as on every start
    return ledger


async def test_a_manifest_is_one_row_with_its_route_passages_and_token_counts(ledger, store) -> None:
    batch = a_searched_run()
    await ledger.react(batch)
    await ledger.react(batch[:3])  # redelivered after a crash

    rows = await store.query("SELECT * FROM prompt_manifests FINAL")

    [row] = rows
    assert (row["org_id"], row["workspace_id"], row["user_id"]) == ("acme", "research", "ana")
    assert (row["run_id"], row["conversation_id"], row["event_id"]) == ("run_a", "conv_run_a", batch[2].envelope.event_id)
    assert (row["pool"], row["fallback_from"], row["size_class"]) == ("steady", "cheap", "short")
    assert row["route_reason"] == "cheapest pool that fits; skipped cheap (breaker open)"
    assert (row["prompt_tokens"], row["tool_tokens"], row["source_tokens"], row["budget_tokens"]) == (42, 5, 9, 7936)
    assert row["chunk_ids"] == ["file_1:0", "file_1:1"] and row["fenced_chunk_ids"] == ["file_1:0"]
    assert row["dropped_chunk_ids"] == [] and row["turn_seqs"] == [1] and row["summary_version"] is None
    assert row["assembled_at"] == START + timedelta(milliseconds=30) and row["version"] == 3


async def test_milestones_keep_each_steps_first_token_and_skip_the_other_deltas(ledger, store) -> None:
    batch = a_searched_run()
    await ledger.react(batch)
    await ledger.react(batch)  # replayed

    rows = await store.query("SELECT milestone, step, pool, worker_id, status, detail FROM run_milestones FINAL ORDER BY at")

    assert [tuple(row.values()) for row in rows] == [
        ("started", 0, "", "", "", ""),
        ("searched", 0, "", "", "completed", "2 passage(s) found"),
        ("generation_started", 1, "steady", "w1", "", ""),
        ("first_token", 0, "", "", "", ""),
        ("generation_started", 2, "steady", "w2", "", ""),
        ("first_token", 0, "", "", "", ""),
        ("finished", 0, "", "", "completed", ""),
    ]


async def test_run_latency_measures_queue_first_token_and_duration_per_run(ledger, store) -> None:
    await ledger.react([*a_searched_run(1), *a_failed_run(20)])
    await UsageLedger(store).react([usage(30, "run_a", pool="steady", engine="scripted", actor=ACME)])

    rows = await store.query(
        "SELECT org_id, run_id, workspace_id, user_id, pool, engine, steps, searched, status, reason, queue_ms, ttft_ms,"
        " duration_ms, started_at, first_token_at, finished_at FROM run_latency ORDER BY run_id"
    )

    assert rows == [
        {
            "org_id": "acme", "run_id": "run_a", "workspace_id": "research", "user_id": "ana", "pool": "steady",
            "engine": "scripted", "steps": 2, "searched": True, "status": "completed", "reason": "", "queue_ms": 40.0,
            "ttft_ms": 52.5, "duration_ms": 250.0, "started_at": START, "first_token_at": START + timedelta(milliseconds=52.5),
            "finished_at": START + timedelta(milliseconds=250),
        },
        {
            # No usage row for it (yet): its engine is ''; no token: no time to first token.
            "org_id": "globex", "run_id": "run_g", "workspace_id": "lab", "user_id": "gus", "pool": "cheap", "engine": "",
            "steps": 1, "searched": False, "status": "failed", "reason": "inference failed: EngineUnavailable: connection refused",
            "queue_ms": 30.0, "ttft_ms": None, "duration_ms": 100.0, "started_at": START + timedelta(seconds=1),
            "first_token_at": None, "finished_at": START + timedelta(milliseconds=1100),
        },
    ]
    assert [row["searched"] for row in rows] == [True, False] and all(isinstance(row["searched"], bool) for row in rows)
    backgrounded = await store.query("SELECT detail, at FROM run_milestones FINAL WHERE milestone = 'backgrounded'")
    assert backgrounded == [{"detail": "a long tool", "at": START + timedelta(milliseconds=1040)}]  # the event's own time


async def test_a_run_still_going_has_no_finish_and_no_duration(ledger, store) -> None:
    await ledger.react(a_searched_run()[:5])

    [row] = await store.query("SELECT status, ttft_ms, finished_at, duration_ms FROM run_latency")

    assert row == {"status": "", "ttft_ms": 52.5, "finished_at": None, "duration_ms": None}
