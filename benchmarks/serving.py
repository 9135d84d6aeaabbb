"""Serving benchmarks against a fake SGLang-speed server: turnlog's time to first token, and short turns under long prompts.

The engine is `benchmarks/fake_sglang_server.py` (its docstring states the timing model), in a
process of its own; turnlog runs as `turnlog serve --engine openai-compatible` on a fresh data dir.

  A. control-plane TTFT: at 1, 16 and 64 concurrent streams (closed loop: each stream sends its
     next turn when the last one has ended), the time to first token calling the fake server
     directly (request sent -> first content delta) and through turnlog (POST of the user message
     sent -> first `assistant.delta` on the run's SSE stream: lifecycle.py's "sent -> first delta").
     Every turn is the first of a conversation created beforehand (untimed), so prompts do not grow
     with history and both paths prefill about the same prompt (turnlog's system prompt and the
     user's sentence). Through turnlog twice, on two fresh servers: with every conversation already
     looked up by the API (an untimed GET, as a client showing it would), and without. p50/p99,
     turnlog minus direct, turnlog over direct, and where turnlog's time goes (from the log's own
     timestamps). `--turnlog-slots N` gives turnlog a pools file whose one unsplit pool runs N
     generations at once; 0 runs it without a pools file (the adapter's default, 16). Each level also
     reports turns/s on both paths and turnlog's own CPU (its process, all threads) per token streamed.
     Issue 17's scenario is this with 64-token answers at 0 and 20 ms between tokens:
       --scenario A --answer-tokens 64 --decode-ms 0   and   --scenario A --answer-tokens 64 --decode-ms 20
  B. short turns under long prompts: short turns arrive every 1/rate s while long prompts
     (~5,000 words, ~6,500 tokens: above the 4,096-token short/long threshold) arrive as a Poisson
     process; the share of short turns whose TTFT meets --target-ms, (a) without a pools file (one
     pool, one queue for every prompt, 16 generations at once) and (b) with a pools file whose pool
     has as many slots but is split by size, long prompts holding at most --long-capacity of them.
     Same arrival schedule for both. Needs `turnlog serve --pools`.

Every phase notes the 1-minute load average before and after it (it counts this benchmark's own
processes and threads too); the machine is shared, so compare figures taken in one run. Prints JSON
(and writes it with --out), then the tables as docs/benchmarks.md shows them on stderr.

    .venv/bin/python benchmarks/serving.py [--scenario A,B] [--streams 1,16,64] [--turns-per-level 64]
        [--turnlog-slots 64] [--target-ms 500] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from api.auth import issue_token, load_or_create_secret
from commands.catalog import SubmitTurn
from events.runs import AssistantDelta, GenerationStarted, PromptAssembled, RunStarted
from events.topics import COMMANDS, RUN_EVENTS
from fake_sglang_server import FakeSglangServer, TimingModel
from inference.openai_compatible import ChunkDelta, StreamEnded, completion_chunks
from lifecycle import Client, cpu_seconds, free_port, percentile, stop_all
from processors.prompting import SYSTEM_PROMPT
from turnlog.settings import Settings
from turnlog.adapters import build_codec, build_key_store, build_log

MODEL = "fake-sglang"
SHORT_QUESTIONS = (
    "How do I rotate the API keys for our staging cluster without downtime?",
    "What is the difference between a mutex and a semaphore in plain words?",
    "Can you suggest a name for a small bakery that sells sourdough and coffee?",
    "Why does my sourdough starter smell like acetone after two days in the fridge?",
    "Summarise the main causes of the 2008 financial crisis in three sentences.",
    "Which is faster for lookups in Python, a list or a set, and why is that?",
)
LONG_PROMPT_WORDS = 5_000  # ~6,500 tokens at the fake server's 1.3 tokens per word; turnlog counts words
LONG_VOCABULARY = ("the", "log", "of", "each", "run", "is", "kept", "so", "that", "a", "late", "reader", "can",
                   "replay", "it", "and", "see", "what", "was", "said", "to", "whom", "by", "when")
MAX_INPUT_TEXT_CHARS = 32_000  # api/bodies.py: the largest text part a turn may carry


# --- pure parts -----------------------------------------------------------------------------------

def long_prompt(index: int, *, words: int = LONG_PROMPT_WORDS) -> str:
    """A document pasted with a question: `words` words of short English, under the API's text limit."""
    rng = random.Random(index)
    body = " ".join(rng.choice(LONG_VOCABULARY) for _ in range(words - 12))
    text = f"Here is a design note, number {index}. {body}. What does it say about replay?"
    assert len(text) <= MAX_INPUT_TEXT_CHARS, f"a long prompt of {len(text)} characters would be refused"
    return text


