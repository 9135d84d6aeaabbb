"""Tool-loop benchmark: what a tool step costs between two model steps, on the embedded defaults.

Starts `turnlog serve --engine scripted --tools <file>` whose only tool is a no-op on a real MCP
server over stdio (`benchmarks/noop_mcp_server.py`), runs turns whose model step proposes calls
(the scripted engine's `call:noop({...})` trigger) at 1 and 16 runs at once, and a run with 8 calls
in one step, then stops the server and reads each run's events from the log: from the end of the model
step that proposed the calls (`ToolCallsProposed`) to the start of the next model step (its
`GenerationStarted`), with the stages between (the loop's decision, a runner taking the call, the MCP
call, the step's completion, the next claim). It also runs 8 sequential calls end to end (`call:noop(...)
then call:noop(...) ...`: 8 model steps each proposing one call, then the answer), from the client's
submit to the run's `RunFinished`, next to runs that call nothing, and the per-step overhead (their
difference over the 8 steps). Prints a summary and writes JSON (--out).

    python benchmarks/tool_loop.py [--turns 50] [--out results.json]
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from api.auth import issue_token, load_or_create_secret
from lifecycle import free_port, percentile
from events.embedded import EmbeddedLog
from events.runs import GenerationStarted, RunFinished
from events.tools import ToolCallFinished, ToolCallRequested, ToolCallsProposed, ToolCallStarted, ToolStepCompleted
from events.topics import RUN_EVENTS
from turnlog.adapters import build_codec
from events.key_files import KeyFileStore
from kernel.codec import AvroCodec

NOOP_SERVER = Path(__file__).with_name("noop_mcp_server.py")


def tools_file(folder: Path) -> Path:
    path = folder / "tools.toml"
    path.write_text(
        f'[[servers]]\nname = "bench"\ntransport = "stdio"\ncommand = {json.dumps(sys.executable)}\n'
        f"args = [{json.dumps(str(NOOP_SERVER))}]\n"
        '[[tools]]\nserver = "bench"\nname = "noop"\nidempotent = true\n'
    )
    return path


# 8 model steps of one call each; the tags differ, since the loop does not run the same call twice in a run.
SEQUENTIAL_CALLS = 8
SEQUENTIAL_TEXT = " then ".join(f'call:noop({{"tag": "s{n}"}})' for n in range(SEQUENTIAL_CALLS))
NO_CALL_TEXT = "Answer without tools."


async def one_run(client: httpx.AsyncClient, workspace: str, text: str, submitted: dict[str, float]) -> str:
    created = await client.post("/v1/conversations", json={"workspaceId": workspace})
    conversation_id = created.json()["conversationId"]
    submitted_at = time.time()  # wall clock, as the events' times on the log
    accepted = await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": [{"type": "text", "text": text}]})
    run_id = accepted.json()["runId"]
    submitted[run_id] = submitted_at
    while True:  # background-style follow: no stream needed, the loop runs server-side
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["status"] != "in_progress":
            assert run["status"] == "completed", run
            return run_id
        await asyncio.sleep(0.02)


async def drive(
    base_url: str, token: str, workspace: str, *, turns: int, concurrency: int, calls: int = 1, text: str | None = None,
    submitted: dict[str, float] | None = None,
) -> list[str]:
    """Run `turns` turns, `concurrency` at a time, each `calls` calls in one step (or saying `text`); their run ids."""
    text = text if text is not None else " ".join(f'call:noop({{"tag": "t{n}"}})' for n in range(calls))
    submitted = submitted if submitted is not None else {}
    runs: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        queue = list(range(turns))

        async def worker() -> None:
            while queue:
                queue.pop()
                runs.append(await one_run(client, workspace, text, submitted))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return runs


async def stages(log: EmbeddedLog, run_id: str, *, codec: AvroCodec) -> dict[str, float]:
    """Milliseconds between the events of a run's first tool step (with several calls: first start, last finish)."""
    at: dict[str, float] = {}
    for record in await log.read(RUN_EVENTS, key=run_id):
        envelope = codec.decode(record.value)
        event, moment = envelope.payload, envelope.occurred_at.timestamp() * 1000
        name = {
            ToolCallsProposed: "proposed", ToolCallRequested: "requested", ToolCallStarted: "started",
            ToolCallFinished: "finished", ToolStepCompleted: "step_completed",
        }.get(type(event))
        if name in ("proposed", "requested", "started"):
            at.setdefault(name, moment)  # the step's first
        elif name is not None:
            at[name] = moment  # the step's last
        if isinstance(event, GenerationStarted) and event.step == 2:
            at["next_step"] = moment
    return {
        "decide": at["requested"] - at["proposed"],
        "runner_takes": at["started"] - at["requested"],
        "tool_calls": at["finished"] - at["started"],
        "step_completes": at["step_completed"] - at["finished"],
        "next_step_claimed": at["next_step"] - at["step_completed"],
        "total": at["next_step"] - at["proposed"],
    }


