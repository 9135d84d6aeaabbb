"""What a conversation the decider or the prompt builder has not cached costs them on Kafka, with and without the store.

The decider keeps the states of the conversations it decided lately. Any other (evicted, or every conversation after
the decider restarts) was folded on its next command from `conversation-events`, which on Kafka scans the
conversation's partition from the conversation id's minting time: everything every other conversation in the
partition wrote since. With snapshots (projections/conversation_snapshots.py) the decider reads the conversation's
row and its partition's watermark from the store, and scans only what the partition took after the watermark. The
prompt builder (and the summarizer) fold the conversation's transcript the same way, as of the record in hand; on
Kafka they read its turns from the store (processors/transcript_turns.py) and scan after the watermark.

On a local Tansu broker (the tests' harness), `conversation-events` has one partition. `--reads` old conversations
(created, then three turns each) are written first; then, at each level, other conversations' events until the
partition holds `--history` records after them (a turn each: ~4 records, ~200-400 bytes). chDB in-process holds the
snapshots and the transcript turns, which the writers bring up to the partition's end before the timings. At each
level, `--reads` times each way:

- a fresh decider (a miss) decides the next turn of an old conversation, and a new conversation's creation (what the
  store's read adds to a first turn);
- a fresh transcript cache (a miss) loads an old conversation's transcript as of the partition's end (the prompt
  builder's load for a new run);
- the prompt builder reads an old, active conversation's newest summary (`conversation-summaries` takes one summary
  per other conversation, and the old ones' were just renewed): as it did at every prompt, from the conversation's
  start, and after the newest it saw at the previous prompt;
- from the history (without the store, as before) and from the store.

    .venv/bin/python benchmarks/conversation_loads.py [--history 0,20000,100000] [--reads 20]

Run it from the tree to measure: the script imports the decider of the tree it sits in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's decider, not whichever tree the environment was installed from

from commands.catalog import COMMAND_TYPES, CreateConversation, FinishRun, SubmitTurn  # noqa: E402
from commands.decider import ConversationState, decide, evolve  # noqa: E402
from commands.handler import CommandHandler  # noqa: E402
from events.catalog import EVENT_TYPES  # noqa: E402
from events.kafka.log import KafkaLog  # noqa: E402
from events.conversation import ConversationSummarized  # noqa: E402
from events.topics import COMMANDS, CONVERSATION_EVENTS, SUMMARIES, key_of, topic_of  # noqa: E402
from events.topology import turnlog_topics  # noqa: E402
from events.values import ContentPart, SummaryFact, Usage  # noqa: E402
from kernel.codec import AvroCodec  # noqa: E402
from kernel.envelope import Actor, Envelope, new_id  # noqa: E402
from kernel.log import LogRecord, OutgoingRecord  # noqa: E402
from kernel.runtime import Delivery, run_processor  # noqa: E402
from lifecycle import emitted, tansu_broker, timings  # noqa: E402  (the tests' broker harness)
from projections.chdb import ChdbStore  # noqa: E402
from kernel.keyed_state import KeyedStates  # noqa: E402
from processors.newest_summaries import NewestSummaries  # noqa: E402
from processors.transcript_turns import TranscriptTurns, TranscriptTurnWriter  # noqa: E402
from processors.transcripts import Transcript, evolve_transcript  # noqa: E402
from projections.conversation_snapshots import (  # noqa: E402
    CONVERSATION_SNAPSHOTS_GROUP, TABLE, conversation_snapshot_writer, conversation_snapshots,
)
from projections.transcript_turns import TranscriptTurnRows  # noqa: E402

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
USER = Actor(user_id="user_a", org_id="org_a", workspace_id="ws")
WORKER = Actor(user_id="svc_worker", org_id="", workspace_id="")
BATCH = 500  # records to a transaction
CONSUMERS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50}


def submit(conversation_id: str, text: str) -> SubmitTurn:
    return SubmitTurn(
        conversation_id=conversation_id, run_id=new_id("run"), content=(ContentPart(type="text", text=text),),
        request_fingerprint=text,
    )


def conversation(turns: int) -> list[OutgoingRecord]:
    """A conversation's events as the decider writes them: created, then `turns` finished turns."""
    conversation_id = new_id("conv")
    commands: list[tuple[object, Actor]] = [(CreateConversation(conversation_id=conversation_id, workspace_id="ws"), USER)]
    for index in range(turns):
        turn = submit(conversation_id, f"question {index} about the tides and the moon")
        done = FinishRun(
            conversation_id=conversation_id, run_id=turn.run_id, status="completed",
            text="an answer of a few sentences, as a model would give it " * 3, usage=Usage(prompt_tokens=40, output_tokens=60),
        )
        commands += [(turn, USER), (done, WORKER)]
    state, records = ConversationState(), []
    for command, actor in commands:
        envelope = Envelope.wrap(command, key=conversation_id, actor=actor)
        for event in decide(envelope, state).events:
            scope = state.owner if state.exists else USER
            written = Envelope.wrap(event, key=key_of(event), actor=scope, cause=envelope)
            if topic_of(event) == CONVERSATION_EVENTS:
                state = evolve(state, written)
                records.append(OutgoingRecord(topic=CONVERSATION_EVENTS, key=key_of(event), value=CODEC.encode(written)))
    return records


