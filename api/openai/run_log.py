"""A run's events read from the log, as the REST stream reads them: followed to its RunFinished, or read once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from api.access import read_patiently, run_records
from api.context import ApiContext
from events.runs import RunFinished
from events.topics import RUN_EVENTS
from kernel.codec import UndecodableMessage
from kernel.envelope import Envelope


async def follow_run(context: ApiContext, run_id: str) -> AsyncIterator[object]:
    """The run's events from its first to its RunFinished; closing this stops only the reading, never the run.

    It follows from the run's first record, found through the id's minting time: following from the partition's start
    would read (on Kafka) days of other runs' deltas, with a consumer of its own instead of the partition's shared one.
    """
    first = await read_patiently(context, RUN_EVENTS, key=run_id, limit=1)
    follower = context.log.follow(RUN_EVENTS, key=run_id, after=first[0].offset - 1 if first else -1)
    try:
        async for record in follower:
            try:
                event = context.codec.decode(record.value).payload
            except UndecodableMessage:
                continue
            yield event
            if isinstance(event, RunFinished):
                return
    finally:
        await follower.aclose()


async def read_run(context: ApiContext, run_id: str) -> list[Envelope]:
    """The run's events on the log now (through its `RunFinished`), in their envelopes."""
    envelopes = []
    for record in await run_records(context, run_id):
        try:
            envelopes.append(context.codec.decode(record.value))
        except UndecodableMessage:
            continue
    return envelopes


async def with_keepalives(events: AsyncIterator[object], *, every_s: float) -> AsyncIterator[object | None]:
    """The events, with None whenever `every_s` passes without one (for an SSE comment that keeps proxies open)."""
    next_event: asyncio.Task | None = None
    try:
        while True:
            if next_event is None:
                next_event = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({next_event}, timeout=every_s)
            if not done:
                yield None
                continue
            finished, next_event = next_event, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        if next_event is not None:
            next_event.cancel()
            await asyncio.gather(next_event, return_exceptions=True)
        await events.aclose()
