"""CPU per streamed token: turnlog's own CPU (the server process, all its threads) over the tokens it streamed.

For each pacing (`--decode-ms`, the fake server's time between tokens) a fresh fake OpenAI-compatible
server (`benchmarks/fake_sglang_server.py`, 64-token answers by default) and a fresh `turnlog serve
--engine openai-compatible` on the embedded log; at each concurrency level a closed loop of streams, each
turn a new conversation's first (created beforehand, untimed and outside the CPU window), read to its end
over SSE. CPU is read from /proc for the turnlog process only (the fake server and this load generator
are apart), so the figure is what the whole path costs per token: POST, decider, prompt builder, worker,
log appends, SSE. `--profile DIR` runs the server under cProfile (slower: compare only profiles).

    .venv/bin/python benchmarks/stream_cpu.py [--decode-ms 0,20] [--streams 1,16,64] [--turns-per-level 48]
        [--answer-tokens 64] [--profile DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_sglang_server import FakeSglangServer, TimingModel
from lifecycle import Client, cpu_seconds
from serving import MODEL, TurnlogServer, load_average, short_prompt, source_state, stream_levels, turnlog_http, turns_for


class ProfiledServer(TurnlogServer):
    """`turnlog serve` under cProfile, its profile written to `profile_path` when it stops."""

    def __init__(self, *, profile_path: Path, **keywords) -> None:
        self._profile_path = profile_path
        super().__init__(**keywords)
        # Replace the plain process the base class started with a profiled one on the same arguments.
        arguments = self.process.args
        self.process.terminate()
        self.process.wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", str(profile_path), "-m", "turnlog.cli", *arguments[3:]],
            stdout=self._log_file, stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # cProfile writes its file on an orderly exit
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log_file.close()


async def measure(server: TurnlogServer, levels: list[int], turns_per_level: int, answer_tokens: int) -> dict:
    results = {}
    async with turnlog_http(server.url) as http:
        await server.wait_healthy(http)
        client = Client(http, server.token)
        for index in range(3):  # warm-up
            await client.turn(await client.conversation(), short_prompt(index))
        for streams in levels:
            turns = turns_for(streams, turns_per_level)
            conversations = [await client.conversation() for _ in range(turns)]
            events = 0

            async def stream(stream_index: int) -> None:
                nonlocal events
                for round_index in range(turns // streams):
                    index = round_index * streams + stream_index
                    _, _, streamed = await client.turn(conversations[index], short_prompt(index))
                    events += streamed

            load_before = load_average()
            cpu_before, started = cpu_seconds([server.process.pid]), time.perf_counter()
            await asyncio.gather(*(stream(index) for index in range(streams)))
            cpu, elapsed = cpu_seconds([server.process.pid]) - cpu_before, time.perf_counter() - started
            tokens = turns * answer_tokens
            results[str(streams)] = {
                "turns": turns, "tokens": tokens, "sse_events": events, "seconds": round(elapsed, 2),
                "cpu_s": round(cpu, 2), "cpu_ms_per_token": round(cpu * 1000 / tokens, 3),
                "cpu_ms_per_turn": round(cpu * 1000 / turns, 2),
                "load_average_1m": [load_before, load_average()],
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode-ms", default="0,20", help="the fake server's time between tokens, per run")
    parser.add_argument("--streams", type=stream_levels, default="1,16,64", help="concurrency levels, each once")
    parser.add_argument("--turns-per-level", type=int, default=48)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the server per pacing into this folder")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    levels = arguments.streams
    result: dict = {"note": arguments.note, "source": source_state(), "cores": os.cpu_count(), "pacings": {}}
    for decode_ms in [float(value) for value in arguments.decode_ms.split(",")]:
        timing = TimingModel(decode_ms=decode_ms, answer_tokens=arguments.answer_tokens)
        with FakeSglangServer(timing, model=MODEL) as fake:
            server_options = {"engine_url": fake.base_url, "max_output_tokens": arguments.answer_tokens,
                              "context_tokens": 32_768, "pools_text": None}
            if arguments.profile is not None:
                arguments.profile.mkdir(parents=True, exist_ok=True)
                server = ProfiledServer(profile_path=arguments.profile / f"serve-{decode_ms:g}ms.prof", **server_options)
            else:
                server = TurnlogServer(**server_options)
            try:
                result["pacings"][f"{decode_ms:g}ms"] = asyncio.run(
                    measure(server, levels, arguments.turns_per_level, arguments.answer_tokens))
            finally:
                server.stop()
                server.remove()
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.out is not None:
        arguments.out.write_text(text)
    print("| pacing | streams | turns | CPU ms/token | CPU ms/turn | s | load 1m |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for pacing, levels_measured in result["pacings"].items():
        for streams, level in levels_measured.items():
            print(f"| {pacing} | {streams} | {level['turns']} | {level['cpu_ms_per_token']} | {level['cpu_ms_per_turn']} |"
                  f" {level['seconds']} | {level['load_average_1m'][0]:.1f}-{level['load_average_1m'][1]:.1f} |",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
