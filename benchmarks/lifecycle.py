"""Core lifecycle benchmark: control-plane time to first token and sustained turns/s over real HTTP + SSE.

Starts `turnlog serve --engine scripted --token-delay-ms 0 --answer-tokens 20` on a fresh data dir
(unless --url is given), or with `--kafka` a fleet on a local Tansu broker and ClickHouse over HTTP
(chDB behind the test server `tests/clickhouse_http.py`): one API-only instance, one worker with the
decider, prompt builder, projector and watchdog, and `--inference-workers N` inference workers. Then:
  1. latency: sequential turns; per turn, POST accepted -> first `assistant.delta` at the client
     (the client opens the stream right after the 202), and POST sent -> first delta;
  2. throughput: N concurrent conversations, each posting a turn and reading its stream to the end,
     for a fixed time; turns/s, server CPU seconds per streamed SSE event, and each process's CPU in % of
     one core (with `--kafka`, the broker's and ClickHouse's too);
  3. idle: nothing sent for `--idle-seconds`; each process's CPU meanwhile, in % of one core
     (what its consumers and timers cost with no work to do).
Prints a summary and writes JSON (--out).

    python benchmarks/lifecycle.py [--turns 500] [--concurrency 16] [--seconds 20] [--out results.json]
    python benchmarks/lifecycle.py --kafka --inference-workers 2 [...]
    python benchmarks/lifecycle.py --kafka --fetch-wait-ms 50 [...]   # the consumers' fetch.wait.max.ms (10 by default)
    python benchmarks/lifecycle.py --token-delay-ms 20 [...]   # 20 ms before each token (the first: a prefill's stand-in)
    python benchmarks/lifecycle.py --tiers benchmarks/tiers.bench.toml [...]   # governance on: every turn admitted first
    python benchmarks/lifecycle.py --policies benchmarks/policies.bench.toml [...]   # safety on: every stage checks
    python benchmarks/lifecycle.py --trace [...]   # tracing on: every process exports its spans to a local collector
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import importlib.util
from contextlib import ExitStack

import httpx

from api.auth import issue_token, load_or_create_secret
from kernel.sse import iter_sse


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def timings(seconds: list[float]) -> dict:
    """p50, p90 and the slowest of some timings in seconds, in milliseconds."""
    return {
        f"{name}_ms": round(value * 1000, 2)
        for name, value in (("p50", percentile(seconds, 0.5)), ("p90", percentile(seconds, 0.9)), ("max", max(seconds)))
    }


def emitted(report: dict, out: Path | None) -> None:
    """The report with the machine it ran on, printed, and written to `out` if given."""
    report = {**report, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average_1m": round(os.getloadavg()[0], 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes, all their threads."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_support(name: str):
    """A harness from `tests/` (the Tansu broker, ClickHouse over HTTP), loaded by path."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tansu_broker(stack: ExitStack, data_dir: Path):
    """A local Tansu broker (the tests' harness), logging under `data_dir`, stopped when `stack` closes."""
    broker = test_support("kafka_broker").TansuBroker(log_path=data_dir / "tansu.log")
    broker.start()
    stack.callback(broker.stop)
    return broker


def turnlog_process(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "turnlog.cli", *arguments, "--log-level", "warning"])


def start_fleet(
    stack: ExitStack, data_dir: Path, port: int, inference_workers: int, governance: tuple[str, ...] = (),
    safety: tuple[str, ...] = (), *, beside: dict[str, int] | None = None, fetch_wait_ms: int = 10,
    token_delay_ms: float = 0,
) -> list[subprocess.Popen]:
    """Tansu + ClickHouse over HTTP + an API-only instance + workers; returns the turnlog processes, and puts the
    broker's and ClickHouse's process ids in `beside` (their CPU is counted apart)."""
    broker = tansu_broker(stack, data_dir)
    clickhouse = test_support("clickhouse_http").ClickHouseHttpServer(data_dir=data_dir / "clickhouse")
    clickhouse.start()
    stack.callback(clickhouse.stop)
    if beside is not None:
        beside.update({"tansu": broker.pid, "clickhouse (chDB over HTTP)": clickhouse.process.pid})
    asyncio.run(clickhouse.create_database("bench"))
    shared = [
        "--log", f"kafka://{broker.bootstrap_servers}?fetch.wait.max.ms={fetch_wait_ms}", "--store", clickhouse.url("bench"),
        "--data-dir", str(data_dir), "--engine", "scripted", "--token-delay-ms", f"{token_delay_ms:g}",
        "--answer-tokens", "20", *safety,
    ]
    processors = [f"--role={role}" for role in ("decider", "prompt-builder", "projector", "watchdog")]
    if governance:
        processors.append("--role=governance")
    processes = [turnlog_process("serve", "--role", "api", "--port", str(port), *shared, *governance)]
    processes.append(turnlog_process("worker", *processors, *shared, *governance))
    processes += [turnlog_process("worker", "--role=inference", *shared) for _ in range(inference_workers)]
    return processes


