"""Routing runs to pools, circuit breakers, and admission with per-tenant fairness: all pure, time handed in."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.problems import problem_response
from inference.engine import EngineRejected, EngineUnavailable, PromptTooLong
from inference.pools import TENANT_TIERS, BreakerPolicy, PoolConfig, PoolsConfig, RoutingPolicy, default_pools
from inference.routing import (
    Admission,
    CircuitBreaker,
    NoPoolAvailable,
    PoolHealth,
    RouteDecision,
    RouteRequest,
    long_work_reason,
    predicts_long_work,
    route,
    size_class,
)
from kernel.errors import Unavailable

BREAKER = BreakerPolicy(
    consecutive_failures=3, failure_rate=0.5, min_calls=6, window_s=10.0, cool_down_s=30.0,
    half_open_probes=2, probe_timeout_s=60.0,
)


def pool(name: str, **overrides) -> PoolConfig:
    fields = {"name": name, "engine": "scripted", "context_tokens": 8192, "capacity": 8} | overrides
    return PoolConfig(**fields)


def config(*pools: PoolConfig, **policy) -> PoolsConfig:
    return PoolsConfig(pools=pools, policy=RoutingPolicy(**policy), breaker=BREAKER)


def request(**overrides) -> RouteRequest:
    fields = {"prompt_tokens": 1000, "max_output_tokens": 512, "tenant_tier": "free", "tenant_id": "org_a"} | overrides
    return RouteRequest(**fields)


def healthy(pools: PoolsConfig) -> PoolHealth:
    return PoolHealth.for_pools(pools)


def trip(health: PoolHealth, name: str, *, at: float = 0.0) -> None:
    for _ in range(health.policy.consecutive_failures):
        health.record_failure(name, at)


CHEAP = pool("cheap", context_tokens=8192, cost_per_1k_tokens=0.01)
DEAR = pool("dear", context_tokens=131072, cost_per_1k_tokens=0.06)
BATCH = pool("batch", context_tokens=131072, cost_per_1k_tokens=0.02, latency_tier="batch", split_by_size=False)


# --- size classes ----------------------------------------------------------------------------------


def test_prompts_up_to_the_threshold_are_short_and_longer_ones_long():
    assert size_class(0) == size_class(4096) == "short"
    assert size_class(4097) == "long"
    assert size_class(100, short_max_tokens=99) == "long"
    with pytest.raises(ValueError, match="prompt_tokens"):
        size_class(-1)


# --- route: the cheapest pool that fits ------------------------------------------------------------


def test_given_a_cheap_and_a_dear_pool_when_a_short_chat_is_routed_then_it_goes_to_the_cheap_one():
    pools = config(DEAR, CHEAP)

    decision = route(request(prompt_tokens=1000), pools, healthy(pools), now=0.0)

    assert decision == RouteDecision(
        pool="cheap", size_class="short", topic="inference-requests.cheap.short", fallback_from=None,
        reason=decision.reason,
    )
    assert "cheap: the cheapest acceptable pool" in decision.reason


def test_given_a_prompt_too_long_for_the_cheap_pool_when_routed_then_it_goes_to_the_long_context_pool():
    pools = config(CHEAP, DEAR)

    decision = route(request(prompt_tokens=7800, max_output_tokens=512), pools, healthy(pools), now=0.0)

    assert (decision.pool, decision.size_class, decision.topic) == ("dear", "long", "inference-requests.dear.long")
    assert decision.fallback_from is None  # the cheap pool was never acceptable: not a fallback


def test_the_answer_room_counts_against_the_context_window():
    pools = config(CHEAP, DEAR)

    assert route(request(prompt_tokens=7680, max_output_tokens=512), pools, healthy(pools), 0.0).pool == "cheap"
    assert route(request(prompt_tokens=7681, max_output_tokens=512), pools, healthy(pools), 0.0).pool == "dear"


def test_pools_of_equal_price_are_preferred_in_file_order():
    pools = config(pool("first"), pool("second"))

    assert route(request(), pools, healthy(pools), 0.0).pool == "first"


def test_a_run_that_needs_tools_skips_pools_without_them():
    pools = config(pool("cheap", supports_tools=False, cost_per_1k_tokens=0.01), pool("tools", cost_per_1k_tokens=0.05))

    assert route(request(needs_tools=True), pools, healthy(pools), 0.0).pool == "tools"
    assert route(request(needs_tools=False), pools, healthy(pools), 0.0).pool == "cheap"


def test_a_tenant_goes_only_to_pools_that_serve_its_tier():
    pools = config(pool("paid", tiers=("pro", "enterprise"), cost_per_1k_tokens=0.0), pool("open", cost_per_1k_tokens=0.1))

    assert route(request(tenant_tier="free"), pools, healthy(pools), 0.0).pool == "open"
    assert route(request(tenant_tier="pro"), pools, healthy(pools), 0.0).pool == "paid"


# --- long work and batch pools ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"background": True}, "a background run"),
        ({"prompt_tokens": 40_000}, "a prompt of 40000 tokens (over 32768)"),
        ({"max_output_tokens": 8_000}, "up to 8000 output tokens (over 4096)"),
    ],
)
def test_given_long_work_when_routed_then_it_goes_to_the_batch_pool_even_if_an_interactive_one_is_cheaper(overrides, why):
    pools = config(pool("cheap", context_tokens=131072, cost_per_1k_tokens=0.0), BATCH)

    decision = route(request(**overrides), pools, healthy(pools), 0.0)

    assert (decision.pool, decision.topic) == ("batch", "inference-requests.batch")
    assert predicts_long_work(request(**overrides), pools.policy)
    assert long_work_reason(request(**overrides), pools.policy) == why
    assert decision.reason.startswith(f"batch work ({why})")


def test_an_ordinary_chat_is_not_long_work():
    assert long_work_reason(request(prompt_tokens=32768, max_output_tokens=4096), RoutingPolicy()) is None


def test_given_no_batch_pool_when_long_work_is_routed_then_an_interactive_pool_takes_it():
    pools = config(CHEAP, DEAR)

    decision = route(request(background=True), pools, healthy(pools), 0.0)

    assert decision.pool == "cheap" and decision.fallback_from is None
    assert "no batch pool can take it" in decision.reason


def test_given_only_a_batch_pool_when_an_interactive_run_is_routed_then_no_pool_is_available_for_good():
    pools = config(BATCH)

    with pytest.raises(NoPoolAvailable) as raised:
        route(request(), pools, healthy(pools), 0.0)

    assert raised.value.reasons == {"batch": "it is a batch pool and this run is interactive"}
    assert raised.value.retry_after_s is None


# --- breakers and fallback -------------------------------------------------------------------------


def test_given_the_preferred_pool_tripped_when_routed_then_it_falls_back_and_records_from_where():
    pools = config(CHEAP, DEAR)
    health = healthy(pools)
    trip(health, "cheap", at=0.0)

    decision = route(request(), pools, health, now=1.0)

    assert (decision.pool, decision.fallback_from) == ("dear", "cheap")
    assert decision.reason.endswith("skipped cheap (breaker open); dear: the cheapest acceptable pool left (0.06 per 1k tokens)")


def test_given_a_tripped_batch_pool_when_long_work_is_routed_then_it_falls_back_to_an_interactive_pool():
    pools = config(CHEAP, BATCH)
    health = healthy(pools)
    trip(health, "batch")

    decision = route(request(background=True), pools, health, now=1.0)

    assert (decision.pool, decision.fallback_from) == ("cheap", "batch")


def test_given_every_fitting_pool_tripped_when_routed_then_no_pool_is_available_with_a_retry_after():
    pools = config(CHEAP, DEAR, pool("paid", tiers=("enterprise",)))
    health = healthy(pools)
    trip(health, "cheap", at=0.0)
    trip(health, "dear", at=10.0)

    with pytest.raises(NoPoolAvailable) as raised:
        route(request(), pools, health, now=12.5)

    error = raised.value
    assert error.reasons == {
        "cheap": "its breaker is open",
        "dear": "its breaker is open",
        "paid": "it does not serve the free tier",
    }
    assert error.retry_after_s == 18  # cheap half-opens at 30.0: 17.5 s, rounded up
    assert isinstance(error, Unavailable)
    response = problem_response(error)
    assert response.status_code == 503 and response.headers["Retry-After"] == "18"


def test_given_no_pool_fits_when_routed_then_each_pool_says_why_and_no_retry_is_suggested():
    pools = config(CHEAP, pool("notools", supports_tools=False, context_tokens=200_000))

    with pytest.raises(NoPoolAvailable) as raised:
        route(request(prompt_tokens=20_000, needs_tools=True), pools, healthy(pools), 0.0)

    assert raised.value.reasons == {
        "cheap": "its context of 8192 tokens cannot hold 20000 prompt + 512 output tokens",
        "notools": "it does not run tools",
    }
    assert raised.value.retry_after_s is None
    assert "cheap: its context of 8192 tokens" in raised.value.detail


def test_given_a_half_open_pool_when_runs_are_routed_then_only_its_probes_go_there_until_one_succeeds():
    pools = config(CHEAP, DEAR)
    health = healthy(pools)
    trip(health, "cheap", at=0.0)

    probes = [route(request(), pools, health, now=31.0) for _ in range(3)]

    assert [decision.pool for decision in probes] == ["cheap", "cheap", "dear"]  # two probes, then fall back
    assert probes[2].fallback_from == "cheap" and "breaker half-open" in probes[2].reason
    health.record_success("cheap", 32.0)
    assert route(request(), pools, health, now=33.0) == RouteDecision(
        pool="cheap", size_class="short", topic="inference-requests.cheap.short", fallback_from=None,
        reason=probes[0].reason,
    )


def test_the_default_pool_takes_every_run_on_todays_topic():
    pools = default_pools(engine="scripted", capacity=4)
    health = PoolHealth.for_pools(pools)

    for run in (request(), request(prompt_tokens=500_000), request(background=True, needs_tools=True, tenant_tier="pro")):
        decision = route(run, pools, health, 0.0)
        assert (decision.pool, decision.topic, decision.fallback_from) == ("interactive", "inference-requests.interactive", None)


def test_a_route_request_is_checked():
    with pytest.raises(ValueError, match="tenant tier"):
        request(tenant_tier="gold")
    with pytest.raises(ValueError, match="max_output_tokens"):
        request(max_output_tokens=0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        request(prompt_tokens=-1)


# --- property (a): the chosen pool always fits the run and allows its tier ------------------------

pool_strategy = st.builds(
    dict,
    context_tokens=st.sampled_from([512, 4096, 8192, 32768, 131072, None]),
    latency_tier=st.sampled_from(["interactive", "batch"]),
    cost_per_1k_tokens=st.sampled_from([0.0, 0.01, 0.02, 0.06]),
    supports_tools=st.booleans(),
    tiers=st.lists(st.sampled_from(TENANT_TIERS), min_size=1, max_size=3, unique=True).map(tuple),
    split_by_size=st.booleans(),
)
request_strategy = st.builds(
    RouteRequest,
    prompt_tokens=st.integers(0, 200_000),
    max_output_tokens=st.integers(1, 10_000),
    needs_tools=st.booleans(),
    tenant_tier=st.sampled_from(TENANT_TIERS),
    tenant_id=st.sampled_from(["org_a", "org_b"]),
    background=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(pool_strategy, min_size=1, max_size=5),
    run=request_strategy,
    tripped=st.sets(st.integers(0, 4)),
)
def test_property_the_chosen_pool_fits_the_prompt_allows_the_tier_and_is_the_cheapest_healthy_one(specs, run, tripped):
    pools = config(*(pool(f"p{index}", **spec) for index, spec in enumerate(specs)))
    health = healthy(pools)
    for index in tripped & set(range(len(specs))):
        trip(health, f"p{index}")
    long_work = predicts_long_work(run, pools.policy)

    def acceptable(candidate: PoolConfig) -> bool:
        return (
            candidate.fits(run.prompt_tokens + run.max_output_tokens)
            and run.tenant_tier in candidate.tiers
            and (candidate.supports_tools or not run.needs_tools)
            and (long_work or candidate.latency_tier == "interactive")
        )

    def rank(candidate: PoolConfig) -> tuple[int, float, int]:
        preferred_tier = "batch" if long_work else "interactive"
        return (candidate.latency_tier != preferred_tier, candidate.cost_per_1k_tokens, pools.pools.index(candidate))

    fitting = [candidate for candidate in pools.pools if acceptable(candidate)]
    usable = [candidate for candidate in fitting if health.state(candidate.name, 1.0) == "closed"]
    try:
        decision = route(run, pools, health, now=1.0)
    except NoPoolAvailable as error:
        assert not usable
        assert set(error.reasons) == {candidate.name for candidate in pools.pools}
        assert (error.retry_after_s is None) == (not fitting)
        return
    chosen = pools.pool(decision.pool)
    assert chosen.fits(run.prompt_tokens + run.max_output_tokens)
    assert run.tenant_tier in chosen.tiers
    assert chosen.supports_tools or not run.needs_tools
    assert long_work or chosen.latency_tier == "interactive"
    assert chosen == min(usable, key=rank)
    assert decision.fallback_from == (None if chosen == min(fitting, key=rank) else min(fitting, key=rank).name)
    assert decision.size_class == size_class(run.prompt_tokens)
    assert decision.topic == chosen.topic(decision.size_class)


# --- circuit breaker -------------------------------------------------------------------------------


def test_given_a_closed_breaker_when_failures_come_in_a_row_then_it_opens():
    breaker = CircuitBreaker(policy=BREAKER)

    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    assert breaker.state(1.0) == "closed" and breaker.allows(1.0)
    breaker.record_failure(2.0)

    assert breaker.state(2.0) == "open" and not breaker.allows(2.0)
    assert breaker.times_opened == 1


def test_a_success_between_failures_resets_the_run_of_failures():
    breaker = CircuitBreaker(policy=BREAKER)

    for at, failed in enumerate([True, True, False, True, True]):
        (breaker.record_failure if failed else breaker.record_success)(float(at))

    assert breaker.state(5.0) == "closed"


def test_given_a_failure_rate_over_the_window_then_it_opens_without_failures_in_a_row():
    breaker = CircuitBreaker(policy=BREAKER)

    for at, failed in enumerate([False, True, False, True, False]):
        (breaker.record_failure if failed else breaker.record_success)(float(at))
    assert breaker.state(4.0) == "closed"  # 2 of 5: under min_calls
    breaker.record_failure(5.0)  # 3 of 6 failed: 50 %, checked as a failure comes in

    assert breaker.state(5.0) == "open"


OLDER = [(0.0, True), (0.5, True), (1.0, False), (1.5, True), (2.0, True), (2.5, False)]  # 4 of 6 failed
NEWER = [(0.0, False), (0.5, False), (1.0, False), (1.5, True), (2.0, False), (2.5, True)]  # 2 of 6 failed


@pytest.mark.parametrize(("gap_s", "state"), [(20.0, "closed"), (5.0, "open")])
def test_failures_older_than_the_window_no_longer_count(gap_s, state):
    breaker = CircuitBreaker(policy=BREAKER)

    for at, failed in OLDER + [(at + gap_s, failed) for at, failed in NEWER]:
        (breaker.record_failure if failed else breaker.record_success)(at)

    # 20 s later the older outcomes have left the 10 s window (2 of 6 failed); 5 s later they
    # are still in it: 6 of 12 failed.
    assert breaker.state(30.0) == state


def test_given_an_open_breaker_when_the_cool_down_passes_then_it_lets_k_probes_through():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(0.0)

    assert not breaker.allows(29.9) and breaker.retry_at(29.9) == 30.0
    assert breaker.state(30.0) == "half-open"
    assert [breaker.allows(30.0 + step) for step in range(4)] == [True, True, False, False]
    assert breaker.retry_at(34.0) == 64.0  # a probe's outcome is awaited: about a cool-down


def test_given_a_half_open_breaker_when_a_probe_succeeds_then_it_closes():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.allows(30.0)

    breaker.record_success(31.0)

    assert breaker.state(31.0) == "closed" and breaker.allows(31.0) and breaker.retry_at(31.0) == 31.0
    breaker.record_failure(32.0)
    breaker.record_failure(33.0)
    assert breaker.state(33.0) == "closed"  # the run of failures started afresh


def test_given_a_half_open_breaker_when_a_probe_fails_then_it_opens_for_another_cool_down():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.allows(30.0)

    breaker.record_failure(31.0)

    assert breaker.state(31.0) == "open" and breaker.times_opened == 2
    assert breaker.retry_at(31.0) == 61.0 and breaker.state(61.0) == "half-open"


def test_probes_without_an_outcome_time_out_as_a_failure():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.allows(30.0) and breaker.allows(40.0) and not breaker.allows(50.0)

    assert breaker.state(89.9) == "half-open"
    assert breaker.state(90.0) == "open" and breaker.times_opened == 2  # 60 s after the first probe
    assert breaker.state(120.0) == "half-open" and breaker.allows(120.0)


def test_outcomes_arriving_while_open_are_ignored():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(0.0)

    breaker.record_success(1.0)
    breaker.record_failure(2.0)

    assert breaker.state(2.0) == "open" and breaker.retry_at(2.0) == 30.0 and breaker.times_opened == 1


def test_time_never_goes_backwards_for_a_breaker():
    breaker = CircuitBreaker(policy=BREAKER)
    for _ in range(3):
        breaker.record_failure(100.0)

    assert breaker.state(130.0) == "half-open"
    assert breaker.state(5.0) == "half-open"  # an earlier now counts as the latest one seen
    with pytest.raises(ValueError):
        breaker.allows(math.nan)


def test_pool_health_counts_only_unavailability_against_a_pool():
    health = PoolHealth(policy=BREAKER)

    for error in (PromptTooLong(prompt_tokens=9, context_tokens=8), EngineRejected(engine="x", reason="bad"), RuntimeError()):
        for _ in range(3):
            health.record_outcome("small", 0.0, error=error)
    assert health.state("small", 0.0) == "closed"
    for _ in range(3):
        health.record_outcome("small", 1.0, error=EngineUnavailable(engine="x", reason="down"))
    assert health.snapshot(1.0) == {"small": "open"}
    health.record_outcome("small", 40.0, error=None)  # half-open by now: a success closes it
    assert health.snapshot(40.0) == {"small": "closed"}


# --- property (d): never more than K probes while half-open ----------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    probes=st.integers(1, 3),
    steps=st.lists(
        st.tuples(st.sampled_from(["allow", "allow", "success", "failure", "failure"]), st.floats(0.0, 20.0)),
        max_size=120,
    ),
)
def test_property_a_half_open_breaker_never_lets_more_than_k_probes_through(probes, steps):
    policy = BreakerPolicy(
        consecutive_failures=2, failure_rate=0.5, min_calls=4, window_s=10.0, cool_down_s=5.0,
        half_open_probes=probes, probe_timeout_s=15.0,
    )
    breaker = CircuitBreaker(policy=policy)
    probes_by_spell: Counter[int] = Counter()
    now = 0.0
    for action, elapsed in steps:
        now += elapsed
        if action == "allow":
            state = breaker.state(now)
            allowed = breaker.allows(now)
            assert allowed == (state == "closed") or state == "half-open"
            if state == "half-open" and allowed:
                probes_by_spell[breaker.times_opened] += 1
        elif action == "success":
            breaker.record_success(now)
        else:
            breaker.record_failure(now)
    assert all(count <= probes for count in probes_by_spell.values())


# --- admission --------------------------------------------------------------------------------------


def test_the_pool_admits_up_to_its_capacity_then_pushes_back():
    admission = Admission(capacity=3, tenant_share=1.0)

    assert [admission.try_admit("org_a") for _ in range(4)] == [True, True, True, False]
    assert admission.in_flight == 3 and admission.free_slots == 0
    admission.release("org_a")
    assert admission.try_admit("org_b") and admission.holders() == {"org_a": 2, "org_b": 1}


def test_the_tenant_cap_is_a_share_of_capacity_and_at_least_one_slot():
    assert Admission(capacity=8, tenant_share=0.25).tenant_cap == 2
    assert Admission(capacity=3, tenant_share=0.25).tenant_cap == 1
    assert Admission(capacity=8, tenant_share=1.0).tenant_cap == 8


def test_given_a_tenant_at_its_cap_when_another_waits_then_the_other_gets_the_slot():
    admission = Admission(capacity=8, tenant_share=0.25)
    assert admission.try_admit("org_a") and admission.try_admit("org_a")

    assert not admission.try_admit("org_a", waiting=["org_a", "org_b"])
    assert admission.next_tenant(["org_a", "org_b"]) == "org_b"
    assert admission.try_admit("org_b", waiting=["org_a", "org_b"])


def test_given_an_idle_pool_when_one_tenant_has_a_burst_then_it_borrows_the_whole_pool():
    admission = Admission(capacity=4, tenant_share=0.25)

    assert all(admission.try_admit("org_a", waiting=["org_a"]) for _ in range(4))
    assert admission.holders() == {"org_a": 4}


def test_given_a_borrowed_pool_when_another_tenant_arrives_then_every_freed_slot_goes_to_it_until_even():
    admission = Admission(capacity=4, tenant_share=0.5)
    for _ in range(4):
        admission.try_admit("org_a")
    waiting = ["org_a", "org_b"]

    handed_out = []
    for _ in range(3):
        admission.release("org_a")
        tenant = admission.next_tenant(waiting)
        assert admission.try_admit(tenant, waiting=waiting)
        handed_out.append(tenant)

    assert handed_out == ["org_b", "org_b", "org_a"]
    assert admission.holders() == {"org_a": 2, "org_b": 2}


def test_given_every_waiting_tenant_at_its_cap_then_free_slots_are_still_lent_out():
    admission = Admission(capacity=4, tenant_share=0.25)  # cap 1
    waiting = ["org_a", "org_b"]
    for tenant in waiting:
        admission.try_admit(tenant, waiting=waiting)

    assert admission.may_admit("org_a", waiting=waiting)
    assert [admission.next_tenant(waiting) for _ in range(1)] == ["org_a"]


def test_next_tenant_goes_round_robin_among_tenants_holding_as_many_slots():
    admission = Admission(capacity=9, tenant_share=1.0)
    waiting = ["org_c", "org_a", "org_b", "org_a"]

    order = []
    for _ in range(6):
        tenant = admission.next_tenant(waiting)
        admission.try_admit(tenant, waiting=waiting)
        order.append(tenant)

    assert order == ["org_a", "org_b", "org_c", "org_a", "org_b", "org_c"]


def test_no_one_is_chosen_when_the_pool_is_full_or_nobody_waits():
    admission = Admission(capacity=1)

    assert admission.next_tenant([]) is None
    admission.try_admit("org_a")
    assert admission.next_tenant(["org_b"]) is None


def test_releasing_a_slot_that_is_not_held_is_a_bug():
    admission = Admission(capacity=2)

    with pytest.raises(ValueError, match="holds no slot"):
        admission.release("org_a")


def test_admission_for_a_pool_size_class_takes_that_class_capacity():
    split = pool("small", capacity=8, long_capacity=2, tenant_share=0.5)

    assert Admission.for_pool(split, "long").capacity == 2
    assert Admission.for_pool(split, "short").capacity == 6 and Admission.for_pool(split, "short").tenant_cap == 3


def test_admission_arguments_are_checked():
    with pytest.raises(ValueError, match="capacity"):
        Admission(capacity=0)
    with pytest.raises(ValueError, match="tenant_share"):
        Admission(capacity=2, tenant_share=1.5)


# --- property (b): in-flight never exceeds capacity ------------------------------------------------

TENANTS = ["org_a", "org_b", "org_c", "org_d"]


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 8),
    share=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["admit", "next", "release"]),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(TENANTS), max_size=4),
        ),
        max_size=80,
    ),
)
def test_property_in_flight_never_exceeds_capacity(capacity, share, steps):
    admission = Admission(capacity=capacity, tenant_share=share)
    for action, tenant, waiting in steps:
        if action == "admit":
            admission.try_admit(tenant, waiting=waiting)
        elif action == "next":
            chosen = admission.next_tenant(waiting)
            if chosen is not None:
                assert chosen in waiting and admission.try_admit(chosen, waiting=waiting)
        elif admission.held_by(tenant):
            admission.release(tenant)
        assert 0 <= admission.in_flight <= capacity
        assert sum(admission.holders().values()) == admission.in_flight


# --- property (c): tenants that keep waiting share the pool fairly --------------------------------


def simulate(admission: Admission, tenants: list[str], finishing: list[int]) -> tuple[list[dict[str, int]], Counter[str]]:
    """Every tenant always has work waiting; each step fills the free slots, then one generation ends."""
    running: list[str] = []
    held_over_time: list[dict[str, int]] = []
    admitted: Counter[str] = Counter()
    for pick in finishing:
        while (tenant := admission.next_tenant(tenants)) is not None:
            assert admission.try_admit(tenant, waiting=tenants)
            running.append(tenant)
            admitted[tenant] += 1
        assert admission.free_slots == 0  # work-conserving: nobody waits beside an idle slot
        held_over_time.append({tenant: admission.held_by(tenant) for tenant in tenants})
        admission.release(running.pop(pick % len(running)))
    return held_over_time, admitted


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 12),
    share=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    finishing=st.lists(st.integers(0, 100), min_size=1, max_size=150),
)
def test_property_two_tenants_always_waiting_each_hold_at_most_half_the_pool(capacity, share, finishing):
    held_over_time, admitted = simulate(Admission(capacity=capacity, tenant_share=share), ["org_a", "org_b"], finishing)

    fair = math.ceil(capacity / 2)
    for held in held_over_time:
        assert held["org_a"] <= fair and held["org_b"] <= fair
    # Over time (slot-steps held), neither gets more than its fair share.
    for tenant in ("org_a", "org_b"):
        assert sum(held[tenant] for held in held_over_time) <= fair * len(held_over_time)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 12),
    count=st.integers(2, 4),
    finishing=st.lists(st.integers(0, 100), min_size=1, max_size=150),
)
def test_property_n_tenants_always_waiting_each_hold_at_most_their_share(capacity, count, finishing):
    tenants = TENANTS[:count]
    held_over_time, _ = simulate(Admission(capacity=capacity, tenant_share=0.5), tenants, finishing)

    for held in held_over_time:
        assert max(held.values()) <= math.ceil(capacity / count)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 8),
    finishing=st.lists(st.integers(0, 100), min_size=1, max_size=150),
)
def test_property_a_waiting_tenant_with_no_slot_is_served_within_one_round(capacity, finishing):
    admission = Admission(capacity=capacity, tenant_share=0.25)
    running: list[str] = []
    admissions_while_empty_handed: Counter[str] = Counter()
    for pick in finishing:
        while (tenant := admission.next_tenant(TENANTS)) is not None:
            for other in TENANTS:
                if other != tenant and admission.held_by(other) == 0:
                    admissions_while_empty_handed[other] += 1
                    assert admissions_while_empty_handed[other] < len(TENANTS)
            admissions_while_empty_handed[tenant] = 0
            assert admission.try_admit(tenant, waiting=TENANTS)
            running.append(tenant)
        admission.release(running.pop(pick % len(running)))


# --- the walk-through at the end of docs/routing.md, on pools.example.toml ---------------------------


def test_the_docs_walk_through_holds_on_the_example_pools_file():
    from pathlib import Path

    from inference.pools import parse_pools

    pools = parse_pools((Path(__file__).resolve().parents[2] / "pools.example.toml").read_text())
    health = PoolHealth.for_pools(pools)

    assert route(request(), pools, health, 0.0).topic == "inference-requests.small.short"
    assert route(request(prompt_tokens=20_000), pools, health, 0.0).topic == "inference-requests.small.long"
    assert route(request(prompt_tokens=60_000, tenant_tier="pro"), pools, health, 0.0).pool == "batch"
    assert route(request(prompt_tokens=60_000, tenant_tier="pro", needs_tools=True), pools, health, 0.0).pool == "large"
    for _ in range(pools.breaker.consecutive_failures):
        health.record_failure("small", 1.0)
    fallback = route(request(tenant_tier="pro"), pools, health, 2.0)
    assert (fallback.pool, fallback.fallback_from) == ("large", "small")
    with pytest.raises(NoPoolAvailable) as raised:
        route(request(tenant_tier="free"), pools, health, 2.0)
    assert raised.value.retry_after_s == 29
