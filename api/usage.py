"""`GET /v1/usage`: the caller's org's credits, budget and recent spend, for its administrators.

Balances come from the API's governance view (`governance` folded with the decider's `evolve`, current to what this
instance has followed); recent spend from the usage ledger (`usage_by_org_hour`, filled by the projector about
half a second behind the runs), priced at the tiers file's prices. Without a tiers file only the spend is shown.
"""

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, int_query, require_admin
from api.presenters import iso
from commands.governance.quota import cost_of, month_of, next_month_start
from kernel.envelope import utc_now
from projections.usage_ledger import UsageLedger

MAX_HOURS = 31 * 24


async def get_usage(request: Request) -> JSONResponse:
    principal = authenticate(request)
    require_admin(principal, "your org's usage")
    context = context_of(request)
    hours = int_query(request, "hours", default=24, minimum=1, maximum=MAX_HOURS)
    now = utc_now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    totals = await UsageLedger(context.read_models.store).totals(
        principal.org_id, since=this_hour - timedelta(hours=hours - 1), until=this_hour + timedelta(hours=1)
    )
    governance = context.governance
    spend = [
        {
            "hour": iso(row.hour), "pool": row.pool, "engine": row.engine, "runs": row.runs,
            "promptTokens": row.prompt_tokens, "cachedTokens": row.cached_tokens, "outputTokens": row.output_tokens,
            # Priced as one sum per hour and pool: within a unit per run of what the runs were charged.
            "units": None if governance is None else cost_of(
                governance.config.price_of(row.pool), prompt_tokens=row.prompt_tokens, cached_tokens=row.cached_tokens,
                output_tokens=row.output_tokens,
            ),
        }
        for row in totals
    ]
    body: dict[str, object] = {"orgId": principal.org_id, "governance": governance is not None, "recentSpend": spend}
    if governance is None:
        return JSONResponse(body)
    state = await governance.bus.view.state_of(principal.org_id)
    tier = governance.config.tier_of(principal.org_id)
    month = month_of(now)
    reserved = state.reserved_on(None)
    body.update(
        tier=tier.name,
        credits=tier.credits,
        balance=state.balance,
        reserved=reserved,
        available=state.balance - reserved,
        userWallets={user_id: {"balance": balance, "reserved": state.reserved_on(user_id)} for user_id, balance in sorted(state.user_balances.items())},
        runsInProgress=state.running(),
        month=month,
        monthTokens=state.tokens_in(month),
        monthlyTokenBudget=state.monthly_token_budget if state.monthly_token_budget is not None else tier.monthly_token_budget,
        refill={"units": state.refill_units, "by": state.refill_by} if state.refill_by else None,
        refillsAt=iso(next_month_start(now)) if state.refill_units > 0 else None,
        suspendedUsers=[
            {"userId": user_id, "until": iso(suspension.until), "reason": suspension.reason, "by": suspension.by}
            for user_id, suspension in sorted(state.suspensions.items())
            if suspension.until > now
        ],
        asOf=iso(state.clock),
    )
    return JSONResponse(body)
