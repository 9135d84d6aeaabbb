"""Governance snapshots on both stores: an org loads from its snapshot and the facts after its partition's watermark
exactly as from its whole history, a new org without reading the history, and a table that lost rows is not trusted."""

import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from commands.catalog import COMMAND_TYPES
from commands.governance.snapshots import load_org
from commands.governance.tiers_file import GovernanceConfig, Tier
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.governance import AdmissionDecided, CreditsGranted, CreditsGrantRequested, UserSuspended
from events.topics import GOVERNANCE, GOVERNANCE_REQUESTS
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import LogRecord, OutgoingRecord
from kernel.runtime import Delivery
from processors.governance import GovernanceDecider
from tests.projections.snapshot_writing import ReadsRecorded
from tests.projections.snapshot_writing import writing as snapshot_writing
from projections.governance_snapshots import TABLE, GovernanceSnapshots, governance_snapshot_writer

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
AT = datetime(2026, 12, 7, 9, tzinfo=UTC)
OPERATOR = Actor(user_id="op", org_id="", workspace_id="")


async def grant(log: EmbeddedLog, org_id: str, units: int) -> int:
    """A grant as the decider answers one: the request is the fact's cause. Returns the fact's offset."""
    request = Envelope.wrap(
        CreditsGrantRequested(org_id=org_id, units=units, reason="top-up", by="op"), key=org_id, actor=OPERATOR
    )
    facts = [
        CreditsGranted(org_id=org_id, units=units, reason="top-up", by="op", granted_at=AT),
        UserSuspended(org_id=org_id, user_id="user_bo", until=AT, reason="abuse", by="op", suspended_at=AT),
    ]
    written = await log.append([
        OutgoingRecord(topic=GOVERNANCE, key=org_id, value=CODEC.encode(Envelope.wrap(f, key=org_id, actor=OPERATOR, cause=request)))
        for f in facts
    ])
    return written[-1].offset


@asynccontextmanager
async def writing(log: EmbeddedLog, store):
    async with snapshot_writing(governance_snapshot_writer(store=store, log=log).processor(), log=log, codec=CODEC) as watched:
        yield watched


async def test_an_org_loads_from_its_snapshot_and_the_facts_after_the_watermark_as_from_its_history(store, embedded_log) -> None:
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    for index in range(3):
        await grant(embedded_log, "org_acme", 10 + index)
        await grant(embedded_log, "org_bolt", 100)
    async with writing(embedded_log, store) as writer:
        await writer.through(await embedded_log.end_offset(GOVERNANCE))
    mark = (await snapshots.saved("org_acme", partition=0, answered=True)).folded_through
    await grant(embedded_log, "org_acme", 1000)  # after the writer stopped: only on the log

    for org_id in ("org_acme", "org_bolt", "org_new"):
        recorded = ReadsRecorded(embedded_log)
        from_snapshot = await load_org(log=recorded, codec=CODEC, org_id=org_id, snapshots=snapshots)  # type: ignore[arg-type]
        from_history = await load_org(log=embedded_log, codec=CODEC, org_id=org_id, snapshots=None)
        assert (from_snapshot.state, from_snapshot.answered) == (from_history.state, from_history.answered)
        assert from_snapshot.offset >= from_history.offset  # both hold every fact up to there (a new org: none)
        assert recorded.afters == [mark]  # the history before the watermark is not read
    acme = await load_org(log=embedded_log, codec=CODEC, org_id="org_acme", snapshots=snapshots)
    assert acme.state.balance == 10 + 11 + 12 + 1000 and "user_bo" in acme.state.suspensions
    assert len(acme.answered) == 4  # one request each, however many facts it caused


async def test_facts_delivered_again_are_folded_once(store, embedded_log) -> None:
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    end = await grant(embedded_log, "org_acme", 10)
    async with writing(embedded_log, store) as writer:
        await writer.through(end)
    # A writer restarted before its group committed: the same facts again, from the start.
    writer = governance_snapshot_writer(store=store, log=embedded_log)
    deliveries = [
        Delivery(record=record, envelope=CODEC.decode(record.value))
        for record in await embedded_log.read(GOVERNANCE, key="org_acme")
    ]
    await writer.react(deliveries)
    saved = await snapshots.saved("org_acme", partition=0, answered=True)
    assert saved.snapshot is not None and saved.snapshot.state.balance == 10


async def test_a_table_that_lost_its_rows_is_not_written_and_orgs_load_from_the_log(store, embedded_log, caplog) -> None:
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    end = await grant(embedded_log, "org_acme", 10)
    async with writing(embedded_log, store) as writer:
        await writer.through(end)
    await store.execute(f"DROP TABLE {TABLE}")  # an operator's rebuild, the group left where it was
    await snapshots.create_tables()
    end = await grant(embedded_log, "org_acme", 5)
    with caplog.at_level(logging.ERROR, logger="projections.governance_snapshots"):
        async with writing(embedded_log, store) as writer:
            await writer.through(end)  # past the new grant, having written nothing
    assert "lacks partition 0" in caplog.text
    saved = await snapshots.saved("org_acme", partition=0, answered=True)
    assert saved.snapshot is None and saved.folded_through == -1  # nothing claims to be whole
    loaded = await load_org(log=embedded_log, codec=CODEC, org_id="org_acme", snapshots=snapshots)
    assert loaded.state.balance == 15  # from the whole history


async def test_an_admission_is_folded_like_any_fact(store, embedded_log) -> None:
    """The decider's most common fact: what it holds (a reservation, a window) survives the snapshot."""
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    actor = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws")
    admitted = AdmissionDecided(
        org_id="org_acme", user_id="user_ana", run_id="run_1", admitted=True, balance=100, available=95,
        reserved_units=5, estimated_tokens=40, decided_at=AT,
    )
    [written] = await embedded_log.append([
        OutgoingRecord(topic=GOVERNANCE, key="org_acme", value=CODEC.encode(Envelope.wrap(admitted, key="org_acme", actor=actor)))
    ])
    async with writing(embedded_log, store) as writer:
        await writer.through(written.offset)
    loaded = await load_org(log=embedded_log, codec=CODEC, org_id="org_acme", snapshots=snapshots)
    assert loaded.state == (await load_org(log=embedded_log, codec=CODEC, org_id="org_acme", snapshots=None)).state
    assert "run_1" in loaded.state.reservations


async def test_a_request_delivered_again_after_the_snapshot_is_recognised_and_not_applied_twice(store, embedded_log) -> None:
    """What the runtime may deliver again after a restart: a grant whose credits the snapshot already holds."""
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    config = GovernanceConfig(tiers={"free": Tier(name="free", start_balance=100)})
    request = Envelope.wrap(
        CreditsGrantRequested(org_id="org_acme", units=25, reason="top-up", by="op"), key="org_acme", actor=OPERATOR
    )
    delivery = Delivery(
        record=LogRecord(topic=GOVERNANCE_REQUESTS, partition=0, offset=7, key="org_acme", value=b"", timestamp=AT),
        envelope=request,
    )
    first = GovernanceDecider(log=embedded_log, codec=CODEC, config=config, snapshots=snapshots)
    written = await embedded_log.append(list(await first.react([delivery])))
    async with writing(embedded_log, store) as writer:
        await writer.through(written[-1].offset)

    restarted = GovernanceDecider(log=embedded_log, codec=CODEC, config=config, snapshots=snapshots)
    assert await restarted.react([delivery]) == []  # recognised by its answer in the store
    loaded = await load_org(log=embedded_log, codec=CODEC, org_id="org_acme", snapshots=snapshots)
    assert loaded.state.balance == 125 and request.event_id in loaded.answered
