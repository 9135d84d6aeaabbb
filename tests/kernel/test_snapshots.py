"""Where a fold of a key resumes from what the store saved (its snapshot, its partition's watermark, a caller's bound), and
from the log alone when the store fails or is slow."""

import asyncio
import logging

from events.catalog import EVENT_TYPES
from events.runs import RunHeartbeat
from kernel import snapshots
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.keyed_state import KeyedStates
from kernel.log import OutgoingRecord
from kernel.snapshots import Saved, Snapshot

INITIAL = "nothing"
CODEC = AvroCodec(payload_types=EVENT_TYPES)
ACTOR = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws")
PING = RunHeartbeat(run_id="run_1", worker_id="w1")


def test_without_a_watermark_nothing_saved_counts() -> None:
    saved = Saved(snapshot=Snapshot(state="folded", through=30))
    assert saved.resume(INITIAL) == Snapshot(state=INITIAL, through=-1)


def test_a_key_without_a_snapshot_had_no_record_up_to_the_watermark() -> None:
    assert Saved(snapshot=None, folded_through=40).resume(INITIAL) == Snapshot(state=INITIAL, through=40)


def test_a_key_resumes_after_the_later_of_its_snapshot_and_the_watermark() -> None:
    saved = Saved(snapshot=Snapshot(state="folded", through=30), folded_through=40)
    assert saved.resume(INITIAL) == Snapshot(state="folded", through=40)


def test_a_fold_as_of_a_record_in_hand_stops_below_it() -> None:
    saved = Saved(snapshot=Snapshot(state="folded", through=30), folded_through=40)
    assert saved.resume(INITIAL, before=35) == Snapshot(state="folded", through=34)


def test_a_snapshot_past_the_callers_bound_is_of_no_use() -> None:
    saved = Saved(snapshot=Snapshot(state="folded", through=30), folded_through=40)
    assert saved.resume(INITIAL, before=30) == Snapshot(state=INITIAL, through=-1)
    assert saved.resume(INITIAL, before=10) == Snapshot(state=INITIAL, through=-1)


class Unreachable:
    """A store that fails, or answers too late."""

    def __init__(self, *, hangs: bool = False) -> None:
        self.hangs = hangs

    async def saved(self, key: str, *, partition: int, before: int | None = None) -> Saved:
        if self.hangs:
            await asyncio.sleep(3600)
        raise ConnectionRefusedError("the store is down")


async def test_a_store_that_fails_or_hangs_costs_a_fold_from_the_log_not_the_load(embedded_log, monkeypatch, caplog) -> None:
    monkeypatch.setattr(snapshots, "STORE_WAIT_S", 0.05)
    record = OutgoingRecord(topic="counts", key="conv_1", value=CODEC.encode(Envelope.wrap(PING, key="conv_1", actor=ACTOR)))
    await embedded_log.append([record, record])

    def counted(source) -> KeyedStates[int]:
        return KeyedStates(log=embedded_log, codec=CODEC, topic="counts", initial=0, evolve=lambda n, _: n + 1, snapshots=source)

    with caplog.at_level(logging.WARNING, logger="kernel.snapshots"):
        assert await counted(Unreachable()).get("conv_1") == 2
        assert await counted(Unreachable(hangs=True)).get("conv_1") == 2
    assert "ConnectionRefusedError" in caplog.text and "TimeoutError" in caplog.text
