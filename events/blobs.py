"""Blob storage: the port for raw upload bytes (content-addressed by SHA-256) and its embedded adapter.

Events never carry upload bytes, only a `BlobRef`. Adapters: `DirectoryBlobStore` below (a directory on
one machine) and `events.s3_blobs.S3BlobStore` (S3, MinIO); both pass `tests/events/test_blob_contract.py`.
`turnlog.adapters.build_blob_store` picks one by URL scheme. Both verify the digest on every read, so a blob that rotted at
rest is reported as `BlobCorrupted` instead of being handed on as if it were the upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Protocol

from kernel.errors import NotFound, TurnlogError, Unavailable

__all__ = [
    "BlobCorrupted",
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "BlobStoreUnavailable",
    "DirectoryBlobStore",
    "blob_key",
    "check_digest",
    "check_owner",
    "digest_of",
    "mark_key",
    "verified",
]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_OWNER = re.compile(r"[a-z0-9-]{1,64}(?:/[a-z0-9-]{1,64}){0,7}")
# A temp file this old was left by a crashed writer: no put takes an hour between create and rename.
_STALE_TEMP_S = 3600.0
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    """Names a blob by its content: the SHA-256 hex digest of its bytes, and their count."""

    digest: str
    size: int

    def __post_init__(self) -> None:
        check_digest(self.digest)
        if self.size < 0:
            raise ValueError(f"a blob's size is >= 0, got {self.size}")

    @classmethod
    def of(cls, data: bytes) -> BlobRef:
        return cls(digest=hashlib.sha256(data).hexdigest(), size=len(data))


class BlobNotFound(NotFound):
    """No blob has this digest (never stored, or deleted for retention or erasure)."""

    def __init__(self, *, digest: str) -> None:
        super().__init__(detail=f"no blob with SHA-256 digest {digest}")
        self.digest = digest


class BlobCorrupted(TurnlogError):
    """The stored bytes no longer hash to their digest: the storage lost or altered them."""

    def __init__(self, *, digest: str, actual_digest: str, size: int) -> None:
        super().__init__(detail=f"the blob {digest} is corrupted: its {size} stored bytes hash to {actual_digest}")
        self.digest = digest
        self.actual_digest = actual_digest
        self.size = size


class BlobStoreUnavailable(Unavailable):
    """The blob store cannot be reached, or refused the request for a reason a retry may fix."""


class BlobStore(Protocol):
    """Immutable blobs named by their SHA-256 digest; putting the same bytes again changes nothing."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, data: bytes) -> BlobRef:
        """Store `data` durably and name it; returns only once the bytes survive a crash."""
        ...

    async def get(self, blob: BlobRef | str) -> bytes:
        """The bytes of a blob (given by ref or hex digest); `BlobNotFound`, `BlobCorrupted`."""
        ...

    async def exists(self, blob: BlobRef | str) -> bool: ...

    async def delete(self, blob: BlobRef | str) -> None:
        """Remove a blob for good; deleting one that is not there is not an error."""
        ...

    def digests(self) -> AsyncIterator[str]:
        """Every stored blob's digest, in no set order (a blob put or deleted meanwhile may or may not appear)."""
        ...

    async def head(self, blob: BlobRef | str, size: int) -> bytes:
        """The blob's first `size` bytes (all of a shorter one), unverified: for reading a header; `BlobNotFound`."""
        ...

    # An index of blobs by owner: marks are empty entries at `marks/<owner>/<digest>`, beside the blobs.

    async def mark(self, owner: str, digest: str) -> None:
        """Note, durably, that the blob `digest` belongs to `owner` (a path: `check_owner`); marking twice is one mark."""
        ...

    async def unmark(self, owner: str, digest: str) -> None:
        """Remove a mark; removing one that is not there is not an error."""
        ...

    def marked(self, owner: str) -> AsyncIterator[tuple[str, str]]:
        """Every (owner, digest) marked at `owner` or at a path below it, in no set order."""
        ...


def check_owner(owner: str) -> str:
    """`owner` if it is 1-8 segments of 1-64 lowercase letters, digits and '-', joined by '/', else ValueError.

    Owners become directory names and key prefixes, so nothing else may pass (no `..`, no empty segment).
    """
    if not isinstance(owner, str) or _OWNER.fullmatch(owner) is None:
        raise ValueError(f"a blob owner is 1-8 segments of [a-z0-9-] joined by '/', got {owner!r}")
    return owner


def mark_key(owner: str, digest: str) -> str:
    """The relative path of a mark in every adapter: `marks/<owner>/<digest>`."""
    return f"marks/{check_owner(owner)}/{check_digest(digest)}"


def check_digest(digest: str) -> str:
    """`digest` if it is a SHA-256 hex digest (64 lowercase hex characters), else ValueError.

    Digests become file names and object keys, so nothing else may pass (no `../`).
    """
    if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
        raise ValueError(f"a blob digest is 64 lowercase hex characters (SHA-256), got {digest!r}")
    return digest


def digest_of(blob: BlobRef | str) -> str:
    """The digest a ref or a (checked) hex digest names: adapters accept either."""
    return blob.digest if isinstance(blob, BlobRef) else check_digest(blob)


def blob_key(digest: str) -> str:
    """The relative path of a blob in every adapter: `sha256/ab/cdef...` (256 shards keep directories small)."""
    return f"sha256/{digest[:2]}/{digest[2:]}"


