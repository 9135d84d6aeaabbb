"""Rate limits: GCRA on event time, concurrency counts, and the rate-limit header fields rendered from them.

GCRA (the generic cell rate algorithm) keeps one instant per key, the theoretical arrival time (TAT): the
moment the key's bucket would be empty again. A request of `cost` units at `now` conforms when the backlog
it leaves, `max(TAT, now) + cost * T - now`, is at most the burst `quota * T` (T = window / quota, rounded up
to the microsecond so the rate never exceeds the quota). Everything is a function of the event times it is
given, never of a clock, so a replay decides the same; the same functions serve the edge's in-memory limiter.

Headers: `RateLimit-Policy` and `RateLimit` as draft-ietf-httpapi-ratelimit-headers-10 writes them
(`"user-requests";q=60;w=60` and `"user-requests";r=59;t=1`), for its registered quota units only (requests,
concurrent-requests); OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the most constrained
policy of each unit; `Retry-After` in whole seconds.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from events.governance import RateLimitStatus

MINUTE = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)
# The quota units the draft registers; a policy in another unit (tokens) is shown in the x-ratelimit-* fields only.
_REGISTERED_UNITS = ("requests", "concurrent-requests")


@dataclass(frozen=True, kw_only=True)
class RatePolicy:
    """`quota` units per `window` for one key, with a burst of the whole quota."""

    name: str  # user-requests, org-tokens, ... (the name the headers and the problem's violated-policies show)
    unit: str  # requests | tokens
    quota: int
    window: timedelta = MINUTE

    def __post_init__(self) -> None:
        if self.quota < 1:
            raise ValueError(f"{self.name}: a quota is >= 1, got {self.quota}")
        if self.window < timedelta(seconds=1):
            raise ValueError(f"{self.name}: a window is >= 1 second, got {self.window}")

    @property
    def interval_us(self) -> int:
        """T, the emission interval: rounded up, so `quota` units never take less than `window`."""
        return -(-_us(self.window) // self.quota)

    @property
    def capacity_us(self) -> int:
        """The most backlog a conforming request may leave: the whole quota's worth."""
        return self.quota * self.interval_us


@dataclass(frozen=True, kw_only=True)
class RateDecision:
    """One key's answer under one policy, with what the headers need."""

    policy: RatePolicy
    allowed: bool
    theoretical_arrival_at: datetime | None  # the key's state after the decision (unchanged unless debited)
    remaining: int  # whole units that would still conform now
    reset: timedelta  # until the whole quota is available again
    retry_after: timedelta  # until the refused cost would conform (zero when allowed)

    def status(self) -> RateLimitStatus:
        return RateLimitStatus(
            policy=self.policy.name, unit=self.policy.unit, quota=self.policy.quota,
            window_s=_ceil_div(_us(self.policy.window), 1_000_000), remaining=self.remaining,
            reset_ms=_ceil_div(_us(self.reset), 1000), theoretical_arrival_at=self.theoretical_arrival_at,
        )


def gcra(policy: RatePolicy, *, tat: datetime | None, now: datetime, cost: int = 1, debit: bool = True) -> RateDecision:
    """Whether `cost` units conform at `now`; when they do and `debit`, the key's TAT moves on by them.

    A cost above the whole quota is checked as the quota (it passes when the bucket is full, else it never
    could) and debited in full, so the key then waits as long as its cost takes to drain. `debit=False`
    only looks: tokens per minute are checked at admission against the run's estimate and counted when it ends.
    """
    base = now if tat is None or tat < now else tat
    backlog = _us(base - now)
    interval, capacity = policy.interval_us, policy.capacity_us
    after = backlog + min(cost, policy.quota) * interval
    allowed = after <= capacity
    if allowed and debit:
        backlog += cost * interval
        tat = now + backlog * _MICROSECOND
    return RateDecision(
        policy=policy, allowed=allowed, theoretical_arrival_at=tat, remaining=max(0, (capacity - backlog) // interval),
        reset=backlog * _MICROSECOND, retry_after=max(0, after - capacity) * _MICROSECOND,
    )


def meter(policy: RatePolicy, *, tat: datetime | None, now: datetime, cost: int) -> RateDecision:
    """Count `cost` units that were already spent (a finished run's tokens): never refused, the backlog may pass the burst."""
    base = now if tat is None or tat < now else tat
    backlog = _us(base - now) + max(0, cost) * policy.interval_us
    return RateDecision(
        policy=policy, allowed=True, theoretical_arrival_at=now + backlog * _MICROSECOND,
        remaining=max(0, (policy.capacity_us - backlog) // policy.interval_us), reset=backlog * _MICROSECOND,
        retry_after=timedelta(0),
    )


def concurrency_status(name: str, *, limit: int, running: int) -> RateLimitStatus:
    """Runs admitted and not ended, against their limit."""
    return RateLimitStatus(policy=name, unit="concurrent-requests", quota=limit, remaining=max(0, limit - running))


# --- header fields ----------------------------------------------------------------------------------


def rate_limit_headers(limits: Sequence[RateLimitStatus], *, retry_after_ms: int | None = None) -> dict[str, str]:
    """The response's rate-limit fields: the IETF draft's, OpenAI's, and `Retry-After` when given."""
    headers: dict[str, str] = {}
    registered = [status for status in limits if status.unit in _REGISTERED_UNITS]
    if registered:
        headers["RateLimit-Policy"] = ", ".join(_policy_item(status) for status in registered)
        headers["RateLimit"] = ", ".join(_limit_item(status) for status in registered)
    for unit in ("requests", "tokens"):
        of_unit = [status for status in limits if status.unit == unit]
        if not of_unit:
            continue
        binding = min(of_unit, key=lambda status: (status.remaining, -status.reset_ms))
        headers[f"x-ratelimit-limit-{unit}"] = str(binding.quota)
        headers[f"x-ratelimit-remaining-{unit}"] = str(binding.remaining)
        headers[f"x-ratelimit-reset-{unit}"] = go_duration(binding.reset_ms)
    if retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, _ceil_div(retry_after_ms, 1000)))
    return headers


def go_duration(milliseconds: int) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* fields write it (Go's notation): `0s`, `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    if milliseconds <= 0:
        return "0s"
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, fraction = divmod(rest, 1000)
    text = f"{seconds}" + (f".{fraction:03d}".rstrip("0") if fraction else "") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _policy_item(status: RateLimitStatus) -> str:
    item = f"{_sf_string(status.policy)};q={status.quota}"
    if status.unit != "requests":
        item += f";qu={_sf_string(status.unit)}"
    if status.window_s:
        item += f";w={status.window_s}"
    return item


def _limit_item(status: RateLimitStatus) -> str:
    item = f"{_sf_string(status.policy)};r={status.remaining}"
    if status.window_s:
        item += f";t={_ceil_div(status.reset_ms, 1000)}"
    return item


def _sf_string(text: str) -> str:
    """An RFC 9651 String (printable ASCII, with `"` and `\\` escaped)."""
    cleaned = "".join(char for char in text if " " <= char <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _us(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
