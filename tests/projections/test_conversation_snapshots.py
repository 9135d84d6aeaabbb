"""Conversation snapshots on both stores: a conversation the decider has not cached loads from its snapshot and the
events after its partition's watermark exactly as from its whole history, and an erasure takes the snapshot with it."""

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
from projections.conversation_snapshots import conversation_snapshot_writer, conversation_snapshots
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


def writer_of(store, log, keys):
    return conversation_snapshot_writer(store=store, writes=WithoutErased(store, keys), log=log).processor()


async def test_a_conversation_loads_from_its_snapshot_and_what_followed_as_from_its_history(
    store, embedded_log, tmp_path: Path
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    table = conversation_snapshots(store)
    await table.create_table()
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


async def test_an_erasure_deletes_the_owners_snapshots_and_the_writer_does_not_bring_them_back(
    store, embedded_log, tmp_path: Path
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    table = conversation_snapshots(store)
    await create_erased_tables(store)
    talk = Conversations(embedded_log, codec)
    anas, bos = await talk.start(ANA, title="private"), await talk.start(BO, title="mine")
    await talk.turn(anas, ANA, "hello")
    end = await talk.turn(bos, BO, "hi")
    async with writing(writer_of(store, embedded_log, keys), log=embedded_log, codec=codec) as writer:
        await writer.through(end)
    assert (await table.saved(anas, partition=0)).snapshot is not None

    # The erasure as the API makes it: keys destroyed, then SubjectErased on `documents` for the eraser.
    keys.destroy(Subject(org_id=ANA.org_id, user_id=ANA.user_id))
    erased = SubjectErased(org_id=ANA.org_id, user_id=ANA.user_id, keys_destroyed=1, requested_by="root", erased_at=AT)
    await embedded_log.append([encode(codec, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
    await refold(log=embedded_log, codec=codec, processor=LedgerEraser(store).processor())
    assert (await table.saved(anas, partition=0)).snapshot is None
    assert (await table.saved(bos, partition=0)).snapshot is not None

    # A writer that folds Ana's conversation again (restarted behind the erasure) writes no row of hers.
    await store.execute(f"DELETE FROM {table.name} WHERE key LIKE '#%'")  # its watermark gone: a first run again
    restarted = conversation_snapshot_writer(store=store, writes=WithoutErased(store, keys), log=embedded_log)
    await refold(log=embedded_log, codec=codec, processor=restarted.processor())
    assert (await table.saved(anas, partition=0)).snapshot is None
    # And her conversation loads as its history folds: its sealed events open no more.
    loaded = await states(embedded_log, codec, snapshots=table).get(anas)
    assert loaded == await states(embedded_log, codec).get(anas)
    assert not loaded.exists
