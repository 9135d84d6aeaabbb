"""Which pool a run goes to, when a failing pool is skipped, and who gets a pool's next free slot.

- `route` picks the cheapest pool that fits the run (context, tools, tenant tier, latency tier) and
  whose breaker lets it through, falling back to the next one and saying so when the preferred
  pool's breaker is open; `NoPoolAvailable` (a 503) names each pool's reason.
- `CircuitBreaker` (one per pool, gathered in `PoolHealth`) opens after consecutive failures or a
  failure rate over a window, half-opens after a cool-down, lets a few probes through, and closes
  on a success.
- `Admission` bounds a pool's in-flight generations and shares them out between tenants: fewest
  slots held first, round-robin among equals, a per-tenant cap that only borrowing may exceed.

All pure and deterministic: time comes in as `now` (seconds on one clock that every call on an
object shares; a `now` earlier than one already seen counts as that one). Nothing reads a clock,
a file or the network. docs/routing.md explains the policies.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from inference.engine import EngineUnavailable
from inference.pools import (
    DEFAULT_SHORT_PROMPT_MAX_TOKENS,
    TENANT_TIERS,
    BreakerPolicy,
    LatencyTier,
    PoolConfig,
    PoolsConfig,
    RoutingPolicy,
    SizeClass,
    TenantTier,
)
from kernel.errors import Unavailable

BreakerState = Literal["closed", "open", "half-open"]


def size_class(prompt_tokens: int, *, short_max_tokens: int = DEFAULT_SHORT_PROMPT_MAX_TOKENS) -> SizeClass:
    """The queue a prompt waits in: "short" up to `short_max_tokens`, "long" beyond."""
    if prompt_tokens < 0:
        raise ValueError(f"prompt_tokens must be >= 0, got {prompt_tokens}")
    return "short" if prompt_tokens <= short_max_tokens else "long"


# --- routing --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RouteRequest:
    """What routing needs to know about a run, once its prompt is built."""

    prompt_tokens: int
    max_output_tokens: int
    needs_tools: bool = False
    tenant_tier: TenantTier
    tenant_id: str  # not used to choose a pool; the pool's admission shares slots by it
    background: bool = False  # the caller does not wait on the answer (batch jobs, summaries)

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be >= 0, got {self.prompt_tokens}")
        if self.max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be >= 1, got {self.max_output_tokens}")
        if self.tenant_tier not in TENANT_TIERS:
            raise ValueError(f"unknown tenant tier {self.tenant_tier!r}; tiers are {', '.join(TENANT_TIERS)}")


@dataclass(frozen=True, kw_only=True)
class RouteDecision:
    """Where a run goes: its pool, size class and topic; `fallback_from` names the preferred pool it could not use."""

    pool: str
    size_class: SizeClass
    topic: str
    fallback_from: str | None
    reason: str


class NoPoolAvailable(Unavailable):
    """No pool can take the run. `reasons` gives each pool's. `retry_after_s` is set when open breakers are
    what stand in the way (the API answers 503 with Retry-After); None when no pool could take it at all."""

    def __init__(self, *, reasons: Mapping[str, str], retry_after_s: int | None) -> None:
        summary = "; ".join(f"{pool}: {why}" for pool, why in reasons.items())
        super().__init__(detail=f"no inference pool can take this run ({summary})", retry_after_s=retry_after_s)
        self.reasons: Mapping[str, str] = MappingProxyType(dict(reasons))


def long_work_reason(request: RouteRequest, policy: RoutingPolicy) -> str | None:
    """Why the run is predicted to be long work for a batch pool, or None when it is interactive."""
    if request.background:
        return "a background run"
    if request.prompt_tokens > policy.long_work_prompt_tokens:
        return f"a prompt of {request.prompt_tokens} tokens (over {policy.long_work_prompt_tokens})"
    if request.max_output_tokens > policy.long_work_output_tokens:
        return f"up to {request.max_output_tokens} output tokens (over {policy.long_work_output_tokens})"
    return None


def predicts_long_work(request: RouteRequest, policy: RoutingPolicy) -> bool:
    return long_work_reason(request, policy) is not None


def refusal(pool: PoolConfig, request: RouteRequest, work: LatencyTier) -> str | None:
    """Why `pool` can never take this run (whatever its health), or None when it can."""
    needed = request.prompt_tokens + request.max_output_tokens
    if not pool.fits(needed):
        return (
            f"its context of {pool.context_tokens} tokens cannot hold {request.prompt_tokens} prompt"
            f" + {request.max_output_tokens} output tokens"
        )
    if request.needs_tools and not pool.supports_tools:
        return "it does not run tools"
    if request.tenant_tier not in pool.tiers:
        return f"it does not serve the {request.tenant_tier} tier"
    if work == "interactive" and pool.latency_tier == "batch":
        return "it is a batch pool and this run is interactive"
    return None


def route(request: RouteRequest, pools: PoolsConfig, health: PoolHealth, now: float) -> RouteDecision:
    """The pool this run goes to: the cheapest acceptable pool whose breaker lets it through.

    Interactive runs go to interactive pools only; long work (background, or beyond the policy's
    thresholds) prefers batch pools and falls back to interactive ones. Among those, cheaper first,
    then file order. A half-open pool that is picked gives up one of its probe permits to this run.
    Raises `NoPoolAvailable` when no pool fits, or every pool that fits has its breaker open.
    """
    long_reason = long_work_reason(request, pools.policy)
    work: LatencyTier = "batch" if long_reason else "interactive"
    reasons: dict[str, str] = {}
    ranked: list[tuple[int, float, int, PoolConfig]] = []
    for index, pool in enumerate(pools.pools):
        why_not = refusal(pool, request, work)
        if why_not is None:
            ranked.append((0 if pool.latency_tier == work else 1, pool.cost_per_1k_tokens, index, pool))
        else:
            reasons[pool.name] = why_not
    ranked.sort(key=lambda entry: entry[:3])
    acceptable = [entry[3] for entry in ranked]
    skipped: list[str] = []
    for pool in acceptable:
        if health.allows(pool.name, now):
            size = size_class(request.prompt_tokens, short_max_tokens=pools.policy.short_prompt_max_tokens)
            preferred = acceptable[0]
            return RouteDecision(
                pool=pool.name,
                size_class=size,
                topic=pool.topic(size),
                fallback_from=preferred.name if pool is not preferred else None,
                reason=_explain(pool, work, long_reason, size, skipped),
            )
        state = health.state(pool.name, now)
        reasons[pool.name] = f"its breaker is {state}"
        skipped.append(f"{pool.name} (breaker {state})")
    retry_after_s = None
    if acceptable:
        soonest = min(health.retry_at(pool.name, now) for pool in acceptable)
        retry_after_s = max(1, math.ceil(soonest - now))
    ordered = {pool.name: reasons[pool.name] for pool in pools.pools}
    raise NoPoolAvailable(reasons=ordered, retry_after_s=retry_after_s)


def _explain(pool: PoolConfig, work: LatencyTier, long_reason: str | None, size: SizeClass, skipped: list[str]) -> str:
    parts = [f"{work} work ({long_reason})" if long_reason else f"{work} work", f"{size} prompt"]
    if pool.latency_tier != work:
        parts.append(f"no {work} pool can take it")
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}")
    left = " left" if skipped else ""
    parts.append(f"{pool.name}: the cheapest acceptable pool{left} ({pool.cost_per_1k_tokens:g} per 1k tokens)")
    return "; ".join(parts)


# --- circuit breakers -----------------------------------------------------------------------------

_WINDOW_BUCKETS = 10  # the failure-rate window is counted in this many buckets: memory stays bounded


class CircuitBreaker:
    """One pool's breaker: closed -> open -> half-open -> closed (or open again).

    Closed: every call goes through; `consecutive_failures` failures in a row, or a failure rate of
    at least `failure_rate` over `window_s` once the window holds `min_calls` outcomes, open it
    (both checked as a failure comes in).
    Open: nothing goes through for `cool_down_s`, then it is half-open. Half-open: `allows` says yes
    to `half_open_probes` calls, no to the rest; a success closes it, a failure opens it again, and
    probes with no outcome within `probe_timeout_s` of the first count as a failure. Outcomes that
    arrive while it is open (of calls let through before it opened) are ignored.
    """

    def __init__(self, *, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._state: BreakerState = "closed"
        self._now = -math.inf
        self._consecutive_failures = 0
        self._window: deque[list[int]] = deque()  # [bucket number, calls, failures], oldest first
        self._opened_at = -math.inf
        self._probes_let_through = 0
        self._first_probe_at: float | None = None
        self.times_opened = 0  # each half-open spell follows an opening; tests and metrics tell spells apart by it

    def state(self, now: float) -> BreakerState:
        self._tick(now)
        return self._state

    def allows(self, now: float) -> bool:
        """Whether a call may go to the pool now; in half-open, a yes spends one probe permit."""
        now = self._tick(now)
        if self._state == "closed":
            return True
        if self._state == "open" or self._probes_let_through >= self.policy.half_open_probes:
            return False
        self._probes_let_through += 1
        if self._first_probe_at is None:
            self._first_probe_at = now
        return True

    def record_success(self, now: float) -> None:
        now = self._tick(now)
        if self._state == "closed":
            self._consecutive_failures = 0
            self._count(now, failed=False)
        elif self._state == "half-open":
            self._close()

    def record_failure(self, now: float) -> None:
        now = self._tick(now)
        if self._state == "closed":
            self._consecutive_failures += 1
            self._count(now, failed=True)
            if self._consecutive_failures >= self.policy.consecutive_failures or self._rate_tripped():
                self._open(now)
        elif self._state == "half-open":
            self._open(now)

    def retry_at(self, now: float) -> float:
        """When a call may next be let through (an estimate while half-open probes are out)."""
        now = self._tick(now)
        if self._state == "open":
            return self._opened_at + self.policy.cool_down_s
        if self._state == "half-open" and self._probes_let_through >= self.policy.half_open_probes:
            return now + self.policy.cool_down_s
        return now

    def _tick(self, now: float) -> float:
        """Advance to `now` (never backwards), applying the transitions that time alone makes."""
        if math.isnan(now):
            raise ValueError("now must be a number")
        now = self._now = max(now, self._now)
        while True:
            if self._state == "open" and now >= self._opened_at + self.policy.cool_down_s:
                self._state = "half-open"
                self._probes_let_through = 0
                self._first_probe_at = None
            elif (
                self._state == "half-open"
                and self._first_probe_at is not None
                and now >= self._first_probe_at + self.policy.probe_timeout_s
            ):
                self._open(self._first_probe_at + self.policy.probe_timeout_s)
            else:
                return now

    def _open(self, at: float) -> None:
        self._state = "open"
        self._opened_at = at
        self.times_opened += 1

    def _close(self) -> None:
        self._state = "closed"
        self._consecutive_failures = 0
        self._window.clear()

    def _count(self, now: float, *, failed: bool) -> None:
        bucket_s = self.policy.window_s / _WINDOW_BUCKETS
        bucket = math.floor(now / bucket_s)
        while self._window and self._window[0][0] <= bucket - _WINDOW_BUCKETS:
            self._window.popleft()
        if not self._window or self._window[-1][0] != bucket:
            self._window.append([bucket, 0, 0])
        self._window[-1][1] += 1
        self._window[-1][2] += int(failed)

    def _rate_tripped(self) -> bool:
        calls = sum(entry[1] for entry in self._window)
        failures = sum(entry[2] for entry in self._window)
        return calls >= self.policy.min_calls and failures >= self.policy.failure_rate * calls


class PoolHealth:
    """The breakers of all pools, by pool name (each made on first mention, all with one policy)."""

    def __init__(self, *, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._breakers: dict[str, CircuitBreaker] = {}

    @classmethod
    def for_pools(cls, pools: PoolsConfig) -> PoolHealth:
        return cls(policy=pools.breaker)

    def breaker(self, pool: str) -> CircuitBreaker:
        if pool not in self._breakers:
            self._breakers[pool] = CircuitBreaker(policy=self.policy)
        return self._breakers[pool]

    def allows(self, pool: str, now: float) -> bool:
        return self.breaker(pool).allows(now)

    def state(self, pool: str, now: float) -> BreakerState:
        return self.breaker(pool).state(now)

    def retry_at(self, pool: str, now: float) -> float:
        return self.breaker(pool).retry_at(now)

    def record_success(self, pool: str, now: float) -> None:
        self.breaker(pool).record_success(now)

    def record_failure(self, pool: str, now: float) -> None:
        self.breaker(pool).record_failure(now)

    def record_outcome(self, pool: str, now: float, *, error: BaseException | None) -> None:
        """Count how a call ended: no error is a success, `EngineUnavailable` a failure.

        Any other error leaves the breaker as it was: a refused request (`PromptTooLong`,
        `EngineRejected`) shows the engine answering, and a cancellation or a bug of ours says
        nothing about the pool.
        """
        if error is None:
            self.record_success(pool, now)
        elif isinstance(error, EngineUnavailable):
            self.record_failure(pool, now)

    def snapshot(self, now: float) -> Mapping[str, BreakerState]:
        """Every breaker's state as of `now` (pools never mentioned are closed and absent)."""
        return MappingProxyType({pool: breaker.state(now) for pool, breaker in sorted(self._breakers.items())})


