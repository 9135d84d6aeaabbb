"""A loader's read of the store never stops a load: a store that is down or slow answers "nothing saved", and the
load folds the key from the log, as without snapshots; after such a failure the store rests a while unasked."""

import asyncio
import logging
from pathlib import Path

from clickhouse_http import free_port
from commands.decider import ConversationState, evolve
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS
from kernel.keyed_state import KeyedStates
from projections.clickhouse import ClickHouseStore
from projections.conversation_snapshots import conversation_snapshots
from projections.snapshots import StoreGuard
from tests.projections.test_conversation_snapshots import ANA, Conversations
from turnlog.adapters import build_codec


async def test_a_store_that_is_down_costs_a_fold_from_the_log_not_the_load(embedded_log, tmp_path: Path, caplog) -> None:
    codec = build_codec(KeyFileStore(root=tmp_path / "keys"))
    talk = Conversations(embedded_log, codec)
    conversation_id = await talk.start(ANA, title="tides")
    await talk.turn(conversation_id, ANA, "hello")
    down = ClickHouseStore(f"clickhouse://default:@127.0.0.1:{free_port()}/default", connect_timeout_s=1)
    try:
        def states(snapshots) -> KeyedStates[ConversationState]:
            return KeyedStates(
                log=embedded_log, codec=codec, topic=CONVERSATION_EVENTS, initial=ConversationState(), evolve=evolve,
                snapshots=snapshots,
            )

        with caplog.at_level(logging.WARNING, logger="projections.snapshots"):
            loaded = await states(conversation_snapshots(down)).get(conversation_id)
        assert loaded == await states(None).get(conversation_id) and loaded.latest_turn_seq == 2
        assert "loads fold from the log" in caplog.text
    finally:
        await down.close()


async def test_a_slow_answer_is_not_waited_for_and_the_store_then_rests_unasked() -> None:
    now = [0.0]
    guard = StoreGuard(wait_s=0.05, rest_s=30.0, clock=lambda: now[0])
    asked = []

    async def slow() -> str:
        asked.append("slow")
        await asyncio.Event().wait()  # never answers
        return "saved"

    async def quick() -> str:
        asked.append("quick")
        return "saved"

    assert await guard.ask(slow, nothing="nothing", what="t") == "nothing"
    now[0] = 29.0
    assert await guard.ask(quick, nothing="nothing", what="t") == "nothing"  # resting: not asked
    now[0] = 31.0
    assert await guard.ask(quick, nothing="nothing", what="t") == "saved"
    assert asked == ["slow", "quick"]
