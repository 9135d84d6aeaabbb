"""The SqlStore contract: every adapter in conftest.ADAPTERS must pass every test here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from projections.chdb import IDLE_ENGINE_THREADS, MEMORY_WORKER_PERIOD_MS, ChdbStore
from projections.store import SqlError, SqlStore

MOMENT = datetime(2024, 5, 17, 9, 30, 1, 123456, tzinfo=timezone.utc)

TRICKY_STRINGS = [
    "x' OR 1=1 --",
    "'; DROP TABLE notes; --",
    'double "quotes" and `backticks`',
    "back\\slash and \\' escaped quote",
    "tab\there",
    "new\nline and carriage\rreturn",
    "nul\0byte",
    "\\N",
    "NULL",
    "{name:String}",
    "",
    "  padded  ",
    "é中文 кириллица עברית",
    "emoji 😀👩‍👩‍👧 and a lone \u200b zero width",
]


async def create_notes(store: SqlStore) -> None:
    await store.execute(
        """
        CREATE TABLE notes (
            note_id String,
            body String,
            kind LowCardinality(String),
            seq UInt32,
            offset UInt64,
            parent_seq Nullable(UInt32),
            created_at DateTime64(6, 'UTC'),
            finished_at Nullable(DateTime64(6, 'UTC')),
            tags Array(String)
        )
        ENGINE = MergeTree
        ORDER BY note_id
        """
    )


def note(note_id: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "note_id": note_id,
        "body": f"body of {note_id}",
        "kind": "user",
        "seq": 1,
        "offset": 1,
        "parent_seq": None,
        "created_at": MOMENT,
        "finished_at": None,
        "tags": [],
    }
    row.update(changes)
    return row


async def test_ddl_creates_and_drops_tables(store: SqlStore) -> None:
    await create_notes(store)
    assert await store.query("EXISTS TABLE notes") == [{"result": 1}]

    await store.execute("DROP TABLE notes")

    assert await store.query("EXISTS TABLE notes") == [{"result": 0}]


async def test_rows_roundtrip_every_type_the_read_models_use(store: SqlStore) -> None:
    await create_notes(store)
    full = note(
        "n1",
        kind="assistant",
        seq=4_294_967_295,
        offset=2**64 - 1,
        parent_seq=3,
        finished_at=MOMENT + timedelta(seconds=2, microseconds=1),
        tags=["a", "b'c", "😀"],
    )
    empty = note("n2", body="", seq=0, offset=0)

    await store.insert("notes", [full, empty])
    rows = await store.query("SELECT * FROM notes ORDER BY note_id")

    assert rows == [full, empty]
    assert list(rows[0]) == list(full), "columns come back in select-list order"
    for row in rows:
        assert isinstance(row["created_at"], datetime)
        assert row["created_at"].utcoffset() == timedelta(0)


async def test_aware_datetimes_in_other_zones_are_stored_as_the_same_instant(
    store: SqlStore,
) -> None:
    await create_notes(store)
    in_paris = MOMENT.astimezone(timezone(timedelta(hours=2)))

    await store.insert("notes", [note("n1", created_at=in_paris)])
    [row] = await store.query("SELECT created_at FROM notes")

    assert row["created_at"] == MOMENT
    assert row["created_at"].tzinfo is not None and row["created_at"].utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(store: SqlStore) -> None:
    await create_notes(store)
    naive = MOMENT.replace(tzinfo=None)

    with pytest.raises(ValueError):
        await store.insert("notes", [note("n1", created_at=naive)])
    with pytest.raises(ValueError):
        await store.query("SELECT {at:DateTime64(6, 'UTC')} AS at", {"at": naive})


async def test_parameters_bind_every_type(store: SqlStore) -> None:
    rows = await store.query(
        """
        SELECT
            {text:String} AS text,
            {big:UInt64} AS big,
            {small:UInt32} AS small,
            {missing:Nullable(UInt32)} AS missing,
            {present:Nullable(UInt32)} AS present,
            {missing_at:Nullable(DateTime64(6, 'UTC'))} AS missing_at,
            {names:Array(String)} AS names,
            {no_names:Array(String)} AS no_names,
            {at:DateTime64(6, 'UTC')} AS at
        """,
        {
            "text": "it's",
            "big": 2**64 - 1,
            "small": 7,
            "missing": None,
            "present": 5,
            "missing_at": None,
            "names": TRICKY_STRINGS,
            "no_names": [],
            "at": MOMENT,
        },
    )

    assert rows == [
        {
            "text": "it's",
            "big": 2**64 - 1,
            "small": 7,
            "missing": None,
            "present": 5,
            "missing_at": None,
            "names": TRICKY_STRINGS,
            "no_names": [],
            "at": MOMENT,
        }
    ]


async def test_parameters_filter_rows(store: SqlStore) -> None:
    await create_notes(store)
    await store.insert(
        "notes",
        [note("n1", seq=1), note("n2", seq=2, created_at=MOMENT + timedelta(hours=1)), note("n3", seq=3)],
    )

    rows = await store.query(
        """
        SELECT note_id FROM notes
        WHERE has({note_ids:Array(String)}, note_id) AND seq > {after:UInt32}
          AND created_at > {since:DateTime64(6, 'UTC')}
        ORDER BY note_id
        LIMIT {limit:UInt32}
        """,
        {"note_ids": ["n1", "n2", "n3"], "after": 1, "since": MOMENT, "limit": 10},
    )

    assert rows == [{"note_id": "n2"}]


@pytest.mark.parametrize(
    "attack",
    ["x' OR 1=1 --", "' OR '1'='1", "n1' --", "n1\\' OR 1=1 --", "'; DROP TABLE notes; --"],
)
async def test_injection_attempts_match_nothing(store: SqlStore, attack: str) -> None:
    await create_notes(store)
    await store.insert("notes", [note("n1"), note("n2")])

    by_value = await store.query("SELECT * FROM notes WHERE note_id = {id:String}", {"id": attack})
    by_array = await store.query(
        "SELECT * FROM notes WHERE has({ids:Array(String)}, note_id)", {"ids": [attack]}
    )

    assert by_value == []
    assert by_array == []
    assert await store.query("SELECT count() AS notes FROM notes") == [{"notes": 2}]


async def test_arbitrary_strings_roundtrip_through_insert_and_parameters(store: SqlStore) -> None:
    await create_notes(store)
    rows = [
        note(f"n{index:02d}", body=text, tags=[text, text]) for index, text in enumerate(TRICKY_STRINGS)
    ]
    await store.insert("notes", rows)

    assert await store.query("SELECT note_id, body, tags FROM notes ORDER BY note_id") == [
        {"note_id": row["note_id"], "body": row["body"], "tags": row["tags"]} for row in rows
    ]
    for row in rows:
        found = await store.query(
            "SELECT note_id FROM notes WHERE body = {body:String}", {"body": row["body"]}
        )
        assert found == [{"note_id": row["note_id"]}], repr(row["body"])


async def test_empty_results_and_empty_inserts(store: SqlStore) -> None:
    await create_notes(store)

    await store.insert("notes", [])

    assert await store.query("SELECT * FROM notes") == []
    assert await store.query("SELECT * FROM notes WHERE note_id = {id:String}", {"id": "n1"}) == []


async def test_many_rows_go_in_one_insert(store: SqlStore) -> None:
    await create_notes(store)
    rows = [note(f"n{index:05d}", seq=index, body=f"line {index}\n😀") for index in range(5000)]

    await store.insert("notes", rows)

    [summary] = await store.query("SELECT count() AS rows, sum(seq) AS total FROM notes")
    assert summary == {"rows": 5000, "total": sum(range(5000))}
    # One batch is one INSERT, hence one part, rather than a part per row.
    parts = await store.query(
        "SELECT count() AS parts FROM system.parts"
        " WHERE database = currentDatabase() AND table = 'notes' AND active"
    )
    assert parts == [{"parts": 1}]
    assert await store.query("SELECT * FROM notes WHERE note_id = 'n04999'") == [rows[4999]]


async def test_rows_of_one_batch_must_name_the_same_columns(store: SqlStore) -> None:
    await create_notes(store)
    other_columns = {key: value for key, value in note("n2").items() if key != "tags"}

    with pytest.raises(ValueError):
        await store.insert("notes", [note("n1"), other_columns])


async def test_replacing_merge_tree_final_keeps_the_highest_version(store: SqlStore) -> None:
    await store.execute(
        "CREATE TABLE versions (key String, payload String, version UInt64)"
        " ENGINE = ReplacingMergeTree(version) ORDER BY key"
    )
    # Separate inserts are separate parts, so FINAL (not a merge that already ran) must decide.
    for version in (1, 3, 2):
        await store.insert("versions", [{"key": "k", "payload": f"v{version}", "version": version}])
    await store.insert("versions", [{"key": "k", "payload": "v3", "version": 3}])
    await store.insert("versions", [{"key": "other", "payload": "v1", "version": 1}])

    rows = await store.query("SELECT key, payload, version FROM versions FINAL ORDER BY key")

    assert rows == [
        {"key": "k", "payload": "v3", "version": 3},
        {"key": "other", "payload": "v1", "version": 1},
    ]


async def test_invalid_sql_raises_sql_error(store: SqlStore) -> None:
    with pytest.raises(SqlError):
        await store.query("SELEC 1")
    with pytest.raises(SqlError):
        await store.execute("DROP TABLE no_such_table")
    with pytest.raises(SqlError):
        await store.insert("no_such_table", [{"a": 1}])
    with pytest.raises(SqlError):
        await store.query("SELECT {unbound:String}")


async def test_concurrent_calls_all_complete(store: SqlStore) -> None:
    await create_notes(store)

    await asyncio.gather(*(store.insert("notes", [note(f"n{index:02d}")]) for index in range(20)))
    counts = await asyncio.gather(*(store.query("SELECT count() AS n FROM notes") for _ in range(20)))

    assert counts == [[{"n": 20}]] * 20


async def test_a_slow_query_does_not_block_the_event_loop(store: SqlStore) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        await store.query("SELECT sleep(0.4)")
    finally:
        ticker.cancel()
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.4
    assert ticks >= 10, f"the event loop ticked only {ticks} times in {elapsed:.2f} s"


async def test_reopening_after_close_keeps_the_data(
    store: SqlStore, reopen_store: Callable[[], Awaitable[SqlStore]]
) -> None:
    await create_notes(store)
    await store.insert("notes", [note("n1", tags=["kept"])])
    await store.close()
    await store.close()  # closing twice is harmless

    reopened = await reopen_store()
    try:
        assert await reopened.query("SELECT note_id, tags FROM notes") == [
            {"note_id": "n1", "tags": ["kept"]}
        ]
    finally:
        await reopened.close()


async def test_a_closed_store_refuses_calls(store: SqlStore) -> None:
    await store.close()

    with pytest.raises(RuntimeError):
        await store.query("SELECT 1")


# chDB's own rules, beyond the contract: the composition root and the test fixtures rely on them.


async def test_chdb_serves_one_data_path_per_process(tmp_path: Path) -> None:
    first = ChdbStore(str(tmp_path / "first"))
    try:
        # Opened before the second store exists: each store opens on a thread of its own, so two
        # opens in flight at once would race for the engine.
        await first.query("SELECT 1")
        second = ChdbStore(str(tmp_path / "second"))
        try:
            with pytest.raises(SqlError, match="one path at a time"):
                await second.query("SELECT 1")
        finally:
            await second.close()
    finally:
        await first.close()

    # Once the first path is closed, another one opens.
    third = ChdbStore(str(tmp_path / "third"))
    try:
        assert await third.query("SELECT 1 AS one") == [{"one": 1}]
    finally:
        await third.close()


async def test_chdb_data_path_belongs_to_one_process(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "held")
    holder = ChdbStore(data_dir)
    try:
        await holder.query("SELECT 1")
        other_process = subprocess.run(
            [sys.executable, "-c", _OPEN_IN_ANOTHER_PROCESS, data_dir],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await holder.close()

    assert other_process.returncode != 0
    assert "SqlError" in other_process.stderr


_OPEN_IN_ANOTHER_PROCESS = """
import asyncio, sys
from projections.chdb import ChdbStore

