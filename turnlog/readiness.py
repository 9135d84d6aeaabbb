"""What `/readyz` checks in a process: the log and the store it uses reachable, its roles alive, the projector caught up.

Built by the composition root for the API (`turnlog serve`) and for a worker's metrics port (`turnlog worker
--metrics-port`). Each check touches its backend for real (a query), within a timeout (`api/health.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from api.health import Check, Readiness
from events.embedded import EmbeddedLog
from events.topics import COMMANDS, CONVERSATION_EVENTS
from kernel.log import EventLog
from projections.projector import READ_MODELS_GROUP
from projections.read_models import ReadModels

# The projector may be this many conversation events behind before the process is not ready: past it, reads that
# wait for their writes (the read-your-writes fence) would time out.
MAX_PROJECTOR_LAG = 1_000
# A group nobody commits for: asking its position is a round trip to the log's backend and changes nothing.
_PROBE_GROUP = "turnlog-readiness"


def process_readiness(
    *,
    log: EventLog,
    read_models: ReadModels | None,
    tasks: Sequence[asyncio.Task],
    projector_lag: bool,
    max_projector_lag: int = MAX_PROJECTOR_LAG,
) -> Readiness:
    """The checks of a process on `log` (and `read_models`, where it reads or writes them) running `tasks` as roles.

    `projector_lag`: whether the process depends on the read models being current (the API's reads, the projector).
    """
    readiness = Readiness()

    async def log_reachable() -> str | None:
        await log.committed(group=_PROBE_GROUP, topic=COMMANDS)
        if isinstance(log, EmbeddedLog) and log.full_since is not None:  # it reads, but every append fails
            since = log.full_since.isoformat(timespec="seconds")
            return f"the log's disk is full since {since}: appends fail until space is freed"
        return None

    readiness.add(Check(name="log", probe=log_reachable))
    if read_models is not None:
        store = read_models.store

        async def store_reachable() -> str | None:
            await store.query("SELECT 1 AS one")
            return None

        readiness.add(Check(name="store", probe=store_reachable))

    async def roles_alive() -> str | None:
        stopped = [task.get_name() for task in tasks if task.done()]
        return f"stopped: {', '.join(stopped)}" if stopped else None

    readiness.add(Check(name="roles", probe=roles_alive))
    if projector_lag:

        async def projector_caught_up() -> str | None:
            lag = await log.lag(group=READ_MODELS_GROUP, topic=CONVERSATION_EVENTS)
            if lag > max_projector_lag:
                return f"the projector is {lag} conversation events behind (more than {max_projector_lag})"
            return None

        readiness.add(Check(name="projector-lag", probe=projector_caught_up))
    return readiness
