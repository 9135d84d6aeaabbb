"""API key material: minted keys parse back, only a hash is kept, and a presented key names its principal unless it
is unknown, wrong, revoked or expired (401), or the view is stale (503)."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from api.api_keys import KEY_PREFIX, is_api_key, mint_api_key, parse_api_key, principal_from_api_key, secret_sha256
from events.api_keys import ApiKeyCreated, ApiKeyRevoked
from kernel.errors import Unauthenticated, Unavailable
from projections.api_keys import evolve

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


class FakeView:
    """The view's lookup surface, over states folded by the real `evolve`."""

    def __init__(self, *events: object, fresh: bool = True) -> None:
        self.keys: dict = {}
        self.fresh = fresh
        for event in events:
            self.keys[event.key_id] = evolve(self.keys.get(event.key_id), event)

    def check_fresh(self) -> None:
        if not self.fresh:
            raise Unavailable(detail="stale", retry_after_s=1)

    def get(self, key_id: str):
        return self.keys.get(key_id)


def test_a_minted_key_parses_back_to_its_id_and_secret_and_is_random() -> None:
    minted = mint_api_key()
    assert minted.token.startswith(KEY_PREFIX) and is_api_key(minted.token) and len(minted.token) == 73
    assert parse_api_key(minted.token) == (minted.key_id, minted.secret)
    assert len({mint_api_key().token for _ in range(50)}) == 50


def test_only_the_sha256_of_the_secret_is_kept() -> None:
    minted = mint_api_key()
    assert minted.secret_sha256 == secret_sha256(minted.secret) == hashlib.sha256(minted.secret.encode()).hexdigest()
    assert minted.secret not in minted.secret_sha256


@pytest.mark.parametrize("token", [
    "tlk_", "tlk_0123456789abcdef", "tlk_0123456789ABCDEF_" + "a" * 52, "tlk_0123456789abcdef_" + "a" * 51,
    "tlk_0123456789abcdef_" + "1" * 52, "tlk_0123456789abcdef_" + "a" * 52 + "x",
])
def test_a_malformed_key_is_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        parse_api_key(token)


def created_for(minted, **fields) -> ApiKeyCreated:
    return ApiKeyCreated(
        key_id=minted.key_id, secret_sha256=minted.secret_sha256, org_id="org_a", user_id="ana", workspace_ids=("ws_1",),
        role="admin", created_by="op", created_at=T0, **fields,
    )


def test_a_valid_key_acts_as_its_user_org_workspaces_and_role() -> None:
    minted = mint_api_key()
    principal = principal_from_api_key(FakeView(created_for(minted)), minted.token, now=T0)
    assert (principal.user_id, principal.org_id, principal.workspace_ids, principal.role) == ("ana", "org_a", ("ws_1",), "admin")


def test_unknown_wrong_revoked_and_expired_keys_are_refused() -> None:
    minted, other = mint_api_key(), mint_api_key()
    with pytest.raises(Unauthenticated, match="not valid"):
        principal_from_api_key(FakeView(), minted.token, now=T0)
    forged = f"{KEY_PREFIX}{minted.key_id}_{other.secret}"  # the right id, another secret
    with pytest.raises(Unauthenticated, match="not valid"):
        principal_from_api_key(FakeView(created_for(minted)), forged, now=T0)
    revocation = ApiKeyRevoked(key_id=minted.key_id, org_id="org_a", revoked_by="op", revoked_at=T0)
    with pytest.raises(Unauthenticated, match="revoked"):
        principal_from_api_key(FakeView(created_for(minted), revocation), minted.token, now=T0)
    expiring = FakeView(created_for(minted, expires_at=T0 + timedelta(days=1)))
    assert principal_from_api_key(expiring, minted.token, now=T0).user_id == "ana"
    with pytest.raises(Unauthenticated, match="expired"):
        principal_from_api_key(expiring, minted.token, now=T0 + timedelta(days=2))
    with pytest.raises(Unauthenticated, match="does not accept"):
        principal_from_api_key(None, minted.token, now=T0)


def test_a_stale_view_refuses_with_503_rather_than_risk_a_revoked_key() -> None:
    minted = mint_api_key()
    with pytest.raises(Unavailable):
        principal_from_api_key(FakeView(created_for(minted), fresh=False), minted.token, now=T0)
