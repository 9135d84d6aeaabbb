"""Prompt-building cost per turn: `build_prompt` over 10-, 100- and 1,000-turn conversations.

Measures the pure assembly the prompt builder runs for every run (branch walk, token counting,
budget fitting, manifest), with the scripted engine's word tokenizer and with SmolLM2's real
tokenizer, with and without a rolling summary, at the default 8k-token context. Prints JSON and
writes it to benchmarks/results/prompt_building-<date>.json.

    .venv/bin/python benchmarks/prompt_building.py [--repeats 200]
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path

from events.conversation import AssistantTurnFinished, ConversationSummarized, RunRequested, TurnSubmitted
from kernel.envelope import Envelope
from kernel.envelope import Actor
from events.values import ContentPart, SummaryFact, Usage
from inference.tokenizers import HuggingFaceTokenizer, WordTokenizer
from processors.prompting import PromptPolicy, build_prompt, tenant_salt
from processors.transcripts import Transcript, evolve_transcript

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ACTOR = Actor(user_id="ana", org_id="acme", workspace_id="research")
USER_TEXT = "Could you explain how the tide tables for the harbour are computed, and what changes them in winter?"
ANSWER_TEXT = (
    "Tide tables come from harmonic analysis: the observed water level is fitted as a sum of tidal "
    "constituents driven by the moon and the sun, then predicted forward. Winter storms and pressure "
    "changes add surges that the tables do not include."
)


def conversation(turns: int) -> tuple[Transcript, RunRequested]:
    transcript = Transcript()
    for seq in range(1, turns + 1):
        if seq % 2:
            event = TurnSubmitted(conversation_id="c", turn_seq=seq, parent_turn_seq=seq - 1 or None,
                                  content=(ContentPart(type="text", text=f"{USER_TEXT} ({seq})"),), submitted_at=NOW)
        else:
            event = AssistantTurnFinished(conversation_id="c", run_id=f"run_{seq}", turn_seq=seq, parent_turn_seq=seq - 1,
                                          state="completed", content=(ContentPart(type="text", text=ANSWER_TEXT),),
                                          usage=Usage(), mode="interactive", requested_at=NOW, finished_at=NOW)
        transcript = evolve_transcript(transcript, Envelope.wrap(event, key="c", actor=ACTOR))
    last_user = turns if turns % 2 else turns - 1
    run = RunRequested(conversation_id="c", run_id="run_next", turn_seq=turns + 1, parent_turn_seq=last_user,
                       mode="interactive", request_fingerprint="f", created_turn_seq=last_user, requested_at=NOW)
    return transcript, run


def summary_for(turns: int) -> ConversationSummarized:
    facts = tuple(SummaryFact(turn_seq=seq, text=f"My harbour number {seq} is in Porto.") for seq in range(1, min(turns, 40), 2))
    return ConversationSummarized(conversation_id="c", version=3, through_turn_seq=max(1, turns - 12), facts=facts, summarized_at=NOW)


def measure(transcript, run, tokenizer, summary, repeats: int) -> dict:
    policy = PromptPolicy()
    salt = tenant_salt("acme")
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        prompt = build_prompt(transcript, run, policy, tokenizer=tokenizer, summary=summary, salt=salt)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 3),
        "min_ms": round(timings[0], 3),
        "max_ms": round(timings[-1], 3),
        "prompt_tokens": prompt.manifest.prompt_tokens,
        "turns_in_prompt": len(prompt.manifest.turn_seqs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    arguments = parser.parse_args()
    tokenizers = {"words": WordTokenizer(), "smollm2": HuggingFaceTokenizer.smollm2()}
    results = []
    for turns in (10, 100, 1000):
        transcript, run = conversation(turns)
        for name, tokenizer in tokenizers.items():
            for summarized in (False, True):
                summary = summary_for(turns) if summarized else None
                row = {"turns": turns, "tokenizer": name, "summary": summarized,
                       **measure(transcript, run, tokenizer, summary, arguments.repeats)}
                results.append(row)
                print(json.dumps(row))
    report = {
        "benchmark": "prompt_building",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average": os.getloadavg(),
        "repeats": arguments.repeats,
        "results": results,
    }
    out = Path(__file__).parent / "results" / f"prompt_building-{date.today()}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