def summarized(conversation_id: str, version: int) -> OutgoingRecord:
    """A rolling summary of the conversation, as the summarizer writes one every few turns."""
    summary = ConversationSummarized(
        conversation_id=conversation_id, version=version, through_turn_seq=2 * version,
        facts=(SummaryFact(turn_seq=1, text="the user lives by the sea and asks about tides"),),
        summarized_at=datetime.now(UTC),
    )
    envelope = Envelope.wrap(summary, key=conversation_id, actor=USER)
    return OutgoingRecord(topic=SUMMARIES, key=conversation_id, value=CODEC.encode(envelope))


def command(payload: object) -> Delivery:
    envelope = Envelope.wrap(payload, key=payload.conversation_id, actor=USER)
    record = LogRecord(topic=COMMANDS, partition=0, offset=0, key=envelope.key, value=b"", timestamp=datetime.now(UTC))
    return Delivery(record=record, envelope=envelope)


async def decided(log: KafkaLog, snapshots, payloads: list[object]) -> dict:
    seconds = []
    for payload in payloads:
        decider = CommandHandler(log=log, codec=CODEC, snapshots=snapshots)  # a fresh one: a miss
        started = time.perf_counter()
        outputs = await decider.react([command(payload)])
        seconds.append(time.perf_counter() - started)
        assert outputs, payload  # accepted: events to append
    return timings(seconds)


async def transcripts_loaded(log: KafkaLog, source, conversation_ids: list[str]) -> dict:
    seconds = []
    before = await log.end_offset(CONVERSATION_EVENTS) + 1  # as of a new run at the partition's end
    for conversation_id in conversation_ids:
        cache = KeyedStates(
            log=log, codec=CODEC, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript,
            snapshots=source,
        )
        started = time.perf_counter()
        transcript = await cache.get(conversation_id, before=before)
        seconds.append(time.perf_counter() - started)
        assert len(transcript.turns) == 6, conversation_id
    return timings(seconds)


async def newest_summaries(log: KafkaLog, conversation_ids: list[str], *, seen_before: bool) -> dict:
    """The prompt builder's read of a conversation's newest summary: with nothing seen (every read before, and a miss
    now), or after the newest it saw at the conversation's previous prompt."""
    seconds = []
    for conversation_id in conversation_ids:
        newest = NewestSummaries(log=log, codec=CODEC)
        if seen_before:
            await newest.of(conversation_id)
        started = time.perf_counter()
        summary = await newest.of(conversation_id)
        seconds.append(time.perf_counter() - started)
        assert summary is not None and summary.version == 2, conversation_id
    return timings(seconds)


