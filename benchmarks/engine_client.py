"""CPU per streamed token of the HTTP client that reads an engine's answer: httpx against aiohttp.

Both read the same streamed chat completions (64 tokens, one SSE chunk each) from
`benchmarks/fake_sglang_server.py`, one request at a time, on uvloop, and parse every chunk's JSON as
the OpenAI-compatible engine does. `--decode-ms 0` sends the chunks as fast as it can (several arrive per
read); `--decode-ms 20` paces them as a GPU does, so each chunk is a wake-up of its own, which is what a
streamed answer costs turnlog. The clients alternate, `--rounds` times each; CPU is this process's.

    .venv/bin/python benchmarks/engine_client.py [--decode-ms 20] [--requests 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

import aiohttp
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from fake_sglang_server import FakeSglangServer, TimingModel  # noqa: E402

ANSWER_TOKENS = 64


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def body(model: str) -> dict:
    return {"model": model, "stream": True, "max_tokens": ANSWER_TOKENS, "messages": [{"role": "user", "content": "hi"}]}


async def read_with_httpx(url: str, model: str, requests: int) -> int:
    chunks = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(requests):
            async with client.stream("POST", url, json=body(model)) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])
                        chunks += 1
    return chunks


async def read_with_aiohttp(url: str, model: str, requests: int) -> int:
    chunks = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            async with session.post(url, json=body(model)) as response:
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])
                        chunks += 1
    return chunks


async def measure(url: str, model: str, requests: int, rounds: int) -> dict[str, list[float]]:
    clients = {"httpx": read_with_httpx, "aiohttp": read_with_aiohttp}
    per_chunk_us: dict[str, list[float]] = {name: [] for name in clients}
    for name, read in clients.items():
        await read(url, model, 1)  # connections and imports warm
    for _ in range(rounds):
        for name, read in clients.items():
            started = cpu_s()
            chunks = await read(url, model, requests)
            per_chunk_us[name].append((cpu_s() - started) / chunks * 1e6)
    return per_chunk_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode-ms", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=4, help="streamed answers per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    timing = TimingModel(decode_ms=arguments.decode_ms, answer_tokens=ANSWER_TOKENS)
    with FakeSglangServer(timing=timing) as server:
        url = f"{server.base_url}/chat/completions"
        results = uvloop.run(measure(url, server.model, arguments.requests, arguments.rounds))
    report = {
        name: {"median_us_per_chunk": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}
        for name, values in results.items()
    }
    report["httpx_over_aiohttp"] = round(report["httpx"]["median_us_per_chunk"] / report["aiohttp"]["median_us_per_chunk"], 2)
    print(json.dumps({"decode_ms": arguments.decode_ms, **report}, indent=2))


if __name__ == "__main__":
    main()
