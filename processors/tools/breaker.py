"""A circuit breaker per tool: a tool that keeps failing is skipped for a while, with the reason shown.

Closed: every call goes through; `failures_to_open` failures in a row (`failed`, `timed_out` or
`unavailable`) open it, and a `completed` call starts the count again. Open: calls are refused for
`cool_down_s`, each with a reason a person can read. Half-open: one probe call goes through; its
success closes the breaker, its failure opens it again. A probe with no outcome after
`probe_timeout_s` is presumed lost (its runner stopped) and the next call probes instead. Outcomes
that arrive while open (of calls let through before it opened) are ignored.

Pure: time comes in as `now`, seconds on one monotonic clock. Each runner keeps its own breakers, a
local and recent judgement like the pools' (`inference/routing.py`), not state rebuilt from the log.
The pools' `CircuitBreaker` also trips on a failure rate and is configured by the pools file; a tool
needs only the run of failures and the last one's reason, so it has this smaller breaker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]

# The statuses that count against a tool; `completed` clears its count, anything else leaves it be.
FAILURE_STATUSES = frozenset({"failed", "timed_out", "unavailable"})
# A refusal quotes the last failure: its first line, cut to this many characters.
MAX_REASON_CHARS = 80


@dataclass(frozen=True, kw_only=True)
class ToolBreakerPolicy:
    """When a tool's breaker opens, and how long it stays open."""

    failures_to_open: int = 5  # this many failures in a row open it
    cool_down_s: float = 30.0  # open this long, then one probe call is let through
    probe_timeout_s: float = 120.0  # a probe with no outcome by then is presumed lost

    def __post_init__(self) -> None:
        if self.failures_to_open < 1:
            raise ValueError(f"failures_to_open must be >= 1, got {self.failures_to_open}")
        for name in ("cool_down_s", "probe_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")


@dataclass(kw_only=True)
class _Failing:
    """A tool whose last call failed (healthy tools have no entry)."""

    failures: int = 0  # in a row
    last_reason: str = ""
    opened_at: float | None = None  # None: closed
    probe_at: float | None = None  # half-open: when the probe was let through


class ToolBreakers:
    """The breakers of all tools, by tool name, all with one policy."""

    def __init__(self, *, policy: ToolBreakerPolicy | None = None) -> None:
        self.policy = policy or ToolBreakerPolicy()
        self._failing: dict[str, _Failing] = {}

    def state(self, tool: str, now: float) -> BreakerState:
        failing = self._failing.get(tool)
        if failing is None or failing.opened_at is None:
            return "closed"
        return "open" if now < failing.opened_at + self.policy.cool_down_s else "half-open"

    def refusal(self, tool: str, now: float) -> str | None:
        """None when a call to `tool` may go ahead now (while half-open, it becomes the probe); else why not."""
        state = self.state(tool, now)
        if state == "closed":
            return None
        failing = self._failing[tool]
        when = "a trial call to it is under way"
        if state == "open":
            assert failing.opened_at is not None
            when = f"it is tried again in {math.ceil(failing.opened_at + self.policy.cool_down_s - now)} s"
        elif failing.probe_at is None or now >= failing.probe_at + self.policy.probe_timeout_s:
            failing.probe_at = now
            return None
        return f"skipped: {tool} failed {failing.failures} times in a row (last: {failing.last_reason}); {when}"

    def record(self, tool: str, status: str, reason: str, now: float) -> None:
        """Count how a call to `tool` ended; `reason` is its result, quoted (shortened) while the breaker is open."""
        state = self.state(tool, now)
        if state == "open":
            return  # a call let through before it opened says nothing new
        if status == "completed":
            self._failing.pop(tool, None)
        elif status in FAILURE_STATUSES:
            failing = self._failing.setdefault(tool, _Failing())
            failing.failures += 1
            failing.last_reason = _short(reason) or status
            if state == "half-open" or failing.failures >= self.policy.failures_to_open:
                failing.opened_at, failing.probe_at = now, None


def _short(reason: str) -> str:
    lines = reason.strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= MAX_REASON_CHARS else f"{line[: MAX_REASON_CHARS - 1].rstrip()}…"
