"""Sealed payloads: the codec's seam where content events are sealed on the way to the log and opened on the way back.

An envelope stays plaintext (ids, key, actor, type, times: what routing, ordering and tenancy need);
for the declared content types its payload bytes are replaced by a `SealedPayload` record (key id,
nonce, ciphertext), itself single-object encoded, so a sealed payload names its schema like any other
and payloads written before sealing still decode as they are. Processors and projections see the same
dataclasses as before, or `Erased` once the subject's key is destroyed.
"""

from collections.abc import Iterable

from kernel.envelope import Actor
from kernel.key_store import KeyStore, SubjectErased
from kernel.sealing import Erased, SealBroken, Subject, new_data_key, seal, unseal

SEALED_PAYLOAD = "SealedPayload"


class PayloadSealing:
    """Which payload types carry content (sealed), and the key store that holds their subjects' keys."""

    def __init__(self, *, keys: KeyStore, sealed_types: Iterable[type]) -> None:
        self.keys = keys
        self._sealed = frozenset(cls.__name__ for cls in sealed_types)

    def seals(self, type_name: str) -> bool:
        return type_name in self._sealed

    def seal_record(self, payload: bytes, *, type_name: str, event_id: str, actor: Actor) -> dict | None:
        """The `SealedPayload` record for `payload`, or None when its actor names no org (the system's own events)."""
        subject = subject_of(actor)
        if subject is None:
            return None
        try:
            key = self.keys.data_key(subject)
        except SubjectErased:
            # Born shredded: a run in flight when its user was erased goes on writing, under a key no one keeps, so
            # no worker stops on it and nothing of the user becomes readable again.
            key = new_data_key()
        nonce, ciphertext = seal(key, payload, subject=subject, purpose=_purpose(type_name, event_id))
        return {"key_id": subject.key_id, "nonce": nonce, "ciphertext": ciphertext}

    def open_record(
        self, record: dict, *, type_name: str, event_id: str, actor: Actor
    ) -> tuple[bytes | Erased, Subject]:
        """The payload bytes a `SealedPayload` record seals, or `Erased` when its key is gone, and whose key sealed
        it; `SealBroken`."""
        subject = Subject.from_key_id(record["key_id"])
        # The key must be the envelope's own tenant's: a sealed payload copied under another actor does not open.
        if subject.org_id != actor.org_id or (subject.user_id is not None and subject.user_id != actor.user_id):
            raise SealBroken(f"a payload sealed for {subject.key_id} travels in an envelope of another actor")
        key = self.keys.existing_key(subject)
        if key is None:
            return Erased(type=type_name, key_id=subject.key_id), subject
        purpose = _purpose(type_name, event_id)
        return unseal(key, record["nonce"], record["ciphertext"], subject=subject, purpose=purpose), subject


def subject_of(actor: Actor) -> Subject | None:
    """Whose key seals an actor's content: its user's within its org (erasable alone), its org's without a user."""
    if not actor.org_id:
        return None
    return Subject(org_id=actor.org_id, user_id=actor.user_id or None)


def _purpose(type_name: str, event_id: str) -> str:
    return f"event:{type_name}:{event_id}"
