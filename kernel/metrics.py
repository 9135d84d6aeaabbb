"""Prometheus metrics: the process's registry and its text exposition, and the kernel's own metrics (log, runtime, roles).

One registry per process, prometheus-client's default: `turnlog serve` runs the API and every role in one process,
so one `/metrics` answers for all of them; a `turnlog worker` answers on its metrics port. Each layer declares the
metrics it observes in a module of its own (`inference/metrics.py`, `processors/metrics.py`, `api/metrics.py`), at
import: a labelled metric shows in the exposition (its HELP and TYPE) before its first observation. Labels are
bounded sets from configuration and code (pools, models, groups, topics, routes, stages), never a user, org,
conversation or run id. docs/observability.md lists every metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

logger = logging.getLogger(__name__)

# No `_created` series beside each counter and histogram: Prometheus does not need them, and they double a scrape.
disable_created_metrics()

# Seconds, from a fast local fsync to a slow remote call.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# What the OpenTelemetry GenAI conventions advise for token counts and generation times.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TIME_TO_FIRST_TOKEN_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
GENERATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, with its media type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def register_collector(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    """Add a collector read at every scrape (a gauge computed from live state); undo with `unregister_collector`."""
    registry.register(collector)


def unregister_collector(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    try:
        registry.unregister(collector)
    except KeyError:  # never registered, or already gone
        pass


# -- the log ----------------------------------------------------------------------------------------

LOG_APPEND_SECONDS = Histogram(
    "turnlog_log_append_duration_seconds",
    "Time for one append to the event log to be acknowledged (durable: fsynced or acks=all; else provisional).",
    ["log", "durable"],
    buckets=LATENCY_BUCKETS_S,
)
CONSUMER_LAG = Gauge(
    "turnlog_consumer_lag_records",
    "Records of a topic after a consumer group's committed position, sampled by the process that runs the group.",
    ["group", "topic"],
)

# -- the processor runtime ----------------------------------------------------------------------------

DEAD_LETTERED = Counter(
    "turnlog_dead_letters_total",
    "Records a processor could not handle, sent to the dead-letters topic with the reason.",
    ["group", "topic"],
)
PROCESSOR_BATCH_SECONDS = Histogram(
    "turnlog_processor_batch_duration_seconds",
    "Time for a processor to react to one batch and append its reactions with its consumer progress.",
    ["group"],
    buckets=LATENCY_BUCKETS_S,
)
PROCESSOR_RECORDS = Counter(
    "turnlog_processor_records_total", "Records a processor has handled (reacted to and committed).", ["group"]
)
PROCESSOR_RESTARTS = Counter(
    "turnlog_processor_restarts_total",
    "Times a processor failed and started again from its committed position.",
    ["group"],
)
ROLE_UP = Gauge(
    "turnlog_role_up", "1 while a task of this process's roles runs, 0 once it has stopped.", ["role"]
)


class LaggingLog(Protocol):
    async def lag(self, *, group: str, topic: str) -> int: ...


async def sample_consumer_lag(log: LaggingLog, groups: Mapping[str, Sequence[str]], *, every_s: float = 15.0) -> None:
    """Set `turnlog_consumer_lag_records` for each group's topics every `every_s`, until cancelled.

    A lookup that fails (the log unreachable for a moment) leaves the last figure and is tried again next time.
    """
    pairs = [(group, topic) for group, topics in groups.items() for topic in topics]
    while True:
        for group, topic in pairs:
            try:
                CONSUMER_LAG.labels(group=group, topic=topic).set(await log.lag(group=group, topic=topic))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.debug("consumer lag of %s on %s not sampled: %r", group, topic, error)
        await asyncio.sleep(every_s)
