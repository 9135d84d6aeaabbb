"""Replaying the log rebuilds read models equal to the live ones."""

import asyncio
from pathlib import Path

from commands.catalog import CancelRun, CreateConversation, RegenerateTurn, SubmitTurn
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS
from kernel.envelope import Actor
from events.values import ContentPart
from projections.projector import rebuild
from turnlog.settings import Settings
from turnlog.system import running_system

ALICE = Actor(user_id="alice", org_id="org_a", workspace_id="ws_a")
BOB = Actor(user_id="bob", org_id="org_b", workspace_id="ws_b")


async def finished(context, run_id: str, conversation_id: str) -> None:
    follower = context.log.follow(RUN_EVENTS, key=run_id)
    try:
        async with asyncio.timeout(10):
            async for record in follower:
                if context.codec.decode(record.value).type == "RunFinished":
                    return
    except TimeoutError:
        seen = {
            topic: [context.codec.decode(r.value).type for r in await context.log.read(topic, key=key)]
            for topic, key in ((RUN_EVENTS, run_id), (COMMANDS, conversation_id), (CONVERSATION_EVENTS, conversation_id))
        }
        raise AssertionError(f"run {run_id} did not finish in 10 s; the log holds {seen}") from None
    finally:
        await follower.aclose()


def turn(conversation_id: str, run_id: str, text: str) -> SubmitTurn:
    return SubmitTurn(conversation_id=conversation_id, run_id=run_id,
                      content=(ContentPart(type="text", text=text),), request_fingerprint=text)


async def test_replay_rebuilds_what_the_live_projection_built(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine="scripted", token_delay_ms=5, answer_tokens=12)
    async with running_system(settings) as context:
        bus = context.bus
        for actor, conversation_id in ((ALICE, "conv_a"), (BOB, "conv_b")):
            await bus.send(CreateConversation(conversation_id=conversation_id, workspace_id=actor.workspace_id,
                                              title=f"{actor.user_id}'s"), actor=actor)
            for index in range(3):
                accepted = await bus.send(turn(conversation_id, f"run_{conversation_id}_{index}", f"q{index}"), actor=actor)
                await finished(context, accepted.run_id, conversation_id)
        regenerated = await bus.send(RegenerateTurn(conversation_id="conv_a", run_id="run_regen", request_fingerprint="r"), actor=ALICE)
        await finished(context, regenerated.run_id, "conv_a")
        slow = await bus.send(turn("conv_b", "run_slow", "a long one " * 50), actor=BOB)
        await bus.send(CancelRun(conversation_id="conv_b", run_id=slow.run_id), actor=BOB)
        await finished(context, slow.run_id, "conv_b")
        await context.caught_up()
        live = await context.read_models.snapshot()

        # Wipe the live tables, then rebuild them from the log alone.
        await context.read_models.truncate()
        assert all(rows == [] for rows in (await context.read_models.snapshot()).values())
        replayed = await rebuild(log=context.log, codec=context.codec, live=context.read_models,
                             fresh=context.read_models.sibling("__rebuild"))
        rebuilt = await context.read_models.snapshot()

    assert replayed > 0
    assert rebuilt == live
    assert len(live["conversations"]) == 2
    assert len(live["turns"]) == 2 * 6 + 1 + 2  # 3 exchanges each, a regeneration, a cancelled exchange
    assert {row["status"] for row in live["runs"]} == {"completed", "cancelled"}
