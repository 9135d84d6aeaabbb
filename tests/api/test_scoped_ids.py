"""Ids tagged with their owner's scope: only the secret makes a tag, and a lookup tells the caller's ids at once."""

from datetime import UTC, datetime, timedelta

from api.scoped_ids import (
    Ownership,
    conversation_scope,
    file_scope,
    matching_scope,
    minted_at,
    new_scoped_id,
    ownership,
    run_scope,
)

SECRET = b"s" * 32
ANA = run_scope("org_acme", "user_ana")


def test_a_new_run_id_is_the_callers_and_nobody_elses() -> None:
    run_id = new_scoped_id(SECRET, "run", ANA)
    assert run_id.startswith("run_") and len(run_id) == len("run_") + 26 + 1 + 8
    assert ownership(SECRET, run_id, prefix="run", scopes=[ANA]) is Ownership.CALLERS
    for stranger in (run_scope("org_acme", "user_bob"), run_scope("org_evil", "user_ana")):
        assert ownership(SECRET, run_id, prefix="run", scopes=[stranger]) is Ownership.NOT_CALLERS
    assert ownership(b"t" * 32, run_id, prefix="run", scopes=[ANA]) is Ownership.NOT_CALLERS  # another deployment
    assert ownership(SECRET, run_id, prefix="file", scopes=[ANA]) is Ownership.NOT_CALLERS


def test_a_file_is_the_callers_when_it_is_in_any_of_their_workspaces() -> None:
    file_id = new_scoped_id(SECRET, "file", file_scope("org_acme", "ws_b"))
    mine = [file_scope("org_acme", "ws_a"), file_scope("org_acme", "ws_b")]
    assert ownership(SECRET, file_id, prefix="file", scopes=mine) is Ownership.CALLERS
    assert ownership(SECRET, file_id, prefix="file", scopes=mine[:1]) is Ownership.NOT_CALLERS


def test_a_changed_tag_or_ulid_is_not_the_callers_and_old_untagged_ids_are_legacy() -> None:
    run_id = new_scoped_id(SECRET, "run", ANA)
    flipped = run_id[:-1] + ("a" if run_id[-1] != "a" else "b")
    assert ownership(SECRET, flipped, prefix="run", scopes=[ANA]) is Ownership.NOT_CALLERS
    other_ulid = "run_01K3KQ60YB2J9J8JAHKQX4W9P2" + run_id[-9:]
    assert ownership(SECRET, other_ulid, prefix="run", scopes=[ANA]) is Ownership.NOT_CALLERS
    assert ownership(SECRET, "run_01K3KQ60YB2J9J8JAHKQX4W9P2", prefix="run", scopes=[ANA]) is Ownership.LEGACY
    for junk in ("run_x", "conv_01K3KQ60YB2J9J8JAHKQX4W9P2", "run_01K3KQ60YB2J9J8JAHKQX4W9P2_", ""):
        assert ownership(SECRET, junk, prefix="run", scopes=[ANA]) is Ownership.NOT_CALLERS


def test_an_id_says_when_it_was_minted() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    run_id = new_scoped_id(SECRET, "run", run_scope("org_a", "user_a"))
    assert before <= minted_at(run_id) <= datetime.now(UTC)
    assert minted_at(run_id.rpartition("_")[0]) == minted_at(run_id)  # a legacy (untagged) id too
    assert minted_at("run_not-an-id") is None


def test_a_conversation_id_names_the_workspace_it_was_made_in_for_its_owner_alone() -> None:
    conversation_id = new_scoped_id(SECRET, "conv", conversation_scope("org_a", "user_a", "ws_2"))
    mine = [conversation_scope("org_a", "user_a", workspace) for workspace in ("ws_1", "ws_2")]
    assert matching_scope(SECRET, conversation_id, prefix="conv", scopes=mine) == ("org_a", "user_a", "ws_2")
    colleague = [conversation_scope("org_a", "user_b", "ws_2")]
    assert matching_scope(SECRET, conversation_id, prefix="conv", scopes=colleague) is None
    assert matching_scope(SECRET, conversation_id, prefix="run", scopes=mine) is None
    assert matching_scope(SECRET, conversation_id.rpartition("_")[0], prefix="conv", scopes=mine) is None
