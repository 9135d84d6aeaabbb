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


def test_a_worker_answers_health_readiness_and_metrics_on_its_metrics_port(tmp_path: Path) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from e2e_server import free_port  # registered by tests/conftest.py

    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "turnlog.cli", "worker", "--role", "decider", "--role", "watchdog",
         "--data-dir", str(tmp_path), "--log-level", "warning", "--metrics-port", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, worker.stdout.read().decode()
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the metrics port never answered"
            time.sleep(0.05)
        ready = httpx.get(f"{base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        # No store and no projector in this process: only what it depends on is checked.
        assert {check["name"]: check["ok"] for check in ready.json()["checks"]} == {"log": True, "roles": True}
        metrics = httpx.get(f"{base_url}/metrics", timeout=10)
        families = {family.name: family for family in text_string_to_metric_families(metrics.text)}
        roles = {sample.labels["role"]: sample.value for sample in families["turnlog_role_up"].samples}
        assert roles == {"decider": 1, "watchdog": 1}
        assert "gen_ai_server_time_to_first_token_seconds" in families  # every layer's metrics are declared
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
