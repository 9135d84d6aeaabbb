"""Governance answers: the org's usage, and what its administrators' requests wrote (docs/governance.md)."""

from __future__ import annotations

from api.schemas.base import Instant, ResponseModel


class HourlySpend(ResponseModel):
    hour: Instant
    pool: str
    engine: str
    runs: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    units: int | None


class Wallet(ResponseModel):
    balance: int
    reserved: int


class Refill(ResponseModel):
    units: int
    by: str


class SuspendedUser(ResponseModel):
    user_id: str
    until: Instant
    reason: str
    by: str


class OrgUsage(ResponseModel):
    """`GET /v1/usage`: the recent spend always; the rest only with governance on (a tiers file)."""

    org_id: str
    governance: bool
    recent_spend: list[HourlySpend]
    tier: str | None = None
    credits: bool | None = None
    balance: int | None = None
    reserved: int | None = None
    available: int | None = None
    user_wallets: dict[str, Wallet] | None = None
    runs_in_progress: int | None = None
    month: str | None = None
    month_tokens: int | None = None
    monthly_token_budget: int | None = None
    refill: Refill | None = None
    refills_at: Instant | None = None
    suspended_users: list[SuspendedUser] | None = None
    as_of: Instant | None = None


class CreditsGrant(ResponseModel):
    """`POST /v1/admin/credits`."""

    org_id: str
    user_id: str | None
    units: int
    reason: str
    by: str
    granted_at: Instant
    balance: int


class BudgetChange(ResponseModel):
    """`PUT /v1/admin/budget`."""

    org_id: str
    monthly_tokens: int | None
    effective_monthly_tokens: int | None
    by: str
    set_at: Instant


class RefillChange(ResponseModel):
    """`PUT /v1/admin/refill`."""

    org_id: str
    units: int
    period: str
    by: str
    scheduled_at: Instant


class Suspension(ResponseModel):
    """`POST /v1/admin/users/{userId}/suspension`."""

    org_id: str
    user_id: str
    suspended_until: Instant
    reason: str
    by: str
    suspended_at: Instant


class Reinstatement(ResponseModel):
    """`DELETE /v1/admin/users/{userId}/suspension`."""

    org_id: str
    user_id: str
    reason: str
    by: str
    reinstated_at: Instant
