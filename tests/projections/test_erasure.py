"""An erasure in the read models: the subject's rows go, everyone else's stay, and a rebuild from the log agrees."""

import asyncio
from pathlib import Path

from commands.catalog import CreateConversation, SubmitTurn
from commands.erasure import erase_subject
from events.topics import DOCUMENTS, RUN_EVENTS
from events.values import ContentPart
from kernel.envelope import Actor
from kernel.sealing import Subject
from projections.projector import rebuild
from turnlog.settings import Settings
from turnlog.system import running_system

ALICE = Actor(user_id="alice", org_id="org_a", workspace_id="ws_a")
BOB = Actor(user_id="bob", org_id="org_a", workspace_id="ws_a")  # same org and workspace: only the user differs


async def finished(context, run_id: str) -> None:
    follower = context.log.follow(RUN_EVENTS, key=run_id)
    try:
        async with asyncio.timeout(30):
            async for record in follower:
                if context.codec.decode(record.value).type == "RunFinished":
                    return
    finally:
        await follower.aclose()


def owned_by(snapshot: dict, user_id: str) -> dict[str, list]:
    return {table: [row for row in rows if row.get("owner_id") == user_id] for table, rows in snapshot.items()}


async def test_an_erased_users_rows_go_and_a_rebuild_brings_none_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine="scripted", answer_tokens=6)
    async with running_system(settings) as context:
        for actor in (ALICE, BOB):
            conversation_id = f"conv_{actor.user_id}"
            await context.bus.send(
                CreateConversation(conversation_id=conversation_id, workspace_id=actor.workspace_id, title="t"), actor=actor
            )
            accepted = await context.bus.send(
                SubmitTurn(conversation_id=conversation_id, run_id=f"run_{actor.user_id}",
                           content=(ContentPart(type="text", text=f"{actor.user_id} asks"),), request_fingerprint="f"),
                actor=actor,
            )
            await finished(context, accepted.run_id)
        await context.caught_up()
        before = await context.read_models.snapshot()
        assert owned_by(before, "alice")["turns"] and owned_by(before, "bob")["turns"]

        assert context.keys is not None
        erased = await erase_subject(
            Subject(org_id="org_a", user_id="alice"), files=[], log=context.log, codec=context.codec, keys=context.keys,
            requested_by="admin",
        )
        assert erased.keys_destroyed == 1
        await context.caught_up(topic=DOCUMENTS, timeout_s=30)  # the erasure travels on `documents`
        after = await context.read_models.snapshot()
        assert all(rows == [] for rows in owned_by(after, "alice").values())
        assert owned_by(after, "bob") == owned_by(before, "bob")

        await context.read_models.truncate()
        await rebuild(log=context.log, codec=context.codec, live=context.read_models, fresh=context.read_models.sibling("__rebuild"))
        assert await context.read_models.snapshot() == after


async def test_an_erased_orgs_rows_all_go_and_another_orgs_stay(tmp_path: Path) -> None:
    carol = Actor(user_id="carol", org_id="org_c", workspace_id="ws_c")
    settings = Settings(data_dir=tmp_path, engine="scripted", answer_tokens=6)
    async with running_system(settings) as context:
        for actor in (ALICE, BOB, carol):
            conversation_id = f"conv_{actor.user_id}"
            await context.bus.send(
                CreateConversation(conversation_id=conversation_id, workspace_id=actor.workspace_id, title="t"), actor=actor
            )
        await context.caught_up()
        assert context.keys is not None
        erased = await erase_subject(
            Subject(org_id="org_a"), files=[], log=context.log, codec=context.codec, keys=context.keys, requested_by="operator"
        )
        assert erased.keys_destroyed == 2  # Alice's and Bob's (the org itself never sealed anything)
        await context.caught_up(topic=DOCUMENTS, timeout_s=30)
        conversations = (await context.read_models.snapshot())["conversations"]
        assert [row["conversation_id"] for row in conversations] == ["conv_carol"]
