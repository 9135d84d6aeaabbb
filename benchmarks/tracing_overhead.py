"""What tracing costs per operation, off (no SDK: OpenTelemetry's no-op API) and on (the SDK exporting by OTLP/HTTP).

The lifecycle benchmark with tracing on and off (`benchmarks/lifecycle.py --trace`) is the end-to-end figure; on a
shared machine its noise is larger than the difference, so this measures each thing the hot path does, in a tight
loop, and multiplies by how many of each one turn makes (PER_TURN, counted from the code and from the spans the
lifecycle benchmark's collector received), to set against the CPU a turn costs the server (docs/benchmarks.md).
"On" includes the export: the CPU of the whole process (the batch processor's thread encoding protobuf and posting
to a collector in this process) per span, measured over many spans and a flush.

    python benchmarks/tracing_overhead.py [--seconds 1.0] [--spans 20000] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events.runs import RunHeartbeat  # noqa: E402
from kernel import tracing  # noqa: E402
from kernel.envelope import Actor, Envelope  # noqa: E402

ACTOR = Actor(user_id="u", org_id="org_1", workspace_id="ws")
TRACE_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# One turn of the lifecycle benchmark (20 answer tokens: about 4 deltas): 2 requests (POST the turn, GET its stream);
# about 10 envelopes made with a cause (the decider's events and reply, the prompt and its manifest, the claim,
# 4 deltas, the finish, usage, the decider's end) and 1 without (the command); about 12 processor batches (decider
# twice, prompt builder, summarizer, projector twice, usage, run, tool-call, safety and charge ledgers, ...). With
# tracing on, about 11 spans recorded (measured: the lifecycle benchmark's collector received ~6,300 for ~570 turns):
# the 2 requests', 5 reactions started lazily (decider twice, prompt builder, projector twice) and 4 of their own
# (command, route, queue wait, generation), each exported.
PER_TURN = {
    "a request's span (tracing.continued)": 2,
    "trace of an envelope with a cause (tracing.caused_by)": 10,
    "trace of an envelope without a cause (tracing.current)": 1,
    "a batch's reaction, nothing caused (batch of 1)": 12,
}
SPANS_PER_TURN = {"a reaction's span, started by what it causes": 5, "a span of its own (tracing.span)": 4}


def measure(name: str, operation: Callable[[], object], *, seconds: float, repeats: int = 5) -> tuple[str, float]:
    """The median over `repeats` runs of ~`seconds`/`repeats` each of `operation`, in ns per call."""
    per_run = seconds / repeats
    calls = 200
    while True:
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
    return name, statistics.median(results)


def measure_async(name: str, operation: Callable[[], object], *, seconds: float) -> tuple[str, float]:
    loop = asyncio.new_event_loop()
    try:
        return measure(name, lambda: loop.run_until_complete(operation()), seconds=seconds)
    finally:
        loop.close()


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def operations(seconds: float) -> dict[str, float]:
    cause = Envelope(**{**vars(Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR)), "trace_parent": TRACE_PARENT})
    beat = RunHeartbeat(run_id="r", worker_id="w")

    def request_span() -> None:
        with tracing.continued(None, "POST"):
            pass

    def reaction_nothing() -> None:
        with tracing.reaction("bench", [cause]):
            pass

    def reaction_causing() -> None:
        with tracing.reaction("bench", [cause]):
            tracing.caused_by(cause)

    def span() -> None:
        with tracing.span("bench"):
            pass

    def current_in_request() -> None:
        with tracing.continued(None, "POST"):
            for _ in range(100):
                tracing.current()

    def caused_in_reaction() -> None:
        with tracing.reaction("bench", [cause]):
            for _ in range(100):
                tracing.caused_by(cause)

    results = dict([
        measure("wrap an envelope with a cause, whole (for scale)", lambda: Envelope.wrap(beat, key="r", actor=ACTOR, cause=cause), seconds=seconds),
        measure("a request's span (tracing.continued)", request_span, seconds=seconds),
        measure("trace of an envelope with a cause (tracing.caused_by)", lambda: tracing.caused_by(cause), seconds=seconds),
        measure("100 caused_by in a reaction", caused_in_reaction, seconds=seconds),
        measure("100 current() in a request", current_in_request, seconds=seconds),
        measure("a batch's reaction, nothing caused (batch of 1)", reaction_nothing, seconds=seconds),
        measure("a batch's reaction causing one envelope", reaction_causing, seconds=seconds),
        measure("a span of its own (tracing.span)", span, seconds=seconds),
    ])
    # Inside a reaction (on: its span started once) and a request, per call.
    in_reaction = (results.pop("100 caused_by in a reaction") - results["a batch's reaction, nothing caused (batch of 1)"]) / 100
    results["trace of an envelope with a cause (tracing.caused_by)"] = max(
        results["trace of an envelope with a cause (tracing.caused_by)"], in_reaction
    )
    results["trace of an envelope without a cause (tracing.current)"] = (
        results.pop("100 current() in a request") - results["a request's span (tracing.continued)"]
    ) / 100
    # What the span adds to the reaction, beyond the call that needed it.
    results["a reaction's span, started by what it causes"] = max(
        0.0, results.pop("a batch's reaction causing one envelope") - results["a batch's reaction, nothing caused (batch of 1)"]
        - results["trace of an envelope with a cause (tracing.caused_by)"],
    )
    return results


def export_cpu_per_span(spans: int) -> float:
    """CPU (all threads of this process) per span started, ended and exported by OTLP/HTTP to a collector here, in ns."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    collector = _test_support("trace_collector").OtlpCollector().start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.endpoint}/v1/traces")))
        tracer = provider.get_tracer("bench")
        started = time.process_time_ns()
        parent = trace.set_span_in_context(trace.NonRecordingSpan(tracing.parse(TRACE_PARENT)))
        for index in range(spans):
            with tracer.start_as_current_span("bench", context=parent, attributes={"turnlog.step": index}):
                pass
            if index % 512 == 511:  # a full batch: exported before the queue (2,048) would drop any
                provider.force_flush()
        provider.force_flush()
        cpu = time.process_time_ns() - started
        provider.shutdown()
        return cpu / spans
    finally:
        collector.stop()


