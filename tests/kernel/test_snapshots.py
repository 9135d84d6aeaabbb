"""Where a fold of a key resumes from what the store saved: its snapshot, its partition's watermark, a caller's bound."""

from kernel.snapshots import Saved, Snapshot

INITIAL = "nothing"


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

