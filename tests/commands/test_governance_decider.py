"""The governance decider, given/when/then: given the org's facts, when a request, then the facts it answers with."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from commands.governance.decider import (
    SYSTEM,
    GovernanceDecision,
    OrgState,
    current_limits,
    decide,
    evolve,
    fold,
)
from commands.governance.quota import cost_of, month_of, next_month_start, settlement_request
from commands.governance.rate_limits import rate_limit_headers
from commands.governance.tiers_file import AbusePolicy, AdmissionPolicy, GovernanceConfig, Limits, Price, Tier
from events.catalog import EVENT_TYPES
from events.governance import (
    AdmissionDecided,
    AdmissionRequested,
    AdmissionWithdrawn,
    BudgetChangeRequested,
    BudgetSet,
    CreditsGranted,
    CreditsGrantRequested,
    CreditsRefilled,
    RateLimitStatus,
    RefillChangeRequested,
    RefillScheduled,
    ReinstatementRequested,
    RunCharged,
    RunSettlementRequested,
    SuspensionRequested,
    UserReinstated,
    UserSuspended,
    ViolationRecorded,
    ViolationReported,
)
from events.runs import UsageRecorded
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope

ORG = "org_acme"
ANA, BOB = "user_ana", "user_bob"
T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
FREE = Tier(
    name="free", start_balance=100, monthly_refill=100, reservation_units=10,
    user=Limits(requests_per_minute=3, tokens_per_minute=6_000, concurrent_runs=2),
    org=Limits(concurrent_runs=3),
)
PRO = Tier(name="pro", start_balance=1000, monthly_refill=500, reservation_units=10)
POSTPAID = Tier(name="postpaid", credits=False, reservation_units=10)
CONFIG = GovernanceConfig(
    tiers={"free": FREE, "pro": PRO, "postpaid": POSTPAID},
    prices={"small": Price(prompt=1, cached=0, output=3), "default": Price(prompt=2, cached=1, output=6)},
    abuse=AbusePolicy(threshold=5, half_life_s=600, suspension_s=900),
    admission=AdmissionPolicy(reservation_ttl_s=3600, concurrency_retry_after_s=2),
)
UNLIMITED = replace(CONFIG, tiers={**CONFIG.tiers, "free": replace(FREE, user=Limits(), org=Limits())})


# ---------------------------------------------------------------- given / when


@dataclass(frozen=True)
class History:
    state: OrgState

    def when(self, request: object, *, at: datetime = T0, config: GovernanceConfig = CONFIG, key: str = ORG) -> GovernanceDecision:
        envelope = Envelope.wrap(request, key=key, actor=Actor(user_id=ANA, org_id=ORG, workspace_id="ws"), occurred_at=at)
        return decide(envelope, self.state, config)

    def then_apply(self, decision: GovernanceDecision) -> "History":
        return History(fold(self.state, decision.events))

    def after(self, *requests: tuple[object, datetime], config: GovernanceConfig = CONFIG) -> "History":
        history = self
        for request, at in requests:
            history = history.then_apply(history.when(request, at=at, config=config))
        return history


def given(*events: object) -> History:
    return History(fold(OrgState(), events))


def started(*, units: int = 100, refill: int = 100, tier: str = "free", at: datetime = T0) -> tuple[object, ...]:
    """An org governance has seen: its start balance and its tier's refill."""
    return (
        CreditsGranted(org_id=ORG, units=units, reason=f"start balance of tier {tier}", by=SYSTEM, granted_at=at),
        RefillScheduled(org_id=ORG, units=refill, by=f"tier:{tier}", scheduled_at=at),
    )


def admit(run_id: str, *, user: str = ANA, tokens: int = 0) -> AdmissionRequested:
    return AdmissionRequested(org_id=ORG, user_id=user, run_id=run_id, estimated_tokens=tokens)


def admitted(run_id: str, *, user: str = ANA, units: int = 10, at: datetime = T0, wallet: str | None = None) -> AdmissionDecided:
    return AdmissionDecided(
        org_id=ORG, user_id=user, run_id=run_id, admitted=True, balance=0, available=0, reserved_units=units,
        wallet_user_id=wallet, decided_at=at,
    )


