"""Governance: credits, budgets, rate limits and abuse controls, per org (see docs/governance.md).

Two topics, both keyed by org id. `governance-requests` carries what others ask of an org's
governance (the API's admissions and withdrawals, the settlement of finished runs, operators'
grants, budgets, suspensions, and violations reported by the sandbox or moderation); nobody folds
it. `governance` is the org's history, written only by the governance decider, which takes each
request in log order and answers with the facts below; an org's balance, windows and scores are
folded from it alone. Every fact carries the values it decided (units, theoretical arrival times,
scores), so folding it never needs the tiers file: a replay folds what was decided, whatever the
file says today.
"""

from dataclasses import dataclass
from datetime import datetime

# --- requests (topic `governance-requests`) ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdmissionRequested:
    """The API asks whether `user_id` may start run `run_id` now (a turn or a regeneration)."""

    org_id: str
    user_id: str
    run_id: str
    estimated_tokens: int = 0  # the API's guess at the run's prompt and answer, checked against tokens per minute


@dataclass(frozen=True, kw_only=True)
class AdmissionWithdrawn:
    """The admitted run will not happen (the conversation refused the turn, or answered with an earlier run)."""

    org_id: str
    user_id: str
    run_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RunSettlementRequested:
    """A run ended (its `RunFinished`); its final usage is its last `UsageRecorded`, the usage ledger's row."""

    org_id: str
    user_id: str
    run_id: str
    status: str  # completed | cancelled | failed
    pool: str = ""  # the pool of the run's last usage record ("" when the run used nothing)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class CreditsGrantRequested:
    """An operator grants (or, with negative units, takes back) credits, to the org or to one of its users."""

    org_id: str
    user_id: str | None = None
    units: int
    reason: str
    by: str


@dataclass(frozen=True, kw_only=True)
class BudgetChangeRequested:
    """An operator sets the org's monthly token budget (None: back to its tier's)."""

    org_id: str
    monthly_tokens: int | None = None
    by: str


@dataclass(frozen=True, kw_only=True)
class RefillChangeRequested:
    """An operator sets the org's monthly refill (None: back to its tier's)."""

    org_id: str
    units: int | None = None
    by: str


@dataclass(frozen=True, kw_only=True)
class ViolationReported:
    """Something a user did that counts against them: flagged input, a sandbox escape tried."""

    org_id: str
    user_id: str
    kind: str  # flagged_input | sandbox_escape | ... (the tiers file's [abuse.points] name their weight)
    detail: str = ""
    by: str


@dataclass(frozen=True, kw_only=True)
class SuspensionRequested:
    """An operator suspends a user until `until`."""

    org_id: str
    user_id: str
    until: datetime
    reason: str
    by: str


@dataclass(frozen=True, kw_only=True)
class ReinstatementRequested:
    """An operator lifts a user's suspension (and clears their violation score)."""

    org_id: str
    user_id: str
    reason: str
    by: str


# --- the org's history (topic `governance`) -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RateLimitStatus:
    """One limit as it stood after a decision: what the rate-limit headers say, and the state to fold."""

    policy: str  # user-requests | org-requests | user-tokens | org-tokens | user-concurrent | org-concurrent
    unit: str  # requests | tokens | concurrent-requests
    quota: int
    window_s: int = 0  # 0: not a rate over time (concurrent runs)
    remaining: int
    reset_ms: int = 0  # until the whole quota is available again
    theoretical_arrival_at: datetime | None = None  # the GCRA state after the decision (rates only)


@dataclass(frozen=True, kw_only=True)
class CreditsGranted:
    org_id: str
    user_id: str | None = None  # a user's own wallet; None: the org's
    units: int  # negative: an adjustment that takes credits back
    reason: str
    by: str  # an operator, or `system` for a tier's start balance
    granted_at: datetime


@dataclass(frozen=True, kw_only=True)
class BudgetSet:
    org_id: str
    monthly_tokens: int | None = None  # None: the tier's budget applies
    by: str
    set_at: datetime


@dataclass(frozen=True, kw_only=True)
class RefillScheduled:
    org_id: str
    units: int  # the balance the org's wallet is topped up to at each period's start (0: no refill)
    period: str = "monthly"
    by: str  # `tier:<name>` follows the tiers file; an operator's schedule overrides it
    scheduled_at: datetime


@dataclass(frozen=True, kw_only=True)
class CreditsRefilled:
    org_id: str
    units: int  # added: the refill less what was left (never negative)
    period: str  # the calendar month (UTC) it is for, e.g. 2026-05
    refilled_at: datetime


@dataclass(frozen=True, kw_only=True)
class AdmissionDecided:
    """The answer to an `AdmissionRequested`: admitted (a reservation is held) or refused (nothing else changes)."""

    org_id: str
    user_id: str
    run_id: str
    admitted: bool
    refusal: str | None = None  # suspended | insufficient_credits | token_budget_exhausted | concurrent_runs | rate_limited
    detail: str = ""
    violated_policies: tuple[str, ...] = ()
    retry_after_ms: int | None = None
    balance: int  # the wallet the run draws on, before the run is charged
    available: int  # that balance less every reservation held on it, this one included
    wallet_user_id: str | None = None  # whose wallet: a user's own, or None for the org's
    refills_at: datetime | None = None
    suspended_until: datetime | None = None
    reserved_units: int = 0
    estimated_tokens: int = 0
    limits: tuple[RateLimitStatus, ...] = ()
    decided_at: datetime


@dataclass(frozen=True, kw_only=True)
class RunCharged:
    """An admitted run's end: its cost taken from the wallet and its reservation released (exactly one per admitted run)."""

    org_id: str
    user_id: str
    run_id: str
    status: str  # completed | cancelled | failed; withdrawn | lapsed: it never ran (or was never settled), nothing is charged
    pool: str = ""
    units: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reserved_units: int
    wallet_user_id: str | None = None
    limits: tuple[RateLimitStatus, ...] = ()  # the tokens-per-minute windows after the run's tokens were counted
    charged_at: datetime


@dataclass(frozen=True, kw_only=True)
class ViolationRecorded:
    org_id: str
    user_id: str
    kind: str  # rate_limited | flagged_input | sandbox_escape | ...
    points: float
    score: float  # the user's score after this violation (earlier points decayed to this moment)
    detail: str = ""
    forgotten_at: datetime  # when the score will have decayed to nothing
    recorded_at: datetime


@dataclass(frozen=True, kw_only=True)
class UserSuspended:
    org_id: str
    user_id: str
    until: datetime
    reason: str
    by: str  # an operator, or `system` when the violation score passed the threshold
    suspended_at: datetime


@dataclass(frozen=True, kw_only=True)
class UserReinstated:
    org_id: str
    user_id: str
    reason: str
    by: str
    reinstated_at: datetime


GOVERNANCE_REQUEST_TYPES = (
    AdmissionRequested, AdmissionWithdrawn, RunSettlementRequested, CreditsGrantRequested, BudgetChangeRequested,
    RefillChangeRequested, ViolationReported, SuspensionRequested, ReinstatementRequested,
)
GOVERNANCE_EVENT_TYPES = (
    CreditsGranted, BudgetSet, RefillScheduled, CreditsRefilled, AdmissionDecided, RunCharged, ViolationRecorded,
    UserSuspended, UserReinstated,
)
GovernanceRequest = (
    AdmissionRequested | AdmissionWithdrawn | RunSettlementRequested | CreditsGrantRequested | BudgetChangeRequested
    | RefillChangeRequested | ViolationReported | SuspensionRequested | ReinstatementRequested
)
