"""What a lookup by key costs on Kafka as a partition's history grows: a run's records, fresh or old.

Kafka has no index by key: `EventLog.read(topic, key=...)` scans the key's partition. A key that is an id turnlog
made (`<prefix>_<ULID>`) can have no record older than the id, so the scan may start at the broker's time index for
the id's minting time (less the clock skew) instead of at the partition's start. Before 2026-12-07 only the callers
that passed `since=` got that; the settlement (a run's usage on `usage`, a topic kept forever), the tool loop (a
run's events and its step's request) and the prompt builder (a conversation's summary) scanned from the start.

On a local Tansu broker (the tests' harness), one partition of `run-events` is filled with `--history` records of
other runs (~200 bytes each, about a delta's size, 500 to a transaction); after each level, each lookup is timed
`--reads` times:

- a fresh run's records by its id, as the settlement reads a run's usage when it finishes, or the tool loop a step's
  request (the id made just before its records);
- the same records under a key that is no id (a name), read from the partition's start: what every caller without
  `since=` paid before;
- a run made before the history (a run's page opened days later), read to the partition's end: from its minting
  time, but through everything written since;
- the same old run read through its last record (`through=`, as a finished run's lookup reads to its
  `RunFinished`).

A real history is days old; this one is written in a minute or two, well inside the 5 minutes' margin the bound
leaves for the hosts' clocks (`kernel.ids.CLOCK_SKEW`), so the benchmark sets that margin to `--clock-skew-s` (1 s)
and waits it out before each level's lookups: the history then lies before the fresh run's bound, as days would.

    .venv/bin/python benchmarks/keyed_reads.py [--history 0,20000,100000] [--reads 20] [--clock-skew-s 1]

Run it from the tree to measure: the script imports the log of the tree it sits in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's log, not whichever tree the environment was installed from

from events.kafka.log import KafkaLog  # noqa: E402
from events.topics import RUN_EVENTS  # noqa: E402
from events.topology import turnlog_topics  # noqa: E402
from kernel import ids  # noqa: E402
from kernel.envelope import new_id  # noqa: E402
from kernel.log import OutgoingRecord  # noqa: E402
from lifecycle import emitted, tansu_broker  # noqa: E402  (the tests' broker harness)

RECORD = b"u" * 200  # about a delta's size
LAST = b"finished"  # an old run's last record, as its RunFinished ends a finished run's lookup
BATCH = 500  # records of other runs to a transaction


def finished(record) -> bool:
    return record.value == LAST


async def timed_reads(log: KafkaLog, key: str, reads: int, *, through=None) -> dict:
    seconds = []
    for _ in range(reads):
        started = time.perf_counter()
        found = await log.read(RUN_EVENTS, key=key, through=through)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {
        "records_found": len(found),
        "p50_ms": round(statistics.median(seconds) * 1000, 2),
        "p90_ms": round(seconds[len(seconds) * 9 // 10] * 1000, 2),
        "min_ms": round(seconds[0] * 1000, 2),
        "max_ms": round(seconds[-1] * 1000, 2),
    }


async def measure(bootstrap: str, history_levels: list[int], reads: int) -> list[dict]:
    # One partition, so every record written is in the partition each lookup scans.
    log = KafkaLog(bootstrap, topics=turnlog_topics(partitions=1), client_id="keyed-reads", timeout_s=120)
    await log.start()
    results = []
    try:
        old_run = new_id("run")
        await log.append([
            OutgoingRecord(topic=RUN_EVENTS, key=old_run, value=value)
            for value in (RECORD, RECORD, LAST)
        ])
        written = 0
        for level in history_levels:
            while written < level:
                count = min(BATCH, level - written)
                others = [OutgoingRecord(topic=RUN_EVENTS, key=new_id("run"), value=RECORD) for _ in range(count)]
                await log.append(others)
                written += count
            # Past the clock margin, so the history lies before the fresh run's bound (and apart from the last commit
            # marker: Tansu answers a time near one with offset 0).
            await asyncio.sleep(ids.CLOCK_SKEW.total_seconds() + 0.1)
            fresh_run = new_id("run")
            name = f"settlement-probe-{level}"  # no id: the scan of a caller without a bound
            probes = (fresh_run, fresh_run, name, name)
            await log.append([OutgoingRecord(topic=RUN_EVENTS, key=key, value=RECORD) for key in probes])
            results.append({
                "history_records": written,
                "fresh_run_by_id": await timed_reads(log, fresh_run, reads),
                "same_records_key_no_id": await timed_reads(log, name, reads),
                "run_made_before_the_history": await timed_reads(log, old_run, reads),
                "run_made_before_the_history_through_its_last": await timed_reads(
                    log, old_run, reads, through=finished
                ),
            })
            print(json.dumps(results[-1]), flush=True)
    finally:
        await log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="0,20000,100000", help="records of other runs in the partition, per level")
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--clock-skew-s", type=float, default=1.0, help="the margin for clocks (turnlog's: 300)")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    ids.CLOCK_SKEW = timedelta(seconds=arguments.clock_skew_s)
    levels = sorted(int(level) for level in arguments.history.split(","))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="turnlog-keyed-reads-") as directory:
        broker = tansu_broker(stack, Path(directory))
        results = asyncio.run(measure(broker.bootstrap_servers, levels, arguments.reads))
    report = {
        "benchmark": "keyed_reads", "date": date.today().isoformat(), "log": "kafka (Tansu)", "reads": arguments.reads,
        "clock_skew_s": arguments.clock_skew_s,
        "levels": results,
    }
    emitted(report, arguments.out)


if __name__ == "__main__":
    main()