def settle(run_id: str, *, user: str = ANA, pool: str = "small", prompt: int = 0, cached: int = 0, output: int = 0,
           status: str = "completed") -> RunSettlementRequested:
    return RunSettlementRequested(
        org_id=ORG, user_id=user, run_id=run_id, status=status, pool=pool, prompt_tokens=prompt, cached_tokens=cached,
        output_tokens=output,
    )


def only(decision: GovernanceDecision, kind: type) -> object:
    matching = [event for event in decision.events if isinstance(event, kind)]
    assert len(matching) == 1, decision.events
    return matching[0]


# ---------------------------------------------------------------- credits and admission


def test_a_new_org_gets_its_tiers_start_balance_before_its_first_admission() -> None:
    decision = given().when(admit("run_1"))
    granted, scheduled, decided = decision.events
    assert granted == CreditsGranted(org_id=ORG, units=100, reason="start balance of tier free", by=SYSTEM, granted_at=T0)
    assert scheduled == RefillScheduled(org_id=ORG, units=100, by="tier:free", scheduled_at=T0)
    assert isinstance(decided, AdmissionDecided) and decided.admitted
    assert (decided.balance, decided.available, decided.reserved_units) == (100, 90, 10)
    assert decided.refills_at == JUNE


def test_an_admission_holds_a_reservation_until_the_run_ends() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    assert set(history.state.reservations) == {"run_1"}
    assert history.state.balance == 100 and history.state.reserved_on(None) == 10
    decided = only(history.when(admit("run_2"), at=T0 + timedelta(seconds=1)), AdmissionDecided)
    assert decided.admitted and decided.available == 80


def test_no_credits_left_is_refused_with_the_balance_and_when_it_refills() -> None:
    decision = given(*started(units=0)).when(admit("run_1"))
    assert decision.events == (
        AdmissionDecided(
            org_id=ORG, user_id=ANA, run_id="run_1", admitted=False, refusal="insufficient_credits",
            detail=f"org {ORG}'s credits are used up (balance 0, 0 held by runs in progress)",
            retry_after_ms=(JUNE - T0) // timedelta(milliseconds=1), balance=0, available=0, refills_at=JUNE,
            limits=only(decision, AdmissionDecided).limits, decided_at=T0,
        ),
    )
    assert given(*started(units=0)).then_apply(decision).state.reservations == {}  # nothing held


def test_reservations_count_against_the_balance_so_runs_in_progress_cannot_overdraw_it() -> None:
    history = given(*started(units=15)).after((admit("run_1"), T0))
    assert only(history.when(admit("run_2"), at=T0 + timedelta(seconds=1)), AdmissionDecided).available == -5
    history = history.after((admit("run_2"), T0 + timedelta(seconds=1)))
    refused = only(history.when(admit("run_3", user=BOB), at=T0 + timedelta(seconds=2)), AdmissionDecided)
    assert not refused.admitted and refused.refusal == "insufficient_credits"
    assert (refused.balance, refused.available) == (15, -5)
    assert refused.detail == f"org {ORG}'s credits are used up (balance 15, 20 held by runs in progress)"


def test_a_small_balance_still_admits_one_run_which_may_overdraw_by_its_reservation() -> None:
    history = given(*started(units=1)).after((admit("run_1"), T0))
    charged = only(history.when(settle("run_1", prompt=4000, output=2000), at=T0 + timedelta(seconds=5)), RunCharged)
    assert charged.units == 10
    assert history.then_apply(history.when(settle("run_1", prompt=4000, output=2000))).state.balance == -9


def test_a_postpaid_tier_is_never_refused_for_credits() -> None:
    postpaid = replace(CONFIG, orgs={ORG: "postpaid"})
    decided = only(given().when(admit("run_1"), config=postpaid), AdmissionDecided)
    assert decided.admitted and decided.balance == 0 and decided.available == -10


