"""The edge limiter: requests whose bearer token does not authenticate, counted per client address in memory.

Such requests name no org to decide for, so governance on the log cannot limit them; each API instance counts
them itself with the same GCRA, on its wall clock (`[edge] requests_per_minute` of the tiers file). Only failures
are counted, and only they are refused: a valid token from a busy address (a NAT, a proxy) always passes, and
checking it is a local HMAC, no I/O. Per instance by nature: N instances admit N times the rate in all.
"""

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from commands.governance.rate_limits import RateDecision, RatePolicy, gcra, rate_limit_headers
from kernel.errors import QuotaExceeded

EDGE_POLICY = "edge-requests"


class EdgeLimiter:
    """GCRA per client address over failed authentications; bounded memory (drained addresses are forgotten first)."""

    def __init__(
        self, *, requests_per_minute: int, capacity: int = 100_000, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.policy = RatePolicy(name=EDGE_POLICY, unit="requests", quota=requests_per_minute)
        self._capacity = capacity
        self._clock = clock
        self._arrivals: OrderedDict[str, datetime] = OrderedDict()  # theoretical arrival time per address

    def failed(self, address: str) -> RateDecision:
        """Count one failed authentication from `address`; `allowed` is False once the address is over its rate."""
        now = self._clock()
        decision = gcra(self.policy, tat=self._arrivals.get(address), now=now)
        if decision.allowed and decision.theoretical_arrival_at is not None:
            self._arrivals[address] = decision.theoretical_arrival_at
            self._arrivals.move_to_end(address)
            if len(self._arrivals) > self._capacity:
                self._forget(now)
        return decision

    def _forget(self, now: datetime) -> None:
        for address in [address for address, tat in self._arrivals.items() if tat <= now]:
            del self._arrivals[address]
        while len(self._arrivals) > self._capacity * 9 // 10:  # room for a while: the scan is not paid per request
            self._arrivals.popitem(last=False)


def refuse_when_over(edge: EdgeLimiter, address: str) -> None:
    """After a failed authentication from `address`: a 429 once the address is over its rate (else the 401 stands)."""
    decision = edge.failed(address)
    if decision.allowed:
        return
    retry_after_ms = -(-decision.retry_after // timedelta(milliseconds=1))
    raise QuotaExceeded(
        detail=f"too many requests from {address} failed to authenticate ({edge.policy.name}: {edge.policy.quota} a minute);"
        " check your bearer token, then retry after the Retry-After seconds",
        headers=rate_limit_headers([decision.status()], retry_after_ms=retry_after_ms),
        extra={"reason": "unauthenticated_requests", "violated-policies": [edge.policy.name], "retryAfter": max(1, -(-retry_after_ms // 1000))},
    )
