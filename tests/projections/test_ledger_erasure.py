"""Erasure in the ledgers, on both stores and a real embedded log: the subject's rows go, and no refold brings them back."""

from datetime import UTC, datetime
from pathlib import Path

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.erasure import SubjectErased
from events.governance import RunCharged
from events.key_files import KeyFileStore
from events.runs import GenerationStarted, PromptAssembled, RunFinished, RunStarted, UsageRecorded
from events.topics import DOCUMENTS, GOVERNANCE, RUN_EVENTS, USAGE
from events.values import Usage
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.runtime import encode
from kernel.sealing import Subject
from projections.ledger_erasure import LEDGER_TABLES, LedgerEraser, WithoutErased
from projections.conversation_snapshots import conversation_snapshots
from projections.transcript_turns import TranscriptTurnRows
from projections.ledger_replay import every_ledger, refold, refold_ledgers

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
AT = datetime(2026, 12, 4, 9, tzinfo=UTC)
ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
BO = Actor(user_id="bo", org_id="acme", workspace_id="research")
ADMIN = Actor(user_id="root", org_id="acme", workspace_id="research")


async def append_run(log, run_id: str, actor: Actor) -> None:
    events = [
        RunStarted(run_id=run_id, conversation_id="conv_1", turn_seq=2),
        PromptAssembled(
            run_id=run_id, conversation_id="conv_1", pool="steady", tokenizer="words", budget_tokens=100, prompt_tokens=10,
            system_tokens=5, turn_seqs=(1,), history_tokens=0, chunk_ids=(), question_tokens=3,
        ),
        GenerationStarted(run_id=run_id, worker_id="w1", pool="steady"),
        RunFinished(run_id=run_id, conversation_id="conv_1", turn_seq=2, status="completed", usage=Usage(prompt_tokens=10)),
    ]
    usage = UsageRecorded(
        run_id=run_id, conversation_id="conv_1", pool="steady", engine="scripted", status="completed",
        prompt_tokens=10, output_tokens=5, recorded_at=AT,
    )
    charge = RunCharged(
        org_id=actor.org_id, user_id=actor.user_id, run_id=run_id, status="completed", pool="steady", units=15,
        prompt_tokens=10, output_tokens=5, reserved_units=1, charged_at=AT,
    )
    await log.append([
        *(encode(CODEC, Envelope.wrap(event, key=run_id, actor=actor), topic=RUN_EVENTS) for event in events),
        encode(CODEC, Envelope.wrap(usage, key=run_id, actor=actor), topic=USAGE),
        # The governance processor writes charges as the system: the ledger's rows name the user, not the actor.
        encode(CODEC, Envelope.wrap(charge, key=actor.org_id, actor=Actor(user_id="", org_id="", workspace_id="")), topic=GOVERNANCE),
    ])


async def rows_by_user(store) -> dict[str, dict[str, int]]:
    """Rows per ledger table per user id."""
    found: dict[str, dict[str, int]] = {}
    for table in ("usage_ledger", "prompt_manifests", "run_milestones", "run_charges"):
        for row in await store.query(f"SELECT user_id, count() AS n FROM {table} FINAL GROUP BY user_id ORDER BY user_id"):
            found.setdefault(str(row["user_id"]), {})[table] = int(row["n"])  # type: ignore[call-overload]
    return found


async def create_erased_tables(store) -> None:
    """The tables the eraser deletes from: the ledgers, and the conversations' snapshots and transcript turns."""
    for ledger in every_ledger(store):
        await ledger.create_tables()
    await conversation_snapshots(store).create_table()
    await TranscriptTurnRows(store).create_table()


async def test_the_eraser_knows_every_ledger_table(store) -> None:
    for ledger in every_ledger(store):
        await ledger.create_tables()
    tables = await store.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View' ORDER BY name"
    )
    assert [row["name"] for row in tables] == sorted(LEDGER_TABLES)
    for table in LEDGER_TABLES:  # what erase_from_ledgers deletes by
        columns = await store.query(f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}'")
        assert {"org_id", "user_id"} <= {row["name"] for row in columns}


async def test_an_erased_users_ledger_rows_go_and_no_refold_brings_them_back(embedded_log, store, tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    ledgers = WithoutErased(store, keys)
    await create_erased_tables(store)
    await append_run(embedded_log, "run_ana_1", ANA)
    await append_run(embedded_log, "run_bo_1", BO)
    await refold_ledgers(log=embedded_log, codec=CODEC, store=ledgers)
    before = await rows_by_user(store)
    assert before["ana"] == before["bo"] == {"usage_ledger": 1, "prompt_manifests": 1, "run_milestones": 3, "run_charges": 1}

    # The erasure as the API makes it: keys destroyed, then SubjectErased on `documents`.
    keys.destroy(Subject(org_id="acme", user_id="ana"))
    erased = SubjectErased(org_id="acme", user_id="ana", keys_destroyed=1, requested_by="root", erased_at=AT)
    await embedded_log.append([encode(CODEC, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
    # Ana's run events still on the log (not sealed here, as usage and charges never are), and one more of hers.
    await append_run(embedded_log, "run_ana_2", ANA)
    await refold(log=embedded_log, codec=CODEC, processor=LedgerEraser(store).processor())

    after = await rows_by_user(store)
    assert "ana" not in after and after["bo"] == before["bo"]

    # The live ledgers behind the erasure, and `turnlog replay`'s refold of the whole log: nothing of Ana's returns.
    await refold_ledgers(log=embedded_log, codec=CODEC, store=ledgers)
    assert await rows_by_user(store) == after


async def test_an_org_erasure_takes_every_user_of_the_org(embedded_log, store, tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    await create_erased_tables(store)
    other = Actor(user_id="cy", org_id="globex", workspace_id="lab")
    for run_id, actor in (("run_ana", ANA), ("run_bo", BO), ("run_cy", other)):
        await append_run(embedded_log, run_id, actor)
    await refold_ledgers(log=embedded_log, codec=CODEC, store=WithoutErased(store, keys))

    keys.destroy(Subject(org_id="acme", user_id=None))
    erased = SubjectErased(org_id="acme", keys_destroyed=3, requested_by="operator", erased_at=AT)
    await embedded_log.append([encode(CODEC, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
    await refold(log=embedded_log, codec=CODEC, processor=LedgerEraser(store).processor())
    await refold_ledgers(log=embedded_log, codec=CODEC, store=WithoutErased(store, keys))

    assert set(await rows_by_user(store)) == {"cy"}