def short_prompt(index: int) -> str:
    return f"{SHORT_QUESTIONS[index % len(SHORT_QUESTIONS)]} (question {index})"


def latency_summary(seconds: list[float]) -> dict:
    """p50/p99 (and count, min, max) in milliseconds."""
    if not seconds:
        return {"n": 0}
    milliseconds = [value * 1000 for value in seconds]
    return {
        "n": len(milliseconds),
        "p50_ms": round(statistics.median(milliseconds), 2),
        "p99_ms": round(percentile(milliseconds, 0.99), 2),
        "min_ms": round(min(milliseconds), 2),
        "max_ms": round(max(milliseconds), 2),
    }


def overhead(direct: dict, through_turnlog: dict) -> dict:
    """turnlog minus direct, and turnlog over direct, at p50 and p99."""
    result = {}
    for key in ("p50_ms", "p99_ms"):
        if key in direct and key in through_turnlog:
            result[f"{key}_added"] = round(through_turnlog[key] - direct[key], 2)
            result[f"{key}_ratio"] = round(through_turnlog[key] / direct[key], 2) if direct[key] else None
    return result


def share_within(seconds: list[float], target_s: float, *, failed: int = 0) -> float:
    """The share of turns whose TTFT met the target; a failed turn missed it."""
    total = len(seconds) + failed
    return round(sum(1 for value in seconds if value <= target_s) / total, 4) if total else math.nan


@dataclass(frozen=True)
class Arrival:
    at_s: float
    kind: str  # "short" | "long"
    index: int


def arrival_schedule(*, seconds: float, short_per_s: float, long_per_s: float, seed: int) -> list[Arrival]:
    """Short turns at a steady rate; long prompts as a Poisson process (they come in clumps)."""
    rng = random.Random(seed)
    arrivals = [Arrival(at_s=index / short_per_s, kind="short", index=index)
                for index in range(int(seconds * short_per_s))]
    at_s, index = rng.expovariate(long_per_s), 0
    while at_s < seconds:
        arrivals.append(Arrival(at_s=at_s, kind="long", index=index))
        at_s += rng.expovariate(long_per_s)
        index += 1
    return sorted(arrivals, key=lambda arrival: arrival.at_s)


def pools_file_text(*, engine_url: str, capacity: int, split_by_size: bool, long_capacity: int | None,
                    context_tokens: int) -> str:
    lines = [
        "[[pools]]",
        'name = "interactive"',
        'engine = "openai-compatible"',
        f'engine_url = "{engine_url}"',
        f'engine_model = "{MODEL}"',
        f"context_tokens = {context_tokens}",
        f"capacity = {capacity}",
        f"split_by_size = {'true' if split_by_size else 'false'}",
    ]
    if long_capacity is not None:
        lines.append(f"long_capacity = {long_capacity}")
    return "\n".join(lines) + "\n"


# Where a turn's time to first token goes, from the log's own timestamps (each append's commit time).
STAGES = (
    ("command -> run started (decider)", SubmitTurn, RunStarted),
    ("run started -> prompt assembled (prompt builder)", RunStarted, PromptAssembled),
    ("prompt assembled -> claimed (queue, worker)", PromptAssembled, GenerationStarted),
    ("claimed -> first delta appended (engine, coalescing)", GenerationStarted, AssistantDelta),
)


