"""Transcript turns on both stores: a transcript the prompt builder has not cached loads from the store's turns as
of any record exactly as from the history (erasure: tests/projections/test_conversation_snapshots.py)."""

from pathlib import Path

from commands.catalog import CancelRun, FinishRun, RegenerateTurn, SubmitTurn
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS
from events.values import ContentPart, Usage
from kernel.envelope import new_id
from kernel.runtime import Delivery
from processors.transcript_turns import TranscriptTurns
from processors.transcripts import Transcript, transcript_before
from projections.conversation_snapshots import (
    conversation_snapshots,
)
from projections.transcript_turns import TranscriptTurnRows
from tests.projections.snapshot_writing import ReadsRecorded, writing
from tests.projections.test_conversation_snapshots import ANA, BO, WORKER, Conversations, transcripts, writer_of
from turnlog.adapters import build_codec


async def test_a_transcript_loads_as_of_any_record_as_from_its_history(store, embedded_log, tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    await TranscriptTurnRows(store).create_table()
    await conversation_snapshots(store).create_table()
    talk = Conversations(embedded_log, codec)
    chat, other = await talk.start(ANA, title="tides"), await talk.start(BO, title="maps")
    await talk.turn(chat, ANA, "first question")
    await talk.turn(other, BO, "elsewhere")
    # An answer that failed, one regenerated (a second branch), one cancelled, and a turn with an attachment.
    failed = SubmitTurn(conversation_id=chat, run_id=new_id("run"), content=(ContentPart(type="text", text="q2"),), request_fingerprint="q2")
    await talk.send(failed, ANA)
    await talk.send(FinishRun(conversation_id=chat, run_id=failed.run_id, status="failed", text="", usage=Usage(prompt_tokens=1, output_tokens=0)), WORKER)
    again = RegenerateTurn(conversation_id=chat, run_id=new_id("run"), request_fingerprint="again")
    await talk.send(again, ANA)
    await talk.send(CancelRun(conversation_id=chat, run_id=again.run_id), ANA)
    await talk.send(FinishRun(conversation_id=chat, run_id=again.run_id, status="completed", text="partial", usage=Usage(prompt_tokens=1, output_tokens=1)), WORKER)
    attached = SubmitTurn(
        conversation_id=chat, run_id=new_id("run"), content=(ContentPart(type="text", text="see the file"),),
        attachments=("file_01",), request_fingerprint="file",
    )
    end = await talk.send(attached, ANA)
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)
    mark = await TranscriptTurnRows(store).watermark(0)
    assert mark == end
    await talk.send(FinishRun(conversation_id=chat, run_id=attached.run_id, status="completed", text="read it", usage=Usage(prompt_tokens=1, output_tokens=1)), WORKER)
    await talk.turn(chat, ANA, "after the writer stopped: only on the log")

    source = TranscriptTurns(store)
    last = await embedded_log.end_offset(CONVERSATION_EVENTS)
    for conversation_id in (chat, other, "conv_never"):
        for before in (*range(last + 2), None):
            recorded = ReadsRecorded(embedded_log)
            loaded = await transcripts(recorded, codec, source).get(conversation_id, before=before)
            assert loaded == await transcripts(embedded_log, codec).get(conversation_id, before=before), (conversation_id, before)
            cut = mark if before is None else min(mark, before - 1)
            assert recorded.afters == [cut]  # the history up to the watermark (or the record) is not read
    whole = await transcripts(embedded_log, codec, source).get(chat)
    assert len(whole.turns) == 9 and whole.turns[6].attachments == ("file_01",) and whole.turns[4].text == ""


async def test_a_conversations_first_event_loads_nothing(store, embedded_log, tmp_path: Path) -> None:
    codec = build_codec(KeyFileStore(root=tmp_path / "keys"))
    await TranscriptTurnRows(store).create_table()
    talk = Conversations(embedded_log, codec)
    created = await talk.start(ANA, title="new")
    [record] = await embedded_log.read(CONVERSATION_EVENTS, key=created)
    recorded = ReadsRecorded(embedded_log)
    cache = transcripts(recorded, codec, TranscriptTurns(store))
    assert await transcript_before(cache, Delivery(record=record, envelope=codec.decode(record.value))) == Transcript()
    assert recorded.afters == []
