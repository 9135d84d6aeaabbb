"""A keyed state saved beside the log, so that loading a key does not fold its whole history.

Kafka has no index by key: folding a key from its history scans its partition from where the key's first record
can lie (an id's minting time, or the partition's start for a key turnlog did not make). A key's snapshot is its
state as folded through one of its records; the store also says through which offset a partition was folded for
every key in it (its watermark), so a key with no snapshot had no record up to there. A load then costs the store's
answer and a scan of what the partition took after the watermark: the snapshot writer's lag
(projections/snapshots.py writes them). The log alone is the truth: a source that cannot answer says it saved
nothing (`StoreGuard`), and the load folds the history from the log, as without snapshots.
"""

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from kernel.log import EventLog

State = TypeVar("State")


@dataclass(frozen=True, kw_only=True)
class Snapshot(Generic[State]):
    """A key's state as folded through its record at offset `through` (-1: from no record)."""

    state: State
    through: int = -1


@dataclass(frozen=True, kw_only=True)
class Saved(Generic[State]):
    """What the store holds for a key: its snapshot (if it had records), and its partition's watermark (-1: none,
    and then the snapshot does not count either)."""

    snapshot: Snapshot[State] | None
    folded_through: int = -1

    def resume(self, initial: State, *, before: int | None = None) -> Snapshot[State]:
        """Where a fold of the key may start: its state, and the offset after which its records are still to fold.

        With `before` (a fold as of a record in hand), a snapshot that already holds a record at or past it is of no
        use: the fold starts from `initial`, as without snapshots.
        """
        snapshot = self.snapshot or Snapshot(state=initial)
        if self.folded_through < 0 or (before is not None and snapshot.through >= before):
            return Snapshot(state=initial)
        # Between its snapshot and the watermark the key had no record: the fold goes on after the later of the two.
        through = max(snapshot.through, self.folded_through)
        return Snapshot(state=snapshot.state, through=through if before is None else min(through, before - 1))


class SnapshotSource(Protocol[State]):
    """Where snapshots are read (the read-model store)."""

    async def saved(self, key: str, *, partition: int, before: int | None = None) -> Saved[State]:
        """The key's snapshot and the watermark of `partition`, the key's. A store that keeps the key's state as of
        each of its records may answer as of `before` (a fold as of a record in hand); others answer their latest."""
        ...


async def starting_point(
    *, log: EventLog, topic: str, key: str, initial: State, snapshots: SnapshotSource[State] | None,
    before: int | None = None,
) -> Snapshot[State]:
    """Where a fold of `key` may start (`Saved.resume`): from `initial` without snapshots."""
    if snapshots is None:
        return Snapshot(state=initial)
    saved = await snapshots.saved(key, partition=await log.partition_of(topic, key=key), before=before)
    return saved.resume(initial, before=before)


# -- as stored: JSON (each state's module decodes its own), datetimes in ISO 8601 with their offset -------------


def snapshot_json(snapshot: Snapshot) -> str:
    return json.dumps(asdict(snapshot), default=datetime.isoformat, separators=(",", ":"))


def parsed_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
