"""Sealed blobs: a `BlobStore` in front of any adapter that seals an owner's bytes and opens them on read.

`put(data, owner=subject)` stores the bytes sealed under the owner's data key (kernel/sealing.py's blob
framing names the key, so any reader opens them); the digest and size it returns are the stored
ciphertext's, which is what the inner store verifies. `get` opens sealed blobs and hands plaintext ones
(stored before sealing, or put without an owner) back as they are. A blob whose key is destroyed is
`BlobNotFound`: erased, like one deleted.

Each owner's blob is also marked as theirs (`BlobStore.mark`, at `owner_of(subject)`), before it is stored: an
erasure then deletes the subject's blobs by listing its marks (`sweep_subject`), whatever put them, without
reading every blob in the store. Blobs stored before the marks existed are marked once by `sweep_erased`, which
reads every blob's header and then records the index as complete.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from events.blobs import BlobCorrupted, BlobNotFound, BlobRef, BlobStore, digest_of
from kernel.key_store import KeyStore
from kernel.sealing import SEALED_HEADER_MAX_BYTES, SealBroken, Subject, blob_subject, seal_blob, unseal_blob

# The mark that says every blob in the store is marked: set by a whole sweep, so it is needed only once.
_INDEX_COMPLETE = ("index", hashlib.sha256(b"turnlog: every sealed blob is marked by owner").hexdigest())


def owner_of(subject: Subject) -> str:
    """Where a subject's blobs are marked: `<org>/org` or `<org>/user/<user>`, each id hashed (an id may hold
    characters a path may not), so listing `<org>` finds its users' blobs with its own."""
    org = _hashed(subject.org_id)
    return f"{org}/org" if subject.user_id is None else f"{org}/user/{_hashed(subject.user_id)}"


def owners_within(subject: Subject) -> str:
    """The marks an erasure of `subject` lists: the user's own, or every mark of the org (its users' with its own)."""
    return _hashed(subject.org_id) if subject.user_id is None else owner_of(subject)


def _hashed(identifier: str) -> str:
    return hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:32]


class SealingBlobStore:
    """The `BlobStore` port over `inner`, sealing what an owner puts."""

    def __init__(self, *, inner: BlobStore, keys: KeyStore) -> None:
        self._inner = inner
        self._keys = keys

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def put(self, data: bytes, *, owner: Subject | None = None) -> BlobRef:
        if owner is None:
            return await self._inner.put(data)
        sealed = seal_blob(self._keys.data_key(owner), bytes(data), subject=owner)
        # Marked first: a crash in between leaves a mark without a blob (harmless), never a blob no mark names.
        ref = await asyncio.to_thread(BlobRef.of, sealed)
        await self._inner.mark(owner_of(owner), ref.digest)
        return await self._inner.put(sealed)

    async def get(self, blob: BlobRef | str) -> bytes:
        stored = await self._inner.get(blob)
        try:
            subject = blob_subject(stored)
            if subject is None:
                return stored
            key = self._keys.existing_key(subject)
            if key is None:
                raise BlobNotFound(digest=digest_of(blob))
            return unseal_blob(key, stored, subject=subject)
        except SealBroken:
            # The digest matched, so these are the bytes stored: sealed under another key's name, or not by turnlog.
            raise BlobCorrupted(digest=digest_of(blob), actual_digest=digest_of(blob), size=len(stored)) from None

    async def exists(self, blob: BlobRef | str) -> bool:
        return await self._inner.exists(blob)

    async def delete(self, blob: BlobRef | str) -> None:
        try:
            subject = blob_subject(await self._inner.head(blob, SEALED_HEADER_MAX_BYTES))
        except (BlobNotFound, SealBroken):
            subject = None
        await self._inner.delete(blob)
        if subject is not None:
            await self._inner.unmark(owner_of(subject), digest_of(blob))

    def digests(self) -> AsyncIterator[str]:
        return self._inner.digests()

    async def head(self, blob: BlobRef | str, size: int) -> bytes:
        return await self._inner.head(blob, size)

    async def mark(self, owner: str, digest: str) -> None:
        await self._inner.mark(owner, digest)

    async def unmark(self, owner: str, digest: str) -> None:
        await self._inner.unmark(owner, digest)

    def marked(self, owner: str) -> AsyncIterator[tuple[str, str]]:
        return self._inner.marked(owner)

    async def sweep_subject(self, subject: Subject) -> int:
        """Delete the blobs marked as an erased subject's (an org's: its users' too); returns how many went.

        Whatever put them (uploads, export parts, tool results, the code interpreter's files), they were marked as
        they were stored, so the sweep lists them without reading anyone else's.
        """
        if not self._keys.is_erased(subject):
            raise ValueError(f"{subject.key_id} is not erased: its blobs stay")
        marks = [found async for found in self._inner.marked(owners_within(subject))]
        for owner, digest in marks:
            await self._inner.delete(digest)
            await self._inner.unmark(owner, digest)
        return len(marks)

    async def index_complete(self) -> bool:
        """Whether every blob in the store is marked (a whole sweep has run), so `sweep_subject` finds them all."""
        owner, digest = _INDEX_COMPLETE
        async for _, found in self._inner.marked(owner):
            if found == digest:
                return True
        return False

    async def sweep_erased(self) -> int:
        """Read every blob's header: delete those sealed under an erased subject's key, mark the others as their
        owner's (blobs stored before marks existed have none), then record the index as complete. Returns how many
        blobs went. A sealed blob is unique to its subject (a fresh nonce each time), so no one else's goes with it.
        """
        swept = 0
        async for digest in self._inner.digests():
            try:
                subject = blob_subject(await self._inner.head(digest, SEALED_HEADER_MAX_BYTES))
            except BlobNotFound:
                continue  # deleted meanwhile
            except SealBroken:
                continue  # a header turnlog did not write: not ours to judge
            if subject is None:
                continue
            owner = owner_of(subject)
            if not self._keys.is_erased(subject):
                await self._inner.mark(owner, digest)
            # Asked again once marked: an erasure whose own sweep listed the marks just before this one was made
            # is seen here, so the blob cannot slip between the two sweeps.
            if self._keys.is_erased(subject):
                await self._inner.delete(digest)
                await self._inner.unmark(owner, digest)
                swept += 1
        await self._inner.mark(*_INDEX_COMPLETE)
        return swept


async def put_owned(blobs: BlobStore, data: bytes, *, owner: Subject | None) -> BlobRef:
    """Put `owner`'s bytes: sealed when `blobs` seals (every process's store does, turnlog/system.py), else as given."""
    if isinstance(blobs, SealingBlobStore) and owner is not None:
        return await blobs.put(data, owner=owner)
    return await blobs.put(data)
