"""A server with a tiers file keeps each org's governance snapshot, and a decider started afresh loads from it."""

from pathlib import Path

from commands.governance.snapshots import load_org
from events.governance import AdmissionRequested, CreditsGrantRequested
from events.topics import GOVERNANCE
from kernel.envelope import Actor
from e2e_server import eventually
from projections.governance_snapshots import GovernanceSnapshots
from turnlog.settings import Settings
from turnlog.system import running_system

TIERS = "[tiers.free]\nstart_balance = 100\n"
ANA = Actor(user_id="user_ana", org_id="org_snap", workspace_id="ws")


async def test_a_running_server_writes_snapshots_that_load_as_the_history_does(tmp_path: Path) -> None:
    tiers_file = tmp_path / "tiers.toml"
    tiers_file.write_text(TIERS)
    settings = Settings(data_dir=tmp_path, engine="scripted", tiers_file=tiers_file)
    async with running_system(settings) as context:
        assert context.governance is not None
        bus = context.governance.bus
        await bus.ask(CreditsGrantRequested(org_id=ANA.org_id, units=25, reason="top-up", by="op"), actor=ANA)
        await bus.ask(AdmissionRequested(org_id=ANA.org_id, user_id=ANA.user_id, run_id="run_snap"), actor=ANA)
        end = await context.log.end_offset(GOVERNANCE, key=ANA.org_id)
        snapshots = GovernanceSnapshots(context.read_models.store)
        async def caught_up() -> bool:
            return (await snapshots.saved(ANA.org_id, partition=0, answered=True)).folded_through >= end

        await eventually(caught_up, "the org's snapshot reaches its partition's end")
        assert (await snapshots.saved(ANA.org_id, partition=0, answered=True)).snapshot is not None
        restarted = await load_org(log=context.log, codec=context.codec, org_id=ANA.org_id, snapshots=snapshots)
        history = await load_org(log=context.log, codec=context.codec, org_id=ANA.org_id, snapshots=None)
        assert (restarted.state, restarted.answered) == (history.state, history.answered)
        assert restarted.state.balance == 125 and "run_snap" in restarted.state.reservations