# --- admission and fairness -----------------------------------------------------------------------


class Admission:
    """A pool's (or one size class's) in-flight generations: at most `capacity`, shared fairly by tenant.

    The policy is max-min fair over slots held, work-conserving, with a per-tenant cap:

    - `next_tenant(waiting)` picks, among tenants with work waiting, the one holding the fewest
      slots; ties go round-robin (the first tenant id after the one admitted last, wrapping).
    - A tenant may hold up to `tenant_cap = max(1, floor(capacity * tenant_share))` slots. Past its
      cap it may still borrow free slots, but only while no other waiting tenant is below its cap:
      alone on an idle pool it can fill the whole pool; as soon as another tenant waits, every
      slot that frees goes to whoever holds fewer.

    Nothing is taken back from a running generation, so a newcomer waits for a borrowed slot to
    free; with N tenants always waiting, none ever holds more than ceil(capacity / N).
    """

    def __init__(self, *, capacity: int, tenant_share: float = 0.5) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not (0 < tenant_share <= 1):
            raise ValueError(f"tenant_share must be in (0, 1], got {tenant_share}")
        self.capacity = capacity
        self.tenant_share = tenant_share
        self._held: dict[str, int] = {}
        self._in_flight = 0
        self._last_admitted: str | None = None

    @classmethod
    def for_pool(cls, pool: PoolConfig, size: SizeClass) -> Admission:
        """The admission of one pool's size class (the whole pool when it is not split by size)."""
        return cls(capacity=pool.capacity_for(size), tenant_share=pool.tenant_share)

    @property
    def tenant_cap(self) -> int:
        return max(1, math.floor(self.capacity * self.tenant_share))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def free_slots(self) -> int:
        return self.capacity - self._in_flight

    def held_by(self, tenant_id: str) -> int:
        return self._held.get(tenant_id, 0)

    def holders(self) -> Mapping[str, int]:
        """Slots held, by tenant (tenants holding none are absent)."""
        return MappingProxyType(dict(self._held))

    def may_admit(self, tenant_id: str, *, waiting: Iterable[str] = ()) -> bool:
        """Whether `tenant_id` may take a slot now, given the tenants with work `waiting` (itself or not)."""
        if self._in_flight >= self.capacity:
            return False
        if self.held_by(tenant_id) < self.tenant_cap:
            return True
        return all(self.held_by(other) >= self.tenant_cap for other in waiting if other != tenant_id)

    def try_admit(self, tenant_id: str, *, waiting: Iterable[str] = ()) -> bool:
        """Take a slot for `tenant_id` if `may_admit` allows it; False (back-pressure) otherwise."""
        waiting = tuple(waiting)
        if not self.may_admit(tenant_id, waiting=waiting):
            return False
        self._held[tenant_id] = self.held_by(tenant_id) + 1
        self._in_flight += 1
        self._last_admitted = tenant_id
        return True

    def release(self, tenant_id: str) -> None:
        """Give back a slot `tenant_id` holds (its generation ended, however it ended)."""
        held = self.held_by(tenant_id)
        if held < 1:
            raise ValueError(f"tenant {tenant_id!r} holds no slot to release")
        if held == 1:
            del self._held[tenant_id]
        else:
            self._held[tenant_id] = held - 1
        self._in_flight -= 1

    def next_tenant(self, waiting: Iterable[str]) -> str | None:
        """Whose work to admit next among the tenants `waiting` (repeats allowed); None when the pool is full
        or no one waits. The tenant chosen always passes `may_admit`."""
        tenants = set(waiting)
        if not tenants or self._in_flight >= self.capacity:
            return None
        last = self._last_admitted

        def order(tenant_id: str) -> tuple[int, bool, str]:
            # Fewest held first; then the ids after the last one admitted, then (wrapping) the rest.
            return (self.held_by(tenant_id), last is not None and tenant_id <= last, tenant_id)

        return min(tenants, key=order)
