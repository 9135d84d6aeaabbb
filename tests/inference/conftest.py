"""Shared inference fixtures: the real CPU model (loaded once per session), the fake SGLang engine
and the OpenAI-compatible test server, and the adapters over them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import load_test_module

from inference.cpu import CpuEngine
from inference.openai_compatible import OpenAICompatibleEngine
from inference.sglang import SglangEngine


fake_sglang = load_test_module("fake_sglang", beside=Path(__file__))
openai_server = load_test_module("openai_server", beside=Path(__file__))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cpu_engine() -> AsyncIterator[CpuEngine]:
    engine = CpuEngine()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def fake_sglang_engine() -> "fake_sglang.FakeSglangEngine":
    return fake_sglang.FakeSglangEngine()


@pytest_asyncio.fixture(loop_scope="session")
async def sglang_engine(fake_sglang_engine) -> AsyncIterator[SglangEngine]:
    """The SGLang adapter over the fake engine (a real sglang.Engine needs a GPU)."""
    engine = SglangEngine(engine_factory=lambda: fake_sglang_engine)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(scope="session")
def openai_compatible_server() -> Iterator["openai_server.OpenAICompatibleServer"]:
    server = openai_server.OpenAICompatibleServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chat_server(openai_compatible_server) -> Iterator["openai_server.OpenAICompatibleServer"]:
    """The session's server, its behaviour back to normal for each test."""
    openai_compatible_server.reset()
    yield openai_compatible_server
    openai_compatible_server.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def openai_compatible_engine(chat_server) -> AsyncIterator[OpenAICompatibleEngine]:
    engine = OpenAICompatibleEngine(base_url=chat_server.base_url, model=chat_server.model, read_timeout_s=10.0)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
