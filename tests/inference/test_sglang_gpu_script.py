"""scripts/sglang_gpu.py, run for real on the scripted engine: the GPU measurement path minus the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_measures_turns_end_to_end_on_any_engine(tmp_path) -> None:
    out = tmp_path / "figures.json"
    finished = subprocess.run(
        [sys.executable, "scripts/sglang_gpu.py", "--engine", "scripted", "--turns", "2", "--concurrency", "2",
         "--quiet", "--out", str(out), "--startup-timeout-s", "60", "--", "--token-delay-ms", "2", "--answer-tokens", "12"],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "summary: time to first token" in finished.stdout
    figures = json.loads(out.read_text())
    assert figures["engine"] == "scripted"
    turns = figures["sequential"] + figures["concurrent"]
    assert len(turns) == 4
    assert all(turn["status"] == "assistant.completed" and turn["output_tokens"] == 12 for turn in turns)
    assert all(0 < turn["time_to_first_token_s"] < turn["end_to_end_s"] for turn in turns)
    assert figures["decode_tokens_per_s_median"] > 0 and figures["concurrent_output_tokens_per_s"] > 0
    # The second turn carries the first one's history: a longer prompt.
    assert figures["sequential"][1]["prompt_tokens"] > figures["sequential"][0]["prompt_tokens"]