def test_a_user_with_credits_of_their_own_draws_on_them_not_on_the_org() -> None:
    mine = CreditsGranted(org_id=ORG, user_id=ANA, units=30, reason="pilot", by="op_kim", granted_at=T0)
    history = given(*started(units=0), mine)
    decided = only(history.when(admit("run_1")), AdmissionDecided)
    assert decided.admitted and decided.wallet_user_id == ANA and decided.balance == 30 and decided.refills_at is None
    assert not only(history.when(admit("run_2", user=BOB)), AdmissionDecided).admitted  # Bob draws on the empty org wallet
    settled = history.then_apply(history.when(admit("run_1"))).after((settle("run_1", prompt=1000, output=1000), T0))
    assert settled.state.user_balances == {ANA: 26} and settled.state.balance == 0


def test_operators_grant_credits_and_take_them_back() -> None:
    history = given(*started())
    granted = history.when(CreditsGrantRequested(org_id=ORG, units=500, reason="invoice 17", by="op_kim"))
    assert granted.events == (CreditsGranted(org_id=ORG, units=500, reason="invoice 17", by="op_kim", granted_at=T0),)
    history = history.then_apply(granted).after(
        (CreditsGrantRequested(org_id=ORG, units=-50, reason="duplicate grant", by="op_kim"), T0)
    )
    assert history.state.balance == 550
    nothing = history.when(CreditsGrantRequested(org_id=ORG, units=0, reason="", by="op_kim"))
    assert nothing.events == () and nothing.ignored == "a grant of 0 units"


# ---------------------------------------------------------------- charging


def test_a_run_is_charged_its_final_usage_at_its_pools_price_and_its_reservation_released() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    decision = history.when(settle("run_1", prompt=3000, cached=1000, output=500), at=T0 + timedelta(seconds=9))
    (charged,) = decision.events
    assert isinstance(charged, RunCharged)
    # (2000 uncached * 1 + 1000 cached * 0 + 500 output * 3) / 1000 = 3.5, rounded up.
    assert (charged.units, charged.reserved_units, charged.status, charged.pool) == (4, 10, "completed", "small")
    assert [status.policy for status in charged.limits] == ["user-tokens"]  # the run's 3500 tokens are counted
    after = history.then_apply(decision).state
    assert (after.balance, after.reservations, after.month, after.month_tokens) == (96, {}, "2026-05", 3500)


def test_a_settlement_delivered_again_charges_nothing() -> None:
    history = given(*started()).after((admit("run_1"), T0), (settle("run_1", prompt=1000, output=1000), T0))
    again = history.when(settle("run_1", prompt=1000, output=1000), at=T0 + timedelta(seconds=1))
    assert again.events == () and again.ignored == "run run_1 holds no reservation"


def test_a_run_never_admitted_is_not_charged() -> None:
    decision = given(*started()).when(settle("run_legacy", prompt=1000))
    assert decision.events == () and decision.ignored == "run run_legacy holds no reservation"


def test_a_pool_without_a_price_of_its_own_costs_the_default_price() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    assert only(history.when(settle("run_1", pool="large", prompt=1000, cached=500, output=1000)), RunCharged).units == 8


def test_a_withdrawn_admission_releases_its_reservation_for_nothing() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    decision = history.when(AdmissionWithdrawn(org_id=ORG, user_id=ANA, run_id="run_1", reason="conversation busy"))
    (charged,) = decision.events
    assert (charged.status, charged.units, charged.reserved_units) == ("withdrawn", 0, 10)
    history = history.then_apply(decision)
    assert history.state.reservations == {} and history.state.balance == 100
    assert history.when(settle("run_1", prompt=5000)).events == ()


def test_a_reservation_lapses_when_its_run_never_reports_its_end() -> None:
    history = given(*started(), admitted("run_lost", at=T0))
    decision = history.when(admit("run_2"), at=T0 + timedelta(hours=1))
    lapsed, decided = decision.events
    assert isinstance(lapsed, RunCharged) and (lapsed.run_id, lapsed.status, lapsed.units) == ("run_lost", "lapsed", 0)
    assert decided.admitted and history.then_apply(decision).state.reservations.keys() == {"run_2"}


# ---------------------------------------------------------------- refills and budgets