def process_roles(arguments: argparse.Namespace) -> list[str]:
    """The server processes' names, in the order `start_fleet` (or the embedded run) starts them."""
    if not arguments.kafka:
        return ["serve"]
    return ["api", "processor worker", *(f"inference worker {n + 1}" for n in range(arguments.inference_workers))]


def trace_timeline(spans: list) -> list[dict]:
    """Where a turn's time goes: per span name, when it starts (and how long it lasts) from its trace's first span,
    medians over the traces that have it (each name's first span per trace; names in at least a tenth of them), by start."""
    traces: dict[str, list] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    starts: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    for members in traces.values():
        origin = min(span.start_ns for span in members)
        seen: set[str] = set()
        for span in sorted(members, key=lambda span: span.start_ns):
            if span.name in seen:
                continue
            seen.add(span.name)
            starts.setdefault(span.name, []).append((span.start_ns - origin) / 1e6)
            durations.setdefault(span.name, []).append((span.end_ns - span.start_ns) / 1e6)
    rows = [
        {"span": name, "traces": len(starts[name]), "start_ms_p50": round(statistics.median(starts[name]), 2),
         "duration_ms_p50": round(statistics.median(durations[name]), 2)}
        for name in starts if len(starts[name]) * 10 >= len(traces)
    ]
    return sorted(rows, key=lambda row: row["start_ms_p50"])


def stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class Client:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def conversation(self) -> str:
        response = await self.http.post("/v1/conversations", json={"workspaceId": "ws_bench"}, headers=self.headers)
        response.raise_for_status()
        return response.json()["conversationId"]

    async def turn(self, conversation_id: str, text: str) -> tuple[float, float, int]:
        """(accepted->first delta, sent->first delta, events streamed) for one turn read to its end."""
        sent = time.perf_counter()
        response = await self.http.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": [{"type": "text", "text": text}]},
            headers=self.headers,
        )
        response.raise_for_status()
        accepted = time.perf_counter()
        first_delta = None
        events = 0
        async with self.http.stream("GET", response.json()["streamUrl"], headers=self.headers) as stream:
            async for event in iter_sse(stream.aiter_lines()):
                events += 1
                if event.event == "assistant.delta" and first_delta is None:
                    first_delta = time.perf_counter()
                if event.event in ("assistant.completed", "run.failed", "run.cancelled"):
                    break
        assert first_delta is not None, "the run streamed no delta"
        return first_delta - accepted, first_delta - sent, events