def stage_summary(first_seen: dict[str, dict[type, float]], window: tuple[float, float],
                  include: Callable[[str], bool] = lambda run_id: True) -> dict:
    """p50/p99 of each stage, over the runs whose command was appended within `window` (epoch seconds)."""
    runs = [events for run_id, events in first_seen.items()
            if include(run_id) and window[0] <= events.get(SubmitTurn, -1.0) <= window[1]]
    summary = {}
    for name, start, end in STAGES:
        spans = [events[end] - events[start] for events in runs if start in events and end in events]
        summary[name] = {key: value for key, value in latency_summary(spans).items() if key in ("p50_ms", "p99_ms")}
    return summary


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# --- I/O: the two paths to a first token ----------------------------------------------------------

@dataclass
class Outcomes:
    """TTFTs of the turns that streamed, and why the others did not."""

    first_token_s: list[float]
    failures: Counter

    @classmethod
    def empty(cls) -> Outcomes:
        return cls(first_token_s=[], failures=Counter())

    async def record(self, turn: Awaitable[float]) -> None:
        try:
            self.first_token_s.append(await turn)
        except (AssertionError, httpx.HTTPError) as error:
            self.failures[f"{type(error).__name__}: {str(error)[:160]}"] += 1


async def direct_first_token_s(http: httpx.AsyncClient, text: str, *, max_tokens: int) -> float:
    """Request sent -> first content delta from the server; the answer is then read to its end."""
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    sent = time.perf_counter()
    first_token = None
    async with http.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for item in completion_chunks(response.aiter_lines()):
            if isinstance(item, ChunkDelta) and item.text and first_token is None:
                first_token = time.perf_counter()
            if isinstance(item, StreamEnded):
                break
    assert first_token is not None, "the server streamed no content"
    return first_token - sent


async def through_turnlog_first_token_s(client: Client, conversation_id: str, text: str) -> float:
    """POST of the user message sent -> first `assistant.delta` (lifecycle.py's "sent -> first delta")."""
    _, sent_to_first_delta, _ = await client.turn(conversation_id, text)
    return sent_to_first_delta


async def closed_loop(streams: int, turns_per_stream: int, one_turn: Callable[[int], Awaitable[float]]) -> Outcomes:
    """`streams` workers, each sending its next turn when the last has ended."""
    outcomes = Outcomes.empty()

    async def stream(stream_index: int) -> None:
        for round_index in range(turns_per_stream):
            await outcomes.record(one_turn(round_index * streams + stream_index))

    await asyncio.gather(*(stream(index) for index in range(streams)))
    return outcomes


async def fake_server_stats(engine_url: str) -> dict:
    async with httpx.AsyncClient() as http:
        return (await http.get(engine_url.removesuffix("/v1") + "/stats")).json()


def stats_change(before: dict, after: dict) -> dict:
    requests = after["requests"] - before["requests"]
    return {
        "requests": requests,
        "disconnected": after["disconnected"] - before["disconnected"],
        "mean_prompt_tokens": round((after["prompt_tokens"] - before["prompt_tokens"]) / requests, 1) if requests else 0,
        "most_waiting_for_a_slot_so_far": after["most_waiting"],
        "open_connections_after": after.get("open_connections"),
    }


async def first_events_by_run(data_dir: Path) -> tuple[dict[str, dict[type, float]], dict[str, int]]:
    """For each run, when its command and each of its first run events were appended, and its prompt's
    size in turnlog's count (read once the server has stopped)."""
    settings = Settings(data_dir=data_dir)
    log, codec = build_log(settings), build_codec(build_key_store(settings))  # the served log's content is sealed
    await log.start()
    first_seen: dict[str, dict[type, float]] = {}
    prompt_tokens: dict[str, int] = {}
    try:
        for topic in (COMMANDS, RUN_EVENTS):
            end = await log.end_offset(topic)
            if end < 0:
                continue
            async for record in log.follow(topic):
                payload = codec.decode(record.value).payload
                if isinstance(payload, (SubmitTurn, *(end_type for _, _, end_type in STAGES))):
                    first_seen.setdefault(payload.run_id, {}).setdefault(type(payload), record.timestamp.timestamp())
                if isinstance(payload, PromptAssembled):
                    prompt_tokens[payload.run_id] = payload.prompt_tokens
                if record.offset >= end:
                    break
    finally:
        await log.close()
    return first_seen, prompt_tokens


