"""The `KeyStore` port on local key files: `<root>/<org>/org.key` and `<root>/<org>/users/<user>.key`.

Each key file holds 32 random bytes (or, with a `KeyWrapping` such as `events.kms_keys`, the key wrapped by a
master key held elsewhere), mode 0600 in a 0700 directory, written whole before it appears
(temp file, fsync, hard link: two processes making the same key at once agree on the first one). An
erasure first writes a marker (`<org>/ERASED`, `<org>/users/<user>.erased`) so no new key can be made
for the subject, then unlinks the key files. Several processes may share one root: a key another
process destroyed stops opening here at the next read (a stat per open), never later.

Keep this directory out of the log's backups: a backup of the keys would bring erased data back.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from events.blobs import fsync_directory
from kernel.key_store import SubjectErased
from kernel.sealing import DATA_KEY_BYTES, Subject, new_data_key

_ORG_KEY = "org.key"
_ORG_ERASED = "ERASED"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class KeyWrapping(Protocol):
    """How a data key is stored in its file: as it is, or wrapped by a master key held elsewhere (a KMS)."""

    def new_key(self, subject: Subject) -> tuple[bytes, bytes]:
        """A new data key for `subject` and the bytes its file holds."""
        ...

    def unwrap(self, subject: Subject, stored: bytes, *, path: Path) -> bytes:
        """The data key a file holds; ValueError (naming `path`) when the file does not hold one of `subject`'s."""
        ...


class PlainKeys:
    """Key files that hold the key itself (the default): whoever reads the directory holds the keys."""

    def new_key(self, subject: Subject) -> tuple[bytes, bytes]:
        key = new_data_key()
        return key, key

    def unwrap(self, subject: Subject, stored: bytes, *, path: Path) -> bytes:
        if len(stored) != DATA_KEY_BYTES:
            raise ValueError(f"the key file {path} holds {len(stored)} bytes, not a {DATA_KEY_BYTES}-byte key: it is damaged")
        return stored


class KeyFileStore:
    """Data keys in files under `root` (by default `<data dir>/keys`), stored as `wrapping` says."""

    def __init__(self, *, root: Path, wrapping: KeyWrapping | None = None) -> None:
        self._root = root
        self._wrapping = wrapping or PlainKeys()
        self._cache: dict[Subject, bytes] = {}
        self._key_paths: dict[Subject, str] = {}  # a subject's key file, named once: a stat per open is the cost
        self._lock = threading.Lock()  # the codec runs on the event loop and in worker threads

    def data_key(self, subject: Subject) -> bytes:
        cached = self._cache.get(subject)
        if cached is not None:
            # A key destroyed by another process may still seal here for a moment: what it seals is unreadable anyway.
            return cached
        if self.is_erased(subject):
            raise SubjectErased(subject=subject)
        path = self._path(subject)
        key = self._read_key(path, subject)
        if key is None:
            key = self._create(path, subject)
        with self._lock:
            self._cache[subject] = key
        return key

    def existing_key(self, subject: Subject) -> bytes | None:
        cached = self._cache.get(subject)
        if cached is not None and os.path.exists(self._key_path(subject)):
            return cached
        key = self._read_key(self._path(subject), subject)
        with self._lock:
            if key is None:
                self._cache.pop(subject, None)
            else:
                self._cache[subject] = key
        return key

    def destroy(self, subject: Subject) -> int:
        org_directory = self._root / _file_name(subject.org_id)
        users = org_directory / "users"
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        users.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The marker first: from here on no process makes a new key for the subject.
        marker = org_directory / _ORG_ERASED if subject.user_id is None else users / f"{_file_name(subject.user_id)}.erased"
        _write_new(marker, b"")
        if subject.user_id is None:
            doomed = [org_directory / _ORG_KEY, *users.glob("*.key")]
        else:
            doomed = [self._path(subject)]
        destroyed = 0
        for path in doomed:
            try:
                path.unlink()
                destroyed += 1
            except FileNotFoundError:
                pass
        fsync_directory(users)
        fsync_directory(org_directory)
        with self._lock:
            for cached in [cached for cached in self._cache if subject.covers(cached)]:
                del self._cache[cached]
        return destroyed

    def is_erased(self, subject: Subject) -> bool:
        org_directory = self._root / _file_name(subject.org_id)
        if (org_directory / _ORG_ERASED).exists():
            return True
        return subject.user_id is not None and (org_directory / "users" / f"{_file_name(subject.user_id)}.erased").exists()

    # -- files ---------------------------------------------------------------------------------

    def _key_path(self, subject: Subject) -> str:
        path = self._key_paths.get(subject)
        if path is None:
            path = self._key_paths[subject] = str(self._path(subject))
        return path

    def _path(self, subject: Subject) -> Path:
        org_directory = self._root / _file_name(subject.org_id)
        return org_directory / _ORG_KEY if subject.user_id is None else org_directory / "users" / f"{_file_name(subject.user_id)}.key"

    def _create(self, path: Path, subject: Subject) -> bytes:
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key, stored = self._wrapping.new_key(subject)
        made = _write_new(path, stored)  # when another process made it first, theirs is the key (read below)
        if self.is_erased(subject):
            # Erased while we made it: the eraser may have unlinked before our link, so unlink again.
            path.unlink(missing_ok=True)
            raise SubjectErased(subject=subject)
        if made and path.exists():
            return key
        key = self._read_key(path, subject)
        if key is None:
            raise SubjectErased(subject=subject)  # destroyed between our link and this read
        return key

    def _read_key(self, path: Path, subject: Subject) -> bytes | None:
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._wrapping.unwrap(subject, stored, path=path)


def _file_name(subject_id: str) -> str:
    """The id itself when it is a safe file name (turnlog's ids are), else a digest of it: never a path."""
    if _SAFE_NAME.fullmatch(subject_id) and subject_id not in (_ORG_ERASED, "users"):
        return subject_id
    return "sha256-" + hashlib.sha256(subject_id.encode()).hexdigest()


def _write_new(path: Path, content: bytes) -> bool:
    """Write `path` whole, 0600, unless it exists; returns whether this call made it."""
    descriptor, temp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp makes it 0600
    try:
        with os.fdopen(descriptor, "wb") as temp:
            temp.write(content)
            temp.flush()
            os.fsync(temp.fileno())
        try:
            os.link(temp_name, path)  # atomic and never overwrites: the first writer wins
            made = True
        except FileExistsError:
            made = False
    finally:
        Path(temp_name).unlink(missing_ok=True)
    fsync_directory(path.parent)
    return made
