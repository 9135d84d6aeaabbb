"""A fleet on Kafka: two stateless API instances over one log and one ClickHouse.

Instance A runs every role; instance B is API-only (`serve --role api`). A turn posted to one streams
from the other, reads are read-your-writes on either, and `Last-Event-ID` resumes anywhere. A's projector keeps
the decider's conversation snapshots.
"""

import asyncio
from collections.abc import Iterator

import pytest

import e2e_server
from commands.decider import ConversationState, evolve
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS
from events.topology import turnlog_topics
from kernel.keyed_state import KeyedStates
from projections.clickhouse import ClickHouseStore
from processors.transcript_turns import TranscriptTurns
from processors.transcripts import Transcript, evolve_transcript
from projections.conversation_snapshots import conversation_snapshots
from projections.transcript_turns import TranscriptTurnRows
from turnlog.adapters import build_codec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(kafka_broker, clickhouse_server, tmp_path_factory) -> Iterator[tuple[e2e_server.TurnlogServer, ...]]:

    asyncio.run(clickhouse_server.create_database("fleet"))
    data_dir = tmp_path_factory.mktemp("fleet") / "data"  # shared only for the token-signing secret
    shared = ("--log", f"kafka://{kafka_broker.bootstrap_servers}", "--store", clickhouse_server.url("fleet"))
    everything = e2e_server.TurnlogServer(data_dir=data_dir, token_delay_ms=20, answer_tokens=40, extra_args=shared)
    api_only = e2e_server.TurnlogServer(data_dir=data_dir, extra_args=(*shared, "--role", "api"))
    everything.start()
    api_only.start()
    try:
        yield everything, api_only
    finally:
        api_only.stop()
        everything.stop()


async def test_a_turn_posted_to_one_instance_streams_and_reads_from_the_other(fleet) -> None:
    everything, api_only = fleet
    user = everything.new_user()
    async with user.client() as on_a, user.client(base_url=api_only.base_url) as on_b:
        conversation_id = await e2e_server.create_conversation(on_b, user.workspace)  # decided by A, replied to B
        listed = (await on_a.get("/v1/conversations")).json()["conversations"]  # a fence over every partition
        assert [conversation["conversationId"] for conversation in listed] == [conversation_id]
        accepted = await e2e_server.submit_turn(on_a, conversation_id, "hello from instance A")
        turns_on_b = await e2e_server.list_turns(on_b, conversation_id)  # read-your-writes on another instance
        assert [(turn["turnSeq"], turn["role"]) for turn in turns_on_b][:1] == [(1, "user")]

        # Read part of the stream on B, drop it, resume on A with Last-Event-ID.
        seen = []
        async with e2e_server.open_stream(on_b, accepted["runId"]) as stream:
            async for event in stream:
                seen.append(event)
                if sum(1 for e in seen if e.event == "assistant.delta") == 2:
                    break
        rest = await e2e_server.read_stream(on_a, accepted["runId"], last_event_id=seen[-1].id)
        everything_once = await e2e_server.read_stream(on_b, accepted["runId"])

    ids = [event.id for event in seen + rest]
    assert ids == [event.id for event in everything_once]  # every event once, in order
    assert rest[-1].event == "assistant.completed"
    assert e2e_server.delta_text(seen + rest) == e2e_server.delta_text(everything_once)


async def test_a_turn_posted_to_the_api_only_instance_is_answered(fleet) -> None:
    everything, api_only = fleet
    user = api_only.new_user()
    async with user.client(base_url=api_only.base_url) as on_b:
        conversation_id = await e2e_server.create_conversation(on_b, user.workspace)
        accepted = await e2e_server.submit_turn(on_b, conversation_id, "only the api here")
        run = await e2e_server.wait_for_run(on_b, accepted["runId"], timeout_s=30)
        turns = await e2e_server.list_turns(on_b, conversation_id)
    assert run["status"] == "completed"
    assert [turn["state"] for turn in turns] == ["completed", "completed"]


async def test_a_conversations_snapshot_and_transcript_load_as_its_history_does(
    fleet, kafka_broker, clickhouse_server
) -> None:
    """What the decider, and the prompt builder as of each of its events, load for a conversation they have not
    cached (evicted, or after a restart)."""
    everything, _ = fleet
    user = everything.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        for text in ("first", "second"):
            accepted = await e2e_server.submit_turn(client, conversation_id, text)
            await e2e_server.wait_for_run(client, accepted["runId"], timeout_s=30)
    from events.kafka.log import KafkaLog

    log = KafkaLog(kafka_broker.bootstrap_servers, topics=turnlog_topics())
    store = ClickHouseStore(clickhouse_server.url("fleet"))
    await log.start()
    try:
        codec, table = build_codec(KeyFileStore(root=everything.data_dir / "keys")), conversation_snapshots(store)
        partition = await log.partition_of(CONVERSATION_EVENTS, key=conversation_id)
        end = await log.end_offset(CONVERSATION_EVENTS, key=conversation_id)
        async def snapshot_caught_up() -> bool:
            return (await table.saved(conversation_id, partition=partition)).folded_through >= end

        await e2e_server.eventually(snapshot_caught_up, "the conversation snapshots reach the partition's end")
        saved = await table.saved(conversation_id, partition=partition)
        assert saved.snapshot is not None and saved.snapshot.state.latest_turn_seq == 4

        def states(snapshots) -> KeyedStates[ConversationState]:
            return KeyedStates(
                log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=ConversationState(), evolve=evolve,
                snapshots=snapshots,
            )

        from_snapshot = await states(table).get(conversation_id)
        assert from_snapshot == await states(None).get(conversation_id)
        assert from_snapshot.owner_id == user.user_id and from_snapshot.active_run_id is None

        turns = TranscriptTurnRows(store)

        async def turns_caught_up() -> bool:
            return (await turns.watermark(partition) or -1) >= end

        await e2e_server.eventually(turns_caught_up, "the transcript turns reach the partition's end")

        def transcripts(source) -> KeyedStates[Transcript]:
            return KeyedStates(
                log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript,
                snapshots=source,
            )

        records = await log.read(CONVERSATION_EVENTS, key=conversation_id)
        for before in (*(record.offset for record in records), None):
            loaded = await transcripts(TranscriptTurns(store)).get(conversation_id, before=before)
            assert loaded == await transcripts(None).get(conversation_id, before=before)
        assert [turn.role for turn in loaded.turns.values()] == ["user", "assistant"] * 2
    finally:
        await log.close()
        await store.close()