def verified(digest: str, data: bytes) -> bytes:
    """`data` if it hashes to `digest`, else `BlobCorrupted`: every adapter checks what it reads."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise BlobCorrupted(digest=digest, actual_digest=actual, size=len(data))
    return data


class DirectoryBlobStore:
    """The `BlobStore` port on a local directory: `<root>/sha256/ab/cdef...`, one file per blob (and an empty file
    per mark at `<root>/marks/<owner>/<digest>`).

    A blob appears under its final name only whole: it is written to a temp file in the same
    directory, fsynced, renamed over the final name (atomic on POSIX), and the directory is
    fsynced so the rename itself survives a power cut. Several processes may share one root.
    """

    def __init__(self, *, root: Path) -> None:
        self._root = root
        self._started = False

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        self._started = True

    async def close(self) -> None:
        self._started = False

    async def put(self, data: bytes) -> BlobRef:
        self._check_started()
        return await asyncio.to_thread(self._put, bytes(data))

    async def get(self, blob: BlobRef | str) -> bytes:
        self._check_started()
        digest = digest_of(blob)
        return await asyncio.to_thread(self._get, digest)

    async def exists(self, blob: BlobRef | str) -> bool:
        self._check_started()
        return await asyncio.to_thread(self._path(digest_of(blob)).is_file)

    async def delete(self, blob: BlobRef | str) -> None:
        self._check_started()
        await asyncio.to_thread(self._delete, digest_of(blob))

    async def digests(self) -> AsyncIterator[str]:
        self._check_started()
        shards = sorted(await asyncio.to_thread(_entries, self._root / "sha256"))
        for shard in shards:
            for name in await asyncio.to_thread(_entries, self._root / "sha256" / shard):
                digest = shard + name
                if _DIGEST.fullmatch(digest):  # not a temp file, nor anything else put there by hand
                    yield digest

    async def head(self, blob: BlobRef | str, size: int) -> bytes:
        self._check_started()
        return await asyncio.to_thread(self._head, digest_of(blob), size)

    async def mark(self, owner: str, digest: str) -> None:
        self._check_started()
        await asyncio.to_thread(self._mark, self._root / mark_key(owner, digest))

    async def unmark(self, owner: str, digest: str) -> None:
        self._check_started()
        await asyncio.to_thread(self._unmark, self._root / mark_key(owner, digest))

    async def marked(self, owner: str) -> AsyncIterator[tuple[str, str]]:
        self._check_started()
        top = self._root / "marks"
        for directory, names in await asyncio.to_thread(_marks_below, top / check_owner(owner)):
            found = directory.relative_to(top).as_posix()
            for name in names:
                if _DIGEST.fullmatch(name):
                    yield found, name

    # -- on a worker thread ------------------------------------------------------------------

    def _prepare(self) -> None:
        shards = self._root / "sha256"
        if not shards.is_dir():
            shards.mkdir(parents=True, exist_ok=True)
            fsync_directory(self._root)
            fsync_directory(self._root.parent)
        self._remove_stale_temp_files(shards)

    def _remove_stale_temp_files(self, shards: Path) -> None:
        # Only old ones: a fresh temp file may belong to another process writing right now.
        cutoff = time.time() - _STALE_TEMP_S
        for temp in shards.glob(f"*/{_TEMP_PREFIX}*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except FileNotFoundError:
                pass

    def _put(self, data: bytes) -> BlobRef:
        ref = BlobRef.of(data)
        path = self._path(ref.digest)
        try:
            if path.stat().st_size == ref.size:
                return ref  # already stored; a size mismatch means a damaged copy, which we replace
        except FileNotFoundError:
            pass
        shard = path.parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            fsync_directory(shard.parent)
        descriptor, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
        try:
            with os.fdopen(descriptor, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        fsync_directory(shard)
        return ref

    def _get(self, digest: str) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest=digest) from None
        return verified(digest, data)

    def _head(self, digest: str, size: int) -> bytes:
        try:
            with self._path(digest).open("rb") as stored:
                return stored.read(size)
        except FileNotFoundError:
            raise BlobNotFound(digest=digest) from None

    def _delete(self, digest: str) -> None:
        path = self._path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_directory(path.parent)

    def _mark(self, path: Path) -> None:
        if path.exists():
            return
        created = _make_directories(path.parent)
        path.touch()
        fsync_directory(path.parent)
        for directory in created:  # outermost last: each new directory's entry is made durable in its parent
            fsync_directory(directory.parent)

    def _unmark(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_directory(path.parent)

    def _path(self, digest: str) -> Path:
        return self._root / blob_key(digest)

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the blob store is not started")


def _entries(directory: Path) -> list[str]:
    """The names in a directory (none when it is not there)."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _make_directories(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents; returns those created, innermost first."""
    created = []
    while not directory.is_dir():
        created.append(directory)
        directory = directory.parent
    for path in reversed(created):
        path.mkdir(exist_ok=True)
    return created


def _marks_below(top: Path) -> list[tuple[Path, list[str]]]:
    """Each directory at or below `top`, with the files in it (nothing when `top` is not there)."""
    return [(Path(directory), files) for directory, _, files in os.walk(top)]


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (a file created, renamed or removed in it) durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
