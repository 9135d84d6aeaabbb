"""A dependency that is down is not poison: the runtime retries the batch until it answers, and dead-letters nothing."""

import asyncio
from collections.abc import Sequence

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.runs import RunHeartbeat
from kernel.codec import AvroCodec
from kernel.dead_letters import DEAD_LETTERS
from kernel.envelope import Actor, Envelope
from kernel.errors import Unavailable
from kernel.log import OutgoingRecord
from kernel.runtime import MAX_ATTEMPTS, Delivery, Processor, encode, run_processor

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")


def beat(run_id: str) -> OutgoingRecord:
    return encode(CODEC, Envelope.wrap(RunHeartbeat(run_id=run_id, worker_id="w"), key=run_id, actor=ACTOR), topic="in")


async def test_a_store_that_is_down_is_retried_until_it_is_back_and_nothing_is_dead_lettered(embedded_log: EmbeddedLog) -> None:
    log = embedded_log
    outage = {"failures_left": MAX_ATTEMPTS * 3}  # longer than any poison message is given
    seen: list[str] = []

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        if outage["failures_left"] > 0:
            outage["failures_left"] -= 1
            raise Unavailable(detail="the store is down", retry_after_s=1)
        seen.extend(delivery.envelope.payload.run_id for delivery in deliveries)
        return []

    await log.append([beat("a"), beat("b"), beat("c")])
    task = asyncio.create_task(
        run_processor(Processor(group="folds", topics=("in",), react=react), log=log, codec=CODEC, retry_delay_s=0.01)
    )
    try:
        async with asyncio.timeout(30):
            while await log.committed(group="folds", topic="in") < await log.end_offset("in"):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(seen) == ["a", "b", "c"]
    assert await log.end_offset(DEAD_LETTERS) == -1
