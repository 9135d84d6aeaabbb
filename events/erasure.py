"""The erasure event: a user's or an org's data keys were destroyed, and the derived stores drop their data.

It goes on `documents` (keyed by the subject's key id), which both the read-model projector and the
ingester read: the projector deletes the subject's rows, the ingester its files' chunks and blobs. It
carries the files the subject owned, listed from the log before the keys went, since after that
their upload events no longer open.
"""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class ErasedFile:
    """A file the erased subject uploaded: its chunks leave the index and its blob the blob store."""

    file_id: str
    workspace_id: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class SubjectErased:
    """The data keys of `user_id` in `org_id` (or, without a user, of the whole org) are destroyed."""

    org_id: str
    user_id: str | None = None
    files: tuple[ErasedFile, ...] = ()
    keys_destroyed: int = 0
    requested_by: str
    erased_at: datetime

    @property
    def subject_key(self) -> str:
        return f"org/{self.org_id}" if self.user_id is None else f"user/{self.org_id}/{self.user_id}"


ERASURE_EVENT_TYPES = (SubjectErased,)
