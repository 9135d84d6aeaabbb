"""The governance decider: pure `decide(request, state, config)` and `evolve(state, event)`, one writer per org key.

It takes the requests of topic `governance-requests` in log order and answers with facts on `governance`,
the org's history, from which `evolve` folds the state: the wallets (the org's, and users' own), the
reservations of admitted runs, this month's tokens, the GCRA windows, the violation scores and the
suspensions. Because one writer decides for an org in the order the log gives, every API instance gets
the same answers, and a replay of the history rebuilds the state exactly: each fact carries what was
decided (units, the windows' theoretical arrival times, scores), so the fold never consults the tiers file.

Exactly-once charging: admission opens a reservation keyed by run id; a run's settlement charges it and
closes it in the same fact (`RunCharged`). A settlement delivered again finds no open reservation and
changes nothing, so memory is bounded by the runs in flight, not by history.
Nothing here does I/O or reads a clock: time is the request envelope's, never earlier than the org's last fact.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from commands.governance.abuse import decayed, forgotten_at
from commands.governance.quota import cost_of, month_of, next_month_start
from commands.governance.rate_limits import RatePolicy, concurrency_status, gcra, meter
from commands.governance.tiers_file import GovernanceConfig, Tier
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
from kernel.envelope import Envelope

SYSTEM = "system"
# Refusals a client can cause by hammering: each adds the `rate_limited` points to its user's score.
SCORED_REFUSALS = frozenset({"rate_limited", "concurrent_runs"})


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """An admitted run not yet ended: its estimated most cost is held on the wallet it will be charged to."""

    run_id: str
    user_id: str
    units: int
    estimated_tokens: int
    wallet_user_id: str | None  # a user's own wallet, or None for the org's
    admitted_at: datetime


@dataclass(frozen=True, kw_only=True)
class Score:
    value: float
    at: datetime
    forgotten_at: datetime


@dataclass(frozen=True, kw_only=True)
class Suspension:
    until: datetime
    reason: str
    by: str


@dataclass(frozen=True, kw_only=True)
class OrgState:
    org_id: str | None = None  # None until the org's first fact
    clock: datetime | None = None  # the latest fact's time: decisions never go back before it
    balance: int = 0  # the org's wallet
    user_balances: Mapping[str, int] = field(default_factory=dict)  # users with a wallet of their own
    monthly_token_budget: int | None = None  # set by an operator (None: the tier's applies)
    month: str = ""  # the calendar month (UTC) `month_tokens` counts
    month_tokens: int = 0
    refill_units: int = 0
    refill_by: str = ""  # `tier:<name>`: follows the tiers file; anyone else's schedule stands until changed
    refilled_period: str = ""  # the last month the org's wallet was refilled for (or began in)
    reservations: Mapping[str, Reservation] = field(default_factory=dict)
    windows: Mapping[str, datetime] = field(default_factory=dict)  # GCRA theoretical arrival time per window key
    scores: Mapping[str, Score] = field(default_factory=dict)
    suspensions: Mapping[str, Suspension] = field(default_factory=dict)

    def wallet_of(self, user_id: str) -> str | None:
        """Whose wallet a user's runs draw on: their own once they were granted credits, else the org's (None)."""
        return user_id if user_id in self.user_balances else None

    def balance_of(self, wallet_user_id: str | None) -> int:
        return self.balance if wallet_user_id is None else self.user_balances.get(wallet_user_id, 0)

    def reserved_on(self, wallet_user_id: str | None) -> int:
        return sum(r.units for r in self.reservations.values() if r.wallet_user_id == wallet_user_id)

    def running(self, user_id: str | None = None) -> int:
        """Admitted runs not yet ended, of one user or (None) of the whole org."""
        return sum(1 for r in self.reservations.values() if user_id is None or r.user_id == user_id)

    def tokens_in(self, month: str) -> int:
        return self.month_tokens if self.month == month else 0

    def suspension_of(self, user_id: str, now: datetime) -> Suspension | None:
        suspension = self.suspensions.get(user_id)
        return suspension if suspension is not None and suspension.until > now else None


@dataclass(frozen=True, kw_only=True)
class GovernanceDecision:
    events: tuple[object, ...] = ()
    ignored: str | None = None  # why the request itself changed nothing (already settled, invalid), for the logs


# --- evolve -------------------------------------------------------------------------------------


def evolve(state: OrgState, envelope: Envelope) -> OrgState:
    """Fold one fact of the org's history into the state."""
    return apply(state, envelope.payload)


