"""From a run's claim to its first delta: what the inference worker adds on top of the engine's time to first token.

One `InferenceWorker` in this process, on the embedded log or on a local Tansu broker (`--kafka`, the tests'
harness), serving the scripted engine with `--prefill-ms` before its first token (and before every token after: the
engine's one pause). Requests are appended one at a time, each waited for to its end; then, per run, from the log's
own records: the claim (`GenerationStarted`) to the first `AssistantDelta`, both by when the worker made them
(`occurred_at`, taken before each append). Without the log's hops in between (the consumer's fetch wait), this is
the worker's own path: the claim's append (a transaction on Kafka), the engine's first token, the first delta.
Reading the engine's first token takes the prefill whatever the worker does; the rest is the worker's.

    .venv/bin/python benchmarks/claim_to_first_delta.py [--kafka] [--runs 100] [--prefill-ms 20]

Run it from the tree to measure: the script imports the worker of the tree it sits in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's worker, not whichever tree the environment was installed from

from commands.catalog import COMMAND_TYPES, FinishRun  # noqa: E402
from events.catalog import EVENT_TYPES  # noqa: E402
from events.runs import AssistantDelta, GenerationStarted, InferenceRequested  # noqa: E402
from events.topics import COMMANDS, RUN_EVENTS, inference_topic  # noqa: E402
from events.values import ChatMessage  # noqa: E402
from inference.scripted import ScriptedEngine  # noqa: E402
from inference.worker import InferenceWorker  # noqa: E402
from kernel.codec import AvroCodec  # noqa: E402
from kernel.envelope import Actor, Envelope  # noqa: E402
from kernel.log import EventLog, OutgoingRecord  # noqa: E402
from lifecycle import tansu_broker  # noqa: E402  (the tests' broker harness)
from turnlog.adapters import build_log  # noqa: E402
from turnlog.settings import Settings  # noqa: E402

ACTOR = Actor(user_id="bench", org_id="org_bench", workspace_id="ws_bench")
CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))


async def finished(log: EventLog, conversation_id: str, *, timeout_s: float = 30.0) -> None:
    follower = log.follow(COMMANDS, key=conversation_id)
    try:
        async with asyncio.timeout(timeout_s):
            async for record in follower:
                if isinstance(CODEC.decode(record.value).payload, FinishRun):
                    return
    finally:
        await follower.aclose()


async def measure(log: EventLog, runs: int, prefill_ms: float) -> list[float]:
    await log.start()
    engine = ScriptedEngine(answer_tokens=4, token_delay_s=prefill_ms / 1000)
    await engine.start()
    worker = InferenceWorker(log=log, codec=CODEC, engine=engine)
    serving = asyncio.create_task(worker.run())
    gaps_ms = []
    try:
        for index in range(runs + 3):  # the first three warm up
            run_id = f"run_bench{index}_{os.getpid()}"
            request = InferenceRequested(
                run_id=run_id, conversation_id=f"conv_{run_id}", turn_seq=2, pool="interactive",
                messages=(ChatMessage(role="user", content="why is the sky blue"),), max_output_tokens=16,
            )
            envelope = Envelope.wrap(request, key=run_id, actor=ACTOR)
            waiting = asyncio.create_task(finished(log, f"conv_{run_id}"))
            await asyncio.sleep(0)  # its follower is in place before the request goes
            await log.append([OutgoingRecord(topic=inference_topic("interactive"), key=run_id, value=CODEC.encode(envelope))])
            await waiting
            if index < 3:
                continue
            events = [CODEC.decode(record.value) for record in await log.read(RUN_EVENTS, key=run_id)]
            claim = next(event for event in events if isinstance(event.payload, GenerationStarted))
            delta = next(event for event in events if isinstance(event.payload, AssistantDelta))
            gaps_ms.append((delta.occurred_at - claim.occurred_at).total_seconds() * 1000)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await engine.close()
        await log.close()
    return gaps_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka", action="store_true", help="on a local Tansu broker, not the embedded log")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--prefill-ms", type=float, default=20.0, help="the scripted engine's pause before a token")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="turnlog-claim-") as directory:
        data_dir = Path(directory)
        if arguments.kafka:
            log_url = tansu_broker(stack, data_dir).log_url
        else:
            log_url = f"sqlite://{data_dir / 'log.db'}"
        log = build_log(Settings(log_url=log_url, data_dir=data_dir))
        gaps_ms = asyncio.run(measure(log, arguments.runs, arguments.prefill_ms))
    gaps_ms.sort()
    result = {
        "log": "kafka (Tansu)" if arguments.kafka else "embedded", "runs": len(gaps_ms), "prefill_ms": arguments.prefill_ms,
        "claim_to_first_delta_ms": {
            "p50": round(statistics.median(gaps_ms), 2), "p10": round(gaps_ms[len(gaps_ms) // 10], 2),
            "p90": round(gaps_ms[len(gaps_ms) * 9 // 10], 2), "min": round(gaps_ms[0], 2), "max": round(gaps_ms[-1], 2),
        },
        "load_average_1m": os.getloadavg()[0],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.out is not None:
        arguments.out.write_text(text)


if __name__ == "__main__":
    main()
