"""Transcript turns on both stores: a transcript the prompt builder has not cached loads from the store's turns as
of any record exactly as from the history, and an erasure takes the owner's turns with it."""

from pathlib import Path

from commands.catalog import CancelRun, FinishRun, RegenerateTurn, SubmitTurn
from events.erasure import SubjectErased
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS, DOCUMENTS
from events.values import ContentPart, Usage
from kernel.envelope import Envelope, new_id
from kernel.keyed_state import KeyedStates
from kernel.runtime import Delivery, encode
from kernel.sealing import Subject
from processors.transcript_turns import TranscriptTurns, TranscriptTurnWriter
from processors.transcripts import Transcript, evolve_transcript, transcript_before
from projections.conversation_snapshots import (
    CONVERSATION_SNAPSHOTS_GROUP, conversation_snapshot_writer, conversation_snapshots,
)
from projections.ledger_erasure import LedgerEraser, WithoutErased
from projections.ledger_replay import refold
from projections.transcript_turns import TABLE, TranscriptTurnRows
from tests.projections.snapshot_writing import ReadsRecorded, writing
from tests.projections.test_conversation_snapshots import ADMIN, ANA, AT, BO, WORKER, Conversations
from tests.projections.test_ledger_erasure import create_erased_tables
from turnlog.adapters import build_codec


def transcripts(log, codec, source=None) -> KeyedStates[Transcript]:
    """What a prompt builder that has cached nothing holds, as it loads a transcript."""
    return KeyedStates(
        log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript, snapshots=source
    )


def writer_of(store, log, keys):
    """The conversation snapshots' writer, which writes the transcript turns too, as the projector role runs it."""
    writes = WithoutErased(store, keys)
    turns = TranscriptTurnWriter(store=store, writes=writes, log=log, group=CONVERSATION_SNAPSHOTS_GROUP)
    return conversation_snapshot_writer(store=store, writes=writes, log=log, also=turns.write).processor()


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


async def test_an_erasure_deletes_the_owners_turns_and_the_writer_does_not_bring_them_back(
    store, embedded_log, tmp_path: Path
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    await create_erased_tables(store)
    talk = Conversations(embedded_log, codec)
    anas, bos = await talk.start(ANA, title="private"), await talk.start(BO, title="mine")
    await talk.turn(anas, ANA, "my secret question")
    end = await talk.turn(bos, BO, "hi")
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)

    async def texts(conversation_id: str) -> list[str]:
        found = await TranscriptTurnRows(store).as_of(conversation_id, partition=0, before=None)
        return [row["text"] for row in found[1]] if found else []

    assert await texts(anas) == ["my secret question", "re: my secret question"]

    keys.destroy(Subject(org_id=ANA.org_id, user_id=ANA.user_id))
    erased = SubjectErased(org_id=ANA.org_id, user_id=ANA.user_id, keys_destroyed=1, requested_by="root", erased_at=AT)
    await embedded_log.append([encode(codec, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
    await refold(log=embedded_log, codec=codec, processor=LedgerEraser(store).processor())
    assert await texts(anas) == [] and await texts(bos) == ["hi", "re: hi"]

    # A writer that reads Ana's events again (restarted behind the erasure: they no longer open) writes none.
    await store.execute(f"DELETE FROM {TABLE} WHERE conversation_id LIKE '#%'")  # its watermark gone: a first run
    await refold(log=embedded_log, codec=codec, processor=writer_of(store, embedded_log, keys))
    assert await texts(anas) == []
    loaded = await transcripts(embedded_log, codec, TranscriptTurns(store)).get(anas)
    assert loaded == await transcripts(embedded_log, codec).get(anas) == Transcript()
