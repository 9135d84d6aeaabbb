"""Read-your-writes as a client feels it: first turns, fenced reads during a run, a cancel, a restart.

Starts an embedded `turnlog serve` or (`--fleet`) the Kafka test fleet (Tansu, ClickHouse over HTTP, two
API-only instances and worker processes: tests/e2e_server.py's `TurnlogFleet`), with the scripted engine
streaming `--answer-tokens` tokens `--token-delay-ms` apart, and measures:

  - POST latency (sent -> 202) of a conversation's first turn and of its second;
  - during a run, at its first delta: `GET .../turns` and `GET /v1/runs/{id}` latency, and whether the run
    was still streaming when the read returned (the read did not wait for the run's own last event);
  - a cancel sent at the first delta: its latency and how the run ended;
  - (`--restart`, fleet only) the decider/projector worker SIGKILLed and restarted at once: seconds from the
    kill to the first `GET .../turns` answered 200 and to the first turn accepted (202).

    .venv/bin/python benchmarks/fences.py [--fleet] [--restart] [--turns 20] [--out FILE]

Prints JSON. The machine is shared: compare figures taken in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import clickhouse_http  # noqa: E402  (the tests' harnesses: real servers, nothing faked)
import e2e_server  # noqa: E402
import kafka_broker  # noqa: E402


def summary_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = await call
    return time.perf_counter() - started, result


async def until_first_delta(client, run_id: str) -> None:
    async with e2e_server.open_stream(client, run_id) as stream:
        async for event in stream:
            if event.event == "assistant.delta":
                return


async def first_and_later_turns(client, workspace: str, turns: int) -> dict:
    first, later = [], []
    for index in range(turns):
        conversation_id = await e2e_server.create_conversation(client, workspace)
        seconds, accepted = await timed(e2e_server.submit_turn(client, conversation_id, f"first {index}"))
        first.append(seconds)
        await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
        seconds, accepted = await timed(e2e_server.submit_turn(client, conversation_id, f"later {index}"))
        later.append(seconds)
        await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
    return {"first_turn_post": summary_ms(first), "later_turn_post": summary_ms(later)}


async def reads_during_runs(client, workspace: str, turns: int) -> dict:
    list_turns, get_run, still_streaming = [], [], 0
    for index in range(turns):
        conversation_id = await e2e_server.create_conversation(client, workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, f"read me while I run {index}")
        await until_first_delta(client, accepted["runId"])
        seconds, response = await timed(client.get(f"/v1/conversations/{conversation_id}/turns"))
        assert response.status_code == 200, response.text
        list_turns.append(seconds)
        seconds, response = await timed(client.get(f"/v1/runs/{accepted['runId']}"))
        assert response.status_code == 200, response.text
        get_run.append(seconds)
        still_streaming += response.json()["status"] == "in_progress"
        await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
    return {"get_turns_at_first_delta": summary_ms(list_turns), "get_run_at_first_delta": summary_ms(get_run),
            "run_still_in_progress_after_reads": f"{still_streaming}/{turns}"}


async def cancels_at_first_delta(client, workspace: str, turns: int) -> dict:
    latencies, endings = [], {}
    for index in range(turns):
        conversation_id = await e2e_server.create_conversation(client, workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, f"cancel me {index}")
        await until_first_delta(client, accepted["runId"])
        seconds, response = await timed(client.post(f"/v1/runs/{accepted['runId']}/cancel"))
        latencies.append(seconds)
        if response.status_code == 202:
            run = await e2e_server.wait_for_run(client, accepted["runId"], timeout_s=60)
            ending = run["status"]
        else:
            ending = f"{response.status_code}"
            await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
        endings[ending] = endings.get(ending, 0) + 1
    return {"cancel_at_first_delta": summary_ms(latencies), "cancel_outcomes": endings}


async def restart(fleet, client, workspace: str) -> dict:
    deadline = time.monotonic() + 120
    while True:  # the fleet back from an earlier restart: a conversation is created
        response = await client.post("/v1/conversations", json={"workspaceId": workspace})
        if response.status_code == 201 or time.monotonic() > deadline:
            assert response.status_code == 201, response.text
            break
        await asyncio.sleep(0.5)
    conversation_id = response.json()["conversationId"]
    accepted = await e2e_server.submit_turn(client, conversation_id, "before the crash")
    await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
    [processors] = [worker for worker in fleet.workers if "decider" in worker.roles]
    killed = time.perf_counter()
    processors.kill()
    processors.start()

    async def first_read() -> float:  # reads and turns apart: a turn's POST can block for its 10 s reply timeout
        while (await client.get(f"/v1/conversations/{conversation_id}/turns")).status_code != 200:
            await asyncio.sleep(0.05)
        return time.perf_counter() - killed

    async def first_turn() -> tuple[float, dict]:
        body = {"input": e2e_server.text_input("after")}
        headers = {"Idempotency-Key": "after-the-crash"}
        url = f"/v1/conversations/{conversation_id}/turns"
        while (response := await client.post(url, json=body, headers=headers)).status_code != 202:
            await asyncio.sleep(0.05)
        return time.perf_counter() - killed, response.json()

    async with asyncio.timeout(120):
        read_s, (turn_s, accepted) = await asyncio.gather(first_read(), first_turn())
    await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
    return {"restart_first_good_read_s": round(read_s, 2), "restart_first_accepted_turn_s": round(turn_s, 2)}


async def measure(server, args) -> dict:
    user = server.new_user()
    async with user.client() as client:
        for _ in range(2):  # warm-up: groups joined, first appends, connections
            conversation_id = await e2e_server.create_conversation(client, user.workspace)
            accepted = await e2e_server.submit_turn(client, conversation_id, "warm up")
            await e2e_server.read_stream(client, accepted["runId"], timeout_s=60)
        results: dict = {}
        phases = [
            lambda: first_and_later_turns(client, user.workspace, args.turns),
            lambda: reads_during_runs(client, user.workspace, args.turns),
            lambda: cancels_at_first_delta(client, user.workspace, args.turns // 2),
        ]
        if args.restart and args.fleet:
            phases += [lambda: restart(server, client, user.workspace)] * args.restarts
        for index, phase in enumerate(phases):
            try:
                found = await phase()
            except Exception as error:  # a phase that fails is reported, the next still runs
                found = {f"phase_{index}_failed": repr(error)[:300]}
            if "restart_first_good_read_s" in found:
                found = {f"restart_{index}": found}
            print(json.dumps(found), file=sys.stderr, flush=True)
            results |= found
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", action="store_true", help="the Kafka fleet instead of one embedded server")
    parser.add_argument("--restart", action="store_true", help="also SIGKILL and restart the decider/projector worker")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--token-delay-ms", type=float, default=40)
    parser.add_argument("--answer-tokens", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="turnlog-fences-"))
    stops = []
    try:
        if args.fleet:
            broker = kafka_broker.TansuBroker(log_path=base / "tansu.log")
            broker.start()
            stops.append(broker.stop)
            clickhouse = clickhouse_http.ClickHouseHttpServer(data_dir=base / "clickhouse")
            clickhouse.start()
            stops.append(clickhouse.stop)
            asyncio.run(clickhouse.create_database("fences"))
            server = e2e_server.TurnlogFleet(
                data_dir=base / "data", log_url=f"kafka://{broker.bootstrap_servers}?fetch.wait.max.ms=10",
                store_url=clickhouse.url("fences"), token_delay_ms=args.token_delay_ms, answer_tokens=args.answer_tokens,
            )
        else:
            server = e2e_server.TurnlogServer(
                data_dir=base / "data", token_delay_ms=args.token_delay_ms, answer_tokens=args.answer_tokens
            )
        server.start()
        stops.insert(0, server.stop)
        results = {"setup": "fleet" if args.fleet else "embedded", "answer_s": args.token_delay_ms * args.answer_tokens / 1000}
        results |= asyncio.run(measure(server, args))
    finally:
        for stop in stops:
            stop()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
