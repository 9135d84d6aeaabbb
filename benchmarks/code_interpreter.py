"""code_interpreter benchmark: what one call costs, the sandbox's start included, against the same code run bare.

Runs N calls of `print(1)` and of a numpy sum over 10^6 elements through `CodeInterpreterTool.call` (the whole
call: the per-call directory, the sandbox's start, the run, reading back, the result text), one after another,
then the same programs as `python -c` without a sandbox, with the same interpreter, site-packages and BLAS
threads. The sandbox's overhead is the difference of the medians. Prints a summary and writes JSON (--out).

    python benchmarks/code_interpreter.py [--calls 30] [--out results.json]
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from kernel.envelope import Actor
from processors.tools.code_interpreter import CODE_INTERPRETER, CodeInterpreterTool
from processors.tools.sandbox import ENVIRONMENT, Sandbox

ACTOR = Actor(user_id="bench", org_id="bench", workspace_id="bench")
PROGRAMS = {
    "print(1)": "print(1)",
    "numpy sum of 10^6": "import numpy\nprint(int(numpy.arange(10**6).sum()))",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "stdev_ms": round(statistics.pstdev(values) * 1000, 1),
    }


async def sandboxed(tool: CodeInterpreterTool, code: str, calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await tool.call(CODE_INTERPRETER, {"code": code}, actor=ACTOR, idempotency_key="bench", timeout_s=60)
        durations.append(time.perf_counter() - started)
        if result.status != "completed":
            raise RuntimeError(f"the call did not complete: {result.content}")
    return durations


async def bare(code: str, calls: int) -> list[float]:
    """The same program as `python -c`, without a sandbox: the venv's interpreter (so the same packages), with the
    sandbox's one BLAS thread (else numpy's start differs by the threads it spawns, not by the sandbox)."""
    environment = {**os.environ, **{name: ENVIRONMENT[name] for name in ENVIRONMENT if name.endswith("_NUM_THREADS")}}
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment
        )
        await process.communicate()
        durations.append(time.perf_counter() - started)
        if process.returncode != 0:
            raise RuntimeError(f"{code!r} failed bare")
    return durations


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    tool = CodeInterpreterTool(sandbox=Sandbox())
    await tool.start()
    if tool.unavailable(actor=ACTOR):
        raise SystemExit(tool.unavailable(actor=ACTOR)[CODE_INTERPRETER])
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for name, code in PROGRAMS.items():
        await sandboxed(tool, code, 3)  # warm the page cache
        await bare(code, 3)
        in_sandbox = summary(await sandboxed(tool, code, args.calls))
        without = summary(await bare(code, args.calls))
        results[name] = {
            "sandboxed": in_sandbox,
            "bare": without,
            "overhead_p50_ms": round(in_sandbox["p50_ms"] - without["p50_ms"], 1),
            "ratio_p50": round(in_sandbox["p50_ms"] / without["p50_ms"], 2),
        }
    report = {
        "benchmark": "code_interpreter",
        "calls": args.calls,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "as_root": os.geteuid() == 0},
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
        "results": results,
    }
    for name, figures in results.items():
        sandboxed_ms, bare_ms = figures["sandboxed"], figures["bare"]
        print(
            f"{name:>18}: sandboxed p50 {sandboxed_ms['p50_ms']} ms p99 {sandboxed_ms['p99_ms']} ms "
            f"(min {sandboxed_ms['min_ms']}, max {sandboxed_ms['max_ms']}); bare p50 {bare_ms['p50_ms']} ms "
            f"p99 {bare_ms['p99_ms']} ms; overhead p50 {figures['overhead_p50_ms']} ms (x{figures['ratio_p50']})"
        )
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
