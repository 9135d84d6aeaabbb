"""The read-your-writes fence: wait until the read models hold what the log held when a query arrived.

It compares, for the partition of the queried key (in `conversation-events` unless another topic is
named, such as `documents`), the projector group's committed offset with the partition's last record
(transaction markers take offsets but are not records to apply), or with an offset the caller names. Every
runtime commits exactly what the projector applied (processors/faust_runtime.py says why faust needs help). A
process that runs the projector calls `notify()` after each batch, so its own queries wake at once;
an API-only process polls briefly instead.
"""

import asyncio
import logging
import time

from kernel.log import EventLog
from events.topics import CONVERSATION_EVENTS
from kernel.errors import Unavailable

logger = logging.getLogger(__name__)


class ReadYourWritesFence:
    def __init__(self, *, log: EventLog, group: str, poll_s: float = 0.005) -> None:
        self._log = log
        self._group = group
        self._poll_s = poll_s
        self._progress = asyncio.Event()

    def notify(self) -> None:
        """The projector committed a batch: waiters look again."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def caught_up(
        self, *, key: str | None = None, topic: str = CONVERSATION_EVENTS, offset: int | None = None, timeout_s: float = 5.0
    ) -> None:
        """With a key, its partition of `topic` up to `offset` (a write the caller knows it needs, e.g. its own
        command's events) or else up to the partition's last record; without a key, every partition of it."""
        deadline = time.monotonic() + timeout_s
        if key is not None:
            # A known offset spares looking the end up (on Kafka, a read back from the last stable offset),
            # and never waits for later writes of other keys that share the partition.
            target = offset if offset is not None else await self._log.end_offset(topic, key=key)

            async def behind() -> list[tuple[str, int, int]]:
                done = await self._log.committed(group=self._group, topic=topic, key=key)
                return [(f"key {key}'s partition", done, target)] if done < target else []
        else:
            targets = await self._log.end_offsets(topic)

            async def behind() -> list[tuple[str, int, int]]:
                done = await self._log.committed_offsets(group=self._group, topic=topic)
                return [
                    (f"partition {partition}", done.get(partition, -1), end)
                    for partition, end in sorted(targets.items())
                    if done.get(partition, -1) < end
                ]

        while lagging := await behind():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # The operator's side of the 503: which partition held it, and how far the projector had come.
                logger.warning(
                    "read-your-writes fence on %s gave up after %g s: group %s had committed %s",
                    topic,
                    timeout_s,
                    self._group,
                    ", ".join(f"{where} through {done} of {end}" for where, done, end in lagging),
                )
                raise Unavailable(detail="the read models are catching up with the log; retry shortly", retry_after_s=1)
            progress = self._progress
            try:
                async with asyncio.timeout(min(self._poll_s, remaining)):  # wait_for can swallow a cancel on 3.11
                    await progress.wait()
            except TimeoutError:
                pass
