"""Refusals as problems: each refused admission names what was reached, its figures and what to do; the edge limiter."""

from datetime import UTC, datetime, timedelta

import pytest

from api.admission import estimated_tokens, refusal_error
from api.edge import EdgeLimiter, refuse_when_over
from api.problems import problem_response
from events.governance import AdmissionDecided, RateLimitStatus
from kernel.errors import QuotaExceeded, Suspended

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
LIMITS = (
    RateLimitStatus(policy="user-requests", unit="requests", quota=3, window_s=60, remaining=0, reset_ms=59_000),
    RateLimitStatus(policy="user-concurrent", unit="concurrent-requests", quota=2, remaining=1),
)


def refused(refusal: str, **fields: object) -> AdmissionDecided:
    return AdmissionDecided(
        org_id="org_a", user_id="user_a", run_id="run_1", admitted=False, refusal=refusal, detail=f"{refusal} detail",
        balance=fields.pop("balance", 0), available=fields.pop("available", 0), limits=LIMITS, decided_at=T0, **fields,
    )


def as_problem(error) -> tuple[int, dict, dict[str, str]]:
    import json

    response = problem_response(error)
    return response.status_code, json.loads(response.body), dict(response.headers)


def test_a_rate_refusal_is_a_429_naming_the_policies_with_every_rate_limit_field() -> None:
    status, body, headers = as_problem(refusal_error(refused(
        "rate_limited", violated_policies=("user-requests",), retry_after_ms=19_001,
    )))
    assert status == 429 and body["type"] == "https://turnlog.dev/problems/quota-exceeded"
    assert (body["reason"], body["violated-policies"], body["retryAfter"]) == ("rate_limited", ["user-requests"], 20)
    assert "retry after 20 s" in body["detail"]
    assert headers["retry-after"] == "20"
    assert headers["ratelimit-policy"] == '"user-requests";q=3;w=60, "user-concurrent";q=2;qu="concurrent-requests"'
    assert headers["ratelimit"] == '"user-requests";r=0;t=59, "user-concurrent";r=1'
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "0")
    assert headers["x-ratelimit-reset-requests"] == "59s"


def test_no_credits_is_a_429_with_the_balance_and_when_it_refills() -> None:
    june = datetime(2026, 6, 1, tzinfo=UTC)
    status, body, headers = as_problem(refusal_error(refused(
        "insufficient_credits", balance=-3, available=-8, refills_at=june, retry_after_ms=(june - T0) // timedelta(milliseconds=1),
    )))
    assert status == 429 and body["reason"] == "insufficient_credits"
    assert (body["balance"], body["available"], body["refillsAt"]) == (-3, -8, "2026-06-01T00:00:00.000Z")
    assert body["retryAfter"] == int(headers["retry-after"]) == 11 * 24 * 3600 + 12 * 3600
    assert "an administrator of your org can grant more" in body["detail"]


def test_a_credits_refusal_without_a_refill_says_so_and_has_no_retry_after() -> None:
    _, body, headers = as_problem(refusal_error(refused("insufficient_credits")))
    assert body["refillsAt"] is None and body["retryAfter"] is None and "retry-after" not in headers
    assert "no refill is scheduled" in body["detail"]


def test_a_suspension_is_a_403_with_when_it_ends() -> None:
    until = T0 + timedelta(minutes=15)
    error = refusal_error(refused("suspended", suspended_until=until, retry_after_ms=900_000))
    assert isinstance(error, Suspended)
    status, body, headers = as_problem(error)
    assert (status, body["type"], body["suspendedUntil"]) == (403, "https://turnlog.dev/problems/suspended", "2026-05-20T12:15:00.000Z")
    assert headers["retry-after"] == "900"


def test_the_edge_refuses_an_address_whose_tokens_keep_failing_and_no_other() -> None:
    now = [T0]
    edge = EdgeLimiter(requests_per_minute=2, clock=lambda: now[0])
    refuse_when_over(edge, "10.0.0.1")
    refuse_when_over(edge, "10.0.0.1")
    with pytest.raises(QuotaExceeded) as refused_error:
        refuse_when_over(edge, "10.0.0.1")
    refuse_when_over(edge, "10.0.0.2")  # another address has a rate of its own
    status, body, headers = as_problem(refused_error.value)
    assert (status, body["reason"], body["violated-policies"]) == (429, "unauthenticated_requests", ["edge-requests"])
    assert headers["retry-after"] == "30" and headers["ratelimit-policy"] == '"edge-requests";q=2;w=60'
    now[0] = T0 + timedelta(seconds=30)
    refuse_when_over(edge, "10.0.0.1")  # one request's worth has drained


def test_the_edge_forgets_drained_addresses_when_full() -> None:
    now = [T0]
    edge = EdgeLimiter(requests_per_minute=60, capacity=10, clock=lambda: now[0])
    for number in range(10):
        edge.failed(f"10.0.0.{number}")
    now[0] = T0 + timedelta(minutes=5)
    edge.failed("10.0.1.1")
    assert edge._arrivals.keys() == {"10.0.1.1"}


def test_the_estimate_is_the_new_inputs_characters_over_four() -> None:
    assert estimated_tokens([]) == 0
    assert estimated_tokens(["hello", "there"]) == 3
