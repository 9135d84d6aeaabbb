"""API keys for programs (topic `api-keys`, one partition, keyed by key id; see docs/api-keys.md).

A key is minted by the admin API or `turnlog keys create`, shown once, and stored here only as the
SHA-256 of its secret. Every API instance folds this topic into its key view, so a key created or
revoked through one instance is honoured (or refused) by every other within a bound.
"""

from dataclasses import dataclass
from datetime import datetime

API_KEY_ROLES = ("member", "admin")  # as a token's `role` claim
MAX_KEY_DAYS = 3650  # the longest a key may be given to live


@dataclass(frozen=True, kw_only=True)
class ApiKeyCreated:
    """A key that acts as `user_id` of `org_id` in `workspace_ids`, with `role`, until it expires or is revoked."""

    key_id: str
    secret_sha256: str  # hex digest of the key's secret; the secret itself is never stored
    org_id: str
    user_id: str
    workspace_ids: tuple[str, ...]
    role: str = "member"  # member | admin, as a token's `role` claim
    name: str = ""  # what the key is for, to tell keys apart in a listing
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None  # None: until revoked


@dataclass(frozen=True, kw_only=True)
class ApiKeyRevoked:
    """The key is refused from now on, by every instance."""

    key_id: str
    org_id: str
    revoked_by: str
    reason: str = ""
    revoked_at: datetime


API_KEY_EVENT_TYPES = (ApiKeyCreated, ApiKeyRevoked)
