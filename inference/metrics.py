"""The inference layer's metrics: generation times and tokens (named after the OpenTelemetry GenAI conventions),
the pools' queues and slots, and their breakers.

Labels: `pool` (a pools-file name), `model` (the pool's served model, or the engine's name where the engine has one
fixed model), `outcome` (how the step ended: completed, failed, cancelled, tool_calls), `size_class` (short,
long), `gen_ai_token_type` (input, output; cached: the input tokens served from the engine's prefix cache, a part
of input). Never a tenant's or a run's id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference.routing import BreakerState, PoolHealth
from kernel.metrics import (
    GENERATION_BUCKETS_S,
    LATENCY_BUCKETS_S,
    TIME_TO_FIRST_TOKEN_BUCKETS_S,
    TOKEN_BUCKETS,
)

TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time from a generation's start (the worker asks the engine as it writes its claim) to its first output token.",
    ["pool", "model"],
    buckets=TIME_TO_FIRST_TOKEN_BUCKETS_S,
)
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "Time from a generation's start to its last token and its end recorded (one model step of a run).",
    ["pool", "model", "outcome"],
    buckets=GENERATION_BUCKETS_S,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per model step, by type: input (the prompt), output, cached (input served from the prefix cache).",
    ["pool", "model", "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
INFERENCE_COST = Counter(
    "turnlog_inference_cost_total",
    "What the steps cost at their pool's cost_per_1k_tokens (pools file), input and output tokens alike.",
    ["pool", "model"],
)
QUEUE_DEPTH = Gauge(
    "turnlog_inference_queue_depth",
    "Requests a worker has read and holds waiting for a slot (the backlog beyond it is its group's consumer lag).",
    ["pool", "size_class"],
)
IN_FLIGHT = Gauge(
    "turnlog_inference_in_flight", "Generations running now in a worker's slots.", ["pool", "size_class"]
)
SLOTS = Gauge("turnlog_inference_slots", "A worker's slots: generations it runs at once at most.", ["pool", "size_class"])
ADMISSION_WAIT = Histogram(
    "turnlog_inference_admission_wait_seconds",
    "Time from a request being routed to a pool's queue to its claim by a worker's admission.",
    ["pool", "size_class"],
    buckets=LATENCY_BUCKETS_S,
)

_BREAKER_CODES: dict[BreakerState, int] = {"closed": 0, "half-open": 1, "open": 2}


class BreakerStates(Collector):
    """`turnlog_pool_breaker_state{pool}` read from a prompt builder's breakers at each scrape: 0 closed, 1 half-open, 2 open.

    Read at the scrape, so an open breaker whose cool-down has passed shows half-open without waiting for traffic.
    """

    def __init__(self, health: PoolHealth, pools: Iterator[str] | tuple[str, ...], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._health = health
        self._pools = tuple(pools)
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "turnlog_pool_breaker_state", "A pool's circuit breaker in this prompt builder: 0 closed, 1 half-open, 2 open.",
            labels=["pool"],
        )
        now = self._clock()
        for pool in self._pools:
            family.add_metric([pool], _BREAKER_CODES[self._health.state(pool, now)])
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("turnlog_pool_breaker_state", "", labels=["pool"])