async def open_held_path() -> None:
    store = ChdbStore(sys.argv[1])
    try:
        await store.query("SELECT 1")
    finally:
        await store.close()

asyncio.run(open_held_path())
"""


async def test_chdb_removes_outdated_parts_without_growing_its_thread_pool(tmp_path: Path) -> None:
    # Past 100 outdated parts the engine would remove them on ~120 pool threads, idle for
    # good afterwards; ENGINE_CONFIG keeps removal on the cleanup thread (projections/chdb.py).
    store = ChdbStore(str(tmp_path / "parts"))
    try:
        await store.execute(
            "CREATE TABLE parts (n UInt64) ENGINE = MergeTree ORDER BY n"
            " SETTINGS cleanup_delay_period = 1, cleanup_delay_period_random_add = 0"
        )
        threads_before = _thread_count()
        for number in range(300):  # one part each; merges make them outdated
            await store.execute(f"INSERT INTO parts SELECT {number} SETTINGS async_insert = 0")
        deadline = time.monotonic() + 30
        while await _outdated_parts(store) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

        assert await _outdated_parts(store) == 0
        assert _thread_count() - threads_before < 30
        setting = await store.query(
            "SELECT value FROM system.merge_tree_settings WHERE name = 'concurrent_part_removal_threshold'"
        )
        assert setting == [{"value": "1000000000"}]
    finally:
        await store.close()


def test_chdb_gives_back_the_threads_of_a_burst_beyond_its_idle_bound(tmp_path: Path) -> None:
    # The engine's pool is sized when chdb is imported, so this runs in a fresh interpreter.
    # Under the server default (1,000 idle) the burst's threads stay, ~25 of them here.
    home = str(tmp_path / "home")
    os.mkdir(home)
    burst = subprocess.run(
        [sys.executable, "-c", _BURST, str(tmp_path / "burst")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": home},
    )

    assert burst.returncode == 0, burst.stderr
    idle_threads, home_after_import = burst.stdout.split()
    assert int(idle_threads) <= IDLE_ENGINE_THREADS
    assert home_after_import == home
    assert os.listdir(home) == []  # the user's own clickhouse-local config is neither read nor written


def test_chdb_memory_worker_wakes_once_a_period_not_ten_times_a_second(tmp_path: Path) -> None:
    # The worker sleeps and wakes at most twice a period (under the server default, 100 ms: ~20 switches a second),
    # so its next few wake-ups take at least that many half-periods. A busy machine can only make them take longer.
    measured = subprocess.run(
        [sys.executable, "-c", _MEMORY_WORKER_WAKES, str(tmp_path / "store"), str(WAKES)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert measured.returncode == 0, measured.stderr
    elapsed_s = float(measured.stdout)
    assert elapsed_s >= 0.8 * WAKES / 2 * MEMORY_WORKER_PERIOD_MS / 1000, elapsed_s


WAKES = 4
_MEMORY_WORKER_WAKES = """
import asyncio, os, sys, time
from projections.chdb import ChdbStore

