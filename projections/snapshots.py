"""Snapshots of a keyed state in the read-model store: each key's state after each batch of its records, and a
watermark per partition (kernel/snapshots.py says what loaders make of them).

Rows are upserted by key (`ReplacingMergeTree`, versioned by offset, read with `FINAL`): a key's row under the key, a
partition's watermark under `#<partition>`. The rows of a batch and its watermarks go in one insert (one part), so a
reader never sees a watermark without the rows it covers, and they are written before the group commits past the
batch. A table of states that belong to someone (`owned`) has `org_id` and `user_id` columns, by which an erasure
deletes them (projections/ledger_erasure.py).

A watermark says the rows hold every record of its partition up to it, which holds only if the writer has seen the
partition from its start. So before writing to a partition it checks that the table and its group agree: no
watermark and nothing committed (a first run), or a watermark at or past the group's position. A table dropped or
restored from an old copy under a group that has moved on fails that check: the partition is left unwritten (its
keys then load from the log, as without snapshots) and the error says how to rebuild it.

Loaders read through a `StoreGuard`: the log alone is the truth, so a store that fails or is slow costs a load the
log's scan, never the load.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from kernel.envelope import Actor, Envelope
from kernel.log import EventLog
from kernel.runtime import Delivery, Processor
from kernel.snapshots import Saved, Snapshot
from projections.store import SqlStore

logger = logging.getLogger(__name__)

State = TypeVar("State")
Answer = TypeVar("Answer")

# A loader waits this long for the store's answer (a few ms when well) before it folds from the log instead, and
# after such a failure it does not ask again for a while: in an outage every load would wait out the timeout.
STORE_WAIT_S = 2.0
STORE_REST_S = 30.0

# A batch waits this long for more records after its first. A loader folds what the writer has not reached from the
# log, so lingering costs it a scan of a few more seconds of the partition, no error; it saves ClickHouse inserts
# (fewer, larger parts, as ClickHouse asks) and the writer's CPU: 0.5 s -> 2 s took the Kafka fleet's processor
# worker from 39-40% to 38% of a core at 19 turns/s (one run, docs/benchmarks.md).
LINGER_S = 2.0


class StoreGuard:
    """A loader's reads of the store, which must never stop a load: the log alone is the truth.

    A read that fails or takes longer than `wait_s` answers `nothing` (nothing saved: the load folds from the log);
    after it, reads answer `nothing` without asking the store for `rest_s`.
    """

    def __init__(
        self, *, wait_s: float = STORE_WAIT_S, rest_s: float = STORE_REST_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._wait_s = wait_s
        self._rest_s = rest_s
        self._clock = clock
        self._resting_until = float("-inf")

    async def ask(self, read: Callable[[], Awaitable[Answer]], *, nothing: Answer, what: str) -> Answer:
        if self._clock() < self._resting_until:
            return nothing
        try:
            async with asyncio.timeout(self._wait_s):
                return await read()
        except Exception as error:  # whatever the store's adapter raises: a snapshot is only ever a shortcut
            self._resting_until = self._clock() + self._rest_s
            logger.warning(
                "snapshots: the store did not answer for %s (%s: %s); loads fold from the log for %.0f s",
                what, type(error).__name__, error, self._rest_s,
            )
            return nothing


def watermark_key(partition: int) -> str:
    return f"#{partition}"  # keys are ids and org ids ([A-Za-z0-9_-], api/bodies.py), so never this


class WholePartitions:
    """Which partitions of `topic` a table holds from their start, as the group that writes it has seen them: only
    there may the group write (the module's docstring). Each partition is asked once, then known until `forget`.

    `watermark(partition)` is the table's watermark (None: none). `filling`: the table was emptied to be filled again
    from the log's start (`processors/snapshot_replay.py`), so every partition is whole, whatever the group's
    position says.
    """

    def __init__(
        self, *, log: EventLog, group: str, topic: str, table: str, watermark: Callable[[int], Awaitable[int | None]],
        filling: bool = False,
    ) -> None:
        self._log = log
        self._group = group
        self._topic = topic
        self._table = table
        self._watermark = watermark
        self._filling = filling
        self._known: dict[int, bool] = {}

    async def holds(self, partition: int) -> bool:
        if self._filling:
            return True
        known = self._known.get(partition)
        if known is None:
            known = self._known[partition] = await self._ask(partition)
        return known

    def forget(self) -> None:
        self._known.clear()

    async def _ask(self, partition: int) -> bool:
        mark = await self._watermark(partition)
        done = (await self._log.committed_offsets(group=self._group, topic=self._topic)).get(partition, -1)
        if (mark is None and done < 0) or (mark is not None and mark >= done):
            return True
        logger.error(
            "snapshots: table %s lacks partition %d of %s up to offset %d, where group %s stands (dropped, or restored "
            "from an older copy?); it is not written, so its keys load from the log. To rebuild it: stop the "
            "processors, run `turnlog replay`, start them again.",
            self._table, partition, self._topic, done, self._group,
        )
        return False


class SnapshotTable(Generic[State]):
    """One topic's snapshots: the table, read for loaders (`SnapshotSource`)."""

    def __init__(
        self, store: SqlStore, *, name: str, encode: Callable[[Snapshot[State]], str],
        decode: Callable[[str], Snapshot[State]], owned: bool = False,
    ) -> None:
        self.name = name
        self.owned = owned
        self.encode = encode
        self._decode = decode
        self._store = store
        self._guard = StoreGuard()

    async def create_table(self) -> None:
        owners = "org_id String, user_id String," if self.owned else ""
        await self._store.execute(
            f"CREATE TABLE IF NOT EXISTS {self.name} (key String, through Int64, snapshot String, {owners} version UInt64)"
            " ENGINE = ReplacingMergeTree(version) ORDER BY key SETTINGS index_granularity = 256"
        )

    async def rows(self, keys: list[str]) -> dict[str, dict[str, object]]:
        """The rows of `keys` (keys, watermark keys) that the table holds, by key: `through` and `snapshot`."""
        rows = await self._store.query(
            f"SELECT key, through, snapshot FROM {self.name} FINAL WHERE key IN {{keys:Array(String)}}", {"keys": keys}
        )
        return {row["key"]: row for row in rows}

    async def saved(self, key: str, *, partition: int, before: int | None = None) -> Saved[State]:
        # One row per key, its latest: `Saved.resume` leaves it out for a fold as of a record it has passed.
        return await self._guard.ask(lambda: self.read_saved(key, partition), nothing=Saved(snapshot=None), what=self.name)

    async def read_saved(self, key: str, partition: int) -> Saved[State]:
        """`saved`, unguarded: the store's errors are the caller's."""
        by_key = await self.rows([key, watermark_key(partition)])
        mark = by_key.get(watermark_key(partition))
        if mark is None:  # nothing said about the partition: no row can be trusted to be whole
            return Saved(snapshot=None)
        row = by_key.get(key)
        return Saved(snapshot=None if row is None else self.decode(row), folded_through=mark["through"])

    def decode(self, row: dict[str, object]) -> Snapshot[State]:
        return self._decode(str(row["snapshot"]))


class SnapshotWriter(Generic[State]):
    """Writes a `SnapshotTable` from its topic: each key's row after each batch of its records, and the watermarks.

    An owned table's row names the owner its last record was scoped to (`org_id`, `user_id` of its actor: the
    decider scopes a conversation's events to its owner, whoever sent the command), which holds even where the record
    that named the owner no longer opens. `also` writes what goes with the batch's folded records before their rows
    (a row in another table that the watermark then covers too).
    """

    def __init__(
        self, *, table: SnapshotTable[State], store: SqlStore, log: EventLog, topic: str, group: str, initial: State,
        evolve: Callable[[State, Envelope], State], also: Callable[[Sequence[Delivery]], Awaitable[None]] | None = None,
        capacity: int = 10_000, filling: bool = False,
    ) -> None:
        """`filling`: as `WholePartitions`' (the table is being filled again from the log's start)."""
        self._table = table
        self._store = store  # the writes go here (through `WithoutErased` for an owned table)
        self._topic = topic
        self._group = group
        self._initial = initial
        self._evolve = evolve
        self._also = also
        self._capacity = capacity
        self._keys: dict[str, Snapshot[State]] = {}  # a cache of the rows this writer last wrote or read
        self._whole = WholePartitions(
            log=log, group=group, topic=topic, table=table.name, watermark=self._watermark, filling=filling
        )

    def processor(self) -> Processor:
        return Processor(
            group=self._group, topics=(self._topic,), react=self.react, max_batch=5_000, linger_s=LINGER_S,
            on_reset=self._reset, background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        partitions = {delivery.record.partition for delivery in deliveries}
        writable = {partition for partition in partitions if await self._whole.holds(partition)}
        wanted = [d for d in deliveries if d.record.partition in writable]
        await self._load([d.record.key for d in wanted if d.record.key not in self._keys])
        touched: dict[str, Snapshot[State]] = {}
        owners: dict[str, Actor] = {}
        marks: dict[int, int] = {}
        folded = []
        for delivery in wanted:
            record = delivery.record
            marks[record.partition] = max(marks.get(record.partition, -1), record.offset)
            snapshot = self._keys[record.key]
            if record.offset <= snapshot.through:
                continue  # delivered again after a restart: already folded
            snapshot = Snapshot(state=self._evolve(snapshot.state, delivery.envelope), through=record.offset)
            self._keys[record.key] = touched[record.key] = snapshot
            owners[record.key] = delivery.envelope.actor
            folded.append(delivery)
        if self._also is not None:
            await self._also(folded)  # first: a watermark covers what goes with the records below it
        rows = [self._row(key, snapshot, owners[key]) for key, snapshot in touched.items()]
        rows += [self._mark(partition, offset) for partition, offset in marks.items()]
        await self._store.insert(self._table.name, rows)
        self._forget_beyond_capacity()
        return []

    def _row(self, key: str, snapshot: Snapshot[State], owner: Actor) -> dict[str, object]:
        row: dict[str, object] = {
            "key": key, "through": snapshot.through, "version": snapshot.through, "snapshot": self._table.encode(snapshot)
        }
        if self._table.owned:
            row["org_id"], row["user_id"] = owner.org_id, owner.user_id
        return row

    def _mark(self, partition: int, offset: int) -> dict[str, object]:
        row: dict[str, object] = {"key": watermark_key(partition), "through": offset, "version": offset, "snapshot": ""}
        if self._table.owned:
            row["org_id"] = row["user_id"] = ""  # nobody's: an erasure leaves it
        return row

    async def _watermark(self, partition: int) -> int | None:
        row = (await self._table.rows([watermark_key(partition)])).get(watermark_key(partition))
        return None if row is None else int(row["through"])

    async def _load(self, keys: list[str]) -> None:
        """The keys' last written snapshots (a new key has none)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        saved = await self._table.rows(keys)
        for key in keys:
            row = saved.get(key)
            self._keys[key] = Snapshot(state=self._initial) if row is None else self._table.decode(row)

    def _forget_beyond_capacity(self) -> None:
        # Only as a cache: every key's row is in the table, read again on its next record.
        while len(self._keys) > self._capacity:
            del self._keys[next(iter(self._keys))]

    def _reset(self) -> None:
        self._keys.clear()
        self._whole.forget()
