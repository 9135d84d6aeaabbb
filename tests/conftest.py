"""Fixtures shared across test folders: real `turnlog serve` processes for end-to-end tests.

The harness lives in `tests/e2e_server.py`. With `--import-mode=importlib` the tests folder is not
on `sys.path`, so it is loaded here by file path and registered as `e2e_server`; test modules then
`import e2e_server` (conftest files are always imported before the modules they cover).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _load_harness():
    name = "e2e_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("e2e_server.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e_server = _load_harness()


@pytest.fixture(scope="session")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    """Scripted engine, 30 tokens at 10 ms each: a run takes ~0.3 s and streams several deltas."""
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("fast") / "data", token_delay_ms=10, answer_tokens=30
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    """Scripted engine, 200 tokens at 50 ms each (~10 s a run): runs stay active long enough to poke."""
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("slow") / "data", token_delay_ms=50, answer_tokens=200
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def embedded_log(tmp_path: Path):
    """A started embedded log in a fresh directory (the real adapter, not a double)."""
    from events.embedded import EmbeddedLog

    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def _load_kafka_harness():
    """`tests/kafka_broker.py`, loaded by path and registered as `kafka_broker` (like `e2e_server`)."""
    name = "kafka_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("kafka_broker.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kafka_harness = _load_kafka_harness()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_harness.TansuBroker]:
    """One Tansu broker for the session (started only by tests that ask for it); tests keep apart by topic prefix."""
    broker = kafka_harness.TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
