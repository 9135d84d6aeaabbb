"""A conversation's decider state as the store keeps it: every field, and no words."""

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta

from commands.catalog import RenameConversation
from commands.decider import (
    Accepted, ConversationState, DecidedCommand, IdempotentResult, RunState, decide, evolve, title_digest,
)
from commands.snapshots import ConversationSnapshot, snapshot_from_json
from events.conversation import ConversationCreated
from kernel.envelope import Actor, Envelope
from kernel.snapshots import snapshot_json

AT = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
OWNER = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws_main")

EVERY_FIELD_SET = ConversationState(
    conversation_id="conv_1",
    org_id="org_acme",
    workspace_id="ws_main",
    owner_id="user_ana",
    title_digest=title_digest("Tides of the Baltic"),
    created_at=AT,
    latest_turn_seq=4,
    latest_user_turn_seq=3,
    active_run_id="run_2",
    runs={
        "run_1": RunState(
            run_id="run_1", turn_seq=2, parent_turn_seq=1, mode="interactive", requested_at=AT, status="completed"
        ),
        "run_2": RunState(
            run_id="run_2", turn_seq=4, parent_turn_seq=3, mode="background", requested_at=AT + timedelta(minutes=1),
            cancel_requested=True,
        ),
    },
    idempotency={"key-a": IdempotentResult(request_fingerprint="fp", run_id="run_2", turn_seq=3, recorded_at=AT)},
    decided={
        "cmd_1": DecidedCommand(outcome=Accepted(), decided_at=AT),
        "cmd_2": DecidedCommand(outcome=Accepted(run_id="run_2", turn_seq=3), decided_at=AT + timedelta(seconds=1)),
    },
)


def test_a_snapshot_keeps_every_field_of_the_state() -> None:
    snapshot = ConversationSnapshot(state=EVERY_FIELD_SET, through=41)
    stored = snapshot_json(snapshot)
    assert set(json.loads(stored)["state"]) == {field.name for field in fields(ConversationState)}  # a new field too
    assert snapshot_from_json(stored) == snapshot


def test_an_empty_conversation_round_trips() -> None:
    empty = ConversationSnapshot(state=ConversationState())
    assert snapshot_from_json(snapshot_json(empty)) == empty


def test_the_title_is_kept_as_a_digest_and_a_restored_state_still_knows_a_rename_changes_nothing() -> None:
    created = ConversationCreated(
        conversation_id="conv_1", workspace_id="ws_main", owner_id="user_ana", title="Tides of the Baltic", created_at=AT
    )
    state = evolve(ConversationState(), Envelope.wrap(created, key="conv_1", actor=OWNER))
    stored = snapshot_json(ConversationSnapshot(state=state, through=0))
    assert "Tides" not in stored
    restored = snapshot_from_json(stored).state

    def renamed_to(title: str | None) -> int:
        rename = Envelope.wrap(RenameConversation(conversation_id="conv_1", title=title), key="conv_1", actor=OWNER)
        return len(decide(rename, restored).events)

    assert renamed_to("Tides of the Baltic") == 0
    assert renamed_to("Tides") == 1 and renamed_to(None) == 1
