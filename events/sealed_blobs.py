"""Sealed blobs: a `BlobStore` in front of any adapter that seals an owner's bytes and opens them on read.

`put(data, owner=subject)` stores the bytes sealed under the owner's data key (kernel/sealing.py's blob
framing names the key, so any reader opens them); the digest and size it returns are the stored
ciphertext's, which is what the inner store verifies. `get` opens sealed blobs and hands plaintext ones
(stored before sealing, or put without an owner) back as they are. A blob whose key is destroyed is
`BlobNotFound`: erased, like one deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from events.blobs import BlobCorrupted, BlobNotFound, BlobRef, BlobStore, digest_of
from kernel.key_store import KeyStore
from kernel.sealing import SEALED_HEADER_MAX_BYTES, SealBroken, Subject, blob_subject, seal_blob, unseal_blob


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
        return await self._inner.put(seal_blob(self._keys.data_key(owner), bytes(data), subject=owner))

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
        await self._inner.delete(blob)

    def digests(self) -> AsyncIterator[str]:
        return self._inner.digests()

    async def head(self, blob: BlobRef | str, size: int) -> bytes:
        return await self._inner.head(blob, size)

    async def sweep_erased(self) -> int:
        """Delete every blob sealed under an erased subject's key (unreadable already); returns how many went.

        Whatever put them (uploads, export parts, tool results, the code interpreter's files), the blob's own
        header names its subject, so nothing needs to have recorded them. A sealed blob is unique to its
        subject (a fresh nonce each time), so no one else's blob can go with it.
        """
        swept = 0
        async for digest in self._inner.digests():
            try:
                subject = blob_subject(await self._inner.head(digest, SEALED_HEADER_MAX_BYTES))
            except BlobNotFound:
                continue  # deleted meanwhile
            except SealBroken:
                continue  # a header turnlog did not write: not ours to judge
            if subject is not None and self._keys.is_erased(subject):
                await self._inner.delete(digest)
                swept += 1
        return swept


async def put_owned(blobs: BlobStore, data: bytes, *, owner: Subject | None) -> BlobRef:
    """Put `owner`'s bytes: sealed when `blobs` seals (every process's store does, turnlog/system.py), else as given."""
    if isinstance(blobs, SealingBlobStore) and owner is not None:
        return await blobs.put(data, owner=owner)
    return await blobs.put(data)
