"""A dependency that is down is not poison: the runtime retries the batch until it answers, and dead-letters nothing."""

import asyncio
import logging
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
from kernel.runtime import MAX_ATTEMPTS, Delivery, Outage, Processor, encode, run_processor

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")


def beat(run_id: str) -> OutgoingRecord:
    return encode(CODEC, Envelope.wrap(RunHeartbeat(run_id=run_id, worker_id="w"), key=run_id, actor=ACTOR), topic="in")


async def run_until_caught_up(log: EmbeddedLog, react, *, retry_delay_s: float) -> None:
    """Run a processor of group `folds` over topic `in` until it has committed past the topic's end."""
    task = asyncio.create_task(
        run_processor(Processor(group="folds", topics=("in",), react=react), log=log, codec=CODEC, retry_delay_s=retry_delay_s)
    )
    try:
        async with asyncio.timeout(30):
            while await log.committed(group="folds", topic="in") < await log.end_offset("in"):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
    await run_until_caught_up(log, react, retry_delay_s=0.01)
    assert sorted(seen) == ["a", "b", "c"]
    assert await log.end_offset(DEAD_LETTERS) == -1


async def test_an_outage_is_one_log_line_then_one_now_and_then_and_one_when_it_ends(
    embedded_log: EmbeddedLog, caplog
) -> None:
    """Retried every few milliseconds here (every 0.5 s in production): a traceback each time would bury the log."""
    log = embedded_log
    outage = {"failures_left": 20}

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        if outage["failures_left"] > 0:
            outage["failures_left"] -= 1
            raise Unavailable(detail="the read-model store is unreachable", retry_after_s=1)
        return []

    await log.append([beat("a")])
    await run_until_caught_up(log, react, retry_delay_s=0.001)
    lines = [record for record in caplog.records if record.name == "kernel.runtime"]
    assert [record.getMessage() for record in lines][:1] == [
        "processor folds: the read-model store is unreachable; retrying until it is back"
    ]
    assert lines[-1].getMessage().startswith("processor folds: available again after")
    assert len(lines) == 2 and not any(record.exc_info for record in lines)  # 20 failures, well within 30 s


def test_a_long_outage_is_logged_again_every_interval() -> None:
    now = [0.0]
    outage = Outage("folds", clock=lambda: now[0])
    logged = []
    with_handler = logging.getLogger("kernel.runtime")
    handler = logging.Handler()
    handler.emit = logged.append
    with_handler.addHandler(handler)
    try:
        for second in range(0, 95, 1):
            now[0] = float(second)
            outage.failed(Unavailable(detail="down"))
    finally:
        with_handler.removeHandler(handler)
    assert [record.getMessage().split(":")[1].strip() for record in logged] == [
        "down; retrying until it is back", "still unavailable after 30 s (31 tries)", "still unavailable after 60 s (61 tries)",
        "still unavailable after 90 s (91 tries)",
    ]