def test_the_first_request_of_a_month_tops_the_wallet_up_to_the_refill() -> None:
    history = given(*started(units=100)).after((admit("run_1"), T0), (settle("run_1", prompt=30_000), T0))
    assert history.state.balance == 70
    decision = history.when(admit("run_2"), at=JUNE + timedelta(hours=3))
    refilled = only(decision, CreditsRefilled)
    assert refilled == CreditsRefilled(org_id=ORG, units=30, period="2026-06", refilled_at=JUNE + timedelta(hours=3))
    history = history.then_apply(decision)
    assert history.state.balance == 100
    assert not any(isinstance(e, CreditsRefilled) for e in history.when(admit("run_3"), at=JUNE + timedelta(days=2)).events)


def test_an_overdraft_is_carried_into_the_next_month() -> None:
    history = given(*started(units=1)).after((admit("run_1"), T0), (settle("run_1", prompt=4000, output=2000), T0))
    assert history.state.balance == -9
    assert only(history.when(admit("run_2"), at=JUNE), CreditsRefilled).units == 100
    assert history.after((admit("run_2"), JUNE)).state.balance == 91


def test_an_admission_delivered_again_while_its_run_is_in_progress_changes_nothing() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    again = history.when(admit("run_1"), at=T0 + timedelta(seconds=1))
    assert again.events == () and again.ignored == "run run_1 was admitted already: the first decision stands"


def test_a_refill_never_takes_away_credits_above_it() -> None:
    history = given(*started(units=100), CreditsGranted(org_id=ORG, units=400, reason="bought", by="op", granted_at=T0))
    assert only(history.when(admit("run_1"), at=JUNE), CreditsRefilled).units == 0


def test_the_refill_follows_the_tiers_file_until_an_operator_sets_one() -> None:
    moved = replace(CONFIG, orgs={ORG: "pro"})
    history = given(*started())
    followed = only(history.when(admit("run_1"), config=moved), RefillScheduled)
    assert followed == RefillScheduled(org_id=ORG, units=500, by="tier:pro", scheduled_at=T0)
    decision = history.when(RefillChangeRequested(org_id=ORG, units=250, by="op_kim"))
    assert decision.events == (RefillScheduled(org_id=ORG, units=250, by="op_kim", scheduled_at=T0),)
    overridden = history.then_apply(decision)
    assert not any(isinstance(e, RefillScheduled) for e in overridden.when(admit("run_1"), config=moved).events)
    back = overridden.when(RefillChangeRequested(org_id=ORG, units=None, by="op_kim"), config=moved)
    assert back.events == (RefillScheduled(org_id=ORG, units=500, by="tier:pro", scheduled_at=T0),)


def test_an_org_over_its_monthly_token_budget_is_refused_until_the_next_month() -> None:
    budget = BudgetSet(org_id=ORG, monthly_tokens=5000, by="op_kim", set_at=T0)
    history = given(*started(units=1000), budget).after((admit("run_1"), T0), (settle("run_1", prompt=4000, output=1000), T0))
    refused = only(history.when(admit("run_2"), at=T0 + timedelta(minutes=5)), AdmissionDecided)
    assert (refused.admitted, refused.refusal, refused.refills_at) == (False, "token_budget_exhausted", JUNE)
    assert refused.detail == f"org {ORG} used 5000 of its 5000 tokens for 2026-05"
    assert refused.retry_after_ms == (JUNE - T0 - timedelta(minutes=5)) // timedelta(milliseconds=1)
    assert only(history.when(admit("run_2"), at=JUNE), AdmissionDecided).admitted


def test_operators_set_and_clear_the_budget() -> None:
    history = given(*started())
    decision = history.when(BudgetChangeRequested(org_id=ORG, monthly_tokens=10, by="op_kim"))
    assert decision.events == (BudgetSet(org_id=ORG, monthly_tokens=10, by="op_kim", set_at=T0),)
    assert history.then_apply(decision).state.monthly_token_budget == 10
    assert history.when(BudgetChangeRequested(org_id=ORG, monthly_tokens=0, by="op_kim")).events == ()


# ---------------------------------------------------------------- rate limits and concurrency


