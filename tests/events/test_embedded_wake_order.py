"""A commit wakes the readers of its records in the order the records were written (the embedded log).

A turn's acceptance writes its conversation's events before the reply to its command: the prompt builder, which the
first token waits for, must get the event loop before the reply's sender does.
"""

import asyncio
from pathlib import Path

import pytest

from events.embedded import EmbeddedLog
from kernel.log import OutgoingRecord

TOPICS = [f"topic-{letter}" for letter in "abcdef"]


@pytest.mark.parametrize("durable", [True, False])
async def test_readers_wake_in_the_order_their_records_were_written(tmp_path: Path, durable: bool) -> None:
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    woken: list[str] = []

    async def read_one(topic: str, key: str | None) -> None:
        async for _ in log.follow(topic, key=key):
            woken.append(topic)
            return

    # Readers wait first, registered in the opposite order of the writes, half of them for a key.
    readers = [asyncio.create_task(read_one(topic, "k" if index % 2 else None)) for index, topic in enumerate(reversed(TOPICS))]
    try:
        # Each reader reads, finds nothing and waits: the append below must find all of them waiting.
        def waiting() -> int:
            return sum(len(waiters) for waiters in log._waiters.values())

        for _ in range(100):
            if waiting() == len(TOPICS):
                break
            await asyncio.sleep(0)  # a yield, not a timed wait: the readers register in their first steps
        assert waiting() == len(TOPICS)
        await log.append([OutgoingRecord(topic=topic, key="k", value=b"v") for topic in TOPICS], durable=durable)
        await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
    finally:
        for reader in readers:
            reader.cancel()
        await log.close()

    assert woken == TOPICS
