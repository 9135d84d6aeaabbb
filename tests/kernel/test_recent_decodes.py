"""The memo of recent decodes: least recently used first out, within a budget of encoded bytes."""

from kernel.envelope import Actor, Envelope
from kernel.recent_decodes import RecentDecodes
from kernel.sealing import Subject
from events.runs import AssistantDelta

ALICE = Actor(user_id="alice", org_id="org_1", workspace_id="ws_1")
SUBJECT = Subject(org_id="org_1", user_id="alice")


DELTAS = [Envelope.wrap(AssistantDelta(run_id="run_1", index=index, text="x"), key="run_1", actor=ALICE) for index in range(9)]


def always(_: Subject) -> bool:
    return True


def test_it_keeps_what_fits_its_budget_and_drops_the_least_recently_used() -> None:
    memo = RecentDecodes(budget_bytes=800)  # eight records of 100 bytes
    for index in range(8):
        memo.put(bytes([index]) * 100, DELTAS[index], SUBJECT)
    assert memo.get(bytes([0]) * 100, key_exists=always) is DELTAS[0]  # used: now the most recent
    memo.put(bytes([8]) * 100, DELTAS[8], SUBJECT)
    assert memo.get(bytes([1]) * 100, key_exists=always) is None  # the least recently used went
    assert all(memo.get(bytes([index]) * 100, key_exists=always) is DELTAS[index] for index in (0, *range(2, 9)))
    assert memo.held_bytes == 800 and len(memo) == 8


def test_a_record_too_big_for_its_share_is_not_kept() -> None:
    memo = RecentDecodes(budget_bytes=800)
    memo.put(b"a" * 101, DELTAS[0], None)
    assert memo.get(b"a" * 101, key_exists=always) is None and memo.held_bytes == 0


def test_an_entry_whose_key_is_gone_is_dropped_and_not_served() -> None:
    memo = RecentDecodes()
    memo.put(b"sealed", DELTAS[0], SUBJECT)
    memo.put(b"plain", DELTAS[1], None)
    assert memo.get(b"sealed", key_exists=lambda subject: False) is None
    assert len(memo) == 1
    assert memo.get(b"plain", key_exists=lambda subject: False) is DELTAS[1]  # nothing sealed it: no key to lose