class TurnlogServer:
    """`turnlog serve --engine openai-compatible` on a fresh data dir; its log lines go to `log_path`."""

    def __init__(self, *, engine_url: str, max_output_tokens: int, context_tokens: int, pools_text: str | None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="turnlog-serving-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "serve.log"
        arguments = [
            "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--engine", "openai-compatible", "--engine-url", engine_url, "--engine-model", MODEL,
            "--max-output-tokens", str(max_output_tokens), "--context-tokens", str(context_tokens),
            "--log-level", "warning",
        ]
        if pools_text is not None:
            pools_path = self.data_dir / "pools.toml"
            pools_path.write_text(pools_text)
            arguments += ["--pools", str(pools_path)]
        # The secret first, so the server reads the one the token is signed with.
        self.token = issue_token(load_or_create_secret(self.data_dir), user_id="bench", org_id="org_bench",
                                 workspace_ids=["ws_bench"])
        self._log_file = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "turnlog.cli", *arguments],
                                        stdout=self._log_file, stderr=subprocess.STDOUT)

    async def wait_healthy(self, http: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnlog serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("turnlog serve did not become healthy")

    def stop(self) -> None:
        stop_all([self.process])
        self._log_file.close()

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def turnlog_http(url: str) -> httpx.AsyncClient:
    # Long prompts may wait in a queue for a while: generous read timeout, and room for every stream.
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, connect=10),
                             limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000))


def server_problems(server: TurnlogServer) -> dict:
    """turnlog's warnings and errors by message, and the exceptions its tracebacks end with; the warning
    every run logs (no local tokenizer for the fake model) left out."""
    lines = server.log_path.read_text().splitlines()
    messages = Counter(line.split(" ", 2)[2][:160] for line in lines
                       if any(f" {level} " in line for level in ("WARNING", "ERROR", "CRITICAL"))
                       and "no local tokenizer" not in line)
    exceptions = Counter(line[:200] for previous, line in zip(lines, lines[1:])
                         if previous.startswith("  ") and line and not line.startswith((" ", "Traceback", "20")))
    # Messages name their run; count them by what they say.
    by_kind = Counter()
    for message, count in messages.items():
        by_kind[" ".join(word if not word.startswith(("run_", "conv_", "evt_")) else "<id>" for word in message.split())] += count
    return {"messages": dict(by_kind.most_common(8)), "exceptions": dict(exceptions.most_common(8))}


# --- scenario A -----------------------------------------------------------------------------------

async def measure_direct(engine_url: str, levels: list[int], turns_per_level: int, max_tokens: int) -> dict:
    results = {}
    async with httpx.AsyncClient(base_url=engine_url, timeout=httpx.Timeout(120, connect=10),
                                 limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000)) as http:
        for index in range(3):  # warm-up: connections, the server's first requests
            await direct_first_token_s(http, short_prompt(index), max_tokens=max_tokens)
        for streams in levels:
            results[str(streams)] = await measure_level(
                streams, turns_per_level, lambda index: direct_first_token_s(http, short_prompt(index), max_tokens=max_tokens),
                engine_url=engine_url, pids=[],
            )
    return results


async def measure_through_turnlog(server: TurnlogServer, engine_url: str, levels: list[int], turns_per_level: int,
                                  fake_pid: int, *, known_conversations: bool, max_tokens: int) -> dict:
    """Every turn is its conversation's first; `known_conversations`: the API has already looked each
    one up (an untimed GET, as a client showing the conversation would), so its header is cached."""
    results = {}
    async with turnlog_http(server.url) as http:
        await server.wait_healthy(http)
        client = Client(http, server.token)
        for index in range(3):  # warm-up: first appends, the read models, the engine's connections
            await client.turn(await client.conversation(), short_prompt(index))
        for streams in levels:
            conversations = [await client.conversation() for _ in range(turns_for(streams, turns_per_level))]
            if known_conversations:
                for conversation_id in conversations:
                    (await http.get(f"/v1/conversations/{conversation_id}", headers=client.headers)).raise_for_status()
            results[str(streams)] = await measure_level(
                streams, turns_per_level,
                lambda index: through_turnlog_first_token_s(client, conversations[index], short_prompt(index)),
                engine_url=engine_url, pids=[server.process.pid, fake_pid], turnlog_pid=server.process.pid,
                tokens_per_turn=max_tokens,
            )
    return results