def test_a_user_over_requests_per_minute_is_refused_with_when_to_retry() -> None:
    rates = replace(CONFIG, tiers={**CONFIG.tiers, "free": replace(FREE, user=Limits(requests_per_minute=3), org=Limits())})
    # Three this minute: the user's whole burst.
    history = given(*started(units=1000)).after(*((admit(f"run_{i}"), T0) for i in range(3)), config=rates)
    decision = history.when(admit("run_3", user=ANA), at=T0 + timedelta(seconds=1), config=rates)
    refused, violation = decision.events
    assert (refused.refusal, refused.violated_policies, refused.retry_after_ms) == ("rate_limited", ("user-requests",), 19_000)
    assert isinstance(violation, ViolationRecorded) and (violation.kind, violation.points, violation.score) == ("rate_limited", 1, 1)
    assert rate_limit_headers(refused.limits, retry_after_ms=refused.retry_after_ms)["Retry-After"] == "19"
    # Bob has a burst of his own.
    assert only(history.when(admit("run_b", user=BOB), at=T0 + timedelta(seconds=1), config=rates), AdmissionDecided).admitted


def test_too_many_runs_in_progress_per_user_and_per_org() -> None:
    history = given(*started(units=1000), admitted("r1"), admitted("r2"))
    refused, _ = history.when(admit("r3")).events
    assert (refused.refusal, refused.violated_policies, refused.retry_after_ms) == ("concurrent_runs", ("user-concurrent",), 2000)
    busy_org = given(*started(units=1000), admitted("r1"), admitted("r2", user=BOB), admitted("r3", user="user_cy"))
    refused, _ = busy_org.when(admit("r4")).events
    assert refused.violated_policies == ("org-concurrent",)
    freed = history.after((settle("r1"), T0))
    assert only(freed.when(admit("r3")), AdmissionDecided).admitted


def test_tokens_per_minute_are_counted_when_runs_end_and_checked_against_the_next_estimate() -> None:
    history = given(*started(units=1000)).after((admit("run_1"), T0), (settle("run_1", prompt=5000, output=1000), T0))
    refused = only(history.when(admit("run_2", tokens=500), at=T0 + timedelta(seconds=1)), AdmissionDecided)
    assert (refused.refusal, refused.violated_policies) == ("rate_limited", ("user-tokens",))
    assert refused.retry_after_ms == 4_000  # 500 tokens drain in 5 s at 100 a second
    assert only(history.when(admit("run_2", tokens=500), at=T0 + timedelta(seconds=5)), AdmissionDecided).admitted


def test_an_admission_carries_every_limit_for_the_headers() -> None:
    decided = only(given(*started()).when(admit("run_1", tokens=100)), AdmissionDecided)
    assert [(s.policy, s.remaining) for s in decided.limits] == [
        ("user-requests", 2), ("user-tokens", 6000), ("user-concurrent", 1), ("org-concurrent", 2),
    ]
    headers = rate_limit_headers(decided.limits)
    assert headers["RateLimit-Policy"] == (
        '"user-requests";q=3;w=60, "user-concurrent";q=2;qu="concurrent-requests", '
        '"org-concurrent";q=3;qu="concurrent-requests"'
    )
    assert headers["RateLimit"] == '"user-requests";r=2;t=20, "user-concurrent";r=1, "org-concurrent";r=2'
    assert headers["x-ratelimit-remaining-requests"] == "2" and headers["x-ratelimit-reset-requests"] == "20s"


def test_the_current_limits_of_a_user_for_answers_that_are_not_admissions() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    limits = current_limits(history.state, CONFIG, org_id=ORG, user_id=ANA, now=T0 + timedelta(seconds=10))
    assert [(s.policy, s.remaining, s.reset_ms) for s in limits] == [
        ("user-requests", 2, 10_000), ("user-tokens", 6000, 0), ("user-concurrent", 1, 0), ("org-concurrent", 2, 0),
    ]


def test_windows_that_drained_are_forgotten() -> None:
    history = given(*started()).after((admit("run_1"), T0))
    assert set(history.state.windows) == {"user-requests:user_ana"}
    later = history.after((CreditsGrantRequested(org_id=ORG, units=1, reason="r", by="op"), T0 + timedelta(minutes=1)))
    assert later.state.windows == {}