def _test_support(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--spans", type=int, default=20_000, help="spans exported to measure the export's CPU")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()

    assert not tracing.enabled()
    off = operations(arguments.seconds)
    export_ns = export_cpu_per_span(arguments.spans)
    with _test_support("trace_collector").recorded_spans() as exporter:  # the SDK on, spans kept in memory
        exporter.clear()
        on = operations(arguments.seconds)
    on["a span of its own, exported (CPU per span, all threads)"] = export_ns

    per_turn_off = sum(off[name] * count for name, count in PER_TURN.items()) / 1000
    # On: the in-process cost measured with the in-memory exporter, plus each recorded span's export beyond recording.
    export_beyond_recording_ns = max(0.0, export_ns - on["a span of its own (tracing.span)"])
    spans_per_turn = sum(SPANS_PER_TURN.values()) + PER_TURN["a request's span (tracing.continued)"]
    per_turn_on = (
        sum(on[name] * count for name, count in {**PER_TURN, **SPANS_PER_TURN}.items())
        + spans_per_turn * export_beyond_recording_ns
    ) / 1000
    for label, results in (("off", off), ("on", on)):
        for name, ns in results.items():
            print(f"tracing {label:3s} {name:58s} {ns / 1000:8.2f} us")
    print(f"estimated cost per turn: off {per_turn_off:.1f} us, on {per_turn_on:.1f} us (PER_TURN, PER_TURN_ON)")
    if arguments.out:
        arguments.out.write_text(json.dumps({
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
            "ns_per_op": {"off": off, "on": on}, "per_turn_us": {"off": per_turn_off, "on": per_turn_on},
            "per_turn": {**PER_TURN, **SPANS_PER_TURN},
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