def stream_levels(text: str) -> list[int]:
    """`--streams`: concurrency levels, each once (the results are keyed by level: run again to repeat one)."""
    try:
        levels = [int(level) for level in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(level < 1 for level in levels) or len(set(levels)) != len(levels):
        raise argparse.ArgumentTypeError(f"each level once and at least 1, got {text!r}: run again to repeat a level")
    return levels


def turns_for(streams: int, turns_per_level: int) -> int:
    """At least `turns_per_level` turns and at least three rounds of every stream."""
    return streams * max(3, math.ceil(turns_per_level / streams))


async def measure_level(streams: int, turns_per_level: int, one_turn: Callable[[int], Awaitable[float]], *,
                        engine_url: str, pids: list[int], turnlog_pid: int | None = None, tokens_per_turn: int = 0) -> dict:
    turns_per_stream = turns_for(streams, turns_per_level) // streams
    load_before, stats_before = load_average(), await fake_server_stats(engine_url)
    cpu_before = cpu_seconds(pids) if pids else 0.0
    turnlog_cpu_before = cpu_seconds([turnlog_pid]) if turnlog_pid else 0.0
    started, window_start = time.perf_counter(), time.time()
    outcomes = await closed_loop(streams, turns_per_stream, one_turn)
    elapsed = time.perf_counter() - started
    result = {
        "streams": streams,
        "window": (window_start, time.time()),
        "ttft": latency_summary(outcomes.first_token_s),
        "failures": dict(outcomes.failures),
        "seconds": round(elapsed, 2),
        "turns_per_s": round(len(outcomes.first_token_s) / elapsed, 1),
        "fake_server": stats_change(stats_before, await fake_server_stats(engine_url)),
        "load_average_1m": [load_before, load_average()],
    }
    if pids:
        result["cpu_s_turnlog_plus_fake_server"] = round(cpu_seconds(pids) - cpu_before, 2)
    if turnlog_pid:  # turnlog's own CPU (all its threads) over the tokens the streamed turns asked for
        turnlog_cpu = cpu_seconds([turnlog_pid]) - turnlog_cpu_before
        tokens = len(outcomes.first_token_s) * tokens_per_turn
        result["cpu_s_turnlog"] = round(turnlog_cpu, 2)
        result["turnlog_cpu_ms_per_token"] = round(turnlog_cpu * 1000 / tokens, 3) if tokens else None
    return result


def serve_supports_pools() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "turnlog.cli", "serve", "--help"],
                               capture_output=True, text=True).stdout
    return "--pools" in help_text


def pools_for_slots(slots: int, *, engine_url: str, context_tokens: int) -> str | None:
    """Scenario A's pools file: one pool not split by size with `slots` generations at once; 0: none."""
    if slots == 0:
        return None
    if not serve_supports_pools():
        raise SystemExit("`turnlog serve` has no --pools flag here: pass --turnlog-slots 0")
    return pools_file_text(engine_url=engine_url, capacity=slots, split_by_size=False, long_capacity=None,
                           context_tokens=context_tokens)


def finish_server(server: TurnlogServer, measured: dict, windows: dict[str, dict]) -> None:
    """After the server stopped: each measured level's stage breakdown, and what the server logged.
    The data dir is kept (and named) when the server logged an exception."""
    first_seen, _ = asyncio.run(first_events_by_run(server.data_dir))
    for level in windows.values():
        level["stages"] = stage_summary(first_seen, level.pop("window"))
    measured["turnlog_log"] = server_problems(server)
    if measured["turnlog_log"]["exceptions"]:
        measured["turnlog_log"]["data_dir_kept"] = str(server.data_dir)
    else:
        server.remove()


