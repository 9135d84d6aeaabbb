"""Sealing (pure): AES-256-GCM under a subject's data key, bound to the subject and to what the content is."""

import pytest

from kernel.sealing import (
    SealBroken,
    Subject,
    blob_subject,
    new_data_key,
    seal,
    seal_blob,
    unseal,
    unseal_blob,
)

ALICE = Subject(org_id="org_1", user_id="alice")
BOB = Subject(org_id="org_1", user_id="bob")
ORG = Subject(org_id="org_1")


def test_sealed_content_opens_with_its_key_subject_and_purpose() -> None:
    key = new_data_key()
    nonce, ciphertext = seal(key, b"the tide turns at four", subject=ALICE, purpose="event:TurnSubmitted:evt_1")
    assert b"tide" not in ciphertext
    assert unseal(key, nonce, ciphertext, subject=ALICE, purpose="event:TurnSubmitted:evt_1") == b"the tide turns at four"


@pytest.mark.parametrize(
    ("subject", "purpose"),
    [(BOB, "event:TurnSubmitted:evt_1"), (ORG, "event:TurnSubmitted:evt_1"), (ALICE, "event:TurnSubmitted:evt_2"),
     (ALICE, "event:AssistantDelta:evt_1"), (ALICE, "blob")],
    ids=["another user", "the org", "another event", "another type", "a blob"],
)
def test_a_ciphertext_moved_to_another_subject_or_field_does_not_open(subject: Subject, purpose: str) -> None:
    key = new_data_key()
    nonce, ciphertext = seal(key, b"secret", subject=ALICE, purpose="event:TurnSubmitted:evt_1")
    with pytest.raises(SealBroken):
        unseal(key, nonce, ciphertext, subject=subject, purpose=purpose)


def test_another_key_or_a_flipped_bit_does_not_open() -> None:
    key = new_data_key()
    nonce, ciphertext = seal(key, b"secret", subject=ALICE, purpose="p")
    with pytest.raises(SealBroken):
        unseal(new_data_key(), nonce, ciphertext, subject=ALICE, purpose="p")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(SealBroken):
        unseal(key, nonce, tampered, subject=ALICE, purpose="p")


def test_each_seal_has_its_own_nonce() -> None:
    key = new_data_key()
    first = seal(key, b"same", subject=ALICE, purpose="p")
    second = seal(key, b"same", subject=ALICE, purpose="p")
    assert first[0] != second[0] and first[1] != second[1]


def test_a_sealed_blob_names_its_subject_and_opens_with_its_key() -> None:
    key = new_data_key()
    stored = seal_blob(key, b"%PDF-1.7 lighthouse", subject=ALICE)
    assert b"lighthouse" not in stored
    assert blob_subject(stored) == ALICE
    assert unseal_blob(key, stored, subject=ALICE) == b"%PDF-1.7 lighthouse"
    assert blob_subject(b"%PDF-1.7 plaintext from before sealing") is None


def test_key_ids_name_the_subject_and_read_back() -> None:
    assert ALICE.key_id == "user/org_1/alice" and ORG.key_id == "org/org_1"
    assert Subject.from_key_id(ALICE.key_id) == ALICE and Subject.from_key_id(ORG.key_id) == ORG
    assert ORG.covers(ALICE) and ORG.covers(ORG) and not ALICE.covers(BOB) and not ALICE.covers(ORG)
    assert not Subject(org_id="org_2").covers(ALICE)
    for damaged in ("user/org_1", "user/org_1/", "org/", "team/org_1"):
        with pytest.raises(SealBroken):
            Subject.from_key_id(damaged)
    with pytest.raises(ValueError):
        Subject(org_id="org/1")