# ---------------------------------------------------------------- abuse


def test_repeated_rate_limit_hits_suspend_the_user() -> None:
    history = given(*started(units=1000), admitted("r1"), admitted("r2"))
    for second in range(5):  # five hits in five seconds: just under 5 points, decayed a little
        history = history.after((admit(f"x{second}"), T0 + timedelta(seconds=second)))
    assert history.state.scores[ANA].value == pytest.approx(5, abs=0.02) and history.state.scores[ANA].value < 5
    decision = history.when(admit("x5"), at=T0 + timedelta(seconds=5))
    refused, violation, suspended = decision.events
    assert refused.refusal == "concurrent_runs" and violation.score == pytest.approx(6, abs=0.03)
    assert suspended == UserSuspended(
        org_id=ORG, user_id=ANA, until=T0 + timedelta(seconds=5, minutes=15),
        reason=f"violation score {violation.score:.1f} reached 5 (latest: rate_limited)", by=SYSTEM,
        suspended_at=T0 + timedelta(seconds=5),
    )
    history = history.then_apply(decision).after((settle("r1"), T0 + timedelta(seconds=5)))
    blocked = history.when(admit("x5"), at=T0 + timedelta(minutes=1))
    (refused,) = blocked.events  # a suspended user's refusals add no points
    assert (refused.refusal, refused.suspended_until) == ("suspended", suspended.until)
    assert refused.retry_after_ms == (suspended.until - T0 - timedelta(minutes=1)) // timedelta(milliseconds=1)
    assert only(history.when(admit("x5"), at=suspended.until), AdmissionDecided).admitted


def test_a_score_decays_with_event_time() -> None:
    lenient = replace(CONFIG, abuse=replace(CONFIG.abuse, threshold=100))
    history = given(*started()).after(
        (ViolationReported(org_id=ORG, user_id=ANA, kind="flagged_input", detail="", by="moderation"), T0), config=lenient
    )
    assert history.state.scores[ANA].value == 5
    report = ViolationReported(org_id=ORG, user_id=ANA, kind="other", by="moderation")
    (violation,) = history.when(report, at=T0 + timedelta(minutes=10), config=lenient).events
    assert violation.score == pytest.approx(5 / 2 + 3)  # 5 points halved after one half-life, plus 3
    assert violation.forgotten_at > T0 + timedelta(minutes=10)


def test_sandbox_escapes_reported_twice_suspend_at_once() -> None:
    escape = ViolationReported(org_id=ORG, user_id=ANA, kind="sandbox_escape", detail="wrote /etc/passwd", by="sandbox")
    decision = given(*started()).when(escape)
    recorded, suspended = decision.events
    assert (recorded.points, recorded.score, recorded.detail) == (10, 10, "wrote /etc/passwd")
    assert suspended.until == T0 + timedelta(minutes=15)


def test_operators_suspend_and_reinstate() -> None:
    until = T0 + timedelta(days=1)
    history = given(*started())
    decision = history.when(SuspensionRequested(org_id=ORG, user_id=ANA, until=until, reason="chargeback", by="op_kim"))
    assert decision.events == (UserSuspended(org_id=ORG, user_id=ANA, until=until, reason="chargeback", by="op_kim", suspended_at=T0),)
    history = history.then_apply(decision)
    assert only(history.when(admit("run_1"), at=T0 + timedelta(hours=1)), AdmissionDecided).refusal == "suspended"
    lifted = history.when(ReinstatementRequested(org_id=ORG, user_id=ANA, reason="resolved", by="op_kim"), at=T0 + timedelta(hours=2))
    assert lifted.events == (UserReinstated(org_id=ORG, user_id=ANA, reason="resolved", by="op_kim", reinstated_at=T0 + timedelta(hours=2)),)
    assert only(history.then_apply(lifted).when(admit("run_1"), at=T0 + timedelta(hours=2)), AdmissionDecided).admitted
    assert history.when(SuspensionRequested(org_id=ORG, user_id=ANA, until=T0, reason="", by="op")).events == ()


