"""What the governance decider's first request for an org costs on Kafka as `governance` grows, with and without snapshots.

The decider keeps each org's state in memory once loaded. An org it has not loaded (a new org's first admission,
every org after the decider restarts) used to be folded from its whole history: `governance` is kept forever and an
org id bounds no scan, so that was a scan of the org's partition from its start, with the decider's other requests
waiting. With snapshots (projections/governance_snapshots.py) it reads the org's row and watermark from the store and
scans only what the partition took after the watermark.

On a local Tansu broker (the tests' harness), `governance` has one partition, filled with `--history` facts of
`--orgs` orgs (grants, ~150 bytes each, 500 to a transaction); chDB in-process holds the snapshots, which the writer
brings up to the partition's end before the timings. At each level a fresh decider answers one admission, `--reads`
times each way:

- an org with history (one of the `--orgs`), and an org the log has never seen (a new org's first admission);
- from its whole history (the decider without snapshots, as before) and from its snapshot.

    .venv/bin/python benchmarks/governance_loads.py [--history 0,20000,100000] [--orgs 200] [--reads 20]

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

from commands.catalog import COMMAND_TYPES  # noqa: E402
from commands.governance.tiers_file import GovernanceConfig, Limits, Price, Tier  # noqa: E402
from events.catalog import EVENT_TYPES  # noqa: E402
from events.governance import AdmissionRequested, CreditsGranted, CreditsGrantRequested  # noqa: E402
from events.kafka.log import KafkaLog  # noqa: E402
from events.topics import GOVERNANCE, GOVERNANCE_REQUESTS  # noqa: E402
from events.topology import turnlog_topics  # noqa: E402
from kernel.codec import AvroCodec  # noqa: E402
from kernel.envelope import Actor, Envelope  # noqa: E402
from kernel.log import LogRecord, OutgoingRecord  # noqa: E402
from kernel.runtime import Delivery, run_processor  # noqa: E402
from lifecycle import emitted, tansu_broker, timings  # noqa: E402  (the tests' broker harness)
from processors.governance import GovernanceDecider  # noqa: E402
from projections.chdb import ChdbStore  # noqa: E402
from projections.governance_snapshots import GovernanceSnapshots, governance_snapshot_writer  # noqa: E402

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
CONFIG = GovernanceConfig(
    tiers={"free": Tier(name="free", start_balance=1000, reservation_units=5, user=Limits(concurrent_runs=50))},
    prices={"default": Price(prompt=1, cached=0, output=3)},
)
OPERATOR = Actor(user_id="op", org_id="", workspace_id="")
BATCH = 500  # facts to a transaction
CONSUMERS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50}


def granted(org_id: str) -> OutgoingRecord:
    request = Envelope.wrap(CreditsGrantRequested(org_id=org_id, units=1, reason="top-up", by="op"), key=org_id, actor=OPERATOR)
    fact = CreditsGranted(org_id=org_id, units=1, reason="top-up", by="op", granted_at=datetime.now(UTC))
    return OutgoingRecord(topic=GOVERNANCE, key=org_id, value=CODEC.encode(Envelope.wrap(fact, key=org_id, actor=OPERATOR, cause=request)))


def admission(org_id: str, index: int) -> Delivery:
    actor = Actor(user_id="user_a", org_id=org_id, workspace_id="ws")
    envelope = Envelope.wrap(AdmissionRequested(org_id=org_id, user_id="user_a", run_id=f"run_{index}"), key=org_id, actor=actor)
    record = LogRecord(
        topic=GOVERNANCE_REQUESTS, partition=0, offset=index, key=org_id, value=b"", timestamp=datetime.now(UTC)
    )
    return Delivery(record=record, envelope=envelope)


async def first_admissions(log: KafkaLog, snapshots: GovernanceSnapshots | None, org_ids: list[str]) -> dict:
    seconds = []
    for index, org_id in enumerate(org_ids):
        decider = GovernanceDecider(log=log, codec=CODEC, config=CONFIG, snapshots=snapshots)  # a fresh one: a miss
        started = time.perf_counter()
        answered = await decider.react([admission(org_id, index)])
        seconds.append(time.perf_counter() - started)
        assert answered, org_id
    return timings(seconds)


async def store_reads(snapshots: GovernanceSnapshots, org_ids: list[str]) -> dict:
    """The store's part alone: the org's row, its partition's watermark and its answered requests."""
    seconds = []
    for org_id in org_ids:
        started = time.perf_counter()
        await snapshots.saved(org_id, partition=0, answered=True)
        seconds.append(time.perf_counter() - started)
    return timings(seconds)


async def caught_up(snapshots: GovernanceSnapshots, log: KafkaLog) -> None:
    end = await log.end_offset(GOVERNANCE)
    async with asyncio.timeout(600):
        while (await snapshots.saved("anyone", partition=0, answered=False)).folded_through < end:
            await asyncio.sleep(0.1)


async def measure(bootstrap: str, store_path: Path, levels: list[int], orgs: int, reads: int) -> list[dict]:
    log = KafkaLog(
        bootstrap, topics=turnlog_topics(partitions=1), client_id="governance-loads", consumer_config=CONSUMERS, timeout_s=120
    )
    store = ChdbStore(str(store_path))
    await log.start()
    snapshots = GovernanceSnapshots(store)
    await snapshots.create_tables()
    writer = asyncio.create_task(
        run_processor(governance_snapshot_writer(store=store, log=log).processor(), log=log, codec=CODEC)
    )
    results = []
    try:
        known = [f"org_{index:04d}" for index in range(orgs)]
        written = 0
        for level in levels:
            while written < level:
                count = min(BATCH, level - written)
                await log.append([granted(known[(written + i) % orgs]) for i in range(count)])
                written += count
            caught = time.perf_counter()
            await caught_up(snapshots, log)
            new = [f"org_new_{level}_{index}" for index in range(reads)]
            picked = [known[index * orgs // reads] for index in range(reads)]
            rows = await store.query("SELECT count() AS rows, countDistinct(_part) AS parts FROM governance_snapshots")
            results.append({
                "history_facts": written,
                "snapshots_caught_up_s": round(time.perf_counter() - caught, 2),
                "snapshot_table": rows[0],
                "store_read_alone": await store_reads(snapshots, picked),
                "org_with_history": {
                    "whole_history": await first_admissions(log, None, picked),
                    "snapshot": await first_admissions(log, snapshots, picked),
                },
                "new_org": {
                    "whole_history": await first_admissions(log, None, new),
                    "snapshot": await first_admissions(log, snapshots, [f"{org}_s" for org in new]),
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
    parser.add_argument("--history", default="0,20000,100000", help="governance facts in the partition, per level")
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    levels = sorted(int(level) for level in arguments.history.split(","))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="turnlog-governance-loads-") as directory:
        broker = tansu_broker(stack, Path(directory))
        results = asyncio.run(measure(broker.bootstrap_servers, Path(directory) / "chdb", levels, arguments.orgs, arguments.reads))
    report = {
        "benchmark": "governance_loads", "date": date.today().isoformat(), "log": "kafka (Tansu), one partition",
        "store": "chDB in-process", "orgs": arguments.orgs, "reads": arguments.reads,
        "levels": results,
    }
    emitted(report, arguments.out)


if __name__ == "__main__":
    main()
