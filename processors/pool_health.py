"""Pool health for the router: every run's outcome, as the inference workers record it, fed to the breakers.

Workers end each run with a `UsageRecorded` on the `usage` topic, marked `engine_unavailable` when
the engine could not be reached or broke off. The prompt builder follows that topic from its own
start and counts a completed run as a success and an unavailable engine as a failure against the
run's pool; other endings (a refused prompt, a cancel) say nothing about the pool. Each
prompt-builder process keeps its own view: breakers are a local, recent judgement, not state to
rebuild from the whole log.
"""

import logging
from collections.abc import Callable

from kernel.codec import AvroCodec, UndecodableMessage
from kernel.log import EventLog
from events.runs import UsageRecorded
from events.topics import USAGE
from inference.routing import PoolHealth

logger = logging.getLogger(__name__)


def record_outcome(health: PoolHealth, usage: UsageRecorded, now: float) -> None:
    """Count one run's end against its pool's breaker."""
    if usage.engine_unavailable:
        health.record_failure(usage.pool, now)
    elif usage.status == "completed":
        health.record_success(usage.pool, now)


async def follow_pool_outcomes(*, log: EventLog, codec: AvroCodec, health: PoolHealth, clock: Callable[[], float]) -> None:
    """Feed `health` from the outcomes recorded from now on, until cancelled."""
    # In the background: a pool's health moves with many runs' outcomes, none of them waited for by a request.
    async for record in log.follow(USAGE, after=await log.end_offset(USAGE), background=True):
        try:
            usage = codec.decode(record.value).payload
        except UndecodableMessage:
            continue  # the usage ledger dead-letters it
        if isinstance(usage, UsageRecorded):
            record_outcome(health, usage, clock())
