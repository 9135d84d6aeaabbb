"""Conversation snapshots on both stores: a conversation the decider has not cached loads from its snapshot and the
events after its partition's watermark exactly as from its whole history; an erasure takes the owner's snapshots and
transcript turns with it, and a writer behind it writes none."""

from datetime import UTC, datetime
from pathlib import Path

from commands.catalog import CreateConversation, FinishRun, RenameConversation, SubmitTurn
from commands.decider import ConversationState, evolve
from commands.handler import CommandHandler
from events.erasure import SubjectErased
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS, DOCUMENTS
from events.values import ContentPart, Usage
from kernel.envelope import Actor, Envelope, new_id
from kernel.keyed_state import KeyedStates
from kernel.log import LogRecord
from kernel.runtime import Delivery, encode
from kernel.sealing import Subject
from processors.transcript_turns import TranscriptTurns, TranscriptTurnWriter
from processors.transcripts import Transcript, evolve_transcript
from projections.conversation_snapshots import (
    CONVERSATION_SNAPSHOTS_GROUP, TABLE, conversation_snapshot_writer, conversation_snapshots,
)
from projections.transcript_turns import TranscriptTurnRows
from projections.ledger_erasure import LedgerEraser, WithoutErased
from projections.ledger_replay import refold
from tests.projections.test_ledger_erasure import create_erased_tables
from tests.projections.snapshot_writing import ReadsRecorded, writing
from turnlog.adapters import build_codec

AT = datetime(2026, 12, 7, 9, tzinfo=UTC)
ANA = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws_main")
BO = Actor(user_id="user_bo", org_id="org_acme", workspace_id="ws_main")
WORKER = Actor(user_id="svc_worker", org_id="", workspace_id="")
ADMIN = Actor(user_id="root", org_id="org_acme", workspace_id="")


class Conversations:
    """Commands decided by the real decider, its events appended to the log as its processor appends them."""

    def __init__(self, log, codec) -> None:
        self._log = log
        self._codec = codec
        self._decider = CommandHandler(log=log, codec=codec)

    async def send(self, command, actor: Actor) -> int:
        """Decides `command`; returns the offset of the last event it appended (-1: none)."""
        envelope = Envelope.wrap(command, key=command.conversation_id, actor=actor)
        record = LogRecord(topic="commands", partition=0, offset=0, key=envelope.key, value=b"", timestamp=AT)
        outputs = await self._decider.react([Delivery(record=record, envelope=envelope)])
        written = await self._log.append(outputs)
        return max((r.offset for r in written if r.topic == CONVERSATION_EVENTS), default=-1)

    async def start(self, actor: Actor, *, title: str) -> str:
        conversation_id = new_id("conv")
        await self.send(CreateConversation(conversation_id=conversation_id, workspace_id=actor.workspace_id, title=title), actor)
        return conversation_id

    async def turn(self, conversation_id: str, actor: Actor, text: str, *, finish: bool = True) -> int:
        run_id = new_id("run")
        submit = SubmitTurn(
            conversation_id=conversation_id, run_id=run_id, content=(ContentPart(type="text", text=text),),
            idempotency_key=f"key-{run_id}", request_fingerprint=text,
        )
        offset = await self.send(submit, actor)
        if finish:
            done = FinishRun(
                conversation_id=conversation_id, run_id=run_id, status="completed", text=f"re: {text}",
                usage=Usage(prompt_tokens=3, output_tokens=4),
            )
            offset = await self.send(done, WORKER)
        return offset


def states(log, codec, snapshots=None) -> KeyedStates[ConversationState]:
    """What a decider that has cached nothing holds, as it loads a conversation."""
    return KeyedStates(
        log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=ConversationState(), evolve=evolve, snapshots=snapshots
    )


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


