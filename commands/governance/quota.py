"""Credits and budgets: what a run costs, calendar months, and a run's settlement from its usage records.

A run's cost is its final usage, the usage ledger's row for it (the run's last `UsageRecorded`: each model
step records the run's totals so far), priced at that row's pool and rounded up to a whole cost unit, so
the sum of the charges equals the ledger priced row by row (`cost_of` is that price, for reconciling).
Budgets and refills follow calendar months in UTC of the events' own times.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from commands.governance.tiers_file import Price
from events.governance import RunSettlementRequested
from events.runs import UsageRecorded


def cost_of(price: Price, *, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> int:
    """Whole cost units for one run's tokens at `price` (per 1,000 tokens), rounded up; cached tokens are part of the prompt."""
    cached = max(0, min(cached_tokens, prompt_tokens))
    per_thousand = (prompt_tokens - cached) * price.prompt + cached * price.cached + max(0, output_tokens) * price.output
    return -(-max(0, per_thousand) // 1000)


def final_usage(records: Sequence[UsageRecorded]) -> UsageRecorded | None:
    """A run's final usage: the last of its usage records in log order (the one the ledger keeps), if any."""
    return records[-1] if records else None


def settlement_request(
    *, org_id: str, user_id: str, run_id: str, status: str, usage_records: Sequence[UsageRecorded]
) -> RunSettlementRequested:
    """What to ask of governance when run `run_id` has ended, from the run's usage records (oldest first)."""
    final = final_usage(usage_records)
    if final is None:  # it ended before any model step finished: nothing was used
        return RunSettlementRequested(org_id=org_id, user_id=user_id, run_id=run_id, status=status)
    return RunSettlementRequested(
        org_id=org_id, user_id=user_id, run_id=run_id, status=status, pool=final.pool,
        prompt_tokens=final.prompt_tokens, cached_tokens=final.cached_tokens, output_tokens=final.output_tokens,
    )


def month_of(at: datetime) -> str:
    """The calendar month (UTC) of an instant: `2026-05`."""
    return at.astimezone(UTC).strftime("%Y-%m")


def next_month_start(at: datetime) -> datetime:
    """Midnight UTC on the first day of the month after `at`'s."""
    utc = at.astimezone(UTC)
    return datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=UTC)
