"""The decider's state cache is bounded in bytes: its estimate of a state's size is checked against tracemalloc."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

from commands.decider import ConversationState, decide, evolve
from commands.handler import state_weight
from kernel.envelope import Envelope
from tests.commands.test_decider import CONVERSATION_ID, OWNER, T0, finish, submit
from commands.catalog import CreateConversation


def conversation_of(turns: int) -> ConversationState:
    """A conversation as the decider folds it: each turn submitted under an idempotency key, then finished."""
    state = ConversationState()
    commands = [CreateConversation(conversation_id=CONVERSATION_ID, workspace_id=OWNER.workspace_id)]
    for turn in range(turns):
        run_id = f"run_01M92QBYGHZZHVHP020GZQ{turn:04d}_7yhgu7q2"
        fingerprint = hashlib.sha256(str(turn).encode()).hexdigest()  # as the API makes them
        commands += [submit(f"question {turn}", run_id=run_id, key=f"key-{turn:06d}", fingerprint=fingerprint), finish(run_id)]
    for command in commands:
        envelope = Envelope.wrap(command, key=CONVERSATION_ID, actor=OWNER, occurred_at=T0)
        for event in decide(envelope, state).events:
            state = evolve(state, Envelope.wrap(event, key=CONVERSATION_ID, actor=OWNER, cause=envelope, occurred_at=T0))
    return state


def bytes_kept(turns: int) -> tuple[int, ConversationState]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        state = conversation_of(turns)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, state
    finally:
        tracemalloc.stop()


def test_a_state_s_estimated_size_is_not_below_what_it_holds_nor_far_above() -> None:
    for turns in (1, 20, 200, 1_000):
        held, state = bytes_kept(turns)
        assert held <= state_weight(state), (turns, held, state_weight(state))
        if turns >= 200:  # the entries dominate: the estimate is close (a small state's fixed part varies with the run)
            assert state_weight(state) <= 1.5 * held, (turns, held, state_weight(state))
