"""A command sent as its user is erased is sealed under a key no one keeps: the decider still answers it, 403."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from commands.bus import CommandBus
from commands.catalog import CreateConversation, SubmitTurn
from commands.handler import CommandHandler
from events.key_files import KeyFileStore
from events.outcomes import CommandRejected
from events.topics import COMMAND_OUTCOMES
from events.values import ContentPart
from kernel.envelope import Actor
from kernel.errors import Forbidden
from kernel.runtime import run_processor
from kernel.sealing import Subject
from turnlog.adapters import build_codec

ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_1")
BOB = Actor(user_id="bob", org_id="org_acme", workspace_id="ws_1")


def turn(conversation_id: str, text: str) -> SubmitTurn:
    return SubmitTurn(conversation_id=conversation_id, run_id=f"run_{text}", content=(ContentPart(type="text", text=text),),
                      request_fingerprint=text)


async def test_a_command_in_flight_when_its_user_is_erased_is_refused_not_left_unanswered(tmp_path: Path, embedded_log) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    decider = asyncio.create_task(run_processor(CommandHandler(log=embedded_log, codec=codec).processor(), log=embedded_log, codec=codec))
    bus = CommandBus(log=embedded_log, codec=codec, reply_timeout_s=60)  # without an answer, this test would wait a minute
    await bus.start()
    try:
        await bus.send(CreateConversation(conversation_id="c_ada", workspace_id="ws_1"), actor=ADA)
        await bus.send(CreateConversation(conversation_id="c_bob", workspace_id="ws_1"), actor=BOB)
        keys.destroy(Subject(org_id="org_acme", user_id="ada"))

        with pytest.raises(Forbidden, match="user/org_acme/ada was erased"):
            await bus.send(turn("c_ada", "hello"), actor=ADA)
        accepted = await bus.send(turn("c_bob", "hello"), actor=BOB)  # the decider goes on with everyone else
        assert accepted.run_id == "run_hello"

        outcomes = [codec.decode(record.value).payload async for record in _all(embedded_log, COMMAND_OUTCOMES)]
        rejected = [(outcome.code, outcome.conversation_id) for outcome in outcomes if isinstance(outcome, CommandRejected)]
        assert rejected == [("erased", "c_ada")]
    finally:
        await bus.close()
        decider.cancel()
        await asyncio.gather(decider, return_exceptions=True)


async def _all(log, topic: str):
    """Every record of `topic` now on the log."""
    end = await log.end_offset(topic)
    async for record in log.follow(topic):
        yield record
        if record.offset >= end:
            return
