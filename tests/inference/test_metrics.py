"""The inference layer's metrics: a pool's breaker state is read from the breakers at each scrape."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference.metrics import BreakerStates
from inference.pools import BreakerPolicy
from inference.routing import PoolHealth


def breaker_states(registry: CollectorRegistry) -> dict[str, float]:
    [family] = [family for family in text_string_to_metric_families(generate_latest(registry).decode())
                if family.name == "turnlog_pool_breaker_state"]
    return {sample.labels["pool"]: sample.value for sample in family.samples}


def test_breaker_states_follow_the_breakers_and_the_clock() -> None:
    now = [0.0]
    health = PoolHealth(policy=BreakerPolicy(consecutive_failures=2, cool_down_s=10.0))
    registry = CollectorRegistry()
    registry.register(BreakerStates(health, ("interactive", "batch"), clock=lambda: now[0]))
    assert breaker_states(registry) == {"interactive": 0, "batch": 0}
    health.record_failure("interactive", 1.0)
    health.record_failure("interactive", 2.0)
    now[0] = 3.0
    assert breaker_states(registry) == {"interactive": 2, "batch": 0}  # open
    now[0] = 13.0  # the cool-down passed with no traffic at all: the scrape itself sees it half-open
    assert breaker_states(registry) == {"interactive": 1, "batch": 0}