def scenario_a(arguments: argparse.Namespace, timing: TimingModel) -> dict:
    levels = arguments.streams
    with FakeSglangServer(timing, model=MODEL) as fake:
        pools_text = pools_for_slots(arguments.turnlog_slots, engine_url=fake.base_url,
                                     context_tokens=arguments.context_tokens)
        direct = asyncio.run(measure_direct(fake.base_url, levels, arguments.turns_per_level, timing.answer_tokens))
        for level in direct.values():
            level.pop("window")
        through: dict[str, dict] = {}
        for mode, known in (("known_conversation", True), ("new_conversation", False)):
            server = TurnlogServer(engine_url=fake.base_url, max_output_tokens=timing.answer_tokens,
                                   context_tokens=arguments.context_tokens, pools_text=pools_text)
            try:
                through[mode] = asyncio.run(measure_through_turnlog(
                    server, fake.base_url, levels, arguments.turns_per_level, fake.pid, known_conversations=known,
                    max_tokens=timing.answer_tokens))
            finally:
                server.stop()
            finish_server(server, through[mode], {level: through[mode][level] for level in map(str, levels)})
    rows = []
    for streams in levels:
        level = str(streams)
        row = {"streams": streams, "direct": direct[level]["ttft"]}
        for mode in through:
            row[mode] = through[mode][level]["ttft"]
            row[f"{mode}_overhead"] = overhead(direct[level]["ttft"], through[mode][level]["ttft"])
            row[f"{mode}_failures"] = sum(through[mode][level]["failures"].values())
            row[f"{mode}_turns_per_s"] = through[mode][level]["turns_per_s"]
            row[f"{mode}_cpu_ms_per_token"] = through[mode][level].get("turnlog_cpu_ms_per_token")
        row["direct_turns_per_s"] = direct[level]["turns_per_s"]
        rows.append(row)
    return {
        "turnlog_engine_slots": f"pools file: one pool not split by size, capacity {arguments.turnlog_slots}"
        if arguments.turnlog_slots else "no pools file: one pool, as many slots as the openai-compatible adapter "
        "runs at once (its default max_concurrency, 16)",
        "table": rows,
        "direct": direct,
        "through_turnlog": through,
    }


# --- scenario B -----------------------------------------------------------------------------------

async def mixed_load(server: TurnlogServer, schedule: list[Arrival], engine_url: str, fake_pid: int) -> dict:
    short, long = Outcomes.empty(), Outcomes.empty()
    async with turnlog_http(server.url) as http:
        await server.wait_healthy(http)
        client = Client(http, server.token)
        for index in range(3):
            await client.turn(await client.conversation(), short_prompt(index))
        conversations = [await client.conversation() for _ in schedule]
        for conversation_id in conversations:  # known to the API, as in scenario A's main figures
            (await http.get(f"/v1/conversations/{conversation_id}", headers=client.headers)).raise_for_status()
        load_before, stats_before = load_average(), await fake_server_stats(engine_url)
        cpu_before = cpu_seconds([server.process.pid, fake_pid])
        started, window_start = time.perf_counter(), time.time()

        async def arrive(arrival: Arrival, conversation_id: str) -> None:
            await asyncio.sleep(max(0.0, started + arrival.at_s - time.perf_counter()))
            if arrival.kind == "short":
                await short.record(through_turnlog_first_token_s(client, conversation_id, short_prompt(arrival.index)))
            else:
                await long.record(through_turnlog_first_token_s(client, conversation_id, long_prompt(arrival.index)))

        await asyncio.gather(*(arrive(arrival, conversation) for arrival, conversation in zip(schedule, conversations)))
        elapsed = time.perf_counter() - started
        return {
            "short": short, "long": long, "seconds": round(elapsed, 2), "window": (window_start, time.time()),
            "fake_server": stats_change(stats_before, await fake_server_stats(engine_url)),
            "cpu_s_turnlog_plus_fake_server": round(cpu_seconds([server.process.pid, fake_pid]) - cpu_before, 2),
            "load_average_1m": [load_before, load_average()],
        }


