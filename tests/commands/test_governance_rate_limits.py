"""GCRA on event time, and the rate-limit header fields rendered from its answers."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.governance.rate_limits import (
    RatePolicy,
    concurrency_status,
    gcra,
    go_duration,
    meter,
    rate_limit_headers,
)
from events.governance import RateLimitStatus

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
SIXTY_A_MINUTE = RatePolicy(name="user-requests", unit="requests", quota=60)


def run(policy: RatePolicy, offsets_ms: list[int], *, cost: int = 1) -> list[bool]:
    """Each request at T0 + offset, in order, the key's state carried along as the decider's fold carries it."""
    tat, answers = None, []
    for offset in offsets_ms:
        decision = gcra(policy, tat=tat, now=T0 + timedelta(milliseconds=offset), cost=cost)
        tat = decision.theoretical_arrival_at
        answers.append(decision.allowed)
    return answers


def test_a_burst_of_the_whole_quota_passes_then_one_per_interval() -> None:
    assert run(SIXTY_A_MINUTE, [0] * 60) == [True] * 60
    assert run(SIXTY_A_MINUTE, [0] * 61) == [True] * 60 + [False]
    # After the burst, one more conforms each second (T = 60 s / 60).
    assert run(SIXTY_A_MINUTE, [0] * 60 + [999, 1000, 1001, 2000]) == [True] * 60 + [False, True, False, True]


def test_a_refusal_says_when_to_retry_and_leaves_the_state_alone() -> None:
    tat = gcra(SIXTY_A_MINUTE, tat=None, now=T0, cost=60).theoretical_arrival_at
    refused = gcra(SIXTY_A_MINUTE, tat=tat, now=T0 + timedelta(milliseconds=250))
    assert not refused.allowed
    assert refused.theoretical_arrival_at == tat
    assert refused.retry_after == timedelta(milliseconds=750)
    assert refused.remaining == 0
    assert refused.reset == timedelta(seconds=59, milliseconds=750)
    assert gcra(SIXTY_A_MINUTE, tat=tat, now=T0 + refused.retry_after + timedelta(milliseconds=250)).allowed


def test_remaining_and_reset_after_an_admission() -> None:
    first = gcra(SIXTY_A_MINUTE, tat=None, now=T0)
    assert (first.allowed, first.remaining, first.reset) == (True, 59, timedelta(seconds=1))
    status = first.status()
    assert status == RateLimitStatus(
        policy="user-requests", unit="requests", quota=60, window_s=60, remaining=59, reset_ms=1000,
        theoretical_arrival_at=T0 + timedelta(seconds=1),
    )


def test_looking_without_debiting_changes_nothing() -> None:
    looked = gcra(SIXTY_A_MINUTE, tat=None, now=T0, debit=False)
    assert looked.allowed and looked.theoretical_arrival_at is None and looked.remaining == 60


def test_a_cost_above_the_quota_passes_on_a_full_bucket_and_then_drains() -> None:
    tokens = RatePolicy(name="user-tokens", unit="tokens", quota=1000)
    big = gcra(tokens, tat=None, now=T0, cost=3000)
    assert big.allowed and big.reset == timedelta(minutes=3)
    # Empty for two minutes, full again after three; one token needs T = 60 ms past two minutes.
    assert not gcra(tokens, tat=big.theoretical_arrival_at, now=T0 + timedelta(minutes=2), cost=1).allowed
    assert gcra(tokens, tat=big.theoretical_arrival_at, now=T0 + timedelta(minutes=2, milliseconds=60), cost=1).allowed


def test_metering_counts_spent_tokens_past_the_burst() -> None:
    tokens = RatePolicy(name="user-tokens", unit="tokens", quota=1000)
    spent = meter(tokens, tat=None, now=T0, cost=1500)
    assert spent.remaining == 0 and spent.reset == timedelta(seconds=90)
    # The estimate of the next run is checked against what is left: nothing, for 30 s.
    assert not gcra(tokens, tat=spent.theoretical_arrival_at, now=T0 + timedelta(seconds=29), cost=0, debit=False).allowed
    assert gcra(tokens, tat=spent.theoretical_arrival_at, now=T0 + timedelta(seconds=31), cost=10, debit=False).allowed


def test_an_odd_quota_never_runs_faster_than_its_window() -> None:
    seven = RatePolicy(name="org-requests", unit="requests", quota=7)
    assert seven.interval_us == 8_571_429  # 60 s / 7, rounded up
    assert run(seven, [0] * 7 + [8_571]) == [True] * 7 + [False]
    assert run(seven, [0] * 7 + [8_572]) == [True] * 7 + [True]


@settings(max_examples=300, deadline=None)
@given(
    quota=st.integers(min_value=1, max_value=20),
    window_s=st.sampled_from([1, 10, 60]),
    gaps_ms=st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=120),
    cost=st.integers(min_value=1, max_value=5),
)
def test_never_more_than_the_burst_and_the_rate_over_any_window(quota: int, window_s: int, gaps_ms: list[int], cost: int) -> None:
    """Over any span of L, the units admitted are at most the burst (the quota) plus L / T."""
    policy = RatePolicy(name="p", unit="requests", quota=quota, window=timedelta(seconds=window_s))
    cost = min(cost, quota)
    times, elapsed = [], 0
    for gap in gaps_ms:
        elapsed += gap
        times.append(elapsed)
    tat, admitted = None, []
    for offset in times:
        decision = gcra(policy, tat=tat, now=T0 + timedelta(milliseconds=offset), cost=cost)
        tat = decision.theoretical_arrival_at
        if decision.allowed:
            admitted.append(offset)
    interval_ms = policy.interval_us / 1000
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert (j - i + 1) * cost <= quota + span / interval_ms


@settings(max_examples=100, deadline=None)
@given(gaps_ms=st.lists(st.integers(min_value=0, max_value=3_000), min_size=1, max_size=60))
def test_the_same_times_give_the_same_answers(gaps_ms: list[int]) -> None:
    times = [sum(gaps_ms[: i + 1]) for i in range(len(gaps_ms))]
    assert run(SIXTY_A_MINUTE, times) == run(SIXTY_A_MINUTE, times)


# --- headers --------------------------------------------------------------------------------------

REQUESTS = RateLimitStatus(policy="user-requests", unit="requests", quota=60, window_s=60, remaining=59, reset_ms=1000)
ORG_REQUESTS = RateLimitStatus(policy="org-requests", unit="requests", quota=600, window_s=60, remaining=12, reset_ms=57_500)
TOKENS = RateLimitStatus(policy="user-tokens", unit="tokens", quota=40_000, window_s=60, remaining=36_500, reset_ms=5_250)
CONCURRENT = concurrency_status("user-concurrent", limit=2, running=1)


def test_headers_of_an_admitted_request() -> None:
    headers = rate_limit_headers([REQUESTS, ORG_REQUESTS, TOKENS, CONCURRENT])
    assert headers == {
        "RateLimit-Policy": '"user-requests";q=60;w=60, "org-requests";q=600;w=60, "user-concurrent";q=2;qu="concurrent-requests"',
        "RateLimit": '"user-requests";r=59;t=1, "org-requests";r=12;t=58, "user-concurrent";r=1',
        # OpenAI's fields show the most constrained policy of each unit.
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "57.5s",
        "x-ratelimit-limit-tokens": "40000",
        "x-ratelimit-remaining-tokens": "36500",
        "x-ratelimit-reset-tokens": "5.25s",
    }


def test_a_refusal_adds_retry_after_in_whole_seconds() -> None:
    exhausted = RateLimitStatus(policy="user-requests", unit="requests", quota=60, window_s=60, remaining=0, reset_ms=60_000)
    headers = rate_limit_headers([exhausted], retry_after_ms=250)
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit"] == '"user-requests";r=0;t=60'
    assert rate_limit_headers([], retry_after_ms=1_001) == {"Retry-After": "2"}


def test_no_limits_no_headers() -> None:
    assert rate_limit_headers([]) == {}


def test_policy_names_are_structured_field_strings() -> None:
    odd = RateLimitStatus(policy='a"b\\c', unit="requests", quota=1, window_s=1, remaining=1)
    assert rate_limit_headers([odd])["RateLimit-Policy"] == '"a\\"b\\\\c";q=1;w=1'


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [(0, "0s"), (-5, "0s"), (12, "12ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"), (5_250, "5.25s"),
     (60_000, "1m0s"), (360_000, "6m0s"), (90_500, "1m30.5s"), (3_723_000, "1h2m3s"), (3_600_000, "1h0m0s")],
)
def test_durations_as_openai_writes_them(milliseconds: int, text: str) -> None:
    assert go_duration(milliseconds) == text
