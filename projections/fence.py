"""Read-your-writes fences: wait until the read models hold what the log held when a query arrived."""

import asyncio
import time

from events.log import EventLog
from events.topics import CONVERSATION_EVENTS
from turnlog.errors import Unavailable


class CommittedOffsetFence:
    """For API processes without the projector: compare the projector group's committed offset
    with the end of the key's partition, polling briefly (the in-process projector notifies instead)."""

    def __init__(self, *, log: EventLog, group: str, poll_s: float = 0.005) -> None:
        self._log = log
        self._group = group
        self._poll_s = poll_s

    async def caught_up(self, *, key: str | None = None, timeout_s: float = 5.0) -> None:
        target = await self._log.end_offset(CONVERSATION_EVENTS, key=key)
        deadline = time.monotonic() + timeout_s
        while await self._log.committed(group=self._group, topic=CONVERSATION_EVENTS, key=key) < target:
            if time.monotonic() > deadline:
                raise Unavailable(detail="the read models are catching up with the log; retry shortly", retry_after_s=1)
            await asyncio.sleep(self._poll_s)
