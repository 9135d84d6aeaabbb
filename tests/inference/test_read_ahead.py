"""The worker's read-ahead: what waits, what may be committed, which records need a look in the log."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.log import LogRecord, TopicPartition
from inference.read_ahead import ReadAhead

TOPIC = "inference-requests.interactive"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def record(offset: int, *, partition: int = 0) -> LogRecord:
    return LogRecord(
        topic=TOPIC, partition=partition, offset=offset, key=f"run_{offset}", value=b"",
        timestamp=EPOCH + timedelta(milliseconds=offset),
    )


def at(partition: int = 0) -> TopicPartition:
    return TopicPartition(topic=TOPIC, partition=partition)


def test_the_commit_stops_before_the_oldest_request_still_waiting() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=10)
    hog = [read_ahead.add(record(offset), tenant_id="hog", payload="request") for offset in (0, 1, 2)]
    other = read_ahead.add(record(3), tenant_id="other", payload="request")
    read_ahead.resolve(other)  # claimed out of order, ahead of the hog's three
    assert read_ahead.commit_offsets() == {}  # offset 0 still waits: nothing may be committed
    read_ahead.resolve(hog[0])
    assert read_ahead.commit_offsets() == {at(): 0}
    read_ahead.resolve(hog[2])
    assert read_ahead.commit_offsets() == {}  # offset 1 waits
    read_ahead.resolve(hog[1])
    assert read_ahead.commit_offsets() == {at(): 3}  # through the claimed one past them
    assert len(read_ahead) == 0


def test_records_past_the_commit_bound_the_reading_whether_claimed_or_not() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=3)
    first = read_ahead.add(record(0), tenant_id="a", payload="request")
    for offset in (1, 2):
        read_ahead.resolve(read_ahead.add(record(offset), tenant_id="b", payload="request"))
    assert read_ahead.full  # two claimed behind a waiting one still count: a crash would repeat them
    read_ahead.resolve(first)
    read_ahead.commit_offsets()
    assert not read_ahead.full


def test_the_oldest_request_of_a_tenant_is_the_one_it_gets_next() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=10)
    read_ahead.add(record(5, partition=1), tenant_id="a", payload="later")
    read_ahead.add(record(2, partition=0), tenant_id="b", payload="other")
    read_ahead.add(record(3, partition=0), tenant_id="a", payload="earlier")
    assert read_ahead.oldest_of("a").payload == "earlier"
    assert sorted(read_ahead.waiting_tenants()) == ["a", "a", "b"]
    assert read_ahead.oldest_of("nobody") is None


def test_an_undecodable_record_waits_for_no_tenant() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=10)
    read_ahead.add(record(0), tenant_id="", payload=None)
    read_ahead.add(record(1), tenant_id="a", payload="request")
    assert read_ahead.waiting_tenants() == ["a"]
    junk = read_ahead.undecodable()
    assert junk is not None and junk.record.offset == 0


def test_records_after_a_break_are_checked_and_a_steady_stream_is_not() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=2)
    # A start is a break: an earlier reader may have claimed the first `limit` records past its commit.
    checks = [read_ahead.add(record(offset), tenant_id="a", payload="r").check for offset in (10, 11, 13, 14)]
    assert checks == [True, True, False, False]  # 13 follows a transaction marker at 12: no break
    assert read_ahead.add(record(20), tenant_id="a", payload="r").check  # a jump: another reader moved on
    assert read_ahead.add(record(21), tenant_id="a", payload="r").check
    assert not read_ahead.add(record(22), tenant_id="a", payload="r").check
    assert read_ahead.add(record(22), tenant_id="a", payload="r").check  # delivered again


def test_after_a_break_only_records_already_written_then_are_checked() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=100)
    assert read_ahead.breaks_at(record(10))  # a start
    checks = [
        read_ahead.add(record(offset), tenant_id="a", payload="r", written_through=11 if offset == 10 else None).check
        for offset in (10, 11, 12, 13)
    ]
    assert checks == [True, True, False, False]  # 12 and 13 came after the break was seen: no earlier reader had them
    assert not read_ahead.breaks_at(record(14))
    assert read_ahead.breaks_at(record(13))  # delivered again
    assert read_ahead.add(record(13), tenant_id="a", payload="r", written_through=20).check


def test_a_record_at_or_below_the_commit_is_not_taken_again() -> None:
    read_ahead: ReadAhead[str] = ReadAhead(limit=5)
    read_ahead.resolve(read_ahead.add(record(0), tenant_id="a", payload="r"))
    assert read_ahead.commit_offsets() == {at(): 0}
    read_ahead.add(record(0), tenant_id="a", payload="r")
    assert read_ahead.waiting() == []


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.integers(0, 2), st.sampled_from("abc")), min_size=1, max_size=40),
    claim_order=st.randoms(use_true_random=False),
)
def test_whatever_the_claim_order_no_waiting_request_is_ever_committed(arrivals, claim_order) -> None:
    """The property a crash relies on: every committed offset is a claimed (or skipped) record or none at all."""
    read_ahead: ReadAhead[str] = ReadAhead(limit=1_000)
    next_offset = {0: 0, 1: 0, 2: 0}
    for partition, tenant in arrivals:
        read_ahead.add(record(next_offset[partition], partition=partition), tenant_id=tenant, payload="r")
        next_offset[partition] += 1 + claim_order.randint(0, 3)  # gaps, as transaction markers leave
    committed: dict[TopicPartition, int] = {}
    resolved: set[tuple[int, int]] = set()
    waiting = read_ahead.waiting()
    claim_order.shuffle(waiting)
    for claimed in waiting:
        read_ahead.resolve(claimed)
        resolved.add((claimed.record.partition, claimed.record.offset))
        committed.update(read_ahead.commit_offsets())
        still_waiting = {(w.record.partition, w.record.offset) for w in read_ahead.waiting()}
        for position, through in committed.items():
            assert not any(p == position.partition and offset <= through for p, offset in still_waiting)
    # Once everything is claimed, each partition is committed through its last record.
    last = {}
    for partition, _ in arrivals:
        last[partition] = max(offset for p, offset in resolved if p == partition)
    assert {position.partition: through for position, through in committed.items()} == last
