"""Governance on a fleet: two API instances on one Kafka log share one limit, because it is decided where the
log orders the requests (one governance writer per org), not in either instance's memory.

Instance A runs every role (the governance role with it); instance B is API-only. Both are given the tiers file.
`turnlog credits` on the same log is answered by A's governance role, and A's projector keeps the org's snapshot.
"""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

import e2e_server
import kafka_broker as kafka_harness
from commands.governance.snapshots import load_org
from events.governance import AdmissionDecided, CreditsGranted
from events.topics import GOVERNANCE
from events.topology import turnlog_topics
from projections.clickhouse import ClickHouseStore
from projections.governance_snapshots import GovernanceSnapshots
from turnlog.adapters import build_codec

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(300)]  # two servers on a broker of their own start first

ORG = e2e_server.unique("org_fleet")
TIERS = f"""
[tenants]
orgs = {{ {ORG} = "shared" }}

[tiers.free]
start_balance = 1000000

[tiers.shared]
start_balance = 1000000
[tiers.shared.user]
requests_per_minute = 4
"""


@pytest.fixture(scope="module")
def fleet(clickhouse_server, tmp_path_factory) -> Iterator[tuple[e2e_server.TurnlogServer, e2e_server.TurnlogServer, str]]:
    base = tmp_path_factory.mktemp("governance_fleet")
    broker = kafka_harness.TansuBroker(log_path=base / "tansu.log")  # a broker of its own: no other fleet's groups
    broker.start()
    asyncio.run(clickhouse_server.create_database("governance_fleet"))
    tiers = base / "tiers.toml"
    tiers.write_text(TIERS)
    log_url = broker.log_url
    shared = ("--log", log_url, "--store", clickhouse_server.url("governance_fleet"), "--tiers", str(tiers))
    data_dir = base / "data"  # shared only for the token-signing secret
    everything = e2e_server.TurnlogServer(data_dir=data_dir, extra_args=shared, startup_deadline_s=90)
    api_only = e2e_server.TurnlogServer(data_dir=data_dir, extra_args=(*shared, "--role", "api"), startup_deadline_s=90)
    try:
        everything.start()
        api_only.start()
        yield everything, api_only, log_url
    finally:
        api_only.stop()
        everything.stop()
        broker.stop()


async def governance_facts(log_url: str, org_id: str) -> list[object]:
    from events.kafka.log import KafkaLog

    log = KafkaLog(log_url.removeprefix("kafka://").split("?")[0], topics=turnlog_topics())
    await log.start()
    try:
        codec = build_codec()
        return [codec.decode(record.value).payload for record in await log.read(GOVERNANCE, key=org_id)]
    finally:
        await log.close()


async def test_two_api_instances_share_one_rate_limit(fleet) -> None:
    everything, api_only, log_url = fleet
    user = everything.new_user(org_id=ORG)
    statuses = []
    async with user.client() as on_a, user.client(base_url=api_only.base_url) as on_b:
        conversations = [await e2e_server.create_conversation(on_a, user.workspace) for _ in range(6)]
        for number, conversation_id in enumerate(conversations):
            client = (on_a, on_b)[number % 2]  # alternate: each instance alone would admit all six
            response = await client.post(
                f"/v1/conversations/{conversation_id}/turns", json={"input": e2e_server.text_input(f"turn {number}")}
            )
            statuses.append((response.status_code, response.headers.get("x-ratelimit-remaining-requests")))
            if response.status_code == 429:
                problem = e2e_server.assert_problem(response, 429)
                assert problem["violated-policies"] == ["user-requests"] and "retry-after" in response.headers
    assert statuses == [(202, "3"), (202, "2"), (202, "1"), (202, "0"), (429, "0"), (429, "0")]

    facts = await governance_facts(log_url, ORG)
    decisions = [(fact.admitted, fact.refusal) for fact in facts if isinstance(fact, AdmissionDecided)]
    assert decisions == [(True, None)] * 4 + [(False, "rate_limited")] * 2


async def test_turnlog_credits_on_kafka_is_answered_by_the_fleets_governance(fleet) -> None:
    _, _, log_url = fleet
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "turnlog.cli", "credits", "grant", "--log", log_url, "--org-id", ORG, "--units", "25",
         "--reason", "invoice 9", "--by", "op_kim", "--timeout-s", "60"],
        cwd=e2e_server.REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={name: value for name, value in os.environ.items() if not name.startswith("TURNLOG_")},
    )
    assert completed.returncode == 0, completed.stderr
    granted = json.loads(completed.stdout)
    assert (granted["fact"], granted["units"], granted["by"], granted["balance"]) == ("CreditsGranted", 25, "op_kim", 1_000_025)
    facts = await governance_facts(log_url, ORG)
    assert [fact.reason for fact in facts if isinstance(fact, CreditsGranted)][-1] == "invoice 9"


async def test_the_fleet_keeps_the_orgs_snapshot_and_it_loads_as_the_history_does(fleet, clickhouse_server) -> None:
    everything, _, log_url = fleet
    user = everything.new_user(org_id=ORG)
    async with user.client() as client:  # one more fact for the org, whichever tests ran before
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": e2e_server.text_input("hi")})
    from events.kafka.log import KafkaLog

    log = KafkaLog(log_url.removeprefix("kafka://").split("?")[0], topics=turnlog_topics())
    store = ClickHouseStore(clickhouse_server.url("governance_fleet"))
    await log.start()
    try:
        codec, snapshots = build_codec(), GovernanceSnapshots(store)
        partition = await log.partition_of(GOVERNANCE, key=ORG)
        end = await log.end_offset(GOVERNANCE, key=ORG)
        async def caught_up() -> bool:
            return (await snapshots.saved(ORG, partition=partition, answered=True)).folded_through >= end

        await e2e_server.eventually(caught_up, "the org's snapshot reaches its partition's end")
        assert (await snapshots.saved(ORG, partition=partition, answered=True)).snapshot is not None
        from_snapshot = await load_org(log=log, codec=codec, org_id=ORG, snapshots=snapshots)
        from_history = await load_org(log=log, codec=codec, org_id=ORG, snapshots=None)
        assert (from_snapshot.state, from_snapshot.answered) == (from_history.state, from_history.answered)
        assert from_snapshot.state.balance > 0 and from_snapshot.answered
    finally:
        await log.close()
        await store.close()
