"""The erasure answer: whose keys were destroyed, and what the derived stores are dropping (docs/encryption.md)."""

from __future__ import annotations

from api.schemas.base import Instant, ResponseModel


class Erasure(ResponseModel):
    """`POST /v1/admin/erasures` (202): the keys are gone; the read models, index and blobs drop the rest shortly."""

    org_id: str
    user_id: str | None
    keys_destroyed: int
    files: int  # files whose chunks leave the index and whose blobs are deleted
    requested_by: str
    erased_at: Instant
