"""A tool runner SIGKILLed mid-call loses nothing: separate turnlog processes, the runner's alone is killed.

The embedded log belongs to one process, so the processes share a Kafka log (Tansu) and a read-model
store (ClickHouse over HTTP), as `TurnlogFleet` does: `turnlog serve --role api`, a `turnlog worker` with
every processor role but `tools`, and a `turnlog worker --role tools`. The tools live on a real MCP server
over Streamable HTTP, a process of its own that outlives the runner (`mcp_test_server.py`, whose
`keyed_sleep` records each execution with the idempotency key it came with).

Two runs are mid-call when the tools worker dies: one calls an idempotent tool, one a tool that is not.
A new tools worker starts; the loop in it takes the runs back, and once a call's timeout and the runner
grace have passed it asks again (the idempotent call, attempt 2 with the same key) or gives up on the call
(`unknown_outcome`: it may have had its effect). Both runs finish on their own, with no client connected.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import e2e_server
import kafka_broker as kafka_harness
from turnlog.settings import PROCESSOR_ROLES

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(420)]

MCP_SERVER = Path(__file__).resolve().parents[1] / "processors" / "tools" / "mcp_test_server.py"
PROCESSOR_ROLES_BUT_TOOLS = tuple(role for role in PROCESSOR_ROLES if role != "tools")
CALL_SECONDS = 4.0  # how long each call runs: the kill lands in the middle
TOOL_TIMEOUT_S = 8  # then the loop waits this plus the runner's grace before it acts on the silence
# Shorter than the default 15 s: the killed runner reports nothing however long the loop waits.
RUNNER_GRACE_S = 3
DEADLINE_S = 90.0 + TOOL_TIMEOUT_S + RUNNER_GRACE_S  # generous: a loaded two-core machine


@dataclass(frozen=True, kw_only=True)
class McpServer:
    url: str
    events: Path  # one line per thing its tools did


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    """The test MCP server over Streamable HTTP on a loopback port the kernel picks."""
    events = tmp_path_factory.mktemp("mcp") / "events.log"
    events.touch()
    process = subprocess.Popen(
        [sys.executable, str(MCP_SERVER), "http", "--events", str(events)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # `port N` once it listens; a crash ends the output instead
        assert line.startswith("port "), f"the MCP server did not start (exit code {process.poll()}, said {line!r})"
        url = f"http://127.0.0.1:{int(line.split()[1])}/mcp"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2.0)  # any answer means it serves
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, f"the MCP server at {url} never answered"
                time.sleep(0.05)
        yield McpServer(url=url, events=events)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True, kw_only=True)
class Cluster:
    api: e2e_server.TurnlogServer
    others: e2e_server.TurnlogWorker  # every processor role but tools
    shared: tuple[str, ...]  # the options every process gets
    data_dir: Path
    tools_workers: list[e2e_server.TurnlogWorker]

    def start_tools_worker(self, name: str) -> e2e_server.TurnlogWorker:
        # One instance id for every tools worker: the one started after a kill takes its predecessor's place
        # as a supervisor's restart would, and ends the transaction the kill may have left open.
        worker = e2e_server.TurnlogWorker(
            data_dir=self.data_dir, roles=("tools",), args=self.shared, name=name, instance_id="tools"
        )
        self.tools_workers.append(worker.start())
        return worker


@pytest.fixture(scope="module")
def cluster(mcp_server: McpServer, clickhouse_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("runner-crash")
    tools = folder / "tools.toml"
    tools.write_text(
        f'[[servers]]\nname = "remote"\ntransport = "streamable-http"\nurl = {json.dumps(mcp_server.url)}\n'
        f'[[tools]]\nserver = "remote"\nname = "keyed_sleep"\nidempotent = true\ntimeout_s = {TOOL_TIMEOUT_S}\n'
        f'[[tools]]\nserver = "remote"\nname = "sleep"\ntimeout_s = {TOOL_TIMEOUT_S}\n'
        f"[budget]\nrunner_grace_s = {RUNNER_GRACE_S}\n"
    )
    broker = kafka_harness.TansuBroker(log_path=folder / "tansu.log")
    broker.start()
    asyncio.run(clickhouse_server.create_database("runner_crash"))
    data_dir = folder / "data"
    # Every process reads the tools file: the prompt builder offers the tools, the projector keeps their calls.
    shared = (
        "--log", f"kafka://{broker.bootstrap_servers}?fetch.wait.max.ms=10", "--store", clickhouse_server.url("runner_crash"),
        "--engine", "scripted", "--tools", str(tools),
        # The watchdog must outwait the tools worker's restart: on a loaded machine a new worker takes longer than
        # the default 30 s lease to start and take its runs back (seen in a full clean-clone run).
        "--run-lease-s", "120",
    )
    others = e2e_server.TurnlogWorker(data_dir=data_dir, roles=PROCESSOR_ROLES_BUT_TOOLS, args=shared, name="others")
    cluster = Cluster(
        api=e2e_server.TurnlogServer(data_dir=data_dir, extra_args=(*shared, "--role", "api")),
        others=others, shared=shared, data_dir=data_dir, tools_workers=[],
    )
    try:
        others.start()
        cluster.start_tools_worker("tools-first")
        cluster.api.start()
        yield cluster
    finally:
        cluster.api.stop()
        for worker in (*cluster.tools_workers, others):
            worker.stop()
        broker.stop()


@dataclass(frozen=True, kw_only=True)
class Outcome:
    run: dict  # GET /v1/runs/{id} once it finished
    stream: list  # its whole SSE stream
    executions: list[str]  # the MCP server's `started ...` lines for its call


@dataclass(frozen=True, kw_only=True)
class AfterTheCrash:
    idempotent: Outcome
    not_idempotent: Outcome
    mcp_events: list[str]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


async def wait_for_lines(path: Path, prefixes: list[str], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(any(line.startswith(prefix) for line in lines_of(path)) for prefix in prefixes):
        assert time.monotonic() < deadline, f"the MCP server never recorded {prefixes}: {lines_of(path)}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def after_the_crash(cluster: Cluster, mcp_server: McpServer) -> AfterTheCrash:
    """Two runs mid-call, the tools worker SIGKILLed, a new one started; both runs followed to their end."""

    async def scenario() -> AfterTheCrash:
        user = cluster.api.new_user()
        async with user.client() as client:
            retried_conversation = await e2e_server.create_conversation(client, user.workspace)
            once_conversation = await e2e_server.create_conversation(client, user.workspace)
            retried = await e2e_server.submit_turn(
                client, retried_conversation, f'call:keyed_sleep({{"seconds": {CALL_SECONDS}, "label": "retried"}})'
            )
            once = await e2e_server.submit_turn(
                client, once_conversation, f'call:sleep({{"seconds": {CALL_SECONDS}, "label": "once"}})'
            )
            # Both calls are executing on the MCP server: the runner dies in the middle of them.
            await wait_for_lines(mcp_server.events, ["started retried ", "started once"], timeout_s=DEADLINE_S)
            [first] = cluster.tools_workers
            first.kill()
            cluster.start_tools_worker("tools-restarted")

            outcomes = []
            for accepted, label in ((retried, "retried"), (once, "once")):
                run = await e2e_server.wait_for_run(client, accepted["runId"], timeout_s=DEADLINE_S)
                stream = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)
                executions = [line for line in lines_of(mcp_server.events) if line.split()[:2] == ["started", label]]
                outcomes.append(Outcome(run=run, stream=stream, executions=executions))
        return AfterTheCrash(idempotent=outcomes[0], not_idempotent=outcomes[1], mcp_events=lines_of(mcp_server.events))

    return asyncio.run(scenario())


def test_an_idempotent_call_is_run_again_with_the_same_key_and_the_run_completes(after_the_crash: AfterTheCrash) -> None:
    outcome = after_the_crash.idempotent
    run_id = outcome.run["runId"]

    assert outcome.run["status"] == "completed", outcome.run
    assert [(call["callId"], call["toolName"], call["status"], call["attempts"]) for call in outcome.run["toolCalls"]] == [
        ("call_1", "keyed_sleep", "completed", 2),
    ]
    # Executed twice on the server (the killed attempt and the retry), both times with the same key.
    assert outcome.executions == [f"started retried {run_id}:call_1"] * 2, after_the_crash.mcp_events
    answer = e2e_server.delta_text(outcome.stream)
    assert f"keyed_sleep returned slept {CALL_SECONDS} for retried." in answer
    assert outcome.stream[-1].event == "assistant.completed"
    [result] = [event.json() for event in outcome.stream if event.event == "tool.result"]
    assert result["status"] == "completed"


def test_a_call_that_is_not_idempotent_is_not_run_again_and_the_model_is_told(after_the_crash: AfterTheCrash) -> None:
    outcome = after_the_crash.not_idempotent

    assert outcome.run["status"] == "completed", outcome.run
    assert [(call["callId"], call["toolName"], call["status"], call["attempts"]) for call in outcome.run["toolCalls"]] == [
        ("call_1", "sleep", "unknown_outcome", 1),
    ]
    assert outcome.executions == ["started once"], after_the_crash.mcp_events
    assert "sleep returned [unknown outcome]" in e2e_server.delta_text(outcome.stream)
    assert outcome.stream[-1].event == "assistant.completed"