def scenario_b(arguments: argparse.Namespace, timing: TimingModel) -> dict:
    if not serve_supports_pools():
        return {"skipped": "`turnlog serve` has no --pools flag yet"}
    schedule = arrival_schedule(seconds=arguments.mixed_seconds, short_per_s=arguments.short_per_s,
                                long_per_s=arguments.long_per_s, seed=arguments.seed)
    target_s = arguments.target_ms / 1000
    split = f"pools file: split by size, capacity {arguments.mixed_slots}, long_capacity {arguments.long_capacity}"
    configurations = {
        # `turnlog serve` without a pools file: one pool, one queue, the adapter's 16 generations at once.
        "no pools file: one queue": None,
        split: dict(capacity=arguments.mixed_slots, split_by_size=True, long_capacity=arguments.long_capacity),
    }
    results = {}
    for name, pool in configurations.items():
        with FakeSglangServer(timing, model=MODEL) as fake:
            pools_text = None if pool is None else pools_file_text(
                engine_url=fake.base_url, context_tokens=arguments.context_tokens, **pool)
            server = TurnlogServer(engine_url=fake.base_url, max_output_tokens=timing.answer_tokens,
                                   context_tokens=arguments.context_tokens, pools_text=pools_text)
            try:
                measured = asyncio.run(mixed_load(server, schedule, fake.base_url, fake.pid))
            finally:
                server.stop()
            first_seen, prompt_tokens = asyncio.run(first_events_by_run(server.data_dir))
            window = measured.pop("window")
            stages = {
                size: stage_summary(first_seen, window, lambda run_id, size=size: (
                    prompt_tokens.get(run_id, 0) > arguments.short_prompt_max_tokens) == (size == "long"))
                for size in ("short", "long")
            }
            problems = server_problems(server)
            if problems["exceptions"]:
                problems["data_dir_kept"] = str(server.data_dir)
            else:
                server.remove()
        short, long = measured.pop("short"), measured.pop("long")
        results[name] = {
            "short_within_target": share_within(short.first_token_s, target_s, failed=sum(short.failures.values())),
            "short_ttft": latency_summary(short.first_token_s),
            "long_ttft": latency_summary(long.first_token_s),
            "short_failures": dict(short.failures),
            "long_failures": dict(long.failures),
            **measured,
            "stages": stages,
            "turnlog_log": problems,
        }
    return {
        "target_ms": arguments.target_ms,
        "arrivals": {
            "seconds": arguments.mixed_seconds, "short_per_s": arguments.short_per_s,
            "long_per_s": arguments.long_per_s, "short": sum(1 for a in schedule if a.kind == "short"),
            "long": sum(1 for a in schedule if a.kind == "long"), "long_prompt_words": LONG_PROMPT_WORDS,
            "seed": arguments.seed,
        },
        "configurations": results,
    }


def markdown_tables(result: dict) -> str:
    """The figures as the docs show them."""
    lines = []
    scenario = result.get("A_control_plane_ttft")
    if scenario:
        lines += [f"A ({scenario['turnlog_engine_slots']}); TTFT p50 / p99 ms",
                  "| streams | direct | turnlog, known conversation | added (ratio) p50 / p99 | turnlog, new conversation "
                  "| added (ratio) p50 / p99 | failed runs |",
                  "|---|---|---|---|---|---|---|"]
        for row in scenario["table"]:
            cells = [str(row["streams"]), f"{row['direct']['p50_ms']} / {row['direct']['p99_ms']}"]
            for mode in ("known_conversation", "new_conversation"):
                ttft, added = row[mode], row[f"{mode}_overhead"]
                cells += [f"{ttft.get('p50_ms')} / {ttft.get('p99_ms')}",
                          f"+{added.get('p50_ms_added')} ({added.get('p50_ms_ratio')}x) / "
                          f"+{added.get('p99_ms_added')} ({added.get('p99_ms_ratio')}x)"]
            cells.append(f"{row['known_conversation_failures']} + {row['new_conversation_failures']}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "turns/s (direct / known / new) and turnlog's CPU ms per token (known / new)",
                  "| streams | turns/s | CPU ms/token |", "|---|---|---|"]
        for row in scenario["table"]:
            lines.append(
                f"| {row['streams']} | {row['direct_turns_per_s']} / {row['known_conversation_turns_per_s']} / "
                f"{row['new_conversation_turns_per_s']} | {row['known_conversation_cpu_ms_per_token']} / "
                f"{row['new_conversation_cpu_ms_per_token']} |"
            )
    scenario = result.get("B_short_turns_under_long_prompts")
    if scenario and "configurations" in scenario:
        lines += ["", f"B: short turns within {scenario['target_ms']:g} ms",
                  "| configuration | short within target | short p50 / p99 ms | long p50 / p99 ms | failed runs |",
                  "|---|---|---|---|---|"]
        for name, measured in scenario["configurations"].items():
            short, long = measured["short_ttft"], measured["long_ttft"]
            failed = sum(measured["short_failures"].values()) + sum(measured["long_failures"].values())
            lines.append(f"| {name} | {measured['short_within_target']:.1%} | {short.get('p50_ms')} / "
                         f"{short.get('p99_ms')} | {long.get('p50_ms')} / {long.get('p99_ms')} | {failed} |")
    return "\n".join(lines)


