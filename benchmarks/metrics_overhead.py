"""What observability costs per operation: metric observations, log-context binds, the request middleware, a log line.

Metrics cannot be turned off (they are always declared and observed), so instead of the lifecycle benchmark with
them on and off this measures each kind of observation the hot path makes, in a tight loop, and multiplies by how
many of each one turn makes (counted from the code: see OBSERVATIONS_PER_TURN) to give the cost per turn, to set
against the CPU a turn costs the server (docs/benchmarks.md).

    python benchmarks/metrics_overhead.py [--seconds 1.0] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.observability import ObservedRequests  # noqa: E402
from inference.metrics import QUEUE_DEPTH, TIME_TO_FIRST_TOKEN, TOKEN_USAGE  # noqa: E402
from kernel import log_context  # noqa: E402
from kernel.envelope import Actor, Envelope  # noqa: E402
from kernel.metrics import LOG_APPEND_SECONDS, PROCESSOR_RECORDS, exposition  # noqa: E402
from turnlog.logs import configure_logging  # noqa: E402

# How many of each observation one turn of the lifecycle benchmark makes (20 answer tokens: about 4 deltas), counted
# from the code: 2 requests (POST the turn, GET its stream); about 10 appends (command, the decider's events and reply,
# prompt, claim, 4 deltas, finish, the decider's end); about 9 processor batches (decider twice, prompt builder,
# summarizer, projector, usage, run and charge ledgers, watchdog), each a timed batch (pre-bound), a record count
# (pre-bound) and a context bind; the worker's TTFT and 2 token counts (pre-bound), cost (pre-bound), duration and
# admission wait (labels looked up), queue depth and in-flight twice each.
OBSERVATIONS_PER_TURN = {
    "request through ObservedRequests (access log on, JSON)": 2,
    "histogram child observe (pre-bound)": 10 + 9 + 3,
    "histogram labels() + observe": 2,
    "counter child inc (pre-bound)": 9 + 1,
    "gauge labels() + set": 4,
    "bind an envelope's log context (batch of 1)": 9 + 1,
}


@dataclass
class Measured:
    name: str
    ns_per_op: float


def measure(name: str, operation: Callable[[], object], *, seconds: float, repeats: int = 5) -> Measured:
    """The median over `repeats` runs of ~`seconds`/`repeats` each of `operation`, in ns per call."""
    per_run = seconds / repeats
    calls = 1000
    while True:  # find a loop length that takes about per_run
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        elapsed = time.perf_counter() - started
        if elapsed >= per_run / 4:
            break
        calls *= 4
    calls = max(1, int(calls * per_run / elapsed))
    results = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(calls):
            operation()
        results.append((time.perf_counter_ns() - started) / calls)
    return Measured(name=name, ns_per_op=statistics.median(results))


def measure_async(name: str, operation: Callable[[], object], *, seconds: float) -> Measured:
    loop = asyncio.new_event_loop()
    try:
        return measure(name, lambda: loop.run_until_complete(operation()), seconds=seconds)
    finally:
        loop.close()


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    seconds = arguments.seconds

    # Access log lines formatted as JSON into a buffer that is emptied (the write to a pipe is not measured).
    sink = io.StringIO()
    configure_logging("info", log_format="json", stream=sink)
    envelope = Envelope.wrap(
        type("Payload", (), {"run_id": "run_1", "conversation_id": "conv_1"})(), key="run_1",
        actor=Actor(user_id="u", org_id="org_1", workspace_id="ws"),
    )
    appended = LOG_APPEND_SECONDS.labels(log="bench", durable="true")
    records = PROCESSOR_RECORDS.labels(group="bench")
    scope = {
        "type": "http", "method": "POST", "path": "/v1/conversations/conv_1/turns", "headers": [(b"x-request-id", b"bench-1")],
        "root_path": "",
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        return None

    observed_on = ObservedRequests(_app, access_log=True)
    observed_off = ObservedRequests(_app, access_log=False)

    def bound_to() -> None:
        with log_context.bound_to([envelope]):
            pass

    def reset_sink() -> None:
        sink.seek(0)
        sink.truncate()

    results = [
        measure("histogram child observe (pre-bound)", lambda: appended.observe(0.0012), seconds=seconds),
        measure("histogram labels() + observe", lambda: TIME_TO_FIRST_TOKEN.labels(pool="bench", model="m").observe(0.02), seconds=seconds),
        measure(
            "histogram labels() + observe, 3 labels",
            lambda: TOKEN_USAGE.labels(pool="bench", model="m", gen_ai_token_type="input").observe(120), seconds=seconds,
        ),
        measure("counter labels() + inc", lambda: PROCESSOR_RECORDS.labels(group="bench").inc(3), seconds=seconds),
        measure("counter child inc (pre-bound)", lambda: records.inc(3), seconds=seconds),
        measure("gauge labels() + set", lambda: QUEUE_DEPTH.labels(pool="bench", size_class="short").set(3), seconds=seconds),
        measure("bind an envelope's log context (batch of 1)", bound_to, seconds=seconds),
        measure_async("request, bare ASGI app (baseline)", lambda: _app(dict(scope), receive, send), seconds=seconds),
        measure_async("request through ObservedRequests (access log off)", lambda: observed_off(dict(scope), receive, send), seconds=seconds),
        measure_async(
            "request through ObservedRequests (access log on, JSON)",
            lambda: _then(observed_on(dict(scope), receive, send), reset_sink), seconds=seconds,
        ),
        measure("render /metrics (whole registry)", lambda: exposition(), seconds=seconds),
    ]
    by_name = {result.name: result.ns_per_op for result in results}
    baseline = by_name["request, bare ASGI app (baseline)"]
    by_name["request through ObservedRequests (access log on, JSON)"] -= baseline
    by_name["request through ObservedRequests (access log off)"] -= baseline
    per_turn_us = sum(by_name[name] * count for name, count in OBSERVATIONS_PER_TURN.items()) / 1000
    for result in results:
        shown = by_name[result.name]
        note = " (over the bare app)" if result.name.startswith("request through") else ""
        print(f"{result.name:60s} {shown / 1000:8.2f} us{note}")
    print(f"{'estimated cost per turn (OBSERVATIONS_PER_TURN)':60s} {per_turn_us:8.1f} us")
    if arguments.out:
        arguments.out.write_text(json.dumps({
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
            "ns_per_op": by_name, "per_turn_us": per_turn_us, "observations_per_turn": OBSERVATIONS_PER_TURN,
        }, indent=2))
    return 0


async def _then(awaitable, after: Callable[[], None]) -> None:
    await awaitable
    after()


if __name__ == "__main__":
    sys.exit(main())
