"""Refolding the ledgers from a real embedded log, on both stores: in place, idempotent, and the groups move to the end."""

from datetime import UTC, datetime

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.governance import RunCharged
from events.runs import AssistantDelta, GenerationStarted, PromptAssembled, RunFinished, RunStarted, UsageRecorded
from events.topics import GOVERNANCE, RUN_EVENTS, USAGE
from events.values import Usage
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.runtime import encode
from projections.ledger_replay import every_ledger, refold_ledgers
from projections.run_charges import CHARGE_LEDGER_GROUP
from projections.run_ledger import RUN_LEDGER_GROUP
from projections.usage_ledger import USAGE_LEDGER_GROUP

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
AT = datetime(2026, 12, 4, 9, tzinfo=UTC)
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")


def run_events(run_id: str) -> list:
    manifest = PromptAssembled(
        run_id=run_id, conversation_id="conv_1", pool="steady", tokenizer="words", budget_tokens=100, prompt_tokens=10,
        system_tokens=5, turn_seqs=(1,), history_tokens=0, chunk_ids=(), question_tokens=3,
    )
    return [
        RunStarted(run_id=run_id, conversation_id="conv_1", turn_seq=2),
        manifest,
        GenerationStarted(run_id=run_id, worker_id="w1", pool="steady"),
        *(AssistantDelta(run_id=run_id, index=index, text=f" word{index}") for index in range(5)),
        RunFinished(run_id=run_id, conversation_id="conv_1", turn_seq=2, status="completed", usage=Usage(prompt_tokens=10)),
    ]


async def append_runs(log, *run_ids: str) -> None:
    records = []
    for run_id in run_ids:
        records += [encode(CODEC, Envelope.wrap(event, key=run_id, actor=ACME), topic=RUN_EVENTS) for event in run_events(run_id)]
        usage = UsageRecorded(
            run_id=run_id, conversation_id="conv_1", pool="steady", engine="scripted", status="completed",
            prompt_tokens=10, output_tokens=5, recorded_at=AT,
        )
        charge = RunCharged(
            org_id="acme", user_id="ana", run_id=run_id, status="completed", pool="steady", units=15, prompt_tokens=10,
            output_tokens=5, reserved_units=1, charged_at=AT,
        )
        records.append(encode(CODEC, Envelope.wrap(usage, key=run_id, actor=ACME), topic=USAGE))
        records.append(encode(CODEC, Envelope.wrap(charge, key="acme", actor=ACME), topic=GOVERNANCE))
    await log.append(records)


async def counts(store) -> dict[str, int]:
    tables = ("prompt_manifests", "run_milestones", "usage_ledger", "run_charges")
    return {table: (await store.query(f"SELECT count() AS n FROM {table} FINAL"))[0]["n"] for table in tables}


async def test_refolding_fills_new_tables_from_the_whole_log_in_place_and_moves_each_group_to_the_end(embedded_log, store) -> None:
    for ledger in every_ledger(store):
        await ledger.create_tables()
    await append_runs(embedded_log, "run_1", "run_2")

    read = await refold_ledgers(log=embedded_log, codec=CODEC, store=store)

    assert read[RUN_LEDGER_GROUP] == 2 * 9 and read[USAGE_LEDGER_GROUP] == 2 and read[CHARGE_LEDGER_GROUP] == 2
    # Per run: started, generation_started, the first delta (the other four are skipped), finished.
    assert await counts(store) == {"prompt_manifests": 2, "run_milestones": 8, "usage_ledger": 2, "run_charges": 2}
    for group, topic in ((RUN_LEDGER_GROUP, RUN_EVENTS), (USAGE_LEDGER_GROUP, USAGE), (CHARGE_LEDGER_GROUP, GOVERNANCE)):
        assert await embedded_log.committed(group=group, topic=topic) == await embedded_log.end_offset(topic)

    # Again, and after a table was lost: the same rows, counted once; a run appended since is folded too.
    await refold_ledgers(log=embedded_log, codec=CODEC, store=store)
    await store.execute("DROP TABLE prompt_manifests")
    await append_runs(embedded_log, "run_3")
    for ledger in every_ledger(store):
        await ledger.create_tables()
    await refold_ledgers(log=embedded_log, codec=CODEC, store=store)

    assert await counts(store) == {"prompt_manifests": 3, "run_milestones": 12, "usage_ledger": 3, "run_charges": 3}
    rows = await store.query("SELECT run_id, pool, engine, steps, status FROM run_latency ORDER BY run_id")
    assert [tuple(row.values()) for row in rows] == [(f"run_{n}", "steady", "scripted", 1, "completed") for n in (1, 2, 3)]


async def test_an_empty_log_refolds_nothing(embedded_log, store) -> None:
    for ledger in every_ledger(store):
        await ledger.create_tables()

    read = await refold_ledgers(log=embedded_log, codec=CODEC, store=store)

    assert set(read.values()) == {0}
    assert await embedded_log.committed(group=RUN_LEDGER_GROUP, topic=RUN_EVENTS) == -1