async def end_to_end(log: EmbeddedLog, run_id: str, submitted_at: float, *, codec: AvroCodec) -> dict[str, float]:
    """Milliseconds from the client's submit to the run's finish; with tool steps, each step's parts (medians)."""
    proposed: dict[int, float] = {}
    generation_started: dict[int, float] = {}
    finished_at = None
    for record in await log.read(RUN_EVENTS, key=run_id):
        envelope = codec.decode(record.value)
        event, moment = envelope.payload, envelope.occurred_at.timestamp() * 1000
        if isinstance(event, ToolCallsProposed):
            proposed.setdefault(event.step, moment)
        elif isinstance(event, GenerationStarted):
            generation_started.setdefault(event.step, moment)
        elif isinstance(event, RunFinished):
            finished_at = moment
    assert finished_at is not None, f"run {run_id} has no RunFinished"
    measured = {"end_to_end": finished_at - submitted_at * 1000}
    if proposed:
        steps = sorted(proposed)
        assert steps == list(range(1, len(steps) + 1)) and all(step + 1 in generation_started for step in steps), run_id
        # A tool step: from the model's proposal to the next model step's claim; a model step: claim to proposal.
        measured["tool_step"] = statistics.median(generation_started[step + 1] - proposed[step] for step in steps)
        measured["model_step"] = statistics.median(proposed[step] - generation_started[step] for step in steps)
        measured["steps"] = len(steps)
    return measured


def summarize(samples: list[dict[str, float]]) -> dict:
    return {
        stage: {
            "p50_ms": round(statistics.median(s[stage] for s in samples), 2),
            "p99_ms": round(percentile([s[stage] for s in samples], 0.99), 2),
        }
        for stage in samples[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50, help="runs per concurrency level")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="turnlog-tool-bench-"))
    data_dir = folder / "data"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "turnlog.cli", "serve", "--engine", "scripted", "--data-dir", str(data_dir),
         "--port", str(port), "--tools", str(tools_file(folder)), "--log-level", "warning"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "turnlog serve did not start"
            time.sleep(0.1)
        token = issue_token(load_or_create_secret(data_dir), user_id="bench", org_id="bench", workspace_ids=["ws"])
        asyncio.run(drive(base_url, token, "ws", turns=3, concurrency=1, calls=1))  # warm up: the MCP session opens
        levels = {}
        for concurrency in (1, 16):
            started = time.monotonic()
            runs = asyncio.run(drive(base_url, token, "ws", turns=arguments.turns, concurrency=concurrency, calls=1))
            levels[f"{concurrency} at once"] = (runs, arguments.turns / (time.monotonic() - started))
        eight = asyncio.run(drive(base_url, token, "ws", turns=max(5, arguments.turns // 5), concurrency=1, calls=8))
        submitted: dict[str, float] = {}
        sequential_runs = max(5, arguments.turns // 5)
        no_call = asyncio.run(
            drive(base_url, token, "ws", turns=sequential_runs, concurrency=1, text=NO_CALL_TEXT, submitted=submitted)
        )
        sequential = asyncio.run(
            drive(base_url, token, "ws", turns=sequential_runs, concurrency=1, text=SEQUENTIAL_TEXT, submitted=submitted)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    async def measured(runs: list[str]) -> list[dict[str, float]]:
        log = EmbeddedLog(path=data_dir / "log.db")
        await log.start()
        try:
            codec = build_codec(KeyFileStore(root=data_dir / "keys"))  # the served log's content is sealed
            return [await stages(log, run_id, codec=codec) for run_id in runs]
        finally:
            await log.close()

    async def timed(runs: list[str]) -> list[dict[str, float]]:
        log = EmbeddedLog(path=data_dir / "log.db")
        await log.start()
        try:
            codec = build_codec(KeyFileStore(root=data_dir / "keys"))  # the served log's content is sealed
            return [await end_to_end(log, run_id, submitted[run_id], codec=codec) for run_id in runs]
        finally:
            await log.close()

    no_call_times, sequential_times = asyncio.run(timed(no_call)), asyncio.run(timed(sequential))
    assert all(sample["steps"] == SEQUENTIAL_CALLS for sample in sequential_times), "a run did not take 8 tool steps"
    no_call_p50 = statistics.median(sample["end_to_end"] for sample in no_call_times)
    sequential_p50 = statistics.median(sample["end_to_end"] for sample in sequential_times)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "levels": {
            name: {"runs": len(runs), "runs_per_s": round(rate, 1), "stages": summarize(asyncio.run(measured(runs)))}
            for name, (runs, rate) in levels.items()
        },
        "eight_calls_in_one_step": {"runs": len(eight), "stages": summarize(asyncio.run(measured(eight)))},
        "no_call_end_to_end": {"runs": len(no_call), "stages": summarize(no_call_times)},
        "eight_sequential_calls": {
            "runs": len(sequential),
            "stages": summarize([{stage: ms for stage, ms in sample.items() if stage != "steps"} for sample in sequential_times]),
            # What each of the 8 steps adds to a run: (8 steps' run - a run without calls) / 8, at the medians.
            "per_step_overhead_p50_ms": round((sequential_p50 - no_call_p50) / SEQUENTIAL_CALLS, 2),
        },
    }
    print(json.dumps(result, indent=2))
    if arguments.out:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