def source_state() -> dict:
    """Which turnlog was measured: the commit, and the files changed on top of it."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": changed}


# --- the command ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="A,B", help="A, B or A,B")
    parser.add_argument("--streams", type=stream_levels, default="1,16,64", help="scenario A: concurrency levels")
    parser.add_argument("--turns-per-level", type=int, default=64,
                        help="scenario A: turns per level and path (at least 3 per stream)")
    parser.add_argument("--target-ms", type=float, default=500, help="scenario B: a short turn's TTFT target")
    parser.add_argument("--mixed-seconds", type=float, default=30, help="scenario B: how long arrivals go on")
    parser.add_argument("--short-per-s", type=float, default=4, help="scenario B: short turns per second")
    parser.add_argument("--long-per-s", type=float, default=2, help="scenario B: long prompts per second (Poisson)")
    parser.add_argument("--mixed-slots", type=int, default=16,
                        help="scenario B: the split pool's capacity (16: as many as the unsplit default pool)")
    parser.add_argument("--long-capacity", type=int, default=2, help="scenario B: long prompts' slots in the split pool")
    parser.add_argument("--short-prompt-max-tokens", type=int, default=4096,
                        help="turnlog's short/long threshold (pools file [routing]); only to tell runs apart here")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--turnlog-slots", type=int, default=64,
                        help="scenario A: generations turnlog runs at once, as a pools file's unsplit pool capacity; "
                        "0: no pools file (one pool on --engine, the adapter's 16)")
    parser.add_argument("--context-tokens", type=int, default=32_768, help="turnlog's --context-tokens")
    parser.add_argument("--max-running", type=int, default=TimingModel.max_running)
    parser.add_argument("--prefill-ms-per-1k", type=float, default=TimingModel.prefill_ms_per_1k)
    parser.add_argument("--decode-ms", type=float, default=TimingModel.decode_ms)
    parser.add_argument("--answer-tokens", type=int, default=TimingModel.answer_tokens)
    parser.add_argument("--note", default="", help="free text recorded with the figures (what was measured)")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    scenarios = {name.strip().upper() for name in arguments.scenario.split(",")}
    timing = TimingModel(max_running=arguments.max_running, prefill_ms_per_1k=arguments.prefill_ms_per_1k,
                         decode_ms=arguments.decode_ms, answer_tokens=arguments.answer_tokens)

    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "turnlog_source": source_state(),
        "note": arguments.note,
        "fake_server_timing": {**asdict(timing), "tokens": "words x 1.3 + 4 per message + 3"},
    }
    if "A" in scenarios:
        result["A_control_plane_ttft"] = scenario_a(arguments, timing)
    if "B" in scenarios:
        result["B_short_turns_under_long_prompts"] = scenario_b(arguments, timing)
    result["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    print(markdown_tables(result), file=sys.stderr)
    if arguments.out:
        arguments.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