def fold(state: OrgState, events: Iterable[object]) -> OrgState:
    for event in events:
        state = apply(state, event)
    return state


def apply(state: OrgState, event: object) -> OrgState:
    """`evolve` on a bare fact (each carries its own time)."""
    at = _time_of(event)
    if at is None:
        return state  # not a governance fact
    state = _forget_expired(replace(state, org_id=event.org_id, clock=at if state.clock is None else max(state.clock, at)), at)  # type: ignore[attr-defined]
    match event:
        case CreditsGranted(user_id=None):
            return replace(state, balance=state.balance + event.units)
        case CreditsGranted(user_id=user_id):
            return replace(state, user_balances={**state.user_balances, user_id: state.user_balances.get(user_id, 0) + event.units})
        case BudgetSet():
            return replace(state, monthly_token_budget=event.monthly_tokens)
        case RefillScheduled():
            return replace(
                state, refill_units=event.units, refill_by=event.by,
                refilled_period=state.refilled_period or month_of(event.scheduled_at),
            )
        case CreditsRefilled():
            return replace(state, balance=state.balance + event.units, refilled_period=event.period)
        case AdmissionDecided(admitted=True):
            reservation = Reservation(
                run_id=event.run_id, user_id=event.user_id, units=event.reserved_units,
                estimated_tokens=event.estimated_tokens, wallet_user_id=event.wallet_user_id, admitted_at=event.decided_at,
            )
            return replace(
                state, reservations={**state.reservations, event.run_id: reservation},
                windows=_windows_after(state.windows, event.limits, event.user_id),
            )
        case RunCharged():
            reservations = {run_id: r for run_id, r in state.reservations.items() if run_id != event.run_id}
            state = replace(state, reservations=reservations, windows=_windows_after(state.windows, event.limits, event.user_id))
            state = _debit(state, event.wallet_user_id, event.units)
            month = month_of(event.charged_at)
            tokens = event.prompt_tokens + event.output_tokens
            return replace(state, month=month, month_tokens=state.tokens_in(month) + tokens)
        case ViolationRecorded():
            score = Score(value=event.score, at=event.recorded_at, forgotten_at=event.forgotten_at)
            return replace(state, scores={**state.scores, event.user_id: score})
        case UserSuspended():
            suspension = Suspension(until=event.until, reason=event.reason, by=event.by)
            return replace(
                state, suspensions={**state.suspensions, event.user_id: suspension}, scores=_without(state.scores, event.user_id)
            )
        case UserReinstated():
            return replace(
                state, suspensions=_without(state.suspensions, event.user_id), scores=_without(state.scores, event.user_id)
            )
    return state


def _time_of(event: object) -> datetime | None:
    match event:
        case CreditsGranted():
            return event.granted_at
        case BudgetSet():
            return event.set_at
        case RefillScheduled():
            return event.scheduled_at
        case CreditsRefilled():
            return event.refilled_at
        case AdmissionDecided():
            return event.decided_at
        case RunCharged():
            return event.charged_at
        case ViolationRecorded():
            return event.recorded_at
        case UserSuspended():
            return event.suspended_at
        case UserReinstated():
            return event.reinstated_at
    return None


def _forget_expired(state: OrgState, at: datetime) -> OrgState:
    """Drop what no longer says anything: windows drained, scores decayed away, suspensions over."""
    windows = {key: tat for key, tat in state.windows.items() if tat > at}
    scores = {user: score for user, score in state.scores.items() if score.forgotten_at > at}
    suspensions = {user: s for user, s in state.suspensions.items() if s.until > at}
    if len(windows) == len(state.windows) and len(scores) == len(state.scores) and len(suspensions) == len(state.suspensions):
        return state
    return replace(state, windows=windows, scores=scores, suspensions=suspensions)


