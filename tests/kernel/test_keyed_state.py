"""State folded per key, kept for the most recently used keys, within a key count and a weight budget."""

from collections.abc import Sequence

import pytest

from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.runs import AssistantDelta
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.keyed_state import KeyedStates
from kernel.runtime import encode

CODEC = AvroCodec(payload_types=EVENT_TYPES)
ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")


def text_of(state: str, envelope: Envelope) -> str:
    return state + envelope.payload.text


def deltas(key: str, texts: Sequence[str]) -> list:
    return [encode(CODEC, Envelope.wrap(AssistantDelta(run_id=key, index=i, text=t), key=key, actor=ACTOR), topic="t")
            for i, t in enumerate(texts)]


async def test_states_are_folded_from_the_log_on_a_miss_and_kept_within_the_budget(embedded_log: EmbeddedLog) -> None:
    for key, text in (("a", "x" * 40), ("b", "y" * 40), ("c", "z" * 40)):
        await embedded_log.append(deltas(key, [text[:20], text[20:]]))
    states = KeyedStates(log=embedded_log, codec=CODEC, topic="t", initial="", evolve=text_of, weigh=len, budget=100)
    assert await states.get("a") == "x" * 40
    assert await states.get("b") == "y" * 40 and states.weight == 80
    await states.get("c")  # 120 > 100: the least recently used goes
    assert states.weight == 80 and "a" not in states and "b" in states
    states.apply("c", Envelope.wrap(AssistantDelta(run_id="c", index=2, text="!" * 30), key="c", actor=ACTOR))
    assert states.weight == 70 and "b" not in states and "c" in states  # b went too; c stays
    assert await states.get("a") == "x" * 40  # folded again from the log


async def test_a_key_heavier_than_the_budget_is_still_kept_while_it_is_the_one_in_use(embedded_log: EmbeddedLog) -> None:
    await embedded_log.append(deltas("big", ["w" * 500]))
    states = KeyedStates(log=embedded_log, codec=CODEC, topic="t", initial="", evolve=text_of, weigh=len, budget=100)
    assert await states.get("big") == "w" * 500 and states.weight == 500


def test_a_weight_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="together"):
        KeyedStates(log=None, codec=CODEC, topic="t", initial="", evolve=text_of, weigh=len)
