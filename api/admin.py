"""The org administrators' endpoints: grant credits, set the budget and the refill, suspend and reinstate users.

Each is scoped to the caller's own org (a token with role admin), appends its request to `governance-requests` and
answers with the fact the governance decider wrote (200), so what the answer says is on the log. The bodies are
checked here against what the decider would ignore (a grant of 0, a suspension that has ended), so every request
sent gets an answer. Without a tiers file governance is off and these answer 404.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, require_admin
from api.auth import Principal
from api.bodies import RESOURCE_ID_PATTERN, RequestBody, ResourceId, read_json_body
from api.context import Governance
from api.presenters import iso
from commands.governance.bus import Answer
from events.governance import (
    BudgetChangeRequested,
    BudgetSet,
    CreditsGranted,
    CreditsGrantRequested,
    GovernanceRequest,
    RefillChangeRequested,
    RefillScheduled,
    ReinstatementRequested,
    SuspensionRequested,
    UserReinstated,
    UserSuspended,
)
from kernel.envelope import Actor, utc_now
from kernel.errors import FieldError, InvalidRequest, NotFound

MAX_UNITS = 10**15
MAX_SUSPENSION = timedelta(days=3650)
_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class GrantCreditsBody(RequestBody):
    """`POST /v1/admin/credits`: units to the org's wallet, or to one user's own (negative units take credits back)."""

    units: Annotated[int, Field(ge=-MAX_UNITS, le=MAX_UNITS)]
    user_id: ResourceId | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

    @field_validator("units")
    @classmethod
    def _not_zero(cls, units: int) -> int:
        if units == 0:
            raise ValueError("must not be 0")
        return units


class BudgetBody(RequestBody):
    """`PUT /v1/admin/budget`: prompt + output tokens per calendar month (UTC); null: back to the tier's."""

    monthly_tokens: Annotated[int, Field(ge=1, le=2**62)] | None


class RefillBody(RequestBody):
    """`PUT /v1/admin/refill`: the balance the org's wallet is topped up to on the 1st of each month; null: the tier's."""

    units: Annotated[int, Field(ge=0, le=MAX_UNITS)] | None


class SuspensionBody(RequestBody):
    """`POST /v1/admin/users/{userId}/suspension`: until an instant (ISO 8601 with an offset), or for a number of seconds."""

    until: str | None = None
    duration_s: Annotated[int, Field(ge=1, le=int(MAX_SUSPENSION.total_seconds()))] | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ReinstatementBody(RequestBody):
    """`DELETE /v1/admin/users/{userId}/suspension`, body optional."""

    reason: Reason = ""


async def grant_credits(request: Request) -> JSONResponse:
    principal, governance = _administrator(request)
    body = await read_json_body(request, GrantCreditsBody, max_bytes=context_of(request).limits.max_small_body_bytes)
    answer = await _ask(governance, principal, CreditsGrantRequested(
        org_id=principal.org_id, user_id=body.user_id, units=body.units, reason=body.reason, by=principal.user_id,
    ))
    granted = answer.fact
    assert isinstance(granted, CreditsGranted)
    state = await governance.bus.view.state_of(principal.org_id)  # the bus folded the grant before answering
    return JSONResponse({
        "orgId": granted.org_id, "userId": granted.user_id, "units": granted.units, "reason": granted.reason,
        "by": granted.by, "grantedAt": iso(granted.granted_at),
        "balance": state.balance_of(granted.user_id),
    })


async def set_budget(request: Request) -> JSONResponse:
    principal, governance = _administrator(request)
    body = await read_json_body(request, BudgetBody, max_bytes=context_of(request).limits.max_small_body_bytes)
    answer = await _ask(governance, principal, BudgetChangeRequested(
        org_id=principal.org_id, monthly_tokens=body.monthly_tokens, by=principal.user_id,
    ))
    budget = answer.fact
    assert isinstance(budget, BudgetSet)
    tier_budget = governance.config.tier_of(principal.org_id).monthly_token_budget
    return JSONResponse({
        "orgId": budget.org_id, "monthlyTokens": budget.monthly_tokens,
        "effectiveMonthlyTokens": budget.monthly_tokens if budget.monthly_tokens is not None else tier_budget,
        "by": budget.by, "setAt": iso(budget.set_at),
    })


