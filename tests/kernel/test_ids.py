"""When an id was made, and from when its records are looked for."""

from datetime import UTC, datetime

from kernel.envelope import new_id
from kernel.ids import CLOCK_SKEW, minted_at, written_since


def test_an_id_says_when_it_was_made_and_a_scan_for_its_records_starts_a_clock_skew_before() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    conversation_id = new_id("conv")
    minted = minted_at(conversation_id)
    assert minted is not None and before <= minted <= datetime.now(UTC)
    assert minted_at(f"{conversation_id}_abcdefgh") == minted  # a tagged id (api/scoped_ids.py)
    assert written_since(conversation_id) == minted - CLOCK_SKEW


def test_a_key_that_is_not_an_id_gives_no_bound() -> None:
    for key in ("org_acme", "ws_research", "conv_not-a-ulid", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV_TAG-TOO-LONG", ""):
        assert minted_at(key) is None and written_since(key) is None
    # Ids made up by a client: time zero (a bound before 1970 would be refused by Kafka: a 500 once), past ULID's range.
    assert written_since("run_00000000000000000000000000") is None
    assert minted_at("run_7ZZZZZZZZZZZZZZZZZZZZZZZZZ") is None
