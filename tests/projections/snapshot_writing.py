"""Helpers of the snapshot tests: a snapshot writer running on a log, and a log that notes where its reads start."""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import replace

from kernel.codec import AvroCodec
from kernel.runtime import Processor, run_processor

DEADLINE_S = 30.0


class Writing:
    """A snapshot writer, running; `through(offset)` returns once its group has committed past `offset`."""

    def __init__(self) -> None:
        self.committed = -1
        self._moved = asyncio.Event()

    def on_committed(self, records) -> None:
        self.committed = max(self.committed, *(record.offset for record in records))
        self._moved.set()

    async def through(self, offset: int) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while self.committed < offset:
                self._moved.clear()
                await self._moved.wait()


@asynccontextmanager
async def writing(processor: Processor, *, log, codec: AvroCodec):
    """The writer, running until the block ends; its batches linger a little only (the tests wait for its commits)."""
    watched = Writing()
    running = replace(processor, on_committed=watched.on_committed, linger_s=0.05)
    task = asyncio.create_task(run_processor(running, log=log, codec=codec))
    try:
        yield watched
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class ReadsRecorded:
    """A log, noting where each read by key starts."""

    def __init__(self, log) -> None:
        self._log = log
        self.afters: list[int] = []

    async def partition_of(self, topic: str, *, key: str) -> int:
        return await self._log.partition_of(topic, key=key)

    async def read(self, topic: str, *, key: str, after: int = -1, **bounds):
        self.afters.append(after)
        return await self._log.read(topic, key=key, after=after, **bounds)

    def __getattr__(self, name: str):  # the rest of the log, unrecorded
        return getattr(self._log, name)
