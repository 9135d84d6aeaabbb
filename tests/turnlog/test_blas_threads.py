"""Server processes hold numpy's BLAS to one thread, so no idle BLAS worker spins after a vector search."""

import json
import os
import subprocess
import sys

PROBE = """
import json, os, time
import numpy as np
from threadpoolctl import threadpool_info
from turnlog.blas_threads import limit_blas_threads
limited = limit_blas_threads()
matrix = np.random.default_rng(0).standard_normal((20_000, 384), dtype=np.float32)
query = np.ones(384, dtype=np.float32)
for _ in range(5):
    matrix @ query
before = os.times()
time.sleep(0.2)
after = os.times()
print(json.dumps({
    "limited": limited,
    "threads": [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"],
    "cpu_while_asleep_ms": (after.user + after.system - before.user - before.system) * 1000,
}))
"""


def probe(**environment: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **environment}, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_blas_runs_on_one_thread_and_nothing_spins_after_a_product() -> None:
    measured = probe()
    assert measured["limited"] is True
    assert measured["threads"] and set(measured["threads"]) == {1}
    # Asleep, a process with no spinning worker uses no CPU (os.times counts in 10 ms ticks): a spinning
    # OpenBLAS worker used a core for ~0.1 s after each product here.
    assert measured["cpu_while_asleep_ms"] <= 20


def test_the_operator_s_choice_stands() -> None:
    measured = probe(OPENBLAS_NUM_THREADS="2")
    assert measured["limited"] is False
    assert set(measured["threads"]) == {2}
