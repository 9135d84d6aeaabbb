"""`turnlog worker` runs processor roles without the API and stops cleanly on SIGTERM."""

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "turnlog.cli", "worker", "--role", "decider", "--role", "watchdog",
         "--data-dir", str(tmp_path), "--log-level", "warning"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "log.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert worker.poll() is None, worker.stdout.read().decode()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