async def latency_phase(client: Client, turns: int) -> dict:
    conversations = [await client.conversation() for _ in range(10)]
    for conversation_id in conversations:  # warm-up
        await client.turn(conversation_id, "warm up")
    from_accepted, from_sent = [], []
    for index in range(turns):
        accepted_ms, sent_ms, _ = await client.turn(conversations[index % len(conversations)], f"question {index} about caching")
        from_accepted.append(accepted_ms * 1000)
        from_sent.append(sent_ms * 1000)

    def summary(values: list[float]) -> dict:
        return {
            "p50_ms": round(statistics.median(values), 2),
            "p90_ms": round(percentile(values, 0.90), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
            "min_ms": round(min(values), 2),
            "max_ms": round(max(values), 2),
        }

    return {"turns": turns, "accepted_to_first_delta": summary(from_accepted), "sent_to_first_delta": summary(from_sent)}


async def throughput_phase(
    client: Client, concurrency: int, seconds: float, server_pids: list[int], named_pids: dict[str, int]
) -> dict:
    conversations = [await client.conversation() for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds
    completed = 0
    events = 0

    async def converse(conversation_id: str) -> None:
        nonlocal completed, events
        index = 0
        while time.perf_counter() < deadline:
            _, _, streamed = await client.turn(conversation_id, f"turn {index} of a long chat")
            completed += 1
            events += streamed
            index += 1

    cpu_before = cpu_seconds(server_pids) if server_pids else 0.0
    each_before = {name: cpu_seconds([pid]) for name, pid in named_pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(converse(conversation_id) for conversation_id in conversations))
    elapsed = time.perf_counter() - started
    result = {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "turns": completed,
        "turns_per_s": round(completed / elapsed, 1),
        "sse_events": events,
    }
    if server_pids:
        cpu = cpu_seconds(server_pids) - cpu_before
        result["server_cpu_s"] = round(cpu, 2)
        result["server_cpu_us_per_sse_event"] = round(cpu / events * 1e6, 1)
    if named_pids:  # where the CPU went, turnlog's processes and those beside them, in % of one core
        result["cpu_percent_of_a_core"] = {
            name: round((cpu_seconds([pid]) - each_before[name]) / elapsed * 100, 1) for name, pid in named_pids.items()
        }
    return result


async def idle_phase(seconds: float, server_pids: list[int]) -> list[float]:
    """Each process's CPU in % of one core while no request arrives for `seconds` (a measuring window, not a wait);
    the broker's and ClickHouse's too, after turnlog's processes, when they are given."""
    before = [cpu_seconds([pid]) for pid in server_pids]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    return [round((cpu_seconds([pid]) - cpu) / elapsed * 100, 1) for pid, cpu in zip(server_pids, before)]


async def measure(
    url: str, token: str, arguments: argparse.Namespace, pids: list[int], beside: dict[str, int]
) -> tuple[dict, dict, list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=200)) as http:
        for _ in range(600):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        client = Client(http, token)
        latency = await latency_phase(client, arguments.turns)
        named = {**dict(zip(process_roles(arguments), pids)), **beside} if pids else {}
        throughput = await throughput_phase(client, arguments.concurrency, arguments.seconds, pids, named)
        idle = await idle_phase(arguments.idle_seconds, [*pids, *beside.values()]) if pids and arguments.idle_seconds > 0 else []
    return latency, throughput, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--idle-seconds", type=float, default=10, help="the idle phase's length (0: none)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--url", help="benchmark a running server instead (needs --data-dir for its secret)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--kafka", action="store_true", help="a fleet on Kafka + ClickHouse, not one embedded process")
    parser.add_argument("--inference-workers", type=int, default=1, help="with --kafka: inference worker processes")
    parser.add_argument(
        "--fetch-wait-ms", type=int, default=10,
        help="with --kafka: the consumers' fetch.wait.max.ms (Tansu answers an empty fetch only when it runs out)",
    )
    parser.add_argument(
        "--token-delay-ms", type=float, default=0,
        help="the scripted engine's pause before each token, the first one included (so also a stand-in for prefill)",
    )
    parser.add_argument("--tiers", type=Path, help="a tiers file: governance on (each turn admitted before it is sent)")
    parser.add_argument("--policies", type=Path, help="a safety policies file: the input, context and output stages check")
    parser.add_argument(
        "--trace", action="store_true",
        help="tracing on: the turnlog processes export spans by OTLP/HTTP to a collector in this process (SDK batching)",
    )
    arguments = parser.parse_args()
    governance = ("--tiers", str(arguments.tiers.resolve())) if arguments.tiers else ()
    safety = ("--policies", str(arguments.policies.resolve())) if arguments.policies else ()

    data_dir = arguments.data_dir or Path(tempfile.mkdtemp(prefix="turnlog-bench-"))
    with ExitStack() as stack:
        collector = None
        if arguments.trace:  # the processes started below inherit the OTEL_* variables (the SDK's default batching)
            collector = test_support("trace_collector").OtlpCollector().start()
            stack.callback(collector.stop)
            os.environ.update(collector.env(schedule_delay_ms=None))
        url, processes, beside = arguments.url, [], {}
        if url is None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if arguments.kafka:
                processes = start_fleet(
                    stack, data_dir, port, arguments.inference_workers, governance, safety, beside=beside,
                    fetch_wait_ms=arguments.fetch_wait_ms, token_delay_ms=arguments.token_delay_ms,
                )
            else:
                processes = [turnlog_process(
                    "serve", "--engine", "scripted", "--token-delay-ms", f"{arguments.token_delay_ms:g}", "--answer-tokens",
                    "20", "--port", str(port), "--data-dir", str(data_dir), *governance, *safety,
                )]
            stack.callback(stop_all, processes)
        token = issue_token(load_or_create_secret(data_dir), user_id="bench", org_id="org_bench", workspace_ids=["ws_bench"])
        latency, throughput, idle = asyncio.run(
            measure(url, token, arguments, [process.pid for process in processes], beside)
        )
        if collector is not None:
            stop_all(processes)  # their last batches are exported as they stop
            spans = collector.spans()
            traced = {"exports": collector.requests, "spans": len(spans), "timeline": trace_timeline(spans)}
    deployment = "embedded: one process"
    if arguments.kafka:
        deployment = (
            f"Kafka (Tansu) + ClickHouse over HTTP: 1 API, 1 processor worker, {arguments.inference_workers} inference;"
            f" fetch.wait.max.ms={arguments.fetch_wait_ms}"
        )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "engine": f"scripted, {arguments.token_delay_ms:g} ms/token, 20-token answers",
        "deployment": deployment,
        "governance": f"on, tiers file {arguments.tiers.name}" if arguments.tiers else "off",
        "safety": f"on, policies file {arguments.policies.name}" if arguments.policies else "off",
        "tracing": f"on, OTLP/HTTP to a local collector: {traced}" if arguments.trace else "off",
        "latency": latency,
        "throughput": throughput,
        "idle_cpu_percent_of_a_core": dict(zip([*process_roles(arguments), *beside], idle)),
    }
    print(json.dumps(result, indent=2))
    if arguments.out:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