async def caught_up(table, turns: TranscriptTurnRows, log: KafkaLog) -> None:
    end = await log.end_offset(CONVERSATION_EVENTS)
    async with asyncio.timeout(600):
        while (await table.saved("conv_anyone", partition=0)).folded_through < end:
            await asyncio.sleep(0.1)
        while (await turns.watermark(0) or -1) < end:
            await asyncio.sleep(0.1)


async def measure(bootstrap: str, store_path: Path, levels: list[int], reads: int) -> list[dict]:
    log = KafkaLog(
        bootstrap, topics=turnlog_topics(partitions=1), client_id="conversation-loads", consumer_config=CONSUMERS,
        timeout_s=120,
    )
    store = ChdbStore(str(store_path))
    await log.start()
    table, turns = conversation_snapshots(store), TranscriptTurnRows(store)
    await table.create_table()
    await turns.create_table()
    turn_writer = TranscriptTurnWriter(store=store, writes=store, log=log, group=CONVERSATION_SNAPSHOTS_GROUP)
    writer = asyncio.create_task(run_processor(
        conversation_snapshot_writer(store=store, writes=store, log=log, also=turn_writer.write).processor(),
        log=log, codec=CODEC,
    ))
    results = []
    try:
        old = [conversation(turns=3) for _ in range(reads)]
        old_ids = [records[0].key for records in old]
        await log.append([record for records in old for record in records])
        await log.append([summarized(conversation_id, 1) for conversation_id in old_ids])
        written, pending = 0, []
        for level in levels:
            while written < level:
                while len(pending) < BATCH:
                    filler = conversation(turns=1)
                    pending += filler
                    pending.append(summarized(filler[0].key, 1))  # one summary per conversation: a generous rate
                batch = pending[:BATCH]
                await log.append(batch)
                written += sum(1 for record in batch if record.topic == CONVERSATION_EVENTS)
                pending = pending[BATCH:]
            # The old conversations are active: each has just had its summary renewed.
            await log.append([summarized(conversation_id, 2) for conversation_id in old_ids])
            caught = time.perf_counter()
            await caught_up(table, turns, log)
            rows = await store.query(f"SELECT count() AS rows, countDistinct(_part) AS parts FROM {TABLE}")
            creations = [CreateConversation(conversation_id=new_id("conv"), workspace_id="ws") for _ in range(2 * reads)]
            results.append({
                "records_after_the_old_conversations": written,
                "snapshots_caught_up_s": round(time.perf_counter() - caught, 2),
                "snapshot_table": rows[0],
                "old_conversation_next_turn": {
                    "whole_history": await decided(log, None, [submit(c, "and then?") for c in old_ids]),
                    "snapshot": await decided(log, table, [submit(c, "and then?") for c in old_ids]),
                },
                "new_conversation_created": {
                    "whole_history": await decided(log, None, creations[:reads]),
                    "snapshot": await decided(log, table, creations[reads:]),
                },
                "old_conversation_transcript": {
                    "whole_history": await transcripts_loaded(log, None, old_ids),
                    "store": await transcripts_loaded(log, TranscriptTurns(store), old_ids),
                },
                "old_conversation_newest_summary": {
                    "whole_history": await newest_summaries(log, old_ids, seen_before=False),
                    "after_the_newest_seen": await newest_summaries(log, old_ids, seen_before=True),
                },
            })
            print(json.dumps(results[-1]), flush=True)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await log.close()
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="0,20000,100000", help="records after the old conversations, per level")
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    levels = sorted(int(level) for level in arguments.history.split(","))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="turnlog-conversation-loads-") as directory:
        broker = tansu_broker(stack, Path(directory))
        results = asyncio.run(measure(broker.bootstrap_servers, Path(directory) / "chdb", levels, arguments.reads))
    report = {
        "benchmark": "conversation_loads", "date": date.today().isoformat(), "log": "kafka (Tansu), one partition",
        "store": "chDB in-process", "reads": arguments.reads, "levels": results,
    }
    emitted(report, arguments.out)


if __name__ == "__main__":
    main()