def _windows_after(windows: Mapping[str, datetime], limits: Iterable[RateLimitStatus], user_id: str) -> Mapping[str, datetime]:
    updated = {
        window_key(status.policy, user_id): status.theoretical_arrival_at
        for status in limits
        if status.theoretical_arrival_at is not None
    }
    return {**windows, **updated} if updated else windows


def window_key(policy: str, user_id: str) -> str:
    """Where a policy's TAT is kept: one per user for `user-*` policies, one for the org's."""
    return f"{policy}:{user_id}" if policy.startswith("user-") else policy


def _debit(state: OrgState, wallet_user_id: str | None, units: int) -> OrgState:
    if wallet_user_id is None:
        return replace(state, balance=state.balance - units)
    balances = {**state.user_balances, wallet_user_id: state.user_balances.get(wallet_user_id, 0) - units}
    return replace(state, user_balances=balances)


def _without(mapping: Mapping[str, object], key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


# --- decide -------------------------------------------------------------------------------------


def decide(request: Envelope, state: OrgState, config: GovernanceConfig) -> GovernanceDecision:
    """Answer one request of `governance-requests` against the org's state; the events go to `governance`."""
    payload = request.payload
    org_id = getattr(payload, "org_id", None)
    if org_id is None or org_id != request.key:
        return GovernanceDecision(ignored=f"{request.type} keyed {request.key!r} is not a request of that org")
    now = request.occurred_at if state.clock is None else max(state.clock, request.occurred_at)
    tier = config.tier_of(org_id)
    # A run ending now is settled, not lapsed, however late its end comes.
    ending = payload.run_id if isinstance(payload, (RunSettlementRequested, AdmissionWithdrawn)) else None
    upkeep = _upkeep(state, org_id=org_id, tier=tier, config=config, now=now, ending=ending)
    state = fold(state, upkeep)
    events, ignored = _answer(payload, state, tier=tier, config=config, now=now)
    return GovernanceDecision(events=(*upkeep, *events), ignored=ignored)


def _answer(
    payload: object, state: OrgState, *, tier: Tier, config: GovernanceConfig, now: datetime
) -> tuple[tuple[object, ...], str | None]:
    match payload:
        case AdmissionRequested():
            if payload.run_id in state.reservations:
                return (), f"run {payload.run_id} was admitted already: the first decision stands"
            return _admit(payload, state, tier=tier, config=config, now=now), None
        case RunSettlementRequested():
            return _settle(payload, state, tier=tier, config=config, now=now)
        case AdmissionWithdrawn():
            reservation = state.reservations.get(payload.run_id)
            if reservation is None:
                return (), f"run {payload.run_id} holds no reservation"
            return (_charged(state, reservation, status="withdrawn", now=now),), None
        case CreditsGrantRequested():
            if payload.units == 0:
                return (), "a grant of 0 units"
            granted = CreditsGranted(
                org_id=payload.org_id, user_id=payload.user_id, units=payload.units, reason=payload.reason, by=payload.by,
                granted_at=now,
            )
            return (granted,), None
        case BudgetChangeRequested():
            if payload.monthly_tokens is not None and payload.monthly_tokens < 1:
                return (), f"a monthly token budget is >= 1, got {payload.monthly_tokens}"
            return (BudgetSet(org_id=payload.org_id, monthly_tokens=payload.monthly_tokens, by=payload.by, set_at=now),), None
        case RefillChangeRequested():
            if payload.units is not None and payload.units < 0:
                return (), f"a refill is >= 0 units, got {payload.units}"
            if payload.units is None:
                units, by = tier.monthly_refill, f"tier:{tier.name}"
            else:
                units, by = payload.units, payload.by
            return (RefillScheduled(org_id=payload.org_id, units=units, by=by, scheduled_at=now),), None
        case ViolationReported():
            points = config.abuse.points_for(payload.kind)
            return _violation(state, payload.user_id, kind=payload.kind, points=points, detail=payload.detail, config=config, now=now), None
        case SuspensionRequested():
            if payload.until <= now:
                return (), "a suspension must end in the future"
            suspended = UserSuspended(
                org_id=payload.org_id, user_id=payload.user_id, until=payload.until, reason=payload.reason, by=payload.by,
                suspended_at=now,
            )
            return (suspended,), None
        case ReinstatementRequested():
            reinstated = UserReinstated(
                org_id=payload.org_id, user_id=payload.user_id, reason=payload.reason, by=payload.by, reinstated_at=now
            )
            return (reinstated,), None
    return (), f"{type(payload).__name__} is not a governance request"


def _upkeep(
    state: OrgState, *, org_id: str, tier: Tier, config: GovernanceConfig, now: datetime, ending: str | None = None
) -> list[object]:
    """What is due before the request: the start balance, the tier's refill schedule, this month's refill, lapsed runs."""
    due: list[object] = []

    def emit(event: object) -> None:
        nonlocal state
        due.append(event)
        state = apply(state, event)

    tier_refill = f"tier:{tier.name}"
    if state.org_id is None:
        if tier.start_balance:
            emit(CreditsGranted(
                org_id=org_id, units=tier.start_balance, reason=f"start balance of tier {tier.name}", by=SYSTEM, granted_at=now
            ))
        emit(RefillScheduled(org_id=org_id, units=tier.monthly_refill, by=tier_refill, scheduled_at=now))
    elif state.refill_by.startswith("tier:") and (state.refill_by, state.refill_units) != (tier_refill, tier.monthly_refill):
        emit(RefillScheduled(org_id=org_id, units=tier.monthly_refill, by=tier_refill, scheduled_at=now))
    period = month_of(now)
    if state.refill_units > 0 and state.refilled_period != period:
        # Topped up to the refill; an overdraft (at most one run's reservation) is carried, not forgiven.
        topped_up = max(0, state.refill_units - max(0, state.balance))
        emit(CreditsRefilled(org_id=org_id, units=topped_up, period=period, refilled_at=now))
    lapse_before = now - timedelta(seconds=config.admission.reservation_ttl_s)
    for reservation in list(state.reservations.values()):
        if reservation.admitted_at <= lapse_before and reservation.run_id != ending:
            emit(_charged(state, reservation, status="lapsed", now=now))
    return due


# --- admission ----------------------------------------------------------------------------------


def _admit(request: AdmissionRequested, state: OrgState, *, tier: Tier, config: GovernanceConfig, now: datetime) -> tuple[object, ...]:
    user_id = request.user_id
    wallet = state.wallet_of(user_id)
    balance = state.balance_of(wallet)
    available = balance - state.reserved_on(wallet)
    refills_at = next_month_start(now) if wallet is None and state.refill_units > 0 else None
    rates = _rate_decisions(state, tier, user_id=user_id, estimated_tokens=request.estimated_tokens, now=now)
    concurrency = _concurrency(state, tier, user_id=user_id)

    def refused(refusal: str, detail: str, *, retry_after: timedelta | None = None, violated: tuple[str, ...] = (),
                renews_at: datetime | None = refills_at, until: datetime | None = None) -> AdmissionDecided:
        return AdmissionDecided(
            org_id=request.org_id, user_id=user_id, run_id=request.run_id, admitted=False, refusal=refusal, detail=detail,
            violated_policies=violated, retry_after_ms=None if retry_after is None else _ceil_ms(retry_after),
            balance=balance, available=available, wallet_user_id=wallet, refills_at=renews_at, suspended_until=until,
            estimated_tokens=request.estimated_tokens,
            limits=(*(rate.status() for rate in rates), *(status for status, _ in concurrency)), decided_at=now,
        )

    suspension = state.suspension_of(user_id, now)
    if suspension is not None:
        detail = f"user {user_id} is suspended until {suspension.until.isoformat()}: {suspension.reason}"
        return (refused("suspended", detail, retry_after=suspension.until - now, until=suspension.until),)
    if tier.credits and available <= 0:
        whose = "your" if wallet is not None else f"org {request.org_id}'s"
        detail = f"{whose} credits are used up (balance {balance}, {balance - available} held by runs in progress)"
        return (refused("insufficient_credits", detail, retry_after=None if refills_at is None else refills_at - now),)
    budget = state.monthly_token_budget if state.monthly_token_budget is not None else tier.monthly_token_budget
    used = state.tokens_in(month_of(now))
    if budget is not None and used >= budget:
        renews = next_month_start(now)
        detail = f"org {request.org_id} used {used} of its {budget} tokens for {month_of(now)}"
        return (refused("token_budget_exhausted", detail, retry_after=renews - now, renews_at=renews),)
    full = [status.policy for status, over in concurrency if over]
    if full:
        detail = f"too many runs in progress ({', '.join(full)}); wait for one to finish"
        retry = timedelta(seconds=config.admission.concurrency_retry_after_s)
        refusal = refused("concurrent_runs", detail, retry_after=retry, violated=tuple(full))
        return (refusal, *_scored(state, refusal, config=config, now=now))
    limited = [rate for rate in rates if not rate.allowed]
    if limited:
        names = tuple(rate.policy.name for rate in limited)
        retry = max(rate.retry_after for rate in limited)
        refusal = refused("rate_limited", f"rate limit reached ({', '.join(names)})", retry_after=retry, violated=names)
        return (refusal, *_scored(state, refusal, config=config, now=now))
    debited = _rate_decisions(state, tier, user_id=user_id, estimated_tokens=request.estimated_tokens, now=now, debit=True)
    admitted = AdmissionDecided(
        org_id=request.org_id, user_id=user_id, run_id=request.run_id, admitted=True, balance=balance,
        available=available - tier.reservation_units, wallet_user_id=wallet, refills_at=refills_at,
        reserved_units=tier.reservation_units, estimated_tokens=request.estimated_tokens,
        limits=(
            *(rate.status() for rate in debited),
            *(status for status, _ in _concurrency(state, tier, user_id=user_id, adding=1)),
        ),
        decided_at=now,
    )
    return (admitted,)


def rate_policies(tier: Tier) -> tuple[RatePolicy, ...]:
    """The tier's rates, user's before org's, requests before tokens."""
    policies = []
    for scope, limits in (("user", tier.user), ("org", tier.org)):
        if limits.requests_per_minute is not None:
            policies.append(RatePolicy(name=f"{scope}-requests", unit="requests", quota=limits.requests_per_minute))
        if limits.tokens_per_minute is not None:
            policies.append(RatePolicy(name=f"{scope}-tokens", unit="tokens", quota=limits.tokens_per_minute))
    return tuple(policies)


def _rate_decisions(
    state: OrgState, tier: Tier, *, user_id: str, estimated_tokens: int, now: datetime, debit: bool = False
) -> list:
    """Requests count one each at admission; tokens are only checked against the estimate (counted at the run's end)."""
    decisions = []
    for policy in rate_policies(tier):
        tat = state.windows.get(window_key(policy.name, user_id))
        if policy.unit == "requests":
            decisions.append(gcra(policy, tat=tat, now=now, cost=1, debit=debit))
        else:
            decisions.append(gcra(policy, tat=tat, now=now, cost=max(0, estimated_tokens), debit=False))
    return decisions


def _concurrency(
    state: OrgState, tier: Tier, *, user_id: str, adding: int = 0
) -> list[tuple[RateLimitStatus, bool]]:
    """Each concurrency limit's status with `adding` more runs, and whether it was full before them."""
    limits = []
    for scope, limit, running in (
        ("user", tier.user.concurrent_runs, state.running(user_id)),
        ("org", tier.org.concurrent_runs, state.running()),
    ):
        if limit is not None:
            status = concurrency_status(f"{scope}-concurrent", limit=limit, running=running + adding)
            limits.append((status, running >= limit))
    return limits


def current_limits(state: OrgState, config: GovernanceConfig, *, org_id: str, user_id: str, now: datetime) -> tuple[RateLimitStatus, ...]:
    """The user's limits as they stand at `now` (nothing debited): for the headers of answers that are not admissions."""
    tier = config.tier_of(org_id)
    rates = _rate_decisions(state, tier, user_id=user_id, estimated_tokens=0, now=now)
    return (*(rate.status() for rate in rates), *(status for status, _ in _concurrency(state, tier, user_id=user_id)))


# --- settlement ---------------------------------------------------------------------------------


def _settle(
    request: RunSettlementRequested, state: OrgState, *, tier: Tier, config: GovernanceConfig, now: datetime
) -> tuple[tuple[object, ...], str | None]:
    reservation = state.reservations.get(request.run_id)
    if reservation is None:
        # Settled already (a redelivery or a replay of the router), withdrawn, lapsed, or never admitted.
        return (), f"run {request.run_id} holds no reservation"
    units = cost_of(
        config.price_of(request.pool), prompt_tokens=request.prompt_tokens, cached_tokens=request.cached_tokens,
        output_tokens=request.output_tokens,
    )
    tokens = request.prompt_tokens + request.output_tokens
    metered = tuple(
        meter(policy, tat=state.windows.get(window_key(policy.name, reservation.user_id)), now=now, cost=tokens).status()
        for policy in rate_policies(tier)
        if policy.unit == "tokens"
    )
    charged = _charged(
        state, reservation, status=request.status, now=now, units=units, pool=request.pool,
        prompt_tokens=request.prompt_tokens, cached_tokens=request.cached_tokens, output_tokens=request.output_tokens,
        limits=metered,
    )
    return (charged,), None


def _charged(
    state: OrgState, reservation: Reservation, *, status: str, now: datetime, units: int = 0, pool: str = "",
    prompt_tokens: int = 0, cached_tokens: int = 0, output_tokens: int = 0, limits: tuple[RateLimitStatus, ...] = (),
) -> RunCharged:
    return RunCharged(
        org_id=state.org_id or "", user_id=reservation.user_id, run_id=reservation.run_id, status=status, pool=pool,
        units=units, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens,
        reserved_units=reservation.units, wallet_user_id=reservation.wallet_user_id, limits=limits, charged_at=now,
    )


# --- abuse --------------------------------------------------------------------------------------


def _scored(state: OrgState, refusal: AdmissionDecided, *, config: GovernanceConfig, now: datetime) -> tuple[object, ...]:
    if refusal.refusal not in SCORED_REFUSALS:
        return ()
    points = config.abuse.points_for("rate_limited")
    return _violation(state, refusal.user_id, kind="rate_limited", points=points, detail=refusal.detail, config=config, now=now)


def _violation(
    state: OrgState, user_id: str, *, kind: str, points: float, detail: str, config: GovernanceConfig, now: datetime
) -> tuple[object, ...]:
    """The violation with the user's score after it; past the threshold (and not suspended already), a suspension."""
    if points <= 0:
        return ()
    abuse = config.abuse
    earlier = state.scores.get(user_id)
    before = 0.0 if earlier is None else decayed(earlier.value, since=earlier.at, now=now, half_life_s=abuse.half_life_s)
    score = before + points
    recorded = ViolationRecorded(
        org_id=state.org_id or "", user_id=user_id, kind=kind, points=points, score=score, detail=detail,
        forgotten_at=forgotten_at(score, at=now, half_life_s=abuse.half_life_s), recorded_at=now,
    )
    if score < abuse.threshold or state.suspension_of(user_id, now) is not None:
        return (recorded,)
    until = now + timedelta(seconds=abuse.suspension_s)
    suspended = UserSuspended(
        org_id=state.org_id or "", user_id=user_id, until=until,
        reason=f"violation score {score:.1f} reached {abuse.threshold:g} (latest: {kind})", by=SYSTEM, suspended_at=now,
    )
    return (recorded, suspended)


def _ceil_ms(delta: timedelta) -> int:
    return max(0, -(-delta // timedelta(milliseconds=1)))
