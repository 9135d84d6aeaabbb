"""API keys as the admin API shows them: never the secret, except once, in the answer that creates the key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import Instant, ResponseModel


class ApiKey(ResponseModel):
    """A key of the org: who it acts as, where, and whether it is still accepted."""

    key_id: str = Field(description="the 16 hex characters after `tlk_`: how the key is named and revoked")
    name: str
    org_id: str
    user_id: str = Field(description="the user the key acts as")
    workspace_ids: list[str]
    role: Literal["member", "admin"]
    status: Literal["active", "revoked", "expired"]
    created_by: str
    created_at: Instant
    expires_at: Instant | None
    revoked_at: Instant | None
    revoked_by: str | None


class CreatedApiKey(ApiKey):
    """`POST /v1/admin/api-keys`: the key itself, shown this once; only its hash is kept."""

    key: str = Field(description="`tlk_<keyId>_<secret>`: send it as `Authorization: Bearer <key>`", pattern=r"^tlk_[0-9a-f]{16}_[a-z2-7]{52}$")


class ApiKeyList(ResponseModel):
    """`GET /v1/admin/api-keys`: the org's keys, newest first."""

    api_keys: list[ApiKey]