async def set_refill(request: Request) -> JSONResponse:
    principal, governance = _administrator(request)
    body = await read_json_body(request, RefillBody, max_bytes=context_of(request).limits.max_small_body_bytes)
    answer = await _ask(governance, principal, RefillChangeRequested(org_id=principal.org_id, units=body.units, by=principal.user_id))
    scheduled = answer.fact
    assert isinstance(scheduled, RefillScheduled)
    return JSONResponse({
        "orgId": scheduled.org_id, "units": scheduled.units, "period": scheduled.period, "by": scheduled.by,
        "scheduledAt": iso(scheduled.scheduled_at),
    })


async def suspend_user(request: Request) -> JSONResponse:
    principal, governance = _administrator(request)
    user_id = _user_id(request)
    body = await read_json_body(request, SuspensionBody, max_bytes=context_of(request).limits.max_small_body_bytes)
    until = _suspension_end(body)
    answer = await _ask(governance, principal, SuspensionRequested(
        org_id=principal.org_id, user_id=user_id, until=until, reason=body.reason, by=principal.user_id,
    ))
    suspended = answer.fact
    assert isinstance(suspended, UserSuspended)
    return JSONResponse({
        "orgId": suspended.org_id, "userId": suspended.user_id, "suspendedUntil": iso(suspended.until),
        "reason": suspended.reason, "by": suspended.by, "suspendedAt": iso(suspended.suspended_at),
    })


async def reinstate_user(request: Request) -> JSONResponse:
    principal, governance = _administrator(request)
    user_id = _user_id(request)
    body = await read_json_body(
        request, ReinstatementBody, max_bytes=context_of(request).limits.max_small_body_bytes, allow_empty=True
    )
    answer = await _ask(governance, principal, ReinstatementRequested(
        org_id=principal.org_id, user_id=user_id, reason=body.reason or "reinstated by an administrator", by=principal.user_id,
    ))
    reinstated = answer.fact
    assert isinstance(reinstated, UserReinstated)
    return JSONResponse({
        "orgId": reinstated.org_id, "userId": reinstated.user_id, "reason": reinstated.reason, "by": reinstated.by,
        "reinstatedAt": iso(reinstated.reinstated_at),
    })


def _administrator(request: Request) -> tuple[Principal, Governance]:
    principal = authenticate(request)
    require_admin(principal, "managing your org's credits, limits and users")
    governance = context_of(request).governance
    if governance is None:
        raise NotFound(detail="governance is off on this server: it was started without a tiers file (--tiers)")
    return principal, governance


async def _ask(governance: Governance, principal: Principal, request: GovernanceRequest) -> Answer:
    actor = Actor(user_id=principal.user_id, org_id=principal.org_id, workspace_id="")
    return await governance.bus.ask(request, actor=actor)


def _user_id(request: Request) -> str:
    user_id = request.path_params["user_id"]
    if not _RESOURCE_ID.fullmatch(user_id):
        raise InvalidRequest(
            detail=f"path parameter userId must be 1-64 characters of letters, digits, '_' or '-', got {user_id!r}"
        )
    return user_id


def _suspension_end(body: SuspensionBody) -> datetime:
    if (body.until is None) == (body.duration_s is None):
        raise InvalidRequest(
            detail="request body is invalid: give either until or durationS",
            errors=[FieldError(field="until", message="give either until or durationS")],
        )
    now = utc_now()
    if body.duration_s is not None:
        return now + timedelta(seconds=body.duration_s)
    try:
        until = datetime.fromisoformat(body.until or "")
    except ValueError:
        until = None
    if until is None or until.tzinfo is None:
        raise InvalidRequest(
            detail="request body is invalid: until: must be an ISO 8601 instant with an offset, e.g. 2026-06-01T00:00:00Z",
            errors=[FieldError(field="until", message="must be an ISO 8601 instant with an offset")],
        )
    until = until.astimezone(UTC)
    if not now < until <= now + MAX_SUSPENSION:
        raise InvalidRequest(
            detail="request body is invalid: until: must be in the future (within ten years)",
            errors=[FieldError(field="until", message="must be in the future (within ten years)")],
        )
    return until
