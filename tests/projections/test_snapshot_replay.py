"""`turnlog replay`'s rebuild of the snapshot tables, on both stores and both logs: a table that lost its rows (its writer then
writes it no more) is emptied and filled again from the log, loads as the history does, and the live writer goes on
from where the rebuild stopped."""

from pathlib import Path

from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS
from processors.snapshot_replay import rebuild_snapshots
from projections.conversation_snapshots import TABLE as CONVERSATION_SNAPSHOTS, conversation_snapshots
from projections.ledger_erasure import WithoutErased
from projections.transcript_turns import TABLE as TRANSCRIPT_TURNS, TranscriptTurnRows
from tests.events.test_log_contract import log  # noqa: F401 (the fixture: embedded and Kafka)
from tests.projections.snapshot_writing import writing
from tests.projections.test_conversation_snapshots import ANA, BO, Conversations, states, writer_of
from tests.projections.test_ledger_erasure import create_erased_tables
from turnlog.adapters import build_codec


async def test_lost_snapshot_tables_are_rebuilt_from_the_log_and_the_live_writer_goes_on(
    store, log, tmp_path: Path  # noqa: F811 (the fixture imported above)
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    await create_erased_tables(store)
    talk = Conversations(log, codec)
    tides, maps = await talk.start(ANA, title="tides"), await talk.start(BO, title="maps")
    for index in range(3):
        await talk.turn(tides, ANA, f"question {index}")
        await talk.turn(maps, BO, f"ask {index}")
    end = await talk.turn(tides, ANA, "still running", finish=False)
    async with writing(writer_of(store, log, keys), log=log, codec=codec) as live:
        await live.through(end)
    table = conversation_snapshots(store)
    tides_at = await log.partition_of(CONVERSATION_EVENTS, key=tides)
    maps_at = await log.partition_of(CONVERSATION_EVENTS, key=maps)
    # Lost: both tables empty again, while the writer's group stands at `end`.
    for name in (CONVERSATION_SNAPSHOTS, TRANSCRIPT_TURNS):
        await store.execute(f"DROP TABLE {name}")
    await table.create_table()
    await TranscriptTurnRows(store).create_table()
    assert (await table.saved(tides, partition=tides_at)).snapshot is None

    read = await rebuild_snapshots(log=log, codec=codec, store=store, writes=WithoutErased(store, keys))

    assert read["conversation-snapshots"] > 0 and read["governance-snapshots"] == 0
    assert (await table.saved(tides, partition=tides_at)).folded_through == end
    for conversation_id in (tides, maps):
        assert await states(log, codec, snapshots=table).get(conversation_id) == await states(
            log, codec
        ).get(conversation_id)
    _, turns = await TranscriptTurnRows(store).as_of(tides, partition=tides_at, before=None)
    assert [row["text"] for row in turns if row["role"] == "user"] == [
        "question 0", "question 1", "question 2", "still running",
    ]
    # The live writer takes up from the rebuild's end: what follows is written, as before the loss.
    later = await talk.turn(maps, BO, "after the rebuild")
    async with writing(writer_of(store, log, keys), log=log, codec=codec) as live:
        await live.through(later)
    assert (await table.saved(maps, partition=maps_at)).folded_through == later
    assert (await table.saved(maps, partition=maps_at)).snapshot.state.latest_turn_seq == 8
