"""Admission: before a turn or a regeneration is sent, its org's governance decides whether the run may start.

The API appends `AdmissionRequested` and waits for the `AdmissionDecided` it caused (commands/governance/bus.py).
A refusal is the answer to the request itself: 429 `quota-exceeded` (credits, budget, rate, runs in progress) or
403 `suspended`, with `Retry-After` and the rate-limit fields, and nothing is sent to the conversation. An admitted
run that the conversation then refuses is withdrawn, so its reservation is released at once; a timeout is not a
refusal (the command may still be decided), so it withdraws nothing and the reservation lapses if the run never
comes. Without a tiers file none of this runs.
"""

import logging

from commands.governance.rate_limits import rate_limit_headers
from events.governance import AdmissionDecided, AdmissionRequested, AdmissionWithdrawn
from api.context import ApiContext
from api.metrics import QUOTA_REFUSALS
from api.presenters import iso
from kernel.envelope import Actor
from kernel.errors import QuotaExceeded, Suspended, TurnlogError

logger = logging.getLogger(__name__)

CHARACTERS_PER_TOKEN = 4  # a rough count of the new input, checked against tokens per minute


def estimated_tokens(texts: list[str] | tuple[str, ...]) -> int:
    """The run's new input in tokens, roughly: what the admission checks against the tokens left this minute."""
    return -(-sum(len(text) for text in texts) // CHARACTERS_PER_TOKEN)


async def admit_run(context: ApiContext, actor: Actor, *, run_id: str, estimated: int) -> AdmissionDecided | None:
    """The admission of run `run_id` (None when governance is off); a refusal raises its problem."""
    if context.governance is None:
        return None
    request = AdmissionRequested(org_id=actor.org_id, user_id=actor.user_id, run_id=run_id, estimated_tokens=estimated)
    answer = await context.governance.bus.ask(request, actor=actor)
    decided = answer.fact
    assert isinstance(decided, AdmissionDecided)
    if not decided.admitted:
        QUOTA_REFUSALS.labels(kind=decided.refusal or "unknown").inc()
        raise refusal_error(decided)
    return decided


async def withdraw_run(context: ApiContext, actor: Actor, *, run_id: str, reason: str) -> None:
    """Release an admitted run's reservation: the conversation refused it, or answered with another run."""
    if context.governance is None:
        return
    withdrawn = AdmissionWithdrawn(org_id=actor.org_id, user_id=actor.user_id, run_id=run_id, reason=reason)
    try:
        await context.governance.bus.tell(withdrawn, actor=actor)
    except Exception:  # the client's answer matters more: the reservation lapses by itself
        logger.exception("could not withdraw the admission of run %s", run_id)


def refusal_error(decided: AdmissionDecided) -> TurnlogError:
    """A refused admission as its problem: what was reached, the figures, and what to do."""
    headers = rate_limit_headers(decided.limits, retry_after_ms=decided.retry_after_ms)
    retry_after = None if decided.retry_after_ms is None else max(1, -(-decided.retry_after_ms // 1000))
    match decided.refusal:
        case "suspended":
            until = iso(decided.suspended_until)
            return Suspended(
                detail=f"{decided.detail}; it ends at {until}, or an administrator of your org can reinstate you",
                headers=headers,
                extra={"reason": "suspended", "suspendedUntil": until, "retryAfter": retry_after},
            )
        case "insufficient_credits" | "token_budget_exhausted":
            refills_at = iso(decided.refills_at)
            if decided.refusal == "insufficient_credits":
                renewal = f"credits are refilled at {refills_at}" if refills_at else "no refill is scheduled"
                advice = f"{renewal}; an administrator of your org can grant more"
            else:
                advice = f"the budget renews at {refills_at}; an administrator of your org can raise it"
            return QuotaExceeded(
                detail=f"{decided.detail}; {advice}",
                headers=headers,
                extra={
                    "reason": decided.refusal, "balance": decided.balance, "available": decided.available,
                    "refillsAt": refills_at, "retryAfter": retry_after,
                },
            )
    advice = "wait for one of your runs to finish" if decided.refusal == "concurrent_runs" else "slow down"
    return QuotaExceeded(
        detail=f"{decided.detail}; {advice} and retry after {retry_after} s",
        headers=headers,
        extra={"reason": decided.refusal, "violated-policies": list(decided.violated_policies), "retryAfter": retry_after},
    )