def memory_worker_switches() -> int:
    for thread in os.listdir("/proc/self/task"):
        if open(f"/proc/self/task/{thread}/comm").read().strip() == "MemoryWorker":
            status = open(f"/proc/self/task/{thread}/status").read().splitlines()
            return next(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))
    raise SystemExit("no MemoryWorker thread")

async def measure(wakes: int) -> None:
    store = ChdbStore(sys.argv[1])
    try:
        await store.query("SELECT 1")
        before, started = memory_worker_switches(), time.monotonic()
        while memory_worker_switches() - before < wakes:  # its next wake-ups, however long they take
            if time.monotonic() - started > 60:
                raise SystemExit("the memory worker did not wake within 60 s")
            await asyncio.sleep(0.01)
        print(time.monotonic() - started)
    finally:
        await store.close()

asyncio.run(measure(int(sys.argv[2])))
"""


_BURST = """
import asyncio, os, sys
from projections.chdb import ChdbStore

async def burst() -> None:
    store = ChdbStore(sys.argv[1])
    try:
        for _ in range(3):
            await store.query("SELECT sum(number) FROM numbers_mt(20000000) SETTINGS max_threads = 48")
        rows = await store.query(
            "SELECT sumIf(value, metric = 'GlobalThread') - sumIf(value, metric = 'GlobalThreadActive') AS idle"
            " FROM system.metrics"
        )
        print(rows[0]["idle"], os.environ["HOME"])
    finally:
        await store.close()

asyncio.run(burst())
"""


async def _outdated_parts(store: SqlStore) -> int:
    rows = await store.query("SELECT count() AS parts FROM system.parts WHERE table = 'parts' AND NOT active")
    return int(rows[0]["parts"])  # type: ignore[call-overload]


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))
