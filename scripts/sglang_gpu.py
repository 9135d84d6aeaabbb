"""The real SGLang path on a GPU machine: `turnlog serve --engine sglang` on a model, turns over HTTP + SSE.

Starts turnlog (every role in one process, embedded log and read models) with the SGLang offline
engine on `--model`, waits until it is healthy (the model downloads, loads and captures its CUDA
graphs first: minutes), then in one conversation posts `--turns` turns one after another and streams
each; with `--concurrency N`, also N conversations at once. Per turn it prints the time to first
token (POST sent -> first `assistant.delta` at the client) and the decode rate (output tokens after
the first / time from first to last delta), then a summary; `--out` writes the figures as JSON.

    pip install "sglang[all]"   # beside turnlog, on the GPU machine (or inside an lmsysorg/sglang image)
    python scripts/sglang_gpu.py --model Qwen/Qwen2.5-0.5B-Instruct [--turns 3] [--concurrency 8]

Any engine works (`--engine openai-compatible -- --engine-url http://127.0.0.1:30000` for SGLang's
own server; `--engine scripted` to try the script without a GPU); arguments after `--` go to
`turnlog serve` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))  # run from a checkout, installed or not

from api.auth import issue_token, load_or_create_secret  # noqa: E402
from kernel.sse import iter_sse

QUESTIONS = (
    "Explain in a few paragraphs how bread dough rises, and why kneading matters.",
    "Now write a short poem about that, in the voice of a dragon who bakes.",
    "Summarise both answers in three bullet points.",
)


@dataclass(frozen=True, kw_only=True)
class TurnFigures:
    time_to_first_token_s: float
    output_tokens: int
    prompt_tokens: int
    decode_tokens_per_s: float | None  # output tokens after the first, over first->last delta
    end_to_end_s: float
    deltas: int
    status: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_turnlog(*, data_dir: Path, port: int, engine: str, model: str | None, max_output_tokens: int,
                  serve_arguments: list[str], log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "turnlog.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
        "--engine", engine, "--max-output-tokens", str(max_output_tokens), "--log-level", "info",
    ]
    if model:
        command += ["--engine-model", model]
    command += serve_arguments
    print(f"starting: {' '.join(command)}\n  (log: {log_path})", flush=True)
    with open(log_path, "wb") as log:
        # A session of its own: SGLang's scheduler and detokenizer processes go down with it.
        return subprocess.Popen(command, cwd=REPOSITORY_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def wait_healthy(process: subprocess.Popen, base_url: str, *, timeout_s: float, log_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"turnlog exited with {process.returncode}; its log:\n{log_path.read_text()[-6000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"turnlog was not healthy after {timeout_s:.0f} s; its log:\n{log_path.read_text()[-6000:]}")


def stop(process: subprocess.Popen) -> None:
    # SGLang takes SIGTERM over (it drains its requests, then ends the process tree itself).
    with_group = os.getpgid(process.pid)
    os.killpg(with_group, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(with_group, signal.SIGKILL)
        process.wait(timeout=10)


async def one_turn(client: httpx.AsyncClient, conversation_id: str, text: str, *, show: bool) -> TurnFigures:
    sent = time.perf_counter()
    response = await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": [{"type": "text", "text": text}]})
    response.raise_for_status()
    first = last = None
    deltas, status, usage = 0, "open", {}
    async with client.stream("GET", response.json()["streamUrl"]) as stream:
        async for event in iter_sse(stream.aiter_lines()):
            if event.event == "assistant.delta":
                last = time.perf_counter()
                first = first or last
                deltas += 1
                if show:
                    print(event.json()["text"], end="", flush=True)
            elif event.event in ("assistant.completed", "run.failed", "run.cancelled"):
                status = event.event
                usage = event.json().get("usage") or {}
                break
    ended = time.perf_counter()
    if show:
        print()
    if first is None:
        raise SystemExit(f"the run streamed no text ({status}); see the turnlog log")
    output_tokens = int(usage.get("outputTokens") or 0)
    decode_window = (last or first) - first
    return TurnFigures(
        time_to_first_token_s=first - sent,
        output_tokens=output_tokens,
        prompt_tokens=int(usage.get("promptTokens") or 0),
        decode_tokens_per_s=(output_tokens - 1) / decode_window if output_tokens > 1 and decode_window > 0 else None,
        end_to_end_s=ended - sent,
        deltas=deltas,
        status=status,
    )


def describe(figures: TurnFigures) -> str:
    rate = f"{figures.decode_tokens_per_s:7.1f} tok/s" if figures.decode_tokens_per_s else "      - tok/s"
    return (f"TTFT {figures.time_to_first_token_s * 1000:8.1f} ms | decode {rate} | {figures.output_tokens:4d} out, "
            f"{figures.prompt_tokens:5d} prompt tokens | {figures.deltas:4d} deltas | {figures.end_to_end_s:6.2f} s | {figures.status}")


async def measure(base_url: str, token: str, *, turns: int, concurrency: int, show: bool) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=httpx.Timeout(600.0)) as client:

        async def conversation() -> str:
            response = await client.post("/v1/conversations", json={"workspaceId": "ws_gpu"})
            response.raise_for_status()
            return response.json()["conversationId"]

        print("\nwarm-up turn (not counted)")
        print("  " + describe(await one_turn(client, await conversation(), "Say hello in five words.", show=False)))

        print(f"\n{turns} turns in one conversation (later turns reuse the earlier ones' KV cache)")
        sequential = []
        conversation_id = await conversation()
        for index in range(turns):
            question = QUESTIONS[index % len(QUESTIONS)]
            print(f"> {question}")
            figures = await one_turn(client, conversation_id, question, show=show)
            sequential.append(figures)
            print(f"  turn {index + 1}: {describe(figures)}")

        concurrent: list[TurnFigures] = []
        wall = 0.0
        if concurrency > 1:
            print(f"\n{concurrency} conversations at once, one turn each")
            conversations = [await conversation() for _ in range(concurrency)]
            started = time.perf_counter()
            concurrent = list(await asyncio.gather(*(one_turn(client, c, QUESTIONS[0], show=False) for c in conversations)))
            wall = time.perf_counter() - started
            for figures in concurrent:
                print("  " + describe(figures))

    summary = {
        "sequential": [asdict(figures) for figures in sequential],
        "time_to_first_token_ms_median": statistics.median(f.time_to_first_token_s for f in sequential) * 1000,
        "decode_tokens_per_s_median": statistics.median(
            [f.decode_tokens_per_s for f in sequential if f.decode_tokens_per_s] or [0.0]
        ),
    }
    if concurrent:
        summary["concurrent"] = [asdict(figures) for figures in concurrent]
        summary["concurrent_output_tokens_per_s"] = sum(f.output_tokens for f in concurrent) / wall
        summary["concurrent_time_to_first_token_ms_median"] = statistics.median(
            f.time_to_first_token_s for f in concurrent
        ) * 1000
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="model path or Hugging Face id")
    parser.add_argument("--engine", default="sglang", help="turnlog engine (sglang unless you are trying the script)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="conversations at once in the second phase (1: skip)")
    parser.add_argument("--max-output-tokens", type=int, default=256)
    parser.add_argument("--startup-timeout-s", type=float, default=1200.0)
    parser.add_argument("--quiet", action="store_true", help="do not print the answers")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("serve_arguments", nargs="*", help="after `--`: more `turnlog serve` arguments")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="turnlog-gpu-") as scratch:
        data_dir, port = Path(scratch) / "data", free_port()
        log_path = Path(scratch) / "turnlog.log"
        process = start_turnlog(
            data_dir=data_dir, port=port, engine=arguments.engine,
            model=arguments.model if arguments.engine in ("sglang", "openai-compatible") else None,
            max_output_tokens=arguments.max_output_tokens, serve_arguments=arguments.serve_arguments, log_path=log_path,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            startup_s = wait_healthy(process, base_url, timeout_s=arguments.startup_timeout_s, log_path=log_path)
            print(f"healthy after {startup_s:.1f} s (model load included)")
            token = issue_token(load_or_create_secret(data_dir), user_id="u_gpu", org_id="org_gpu", workspace_ids=["ws_gpu"])
            summary = asyncio.run(
                measure(base_url, token, turns=arguments.turns, concurrency=arguments.concurrency, show=not arguments.quiet)
            )
        finally:
            stop(process)
    summary = {"engine": arguments.engine, "model": arguments.model, "startup_s": startup_s, **summary}
    print(
        f"\nsummary: time to first token {summary['time_to_first_token_ms_median']:.1f} ms (median),"
        f" decode {summary['decode_tokens_per_s_median']:.1f} tokens/s (median, one stream)"
        + (f", {summary['concurrent_output_tokens_per_s']:.1f} tokens/s over {arguments.concurrency} streams"
           if "concurrent_output_tokens_per_s" in summary else "")
    )
    if arguments.out:
        arguments.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
