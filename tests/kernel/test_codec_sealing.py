"""The codec seals the declared content payloads under the actor's data key, and opens them, or `Erased` once it is gone."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands.catalog import SubmitTurn
from events.conversation import ConversationCreated, RunRequested, TurnSubmitted
from events.erasure import SubjectErased
from events.key_files import KeyFileStore
from events.runs import AssistantDelta
from events.values import ContentPart
from kernel.codec import UndecodableMessage
from kernel.envelope import Actor, Envelope
from kernel.runtime import SYSTEM_ACTOR
from kernel.sealing import Erased, Subject
from turnlog.adapters import build_codec

ALICE = Actor(user_id="alice", org_id="org_1", workspace_id="ws_1")
BOB = Actor(user_id="bob", org_id="org_1", workspace_id="ws_1")
NOW = datetime(2026, 12, 5, tzinfo=UTC)
SECRET = "the vault code is 4471"


def turn(text: str = SECRET) -> TurnSubmitted:
    return TurnSubmitted(conversation_id="conv_1", turn_seq=1, content=(ContentPart(type="text", text=text),), submitted_at=NOW)


@pytest.fixture
def keys(tmp_path: Path) -> KeyFileStore:
    return KeyFileStore(root=tmp_path / "keys")


@pytest.mark.parametrize(
    "payload",
    [
        turn(),
        AssistantDelta(run_id="run_1", index=0, text=SECRET),
        ConversationCreated(conversation_id="conv_1", workspace_id="ws_1", owner_id="alice", title=SECRET, created_at=NOW),
        SubmitTurn(conversation_id="conv_1", run_id="run_1", content=(ContentPart(type="text", text=SECRET),),
                   request_fingerprint="f"),
    ],
    ids=lambda payload: type(payload).__name__,
)
def test_content_is_only_ciphertext_on_the_wire_and_reads_back(keys: KeyFileStore, payload: object) -> None:
    codec = build_codec(keys)
    envelope = Envelope.wrap(payload, key="conv_1", actor=ALICE)
    encoded = codec.encode(envelope)
    assert SECRET.encode() not in encoded and b"4471" not in encoded
    decoded = codec.decode(encoded)
    assert decoded == envelope
    assert decoded.type == type(payload).__name__


def test_what_is_not_content_stays_plaintext(keys: KeyFileStore) -> None:
    requested = RunRequested(
        conversation_id="conv_1", run_id="run_secretless", turn_seq=2, parent_turn_seq=1, mode="stream",
        request_fingerprint="f", created_turn_seq=2, requested_at=NOW,
    )
    encoded = build_codec(keys).encode(Envelope.wrap(requested, key="conv_1", actor=ALICE))
    assert b"run_secretless" in encoded  # deciders and routing read it; it holds no one's words
    assert keys.existing_key(Subject(org_id="org_1", user_id="alice")) is None  # and it made no key


def test_the_systems_own_content_has_no_subject_and_is_not_sealed(keys: KeyFileStore) -> None:
    encoded = build_codec(keys).encode(Envelope.wrap(turn(), key="conv_1", actor=SYSTEM_ACTOR))
    assert SECRET.encode() in encoded


def test_payloads_written_before_sealing_still_decode(keys: KeyFileStore) -> None:
    envelope = Envelope.wrap(turn(), key="conv_1", actor=ALICE)
    old_bytes = build_codec().encode(envelope)  # a codec without keys: how every event was written before
    assert SECRET.encode() in old_bytes
    assert build_codec(keys).decode(old_bytes) == envelope


def test_an_erased_subjects_payloads_decode_to_erased_and_others_are_untouched(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    alices = codec.encode(Envelope.wrap(turn(), key="conv_1", actor=ALICE))
    bobs = codec.encode(Envelope.wrap(turn("bob's words"), key="conv_2", actor=BOB))
    keys.destroy(Subject(org_id="org_1", user_id="alice"))
    erased = codec.decode(alices)
    assert erased.payload == Erased(type="TurnSubmitted", key_id="user/org_1/alice")
    assert erased.actor == ALICE and erased.key == "conv_1"  # the envelope stays: routing and ordering still work
    assert codec.decode(bobs).payload == turn("bob's words")
    # A process with its own handle on the key files (another worker) sees the erasure at its next read.
    assert build_codec(KeyFileStore(root=keys._root)).decode(alices).payload.type == "TurnSubmitted"
    # A run still in flight goes on writing for the erased user: sealed under a key no one keeps.
    late = codec.encode(Envelope.wrap(turn("written after the erasure"), key="conv_1", actor=ALICE))
    assert b"after the erasure" not in late and isinstance(codec.decode(late).payload, Erased)


def test_a_sealed_payload_moved_under_another_actor_is_undecodable(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    keys.data_key(Subject(org_id="org_1", user_id="bobby"))
    envelope = Envelope.wrap(turn(), key="conv_1", actor=ALICE)
    # Actor and key id rewritten to bobby's (same length, so the Avro body stays well formed): his key, wrong seal.
    forged = codec.encode(envelope).replace(b"alice", b"bobby")
    with pytest.raises(UndecodableMessage):
        codec.decode(forged)


def test_a_codec_without_keys_refuses_sealed_payloads_rather_than_guessing(keys: KeyFileStore) -> None:
    encoded = build_codec(keys).encode(Envelope.wrap(turn(), key="conv_1", actor=ALICE))
    with pytest.raises(UndecodableMessage):
        build_codec().decode(encoded)


def test_the_erasure_event_roundtrips(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    erased = SubjectErased(org_id="org_1", user_id="alice", requested_by="admin", erased_at=NOW, keys_destroyed=1)
    envelope = Envelope.wrap(erased, key=erased.subject_key, actor=BOB)
    assert codec.decode(codec.encode(envelope)) == envelope


def test_an_envelopes_type_is_read_from_its_header_without_opening_a_sealed_payload(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    sealed = codec.encode(Envelope.wrap(AssistantDelta(run_id="run_1", index=0, text=SECRET), key="run_1", actor=ALICE))
    keys.destroy(Subject(org_id="org_1", user_id="alice"))  # nothing is opened: the type is still read
    assert codec.envelope_type(sealed) == "AssistantDelta"
    plain = codec.encode(Envelope.wrap(turn(), key="conv_1", actor=SYSTEM_ACTOR))
    assert codec.envelope_type(plain) == "TurnSubmitted"
    assert codec.envelope_type(codec.encode_payload(turn())) is None  # a payload, not an envelope
    assert codec.envelope_type(b"garbage") is None
    assert codec.envelope_type(sealed[:12]) is None  # cut short inside its header


def test_the_same_bytes_decode_once_for_every_consumer_until_their_key_is_destroyed(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    alices = codec.encode(Envelope.wrap(turn(), key="conv_1", actor=ALICE))
    first = codec.decode(alices)
    assert codec.decode(bytes(alices)) is first  # an equal copy, as another consumer reads it: shared, not decoded again
    keys.destroy(Subject(org_id="org_1", user_id="alice"))
    # The memo is no way around the erasure: the next read sees it, as a fresh decode would.
    assert codec.decode(alices).payload == Erased(type="TurnSubmitted", key_id="user/org_1/alice")


def test_a_codec_that_loses_its_keys_does_not_serve_sealed_payloads_it_decoded_before(keys: KeyFileStore) -> None:
    codec = build_codec(keys)
    alices = codec.encode(Envelope.wrap(turn(), key="conv_1", actor=ALICE))
    codec.decode(alices)
    codec.sealing = None
    with pytest.raises(UndecodableMessage):
        codec.decode(alices)
