"""Sealing: AES-256-GCM over content with a data key per org or per user (pure, no I/O).

Erasure on an immutable log is key destruction: content is sealed under its subject's data key, and
deleting that key (the key store's `destroy`) leaves every copy of the ciphertext (log, backups,
replays) unreadable. The associated data names the subject and what the content is (an event's type
and id, or "blob"), so a ciphertext moved to another user, org, event or field fails to open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's 96-bit nonce, random per seal: 2^32 seals per key stay far below the collision bound
_AAD_VERSION = b"turnlog-seal/1"
# Subject ids are parts of a key id (`/`-separated); key stores map them to their own names (key_files.py).
_SUBJECT_ID_CHARS = 256
_SUBJECT_ID = re.compile(rf"[^/\x00]{{1,{_SUBJECT_ID_CHARS}}}")
# A sealed blob names its key so any reader can open it: magic, key id length, key id, nonce, ciphertext.
BLOB_MAGIC = b"TLSB\x01"
# A sealed blob's header (magic, key id's length, `user/<org>/<user>` in UTF-8) fits in this many bytes.
SEALED_HEADER_MAX_BYTES = len(BLOB_MAGIC) + 2 + len("user//") + 2 * _SUBJECT_ID_CHARS * 4


class SealBroken(ValueError):
    """A ciphertext that does not open under its key: tampered with, truncated, or moved to another subject."""


@dataclass(frozen=True, kw_only=True)
class Subject:
    """Whose data key seals a piece of content: one user in an org, or (without `user_id`) the org itself."""

    org_id: str
    user_id: str | None = None

    def __post_init__(self) -> None:
        if not _SUBJECT_ID.fullmatch(self.org_id):
            raise ValueError(f"an org id for a data key is 1-256 characters without '/', got {self.org_id!r}")
        if self.user_id is not None and not _SUBJECT_ID.fullmatch(self.user_id):
            raise ValueError(f"a user id for a data key is 1-256 characters without '/', got {self.user_id!r}")

    @property
    def key_id(self) -> str:
        """`org/<org>` or `user/<org>/<user>`: stored beside every ciphertext, so it names the key that opens it."""
        return f"org/{self.org_id}" if self.user_id is None else f"user/{self.org_id}/{self.user_id}"

    @classmethod
    def from_key_id(cls, key_id: str) -> Subject:
        try:
            match key_id.split("/"):
                case ["org", org_id]:
                    return cls(org_id=org_id)
                case ["user", org_id, user_id]:
                    return cls(org_id=org_id, user_id=user_id)
        except ValueError:
            pass  # an empty or odd id: read from stored bytes, so it is damage, not a caller's mistake
        raise SealBroken(f"{key_id!r} is not a data key id")

    def covers(self, other: Subject) -> bool:
        """Whether erasing this subject erases `other` too (an org covers each of its users)."""
        return self == other or (self.user_id is None and self.org_id == other.org_id)


@dataclass(frozen=True, kw_only=True)
class Erased:
    """What a sealed payload decodes to once its subject's key is destroyed: readers skip it.

    `type` is the record name the payload had, from its (plaintext) envelope.
    """

    type: str
    key_id: str


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def associated_data(subject: Subject, purpose: str) -> bytes:
    """Binds a ciphertext to its subject and to what it is (`event:<Type>:<event id>`, `blob`)."""
    return b"|".join((_AAD_VERSION, subject.key_id.encode(), purpose.encode()))


def seal(key: bytes, plaintext: bytes, *, subject: Subject, purpose: str) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with its 16-byte tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated_data(subject, purpose))


def unseal(key: bytes, nonce: bytes, ciphertext: bytes, *, subject: Subject, purpose: str) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data(subject, purpose))
    except (InvalidTag, ValueError) as error:
        raise SealBroken(f"content sealed for {subject.key_id} ({purpose}) does not open: {error!r}") from None


# -- blobs ---------------------------------------------------------------------------------

def seal_blob(key: bytes, data: bytes, *, subject: Subject) -> bytes:
    key_id = subject.key_id.encode()
    nonce, ciphertext = seal(key, data, subject=subject, purpose="blob")
    return b"".join((BLOB_MAGIC, len(key_id).to_bytes(2, "big"), key_id, nonce, ciphertext))


def blob_subject(stored: bytes) -> Subject | None:
    """The subject whose key sealed a stored blob, or None for a blob stored in plaintext (before sealing)."""
    if not stored.startswith(BLOB_MAGIC):
        return None
    length = int.from_bytes(stored[len(BLOB_MAGIC):len(BLOB_MAGIC) + 2], "big")
    start = len(BLOB_MAGIC) + 2
    return Subject.from_key_id(stored[start:start + length].decode("ascii", "replace"))


def unseal_blob(key: bytes, stored: bytes, *, subject: Subject) -> bytes:
    start = len(BLOB_MAGIC) + 2 + len(subject.key_id.encode())
    nonce, ciphertext = stored[start:start + NONCE_BYTES], stored[start + NONCE_BYTES:]
    return unseal(key, nonce, ciphertext, subject=subject, purpose="blob")
