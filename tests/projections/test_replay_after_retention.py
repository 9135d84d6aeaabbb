"""After old run events are trimmed, replaying the log still rebuilds the same read models and the run ledger's facts."""

import asyncio
from datetime import timedelta
from pathlib import Path

from commands.catalog import CreateConversation, SubmitTurn
from events.retention import RunEventTrimmer
from events.topics import RUN_EVENTS
from events.values import ContentPart
from kernel.envelope import Actor, utc_now
from projections.ledger_replay import refold
from projections.projector import rebuild
from projections.run_ledger import RunLedger
from turnlog.settings import Settings
from turnlog.system import running_system

ALICE = Actor(user_id="alice", org_id="org_a", workspace_id="ws_a")


async def finished(context, run_id: str) -> None:
    follower = context.log.follow(RUN_EVENTS, key=run_id)
    try:
        async with asyncio.timeout(20):
            async for record in follower:
                if context.codec.decode(record.value).type == "RunFinished":
                    return
    finally:
        await follower.aclose()


async def refolded_milestones(context) -> list[dict]:
    """The run ledger's milestones, refolded from the log alone into an emptied table."""
    await context.read_models.store.execute("TRUNCATE TABLE run_milestones")
    await refold(log=context.log, codec=context.codec, processor=RunLedger(context.read_models.store).processor())
    return await context.read_models.store.query(
        "SELECT run_id, milestone, step, status FROM run_milestones FINAL ORDER BY run_id, milestone, step"
    )


async def test_replay_after_trimming_rebuilds_the_same_read_models(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine="scripted", token_delay_ms=2, answer_tokens=12)
    async with running_system(settings) as context:
        await context.bus.send(CreateConversation(conversation_id="conv_a", workspace_id="ws_a", title="t"), actor=ALICE)
        run_ids = []
        for index in range(3):
            content = (ContentPart(type="text", text=f"question {index}"),)
            accepted = await context.bus.send(
                SubmitTurn(conversation_id="conv_a", run_id=f"run_{index}", content=content, request_fingerprint=str(index)),
                actor=ALICE,
            )
            await finished(context, accepted.run_id)
            run_ids.append(accepted.run_id)
        await context.caught_up()
        live = await context.read_models.snapshot()
        records_before = {run_id: len(await context.log.read(RUN_EVENTS, key=run_id)) for run_id in run_ids}
        ledger_before = await refolded_milestones(context)

        # A week and a day later (the clock is the trimmer's, not the machine's).
        trimmer = RunEventTrimmer(
            log=context.log, codec=context.codec, retention=timedelta(days=7), clock=lambda: utc_now() + timedelta(days=8)
        )
        assert (await trimmer.trim_once()).trimmed > 0
        for run_id in run_ids:
            kept = [context.codec.decode(record.value).type for record in await context.log.read(RUN_EVENTS, key=run_id)]
            assert len(kept) < records_before[run_id]
            assert kept.count("AssistantDelta") == 1 and "RunHeartbeat" not in kept  # each step's first token stays
            assert {"RunStarted", "GenerationStarted", "PromptAssembled", "RunFinished"} <= set(kept)

        await context.read_models.truncate()
        await rebuild(log=context.log, codec=context.codec, live=context.read_models, fresh=context.read_models.sibling("__rebuild"))
        assert await context.read_models.snapshot() == live

        # The run ledger refolded from scratch after the trim holds the same milestones, first tokens included.
        assert await refolded_milestones(context) == ledger_before
        assert sum(row["milestone"] == "first_token" for row in ledger_before) == 3
