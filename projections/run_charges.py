"""The charge ledger: what each run cost its org, in ClickHouse, from governance's `RunCharged` facts.

With a tiers file, governance charges every admitted run exactly once when it ends (`RunCharged` on the
`governance` topic: the cost units at its pool's price, the tokens charged, the wallet). Each becomes a
row of `run_charges`, upserted by org and run (`ReplacingMergeTree(version)`, read with `FINAL`), so a
redelivered or replayed fact counts once. Without a tiers file nothing is charged and the table stays
empty. Analysts join it with `usage_ledger` for tokens and cost per org.
"""

from collections.abc import Sequence

from events.governance import RunCharged
from events.topics import GOVERNANCE
from kernel.envelope import Envelope
from kernel.runtime import Delivery, Processor
from projections.store import SqlStore

CHARGE_LEDGER_GROUP = "charge-ledger"

_CHARGES_DDL = """
CREATE TABLE IF NOT EXISTS run_charges (
    org_id String,
    user_id String,
    run_id String,
    status LowCardinality(String),
    pool LowCardinality(String),
    units Int64,
    prompt_tokens UInt32,
    cached_tokens UInt32,
    output_tokens UInt32,
    reserved_units Int64,
    wallet_user_id String,
    charged_at DateTime64(6, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, run_id)
"""


class ChargeLedger:
    """Writes `run_charges` from the orgs' governance facts."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def create_tables(self) -> None:
        await self._store.execute(_CHARGES_DDL)

    def processor(self) -> Processor:
        # Nobody waits on the ledger: gather half a second of charges into one insert (one ClickHouse part).
        return Processor(
            group=CHARGE_LEDGER_GROUP, topics=(GOVERNANCE,), react=self.react, max_batch=5_000, linger_s=0.5, durable=False,
            background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        rows = [
            _row(delivery.envelope, offset=delivery.record.offset)
            for delivery in deliveries
            if isinstance(delivery.envelope.payload, RunCharged)
        ]
        if rows:
            await self._store.insert("run_charges", rows)
        return []


def _row(envelope: Envelope[RunCharged], *, offset: int) -> dict[str, object]:
    charged = envelope.payload
    return {
        "org_id": charged.org_id,
        "user_id": charged.user_id,
        "run_id": charged.run_id,
        "status": charged.status,  # completed | cancelled | failed; withdrawn | lapsed: never ran, 0 units
        "pool": charged.pool,
        "units": charged.units,
        "prompt_tokens": charged.prompt_tokens,
        "cached_tokens": charged.cached_tokens,
        "output_tokens": charged.output_tokens,
        "reserved_units": charged.reserved_units,
        "wallet_user_id": charged.wallet_user_id or "",  # "" : the org's wallet
        "charged_at": charged.charged_at,
        "version": offset,
    }
