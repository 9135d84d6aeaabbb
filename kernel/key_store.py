"""The key-store port: data keys per org and per user, and their destruction (the erasure primitive).

Adapters: `events.key_files.KeyFileStore` (a key file per subject under the data directory, the default),
and the same files holding keys wrapped by an AWS KMS key (`events.kms_keys`, `--keys kms:...`): envelope
encryption, each data key unwrapped through the KMS on first use and cached; `destroy` deletes the wrapped
key after recording the subject as erased, so no KMS call can bring it back. Adapters are chosen by URL
scheme in `turnlog.adapters.build_key_store`, and pass `tests/events/test_key_store_contract.py`.

The methods are synchronous: the codec seals and opens inside encode/decode. An adapter answers
from memory after the first use of a key, so they stay cheap on the hot path.
"""

from typing import Protocol

from kernel.errors import Forbidden
from kernel.sealing import Subject


class SubjectErased(Forbidden):
    """The subject's data key was destroyed: nothing can be sealed for it again, nor opened (403 to its requests)."""

    def __init__(self, *, subject: Subject) -> None:
        super().__init__(detail=f"the data of {subject.key_id} was erased")
        self.subject = subject


class KeyStore(Protocol):
    """Data keys by subject; an org's erasure destroys the org key and every key of its users."""

    def data_key(self, subject: Subject) -> bytes:
        """The subject's key, made (once, atomically, whoever asks first) when it has none; `SubjectErased`."""
        ...

    def existing_key(self, subject: Subject) -> bytes | None:
        """The subject's key, or None when it has none (never made, or destroyed): for opening, never makes one."""
        ...

    def destroy(self, subject: Subject) -> int:
        """Destroy the subject's key (an org's: with its users'), for good; returns how many keys went. Idempotent."""
        ...

    def is_erased(self, subject: Subject) -> bool:
        """Whether the subject (or its org) was erased."""
        ...
