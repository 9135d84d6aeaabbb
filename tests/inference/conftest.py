"""Shared inference fixtures: the real CPU model is loaded once per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from inference.cpu import CpuEngine


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cpu_engine() -> AsyncIterator[CpuEngine]:
    engine = CpuEngine()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
