"""Read models on a real engine: roundtrips, idempotent upserts, tenant scope, pagination, rebuilds."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from ulid import ULID

from projections.read_models import ConversationRow, ReadModels, RunRow, Scope, TurnRow
from projections.store import SqlStore

ORG = "org_acme"
OWNER = "user_ada"
WORKSPACE = "ws_research"
SCOPE = Scope(org_id=ORG, owner_id=OWNER, workspace_ids=(WORKSPACE, "ws_other"))
STARTED = datetime(2024, 5, 17, 9, 30, 0, 250000, tzinfo=timezone.utc)
CONVERSATION_ID = "conv_" + str(ULID.from_timestamp(STARTED.timestamp()))
RUN_ID = "run_01HZX3Q4A5B6C7D8E9F0G1H2J3"


@pytest.fixture
async def read_models(store: SqlStore) -> AsyncIterator[ReadModels]:
    read_models = ReadModels(store)
    await read_models.create_tables()
    yield read_models


def conversation_row(**changes: object) -> ConversationRow:
    row = ConversationRow(
        org_id=ORG,
        workspace_id=WORKSPACE,
        owner_id=OWNER,
        conversation_id=CONVERSATION_ID,
        title="Tides & moons: “why two a day?” 🌊",
        created_at=STARTED,
        version=10,
    )
    return dataclasses.replace(row, **changes)


def turn_row(turn_seq: int, **changes: object) -> TurnRow:
    row = TurnRow(
        org_id=ORG,
        workspace_id=WORKSPACE,
        owner_id=OWNER,
        conversation_id=CONVERSATION_ID,
        turn_seq=turn_seq,
        role="user" if turn_seq % 2 else "assistant",
        state="completed",
        content=[{"type": "text", "text": f"turn {turn_seq}: it's \"quoted\"\nand 中文 😀"}],
        parent_turn_seq=turn_seq - 1 or None,
        created_at=STARTED + timedelta(seconds=turn_seq),
        finished_at=STARTED + timedelta(seconds=turn_seq, microseconds=999_999),
        version=10 + turn_seq,
    )
    return dataclasses.replace(row, **changes)


def run_row(**changes: object) -> RunRow:
    row = RunRow(
        org_id=ORG,
        workspace_id=WORKSPACE,
        owner_id=OWNER,
        run_id=RUN_ID,
        conversation_id=CONVERSATION_ID,
        turn_seq=2,
        mode="chat",
        status="running",
        prompt_tokens=0,
        output_tokens=0,
        created_at=STARTED + timedelta(seconds=1),
        version=12,
    )
    return dataclasses.replace(row, **changes)


def conversation_id_at(seconds: int) -> str:
    return "conv_" + str(ULID.from_timestamp(STARTED.timestamp() + seconds))


async def test_rows_roundtrip(read_models: ReadModels) -> None:
    conversation = conversation_row()
    user_turn = turn_row(1, run_id="")
    assistant_turn = turn_row(
        2,
        run_id=RUN_ID,
        citations=[{"sourceId": "file_1", "chunkId": "file_1:3", "quote": "the moon's pull"}],
        sources=[{"marker": 1, "sourceId": "file_1", "chunkId": "file_1:3", "title": "Tides"}],
        reason="",
    )
    run = run_row(status="completed", prompt_tokens=812, output_tokens=64, finished_at=STARTED)

    await read_models.upsert(conversations=[conversation], turns=[user_turn, assistant_turn], runs=[run])

    assert await read_models.conversation(SCOPE, CONVERSATION_ID) == conversation
    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == [user_turn, assistant_turn]
    assert await read_models.run(SCOPE, RUN_ID) == run
    assert await read_models.latest_turn_seq(SCOPE, CONVERSATION_ID) == 2


async def test_missing_rows_are_not_found(read_models: ReadModels) -> None:
    assert await read_models.conversation(SCOPE, CONVERSATION_ID) is None
    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == []
    assert await read_models.run(SCOPE, RUN_ID) is None
    assert await read_models.latest_turn_seq(SCOPE, CONVERSATION_ID) == 0
    assert await read_models.conversations(SCOPE, limit=10) == []


async def test_redelivered_rows_are_read_once(read_models: ReadModels) -> None:
    rows = {"conversations": [conversation_row()], "turns": [turn_row(1), turn_row(2)], "runs": [run_row()]}

    await read_models.upsert(**rows)
    once = await read_models.snapshot()
    await read_models.upsert(**rows)

    assert await read_models.snapshot() == once
    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == rows["turns"]
    assert await read_models.conversations(SCOPE, limit=10) == rows["conversations"]


async def test_an_older_version_arriving_late_does_not_win(read_models: ReadModels) -> None:
    streaming = turn_row(2, state="in_progress", content=[], finished_at=None, version=12)
    finished = turn_row(2, state="completed", version=20)
    running = run_row(status="running", version=12)
    completed = run_row(status="completed", output_tokens=64, finished_at=STARTED, version=20)
    titled = conversation_row(title="Tides", version=30)

    await read_models.upsert(conversations=[titled], turns=[finished], runs=[completed])
    await read_models.upsert(conversations=[conversation_row(version=10)], turns=[streaming], runs=[running])

    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == [finished]
    assert await read_models.run(SCOPE, RUN_ID) == completed
    assert await read_models.conversation(SCOPE, CONVERSATION_ID) == titled


async def test_a_newer_version_replaces_the_row(read_models: ReadModels) -> None:
    await read_models.upsert(turns=[turn_row(2, state="in_progress", content=[], version=12)])
    finished = turn_row(2, state="cancelled", reason="cancelled by user", version=13)

    await read_models.upsert(turns=[finished])

    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == [finished]


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(Scope(org_id="org_other", owner_id=OWNER, workspace_ids=(WORKSPACE,)), id="other-org"),
        pytest.param(Scope(org_id=ORG, owner_id="user_eve", workspace_ids=(WORKSPACE,)), id="other-owner"),
        pytest.param(Scope(org_id=ORG, owner_id=OWNER, workspace_ids=("ws_other",)), id="other-workspace"),
        pytest.param(Scope(org_id=ORG, owner_id=OWNER, workspace_ids=()), id="no-workspace"),
        pytest.param(Scope(org_id="org_' OR 1=1 --", owner_id=OWNER, workspace_ids=(WORKSPACE,)), id="injection"),
    ],
)
async def test_rows_outside_the_scope_are_not_found(read_models: ReadModels, scope: Scope) -> None:
    await read_models.upsert(
        conversations=[conversation_row()], turns=[turn_row(1), turn_row(2)], runs=[run_row()]
    )

    assert await read_models.conversation(scope, CONVERSATION_ID) is None
    assert await read_models.conversations(scope, limit=10) == []
    assert await read_models.conversations(scope, workspace_id=WORKSPACE, limit=10) == []
    assert await read_models.turns(scope, CONVERSATION_ID, limit=10) == []
    assert await read_models.latest_turn_seq(scope, CONVERSATION_ID) == 0
    assert await read_models.run(scope, RUN_ID) is None


async def test_same_ids_in_another_org_never_mix(read_models: ReadModels) -> None:
    theirs = {"org_id": "org_globex", "owner_id": "user_hank"}
    await read_models.upsert(
        conversations=[conversation_row(), conversation_row(**theirs, title="theirs")],
        turns=[turn_row(1), turn_row(1, **theirs, content=[{"type": "text", "text": "theirs"}]), turn_row(2, **theirs)],
        runs=[run_row(), run_row(**theirs, mode="theirs")],
    )

    assert await read_models.conversation(SCOPE, CONVERSATION_ID) == conversation_row()
    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == [turn_row(1)]
    assert await read_models.latest_turn_seq(SCOPE, CONVERSATION_ID) == 1
    assert await read_models.run(SCOPE, RUN_ID) == run_row()


async def test_conversations_page_newest_first(read_models: ReadModels) -> None:
    rows = [
        conversation_row(conversation_id=conversation_id_at(seconds), workspace_id=workspace_id)
        for seconds, workspace_id in enumerate([WORKSPACE, "ws_other"] * 3 + [WORKSPACE])
    ]
    await read_models.upsert(conversations=rows)
    newest_first = sorted(rows, key=lambda row: row.conversation_id, reverse=True)

    pages: list[list[ConversationRow]] = []
    before: str | None = None
    while page := await read_models.conversations(SCOPE, before=before, limit=3):
        pages.append(page)
        before = page[-1].conversation_id

    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]


async def test_conversations_filter_by_workspace_within_the_scope(read_models: ReadModels) -> None:
    research = conversation_row(conversation_id=conversation_id_at(1))
    other = conversation_row(conversation_id=conversation_id_at(2), workspace_id="ws_other")
    outside = conversation_row(conversation_id=conversation_id_at(3), workspace_id="ws_secret")
    await read_models.upsert(conversations=[research, other, outside])

    assert await read_models.conversations(SCOPE, limit=10) == [other, research]
    assert await read_models.conversations(SCOPE, workspace_id=WORKSPACE, limit=10) == [research]
    assert await read_models.conversations(SCOPE, workspace_id="ws_secret", limit=10) == []
    assert await read_models.conversations(SCOPE, limit=0) == []


async def test_turns_page_after_a_turn_seq(read_models: ReadModels) -> None:
    turns = [turn_row(turn_seq) for turn_seq in range(1, 8)]
    await read_models.upsert(turns=list(reversed(turns)))

    assert await read_models.turns(SCOPE, CONVERSATION_ID, after_seq=0, limit=3) == turns[0:3]
    assert await read_models.turns(SCOPE, CONVERSATION_ID, after_seq=3, limit=3) == turns[3:6]
    assert await read_models.turns(SCOPE, CONVERSATION_ID, after_seq=6, limit=3) == turns[6:7]
    assert await read_models.turns(SCOPE, CONVERSATION_ID, after_seq=7, limit=3) == []
    assert await read_models.latest_turn_seq(SCOPE, CONVERSATION_ID) == 7


async def test_conversations_are_counted_once_within_the_scope(read_models: ReadModels) -> None:
    rows = [
        conversation_row(conversation_id=conversation_id_at(seconds), workspace_id=workspace_id)
        for seconds, workspace_id in enumerate([WORKSPACE, "ws_other", "ws_secret", WORKSPACE])
    ]
    await read_models.upsert(conversations=rows)
    await read_models.upsert(conversations=rows[:1])  # redelivered: still one conversation
    await read_models.upsert(conversations=[conversation_row(conversation_id=conversation_id_at(9), owner_id="user_bob")])

    assert await read_models.conversation_count(SCOPE) == 3
    assert await read_models.conversation_count(SCOPE, workspace_id=WORKSPACE) == 2
    assert await read_models.conversation_count(SCOPE, workspace_id="ws_secret") == 0
    assert await read_models.conversation_count(dataclasses.replace(SCOPE, org_id="org_evil")) == 0


async def test_runs_by_id_answers_those_in_the_scope(read_models: ReadModels) -> None:
    mine, bobs = run_row(), run_row(run_id="run_bob", owner_id="user_bob")
    await read_models.upsert(runs=[mine, bobs, run_row(status="completed", version=20)])

    found = await read_models.runs_by_id(SCOPE, [RUN_ID, "run_bob", "run_missing"])
    assert list(found) == [RUN_ID] and found[RUN_ID].status == "completed"
    assert await read_models.runs_by_id(SCOPE, []) == {}


async def test_snapshot_lists_every_row_without_version(read_models: ReadModels) -> None:
    await read_models.upsert(
        conversations=[conversation_row()], turns=[turn_row(2), turn_row(1)], runs=[run_row()]
    )
    await read_models.upsert(turns=[turn_row(1, state="failed", reason="boom", version=99)])

    snapshot = await read_models.snapshot()

    assert list(snapshot) == ["conversations", "turns", "runs", "files", "file_states"]
    assert [row["turn_seq"] for row in snapshot["turns"]] == [1, 2]
    assert snapshot["turns"][0]["state"] == "failed"
    assert all("version" not in row for rows in snapshot.values() for row in rows)
    assert snapshot["conversations"] == [_without_version(conversation_row())]


async def test_a_replayed_rebuild_equals_the_live_tables(store: SqlStore, read_models: ReadModels) -> None:
    events = _upserts_in_log_order()
    for upsert in events:
        await read_models.upsert(**upsert)
    # The rebuild sees every event again, some twice, and in batches of another shape.
    rebuild = ReadModels(store, table_suffix="__rebuild")
    await rebuild.create_tables()
    for upsert in events + events[1:3]:
        await rebuild.upsert(**upsert)

    assert await rebuild.snapshot() == await read_models.snapshot()


async def test_exchange_swaps_the_live_tables_with_a_rebuild(
    store: SqlStore, read_models: ReadModels
) -> None:
    await read_models.upsert(conversations=[conversation_row(title="stale")])
    rebuild = ReadModels(store, table_suffix="__rebuild")
    await rebuild.create_tables()
    await rebuild.upsert(conversations=[conversation_row(title="rebuilt")], turns=[turn_row(1)])

    await read_models.exchange_with(rebuild)

    assert await read_models.conversation(SCOPE, CONVERSATION_ID) == conversation_row(title="rebuilt")
    assert await read_models.turns(SCOPE, CONVERSATION_ID, limit=10) == [turn_row(1)]
    assert await rebuild.conversation(SCOPE, CONVERSATION_ID) == conversation_row(title="stale")
    await rebuild.drop_tables()
    assert await read_models.conversation(SCOPE, CONVERSATION_ID) == conversation_row(title="rebuilt")


async def test_truncate_and_drop(store: SqlStore, read_models: ReadModels) -> None:
    await read_models.create_tables()  # creating again is harmless
    await read_models.upsert(conversations=[conversation_row()], turns=[turn_row(1)], runs=[run_row()])

    await read_models.truncate()
    assert await read_models.snapshot() == {"conversations": [], "turns": [], "runs": [], "files": [], "file_states": []}

    await read_models.drop_tables()
    for table_name in read_models.table_names:
        assert await store.query(f"EXISTS TABLE {table_name}") == [{"result": 0}]
    await read_models.drop_tables()  # dropping again is harmless


async def test_upsert_is_one_insert_per_table_with_rows() -> None:
    store = RecordingStore()

    await ReadModels(store, table_suffix="__rebuild").upsert(
        conversations=[conversation_row()], turns=[turn_row(1), turn_row(2)]
    )

    assert [(table, len(rows)) for table, rows in store.inserts] == [
        ("conversations__rebuild", 1),
        ("turns__rebuild", 2),
    ]
    [turn_record, _] = store.inserts[1][1]
    assert isinstance(turn_record["content"], str), "content is stored as JSON text"


def test_a_table_suffix_is_a_plain_name() -> None:
    with pytest.raises(ValueError):
        ReadModels(RecordingStore(), table_suffix="; DROP TABLE turns")


class RecordingStore:
    """A SqlStore that only records inserts, for checking how many statements an upsert sends."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[Mapping[str, object]]]] = []

    async def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        raise AssertionError("not expected")

    async def query(
        self, sql: str, parameters: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        raise AssertionError("not expected")

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        self.inserts.append((table, list(rows)))

    async def close(self) -> None:
        pass


def _without_version(row: ConversationRow | TurnRow | RunRow) -> dict[str, object]:
    record = dataclasses.asdict(row)
    del record["version"]
    return record


def _upserts_in_log_order() -> list[dict[str, Any]]:
    """What the projection would write for one conversation, event by event (version = offset)."""
    return [
        {"conversations": [conversation_row(version=1)]},
        {"turns": [turn_row(1, version=2)]},
        {
            "turns": [turn_row(2, state="in_progress", content=[], finished_at=None, run_id=RUN_ID, version=3)],
            "runs": [run_row(version=3)],
        },
        {
            "turns": [turn_row(2, run_id=RUN_ID, version=7)],
            "runs": [run_row(status="completed", output_tokens=9, finished_at=STARTED, version=7)],
        },
        {"conversations": [conversation_row(title="Tides", version=8)]},
    ]


async def test_tables_made_by_an_older_turnlog_gain_the_new_columns(store: SqlStore) -> None:
    """A turns table without `sources` (before grounded answers) is brought up to date on start."""
    old = ReadModels(store, table_suffix="_old")
    await old.drop_tables()
    await store.execute(
        "CREATE TABLE turns_old (org_id String, workspace_id String, owner_id String, conversation_id String,"
        " turn_seq UInt32, role LowCardinality(String), state LowCardinality(String), content String,"
        " parent_turn_seq Nullable(UInt32), run_id String, citations String, reason String,"
        " created_at DateTime64(6, 'UTC'), finished_at Nullable(DateTime64(6, 'UTC')), version UInt64)"
        " ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, conversation_id, turn_seq)"
    )
    await store.execute(
        "INSERT INTO turns_old VALUES ('org_tides', 'ws_main', 'user_ana', 'conv_old', 1, 'user', 'completed',"
        " '[]', NULL, '', '[]', '', '2026-04-25 12:00:00', NULL, 1)"
    )
    try:
        await old.create_tables()
        await old.create_tables()  # idempotent
        [row] = await old.turns(Scope(org_id="org_tides", owner_id="user_ana", workspace_ids=("ws_main",)), "conv_old", limit=5)
        assert row.sources == [] and row.citations == []
        await old.upsert(turns=[turn_row(2, conversation_id="conv_old", sources=[{"marker": 1}])])
    finally:
        await old.drop_tables()