async def test_a_conversation_loads_from_its_snapshot_and_what_followed_as_from_its_history(
    store, embedded_log, tmp_path: Path
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    table = conversation_snapshots(store)
    await create_erased_tables(store)  # the writer writes the transcript turns too
    talk = Conversations(embedded_log, codec)
    long_one = await talk.start(ANA, title="tides")
    other = await talk.start(BO, title="maps")
    for index in range(4):
        await talk.turn(long_one, ANA, f"question {index}")
        await talk.turn(other, BO, f"ask {index}")
    await talk.send(RenameConversation(conversation_id=long_one, title="tides, again"), ANA)
    end = await talk.turn(long_one, ANA, "one more, still running", finish=False)
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)
    mark = (await table.saved(long_one, partition=0)).folded_through
    assert mark == end
    # After the writer stopped: only on the log.
    await talk.turn(other, BO, "later")
    newer = await talk.start(ANA, title="new")

    for conversation_id in (long_one, other, newer, "conv_never"):
        recorded = ReadsRecorded(embedded_log)
        from_snapshot = await states(recorded, codec, snapshots=table).get(conversation_id)
        from_history = await states(embedded_log, codec).get(conversation_id)
        assert from_snapshot == from_history
        assert recorded.afters == [mark]  # the history up to the watermark is not read
    running = await states(embedded_log, codec, snapshots=table).get(long_one)
    assert running.active_run_id is not None and running.latest_turn_seq == 10 and len(running.runs) == 5


async def erase(log, codec, keys: KeyFileStore, store, actor: Actor) -> None:
    """The erasure as the API makes it (keys destroyed, then `SubjectErased` on `documents`), and the eraser's work."""
    keys.destroy(Subject(org_id=actor.org_id, user_id=actor.user_id))
    erased = SubjectErased(org_id=actor.org_id, user_id=actor.user_id, keys_destroyed=1, requested_by="root", erased_at=AT)
    await log.append([encode(codec, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
    await refold(log=log, codec=codec, processor=LedgerEraser(store).processor())


async def kept_for(store, conversation_id: str) -> tuple[bool, list[str]]:
    """Whether the conversation has a snapshot, and its turns' texts in the transcript table."""
    snapshot = (await conversation_snapshots(store).saved(conversation_id, partition=0)).snapshot
    found = await TranscriptTurnRows(store).as_of(conversation_id, partition=0, before=None)
    return snapshot is not None, [row["text"] for row in found[1]] if found else []


async def two_owners_conversations(log, codec, store) -> tuple[str, str, int]:
    await create_erased_tables(store)
    talk = Conversations(log, codec)
    anas, bos = await talk.start(ANA, title="private"), await talk.start(BO, title="mine")
    await talk.turn(anas, ANA, "my secret question")
    return anas, bos, await talk.turn(bos, BO, "hi")


async def test_an_erasure_deletes_the_owners_snapshots_and_transcript_turns(store, embedded_log, tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    anas, bos, end = await two_owners_conversations(embedded_log, codec, store)
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)
    assert await kept_for(store, anas) == (True, ["my secret question", "re: my secret question"])

    await erase(embedded_log, codec, keys, store, ANA)
    assert await kept_for(store, anas) == (False, [])
    assert await kept_for(store, bos) == (True, ["hi", "re: hi"])
    # And her conversation loads as its history folds: its sealed events open no more.
    loaded = await states(embedded_log, codec, snapshots=conversation_snapshots(store)).get(anas)
    assert loaded == await states(embedded_log, codec).get(anas)
    assert not loaded.exists
    transcript = await transcripts(embedded_log, codec, TranscriptTurns(store)).get(anas)
    assert transcript == await transcripts(embedded_log, codec).get(anas) == Transcript()


async def test_a_writer_behind_an_erasure_writes_none_of_the_erased_owners_rows(store, embedded_log, tmp_path: Path) -> None:
    """Its events that are not sealed (run requests) still fold, but the row names her and is left out."""
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    anas, bos, _ = await two_owners_conversations(embedded_log, codec, store)
    await erase(embedded_log, codec, keys, store, ANA)
    end = await embedded_log.end_offset(CONVERSATION_EVENTS)
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)
    assert await kept_for(store, anas) == (False, [])
    assert await kept_for(store, bos) == (True, ["hi", "re: hi"])
    rows = await store.query(f"SELECT key, org_id, user_id FROM {TABLE} FINAL WHERE key NOT LIKE '#%' ORDER BY key")
    assert [(row["org_id"], row["user_id"]) for row in rows] == [(BO.org_id, BO.user_id)]
