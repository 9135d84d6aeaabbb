"""The per-tool breaker, pure: given these outcomes, when a call comes at `now`, then it goes ahead or is refused, saying why."""

import pytest

from processors.tools.breaker import ToolBreakerPolicy, ToolBreakers

POLICY = ToolBreakerPolicy(failures_to_open=3, cool_down_s=30, probe_timeout_s=120)


def given(*outcomes: tuple[float, str, str], tool: str = "search") -> ToolBreakers:
    """Breakers that have seen `outcomes` of `tool`, each (now, status, result)."""
    breakers = ToolBreakers(policy=POLICY)
    for now, status, result in outcomes:
        breakers.record(tool, status, result, now)
    return breakers


def failures(count: int, *, at: float = 0, reason: str = "connection refused") -> list[tuple[float, str, str]]:
    return [(at, "unavailable", reason)] * count


def test_calls_go_ahead_until_the_failures_in_a_row_reach_the_threshold() -> None:
    assert given().refusal("search", 0) is None
    assert given(*failures(2)).refusal("search", 0) is None
    breakers = given(*failures(3, at=10))
    assert breakers.state("search", 10) == "open"
    assert breakers.refusal("search", 17.5) == (
        "skipped: search failed 3 times in a row (last: connection refused); it is tried again in 23 s"
    )


def test_every_failing_status_counts_and_a_completed_call_starts_the_count_again() -> None:
    assert given((0, "failed", "boom"), (0, "timed_out", "timed out after 5 s"), (0, "unavailable", "down")).state(
        "search", 0
    ) == "open"
    assert given(*failures(2), (0, "completed", "ok"), *failures(2)).state("search", 0) == "closed"


def test_the_refusal_quotes_the_last_failure_on_one_short_line() -> None:
    breakers = given(*failures(2), (0, "failed", "Traceback (most recent call last):\n  File ..."))
    assert "(last: Traceback (most recent call last):);" in (breakers.refusal("search", 0) or "")
    long = given(*failures(3, reason="x" * 500)).refusal("search", 0) or ""
    assert f"(last: {'x' * 79}…);" in long


def test_each_tool_has_its_own_breaker() -> None:
    breakers = given(*failures(3))
    assert breakers.refusal("search", 0) is not None
    assert breakers.refusal("weather", 0) is None
    assert breakers.state("weather", 0) == "closed"


def test_after_the_cool_down_one_probe_goes_ahead_and_the_others_wait_for_it() -> None:
    breakers = given(*failures(3))
    assert breakers.state("search", 30) == "half-open"
    assert breakers.refusal("search", 30) is None  # the probe
    assert breakers.refusal("search", 31) == (
        "skipped: search failed 3 times in a row (last: connection refused); a trial call to it is under way"
    )


def test_a_successful_probe_closes_the_breaker() -> None:
    breakers = given(*failures(3))
    assert breakers.refusal("search", 30) is None
    breakers.record("search", "completed", "ok", 31)
    assert breakers.state("search", 31) == "closed"
    assert breakers.refusal("search", 31) is None and breakers.refusal("search", 31) is None


def test_a_failed_probe_opens_it_again_for_a_whole_cool_down() -> None:
    breakers = given(*failures(3))
    assert breakers.refusal("search", 30) is None
    breakers.record("search", "timed_out", "timed out after 5 s", 35)
    assert breakers.state("search", 35) == "open"
    assert breakers.refusal("search", 40) == (
        "skipped: search failed 4 times in a row (last: timed out after 5 s); it is tried again in 25 s"
    )
    assert breakers.state("search", 65) == "half-open"


def test_a_probe_with_no_outcome_is_presumed_lost_and_the_next_call_probes() -> None:
    breakers = given(*failures(3))
    assert breakers.refusal("search", 30) is None
    assert breakers.refusal("search", 149) is not None
    assert breakers.refusal("search", 150) is None


def test_outcomes_that_arrive_while_it_is_open_change_nothing() -> None:
    breakers = given(*failures(3), (5, "completed", "ok"), (6, "failed", "late"))
    assert breakers.state("search", 29) == "open"
    assert "(last: connection refused)" in (breakers.refusal("search", 29) or "")


@pytest.mark.parametrize(
    "settings", [{"failures_to_open": 0}, {"cool_down_s": 0}, {"probe_timeout_s": float("inf")}]
)
def test_a_policy_that_could_not_work_is_refused(settings: dict) -> None:
    with pytest.raises(ValueError):
        ToolBreakerPolicy(**settings)