# ---------------------------------------------------------------- time, keys, the fold


def test_decisions_never_go_back_in_time() -> None:
    history = given(*started()).after((admit("run_1"), T0 + timedelta(seconds=30)))
    decided = only(history.when(admit("run_2"), at=T0), AdmissionDecided)  # another instance's clock lags
    assert decided.decided_at == T0 + timedelta(seconds=30)


def test_a_request_keyed_by_another_org_is_ignored() -> None:
    decision = given().when(admit("run_1"), key="org_other")
    assert decision.events == () and "is not a request of that org" in (decision.ignored or "")


def test_the_fold_takes_envelopes_like_every_other_fold() -> None:
    event = CreditsGranted(org_id=ORG, units=7, reason="r", by="op", granted_at=T0)
    state = evolve(OrgState(), Envelope.wrap(event, key=ORG, actor=Actor(user_id="op", org_id=ORG, workspace_id="")))
    assert (state.org_id, state.balance, state.clock) == (ORG, 7, T0)


def test_facts_roundtrip_through_the_codec() -> None:
    codec = AvroCodec(payload_types=EVENT_TYPES)
    status = RateLimitStatus(policy="user-requests", unit="requests", quota=3, window_s=60, remaining=2, reset_ms=20_000,
                             theoretical_arrival_at=T0)
    for event in (
        AdmissionDecided(org_id=ORG, user_id=ANA, run_id="r", admitted=False, refusal="rate_limited", detail="d",
                         violated_policies=("user-requests",), retry_after_ms=59_000, balance=5, available=-5,
                         refills_at=JUNE, limits=(status,), decided_at=T0),
        RunCharged(org_id=ORG, user_id=ANA, run_id="r", status="completed", pool="small", units=4, prompt_tokens=1,
                   reserved_units=10, wallet_user_id=ANA, limits=(status,), charged_at=T0),
        ViolationRecorded(org_id=ORG, user_id=ANA, kind="other", points=3.0, score=4.5, forgotten_at=JUNE, recorded_at=T0),
    ):
        assert codec.decode_payload(codec.encode_payload(event)) == event


# ---------------------------------------------------------------- prices, months, settlement requests


def test_cost_rounds_up_and_prices_cached_tokens_apart() -> None:
    price = Price(prompt=2, cached=1, output=6)
    assert cost_of(price, prompt_tokens=0, cached_tokens=0, output_tokens=0) == 0
    assert cost_of(price, prompt_tokens=1, cached_tokens=0, output_tokens=0) == 1
    assert cost_of(price, prompt_tokens=1000, cached_tokens=400, output_tokens=500) == 5  # 1.2 + 0.4 + 3 = 4.6
    assert cost_of(price, prompt_tokens=100, cached_tokens=900, output_tokens=0) == 1  # cached never exceeds the prompt


def test_months_are_calendar_months_in_utc() -> None:
    assert month_of(datetime(2026, 5, 31, 23, 59, tzinfo=UTC)) == "2026-05"
    assert month_of(datetime(2026, 6, 1, 1, 0, tzinfo=timezone_plus(2))) == "2026-05"
    assert next_month_start(datetime(2026, 12, 15, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def timezone_plus(hours: int):
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_a_settlement_request_carries_the_runs_last_usage_record() -> None:
    def usage(prompt: int, output: int, status: str, pool: str = "small") -> UsageRecorded:
        return UsageRecorded(run_id="r", conversation_id="c", pool=pool, engine="e", status=status, prompt_tokens=prompt,
                             cached_tokens=0, output_tokens=output, recorded_at=T0)

    steps = [usage(100, 10, "tool_calls"), usage(250, 40, "tool_calls", pool="large")]
    request = settlement_request(org_id=ORG, user_id=ANA, run_id="r", status="failed", usage_records=steps)
    assert request == settle("r", pool="large", prompt=250, output=40, status="failed")
    assert settlement_request(org_id=ORG, user_id=ANA, run_id="r", status="cancelled", usage_records=[]) == RunSettlementRequested(
        org_id=ORG, user_id=ANA, run_id="r", status="cancelled"
    )
