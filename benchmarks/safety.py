"""Safety stages' latency with the offline classifiers: what the inline checks add to a turn.

One turn: the input check of the user turn (PII, profanity, injection), then the context check of five
retrieved passages at once (injection), which is what the stages add before the prompt is built, so to
the time to first token; then, while a 500-word answer streams in 8-word deltas, the output check of
each window (every 256 characters, about 64 tokens, with 64 characters of overlap) and, at the end, the
output check of the whole answer before it is stored. Checks run through `SafetyChecks` with the default
policy of `policies.example.toml`, each classifier on a worker thread or inline as in production.

Passages are 300 words each (1,500 words of context: at least 1,500 tokens with any subword tokenizer),
cut from CPython's own documentation (`pydoc_data.topics`, real technical prose with code in it), a
different five per turn. Also reports each classifier's own time on each text (no thread hop), the
classifiers' load time, and the load average around the run. Prints JSON and writes it to
benchmarks/results/safety-<date>.json (or --out).

    .venv/bin/python benchmarks/safety.py [--turns 50] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

from pydoc_data.topics import topics

from processors.safety.checks import SafetyChecks
from processors.safety.injection import InjectionClassifier
from processors.safety.pii import PiiClassifier
from processors.safety.policies import SafetyPolicies, parse_policies_file
from processors.safety.profanity import ProfanityClassifier
from processors.safety.windows import StreamWindows

ROOT = Path(__file__).resolve().parents[1]
PASSAGE_WORDS = 300
PASSAGES_PER_TURN = 5
ANSWER_WORDS = 500
DELTA_WORDS = 8  # the inference worker coalesces deltas every 8 tokens
WARMUP_TURNS = 5
ORG = "initech"  # no policy of its own: the default, which runs only the offline classifiers
USER_TURN = (
    "I'm reviewing our onboarding guide for new engineers and need a short, accurate explanation of how "
    "Python evaluates assignment statements and comparisons, with the pitfalls that trip people up. "
    "Please cite the passages you use and keep it under five hundred words."
)


def passages(count: int) -> list[str]:
    """`count` passages of PASSAGE_WORDS words, cut in order from the longest documentation topics."""
    cut: list[str] = []
    for name in sorted(topics, key=lambda name: -len(topics[name].split())):
        words = topics[name].split()
        for start in range(0, len(words) - PASSAGE_WORDS + 1, PASSAGE_WORDS):
            cut.append(" ".join(words[start : start + PASSAGE_WORDS]))
            if len(cut) == count:
                return cut
    return cut


def answers(count: int) -> list[str]:
    prose = [" ".join(topics[name].split()[:ANSWER_WORDS]) for name in ("execmodel", "import", "try", "calls", "naming")]
    return [prose[index % len(prose)] for index in range(count)]


def summary(values_ms: list[float]) -> dict:
    ordered = sorted(values_ms)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.5), 3),
        "p90_ms": round(at(0.9), 3),
        "p99_ms": round(at(0.99), 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "stdev_ms": round(statistics.stdev(ordered), 3) if len(ordered) > 1 else 0.0,
    }


async def one_turn(checks: SafetyChecks, context: list[str], answer: str) -> dict:
    started = time.perf_counter()
    await checks.check("input", USER_TURN, org_id=ORG)
    after_input = time.perf_counter()
    await asyncio.gather(*(checks.check("context", passage, org_id=ORG) for passage in context))
    after_context = time.perf_counter()

    windows = StreamWindows()
    window_ms: list[float] = []
    words = answer.split()
    for start in range(0, len(words), DELTA_WORDS):
        window = windows.push(" ".join(words[start : start + DELTA_WORDS]) + " ")
        if window is not None:
            began = time.perf_counter()
            await checks.check("output", window, org_id=ORG, streaming=True)
            window_ms.append((time.perf_counter() - began) * 1000)
    if (rest := windows.rest()) is not None:
        began = time.perf_counter()
        await checks.check("output", rest, org_id=ORG, streaming=True)
        window_ms.append((time.perf_counter() - began) * 1000)
    began = time.perf_counter()
    await checks.check("output", windows.text, org_id=ORG)
    final_ms = (time.perf_counter() - began) * 1000
    return {
        "input_ms": (after_input - started) * 1000,
        "context_ms": (after_context - after_input) * 1000,
        "before_first_token_ms": (after_context - started) * 1000,
        "window_ms": window_ms,
        "final_output_ms": final_ms,
        "inline_total_ms": (after_context - started) * 1000 + final_ms,
    }


def scan_times(classifier, text: str, repeats: int) -> dict:
    classifier.scan(text)
    values = []
    for _ in range(repeats):
        began = time.perf_counter()
        classifier.scan(text)
        values.append((time.perf_counter() - began) * 1000)
    return summary(values)


async def main(turns: int, out: Path) -> dict:
    load_before = os.getloadavg()
    began = time.perf_counter()
    pii = await PiiClassifier.load()
    pii_load_s = time.perf_counter() - began
    began = time.perf_counter()
    profanity = await ProfanityClassifier.load()
    profanity_load_s = time.perf_counter() - began
    injection = InjectionClassifier()
    policies = parse_policies_file((ROOT / "policies.example.toml").read_text(), source="policies.example.toml")
    checks = SafetyChecks(
        policies=SafetyPolicies(version=policies.version, default=policies.default),  # the default alone: offline classifiers only
        classifiers={"pii": pii, "profanity": profanity, "injection": injection},
    )

    total = WARMUP_TURNS + turns
    pool = passages(PASSAGES_PER_TURN * total)
    answer_pool = answers(total)
    measured = []
    for turn in range(total):
        context = [pool[(turn * PASSAGES_PER_TURN + index) % len(pool)] for index in range(PASSAGES_PER_TURN)]
        result = await one_turn(checks, context, answer_pool[turn])
        if turn >= WARMUP_TURNS:
            measured.append(result)

    sample_passage, sample_answer = pool[0], answer_pool[0]
    repeats = max(20, turns)
    report = {
        "benchmark": "safety",
        "date": date.today().isoformat(),
        "turns": turns,
        "policy": f"policies.example.toml [default], version {policies.version}",
        "user_turn": {"words": len(USER_TURN.split()), "chars": len(USER_TURN)},
        "context": {
            "passages": PASSAGES_PER_TURN, "words_each": PASSAGE_WORDS,
            "chars_each_mean": round(statistics.fmean(len(p) for p in pool)),
        },
        "answer": {"words": ANSWER_WORDS, "chars_mean": round(statistics.fmean(len(a) for a in answer_pool)), "delta_words": DELTA_WORDS},
        "windows_per_answer": round(statistics.fmean(len(turn["window_ms"]) for turn in measured), 1),
        "added_before_first_token": summary([turn["before_first_token_ms"] for turn in measured]),
        "input_check": summary([turn["input_ms"] for turn in measured]),
        "context_check_5_passages": summary([turn["context_ms"] for turn in measured]),
        "output_window_check": summary([ms for turn in measured for ms in turn["window_ms"]]),
        "output_windows_per_turn_sum": summary([sum(turn["window_ms"]) for turn in measured]),
        "final_output_check": summary([turn["final_output_ms"] for turn in measured]),
        "inline_total_input_context_final": summary([turn["inline_total_ms"] for turn in measured]),
        "classifier_scan_no_thread_hop": {
            "pii_user_turn": scan_times(pii, USER_TURN, repeats),
            "profanity_user_turn": scan_times(profanity, USER_TURN, repeats),
            "injection_user_turn": scan_times(injection, USER_TURN, repeats),
            "injection_passage": scan_times(injection, sample_passage, repeats),
            "pii_answer": scan_times(pii, sample_answer, repeats),
            "profanity_answer": scan_times(profanity, sample_answer, repeats),
            "injection_answer": scan_times(injection, sample_answer, repeats),
        },
        "load_s": {"pii_presidio": round(pii_load_s, 2), "profanity_model": round(profanity_load_s, 2)},
        "machine": {
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_before": [round(load, 2) for load in load_before],
            "load_average_after": [round(load, 2) for load in os.getloadavg()],
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"safety-{date.today().isoformat()}.json")
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(arguments.turns, arguments.out)), indent=2))
