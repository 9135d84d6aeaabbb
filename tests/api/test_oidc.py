"""Single sign-on: an OIDC provider's tokens verified with its JWKS (RSA and EC keys made by `cryptography`), every
refusal, the claims mapping, key rotation and its rate limit, and a provider that cannot be reached."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.requests import Request

from api.auth import issue_token
from api.oidc import OidcConfig, OidcVerifier, principal_from_bearer
from kernel.errors import Unauthenticated, Unavailable
from tests.conftest import load_test_module

oidc_provider = load_test_module("oidc_provider", beside=Path(__file__))
Provider, SigningKey, AUDIENCE = oidc_provider.Provider, oidc_provider.SigningKey, oidc_provider.AUDIENCE

TURNLOG_SECRET = b"s" * 32


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.ec("ec-1")


@pytest.fixture
def provider(rsa_key, ec_key) -> Provider:
    return Provider(keys=[rsa_key, ec_key])


def config_for(provider: Provider, **overrides: object) -> OidcConfig:
    settings: dict[str, object] = {
        "issuer": provider.issuer, "audience": AUDIENCE, "org_claim": "org", "workspaces_claim": "workspaces",
        "role_claim": "roles", "admin_values": ("turnlog-admins",),
    }
    settings.update(overrides)
    return OidcConfig(**settings)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def verifier_for(provider: Provider, *, clock: Clock | None = None, **overrides: object) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(config_for(provider, **overrides), transport=provider.transport(), clock=clock or Clock())
    try:
        yield verifier
    finally:
        await verifier.close()


async def refusal(verifier: OidcVerifier, token: str, **options: int) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.principal(token, **options)
    return caught.value.detail


def bearer_request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"authorization", f"Bearer {token}".encode())]})


# --- valid tokens ---------------------------------------------------------------------------------------------------


async def test_an_rs256_token_of_the_provider_is_its_users_principal(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        principal = await verifier.principal(rsa_key.sign(provider.claims(workspaces=["ws_1", "ws_2", "ws_1"])))
    assert (principal.user_id, principal.org_id, principal.workspace_ids, principal.role) == (
        "user_1", "org_1", ("ws_1", "ws_2"), "member",
    )
    assert provider.requests == {"/.well-known/openid-configuration": 1, "/jwks.json": 1}  # the JWKS URL is discovered


async def test_an_es256_token_verifies_and_the_keys_are_fetched_once(provider, ec_key, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        for _ in range(3):
            assert (await verifier.principal(ec_key.sign(provider.claims()))).user_id == "user_1"
        await verifier.principal(rsa_key.sign(provider.claims()))
    assert provider.jwks_fetches == 1


async def test_an_audience_list_naming_this_server_is_accepted(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        principal = await verifier.principal(rsa_key.sign(provider.claims(aud=["account", AUDIENCE])))
    assert principal.user_id == "user_1"


async def test_a_token_without_kid_uses_the_only_key_of_its_algorithm(rsa_key) -> None:
    provider = Provider(keys=[rsa_key])
    token = jwt.encode(provider.claims(), rsa_key.private_key, algorithm="RS256")  # no kid header
    async with verifier_for(provider) as verifier:
        assert (await verifier.principal(token)).user_id == "user_1"


async def test_a_configured_jwks_url_is_fetched_without_discovery(provider, rsa_key) -> None:
    async with verifier_for(provider, jwks_url=provider.jwks_url) as verifier:
        await verifier.principal(rsa_key.sign(provider.claims()))
    assert provider.requests == {"/jwks.json": 1}


# --- refusals -------------------------------------------------------------------------------------------------------


async def test_a_token_for_another_audience_is_refused(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        detail = await refusal(verifier, rsa_key.sign(provider.claims(aud="another-app")))
        assert detail == f"bearer token is not meant for this server: its audience (aud) does not name '{AUDIENCE}'"
        assert await refusal(verifier, rsa_key.sign(provider.claims(aud=None))) == "bearer token lacks the 'aud' claim"


async def test_a_token_of_another_issuer_is_refused_by_the_verifier(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        detail = await refusal(verifier, rsa_key.sign(provider.claims(iss="https://evil.example.com")))
    assert detail == f"bearer token was not issued by '{provider.issuer}'"


async def test_expired_not_yet_valid_and_too_long_lived_tokens_are_refused(provider, rsa_key) -> None:
    now = int(time.time())
    async with verifier_for(provider) as verifier:
        assert await refusal(verifier, rsa_key.sign(provider.claims(iat=now - 600, exp=now - 120))) == "bearer token has expired"
        not_yet = rsa_key.sign(provider.claims(nbf=now + 600))
        assert await refusal(verifier, not_yet) == "bearer token is not valid yet (its nbf or iat is in the future)"
        assert await refusal(verifier, rsa_key.sign(provider.claims(iat=None))) == "bearer token lacks the 'iat' claim"
        assert await refusal(verifier, rsa_key.sign(provider.claims(exp=None))) == "bearer token lacks the 'exp' claim"
        # --max-token-ttl-s holds for the provider's tokens as for turnlog's own.
        with pytest.raises(Unauthenticated) as caught:
            await verifier.principal(rsa_key.sign(provider.claims(iat=now, exp=now + 7200)), max_ttl_s=3600)
        assert "valid for 7200 s (from its iat to its exp), longer than the 3600 s" in caught.value.detail
        assert caught.value.extra["maxTokenTtlS"] == 3600


async def test_a_signature_by_another_key_under_a_published_kid_is_refused(provider, rsa_key) -> None:
    impostor = SigningKey.rsa(rsa_key.kid)  # same kid, another private key
    async with verifier_for(provider) as verifier:
        assert await refusal(verifier, impostor.sign(provider.claims())) == "bearer token signature is invalid"


@pytest.mark.parametrize("algorithm", ["none", "HS256", "HS512"])
async def test_alg_none_and_shared_secret_algorithms_are_refused_without_fetching_keys(provider, rsa_key, algorithm) -> None:
    claims = provider.claims()
    if algorithm == "none":
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": rsa_key.kid})
    else:  # the classic confusion: the provider's public key (or any text) as an HMAC secret
        token = jwt.encode(claims, b"public-key-bytes-as-hmac-secret-" * 2, algorithm=algorithm, headers={"kid": rsa_key.kid})
    async with verifier_for(provider) as verifier:
        detail = await refusal(verifier, token)
    assert detail.startswith(f"a bearer token of {provider.issuer} must be signed with one of its public keys (RS256")
    assert detail.endswith(f"not '{algorithm}'")
    assert provider.jwks_fetches == 0


async def test_a_token_whose_alg_is_not_its_keys_is_refused(provider, rsa_key) -> None:
    es_key_under_rsa_kid = SigningKey.ec(rsa_key.kid)
    async with verifier_for(provider) as verifier:
        detail = await refusal(verifier, es_key_under_rsa_kid.sign(provider.claims()))
    assert detail == f"bearer token is signed with ES256, but key 'rsa-1' of {provider.issuer} is for RS256"


async def test_a_turnlog_signed_token_naming_the_provider_is_never_tried_with_turnlogs_secret(provider) -> None:
    """Dispatch is by iss: a token that says it is the provider's is checked against the provider's keys only."""
    claims = provider.claims()
    forged = jwt.encode(claims, TURNLOG_SECRET, algorithm="HS256")
    async with verifier_for(provider) as verifier:
        with pytest.raises(Unauthenticated) as caught:
            principal_from_bearer(bearer_request(forged), TURNLOG_SECRET, oidc=verifier)
        assert "must be signed with one of its public keys" in caught.value.detail
        # turnlog's own tokens still go to turnlog's verifier, and fetch nothing from the provider.
        own = issue_token(TURNLOG_SECRET, user_id="user_9", org_id="org_9", workspace_ids=["ws_9"])
        assert principal_from_bearer(bearer_request(own), TURNLOG_SECRET, oidc=verifier).user_id == "user_9"
    assert provider.requests == {}


async def test_a_provider_token_without_sso_configured_goes_to_turnlogs_verifier(provider, rsa_key) -> None:
    with pytest.raises(Unauthenticated) as caught:
        principal_from_bearer(bearer_request(rsa_key.sign(provider.claims())), TURNLOG_SECRET, oidc=None)
    assert caught.value.detail == "bearer token must be signed with HS256"


# --- claims mapping -------------------------------------------------------------------------------------------------


async def test_the_role_claim_makes_admins_by_a_configured_value(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        for roles, role in (
            (["staff", "turnlog-admins"], "admin"), ("turnlog-admins", "admin"), (["staff"], "member"), (None, "member"),
            ([1, {"x": 1}], "member"),
        ):
            principal = await verifier.principal(rsa_key.sign(provider.claims(roles=roles)))
            assert principal.role == role, roles
        assert principal.is_admin is False
        detail = await refusal(verifier, rsa_key.sign(provider.claims(roles={"admin": True})))
        assert detail == "token claim 'roles' must be a string or a list of strings"


async def test_nested_claims_a_fixed_org_and_default_workspaces(provider, rsa_key) -> None:
    mapping = {
        "user_claim": "preferred_username", "org_claim": None, "org": "acme", "workspaces_claim": "turnlog.workspaces",
        "default_workspaces": ("general",), "role_claim": "realm_access.roles",
    }
    async with verifier_for(provider, **mapping) as verifier:
        claims = provider.claims(
            preferred_username="jane_doe", org="ignored", realm_access={"roles": ["turnlog-admins"]},
            turnlog={"workspaces": ["ws_a", "ws_b"]},
        )
        principal = await verifier.principal(rsa_key.sign(claims))
        assert (principal.user_id, principal.org_id, principal.workspace_ids, principal.role) == (
            "jane_doe", "acme", ("ws_a", "ws_b"), "admin",
        )
        # Without the workspaces claim, the default workspaces; with an empty one, none.
        principal = await verifier.principal(rsa_key.sign(provider.claims(preferred_username="joe")))
        assert (principal.user_id, principal.workspace_ids, principal.role) == ("joe", ("general",), "member")
        empty = await verifier.principal(rsa_key.sign(provider.claims(preferred_username="joe", turnlog={"workspaces": []})))
        assert empty.workspace_ids == ()


async def test_a_claim_value_that_is_no_valid_id_is_a_401_naming_the_claim(provider, rsa_key) -> None:
    async with verifier_for(provider) as verifier:
        detail = await refusal(verifier, rsa_key.sign(provider.claims(sub="auth0|5f7c8ec7")))
        assert detail == "token claim 'sub' ('auth0|5f7c8ec7') must be 1-64 characters of letters, digits, '_' or '-'"
        detail = await refusal(verifier, rsa_key.sign(provider.claims(org="x" * 65)))
        assert detail.startswith("token claim 'org' ('xxxx") and detail.endswith("must be 1-64 characters of letters, digits, '_' or '-'")
        assert await refusal(verifier, rsa_key.sign(provider.claims(org=7))) == "token claim 'org' (7) must be a string, got int"
        detail = await refusal(verifier, rsa_key.sign(provider.claims(workspaces=["ws_1", "/team/ws"])))
        assert detail == "token claim 'workspaces' has an id, '/team/ws', that must be 1-64 characters of letters, digits, '_' or '-'"
        detail = await refusal(verifier, rsa_key.sign(provider.claims(workspaces="ws_1")))
        assert detail == "token claim 'workspaces' must be a list of workspace ids"
        assert await refusal(verifier, rsa_key.sign(provider.claims(org=None))) == "bearer token lacks the 'org' claim"
        detail = await refusal(verifier, rsa_key.sign(provider.claims(workspaces=None)))
        assert detail == "bearer token lacks the 'workspaces' claim (the user's workspaces)"


# --- key rotation, its rate limit, and an unreachable provider ------------------------------------------------------


async def test_an_unknown_kid_is_refused_until_the_rotated_jwks_serves_it(provider, rsa_key) -> None:
    clock = Clock()
    rotated = SigningKey.rsa("rsa-2")
    async with verifier_for(provider, clock=clock) as verifier:
        await verifier.principal(rsa_key.sign(provider.claims()))
        clock.now += 31  # past the cooldown: the unknown kid makes the verifier look again
        detail = await refusal(verifier, rotated.sign(provider.claims()))
        assert detail.startswith(f"bearer token is signed with key 'rsa-2', which {provider.issuer} does not publish")
        assert provider.jwks_fetches == 2

        provider.keys = [rotated]  # the provider rotates: the new key only
        assert await refusal(verifier, rotated.sign(provider.claims())) == detail  # cooling down: not fetched again
        assert provider.jwks_fetches == 2
        clock.now += 30
        assert (await verifier.principal(rotated.sign(provider.claims()))).user_id == "user_1"
        assert provider.jwks_fetches == 3
        # The retired key is gone with the set that dropped it.
        retired = await refusal(verifier, rsa_key.sign(provider.claims()))
        assert retired.startswith("bearer token is signed with key 'rsa-1'")


async def test_an_old_key_set_is_refreshed_behind_the_requests_it_still_verifies(provider, rsa_key, ec_key) -> None:
    clock = Clock()
    async with verifier_for(provider, clock=clock) as verifier:
        await verifier.principal(ec_key.sign(provider.claims()))
        provider.keys = [rsa_key]  # the provider retires its EC key
        clock.now += 301  # past jwks_max_age_s
        # Held, so verified at once; the refresh runs in the background.
        assert (await verifier.principal(ec_key.sign(provider.claims()))).user_id == "user_1"
        for _ in range(100):
            if verifier.keys.key_ids == ("rsa-1",):
                break
            await asyncio.sleep(0)  # a turn of the loop for the background fetch, no wall-clock wait
        assert verifier.keys.key_ids == ("rsa-1",) and provider.jwks_fetches == 2
        assert (await refusal(verifier, ec_key.sign(provider.claims()))).startswith("bearer token is signed with key 'ec-1'")


async def test_a_flood_of_unknown_kids_fetches_the_jwks_once_per_cooldown(provider, rsa_key) -> None:
    clock = Clock()
    stranger = SigningKey.ec()
    async with verifier_for(provider, clock=clock) as verifier:
        tokens = [stranger.sign(provider.claims(), kid=f"made-up-{number}") for number in range(200)]
        results = await asyncio.gather(*(verifier.principal(token) for token in tokens), return_exceptions=True)
        assert all(isinstance(result, Unauthenticated) for result in results)
        assert provider.jwks_fetches == 1  # the first fetch, shared by every request that waited for it
        clock.now += 10
        for token in tokens[:50]:
            with pytest.raises(Unauthenticated):
                await verifier.principal(token)
        assert provider.jwks_fetches == 1
        clock.now += 21
        with pytest.raises(Unauthenticated):
            await verifier.principal(tokens[0])
        assert provider.jwks_fetches == 2
        # Known keys verified throughout, without a fetch of their own.
        assert (await verifier.principal(rsa_key.sign(provider.claims()))).user_id == "user_1"
        assert provider.jwks_fetches == 2


async def test_an_unreachable_provider_is_a_503_with_retry_after_unless_a_held_key_fits(provider, rsa_key, ec_key) -> None:
    clock = Clock()
    provider.keys = [rsa_key]
    async with verifier_for(provider, clock=clock) as verifier:
        await verifier.principal(rsa_key.sign(provider.claims()))
        provider.reachable = False
        provider.keys = [rsa_key, ec_key]
        clock.now += 31
        with pytest.raises(Unavailable) as caught:
            await verifier.principal(ec_key.sign(provider.claims()))
        assert caught.value.retry_after_s == 30
        assert "the signing keys of the identity provider" in caught.value.detail
        assert f"{provider.jwks_url} could not be reached (ConnectError: connection refused)" in caught.value.detail
        # A key held from before still verifies the tokens it signed.
        assert (await verifier.principal(rsa_key.sign(provider.claims()))).user_id == "user_1"
        clock.now += 12
        with pytest.raises(Unavailable) as caught:
            await verifier.principal(ec_key.sign(provider.claims()))
        assert caught.value.retry_after_s == 18  # no new attempt while cooling down
        provider.reachable = True
        clock.now += 18
        assert (await verifier.principal(ec_key.sign(provider.claims()))).user_id == "user_1"


async def test_a_provider_never_reached_is_a_503(provider, rsa_key) -> None:
    provider.reachable = False
    async with verifier_for(provider) as verifier:
        with pytest.raises(Unavailable) as caught:
            await verifier.principal(rsa_key.sign(provider.claims()))
    assert "/.well-known/openid-configuration could not be reached" in caught.value.detail
    assert caught.value.retry_after_s == 30


async def test_a_provider_that_never_answers_is_given_up_on_after_the_fetch_timeout(provider, rsa_key) -> None:
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    verifier = OidcVerifier(config_for(provider, fetch_timeout_s=0.05), transport=httpx.MockTransport(hang))
    try:
        with pytest.raises(Unavailable) as caught:
            await asyncio.wait_for(verifier.principal(rsa_key.sign(provider.claims())), timeout=5)
    finally:
        await verifier.close()
    assert "did not answer within 0.05 s" in caught.value.detail


async def test_a_discovery_document_naming_another_issuer_is_not_trusted(provider, rsa_key) -> None:
    provider.discovery_issuer = "https://evil.example.com"
    async with verifier_for(provider) as verifier:
        with pytest.raises(Unavailable) as caught:
            await verifier.principal(rsa_key.sign(provider.claims()))
    assert "names the issuer 'https://evil.example.com', not" in caught.value.detail
    assert provider.jwks_fetches == 0


async def test_symmetric_and_encryption_keys_in_the_jwks_are_never_used(rsa_key) -> None:
    secret = b"k" * 32
    provider = Provider(keys=[rsa_key])
    answer = provider.answer

    def with_extras(path: str) -> tuple[int, bytes]:
        status, body = answer(path)
        if path == "/jwks.json":
            import json

            document = json.loads(body)
            document["keys"] += [
                {"kty": "oct", "kid": "shared", "k": jwt.utils.base64url_encode(secret).decode()},
                {**SigningKey.rsa("enc-1").jwk(), "use": "enc"},
            ]
            body = json.dumps(document).encode()
        return status, body

    provider.answer = with_extras  # type: ignore[method-assign]
    async with verifier_for(provider) as verifier:
        await verifier.principal(rsa_key.sign(provider.claims()))
        assert verifier.keys.key_ids == ("rsa-1",)
        hs = jwt.encode(provider.claims(), secret, algorithm="HS256", headers={"kid": "shared"})
        assert "must be signed with one of its public keys" in await refusal(verifier, hs)


# --- configuration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"issuer": "http://id.example.com"}, "issuer (--oidc-issuer) must be an https:// URL (http:// only for localhost)"),
        ({"audience": ""}, "audience (--oidc-audience) is required"),
        ({"jwks_url": "file:///etc/passwd"}, "jwks_url (--oidc-jwks-url) must be an https:// URL"),
        ({"org": "acme"}, "either org_claim (--oidc-org-claim), the claim naming it, or org (--oidc-org)"),
        ({"org_claim": None}, "either org_claim (--oidc-org-claim)"),
        ({"org_claim": None, "org": "a b"}, "org (--oidc-org) 'a b' must be 1-64 characters"),
        ({"workspaces_claim": None}, "workspaces_claim (--oidc-workspaces-claim), a claim listing them"),
        ({"default_workspaces": ("ok", "not ok")}, "default_workspaces (--oidc-default-workspace) 'not ok' must be"),
        ({"admin_values": ()}, "role_claim (--oidc-role-claim) and admin_values (--oidc-admin-value) go together"),
        ({"user_claim": ""}, "user_claim (--oidc-user-claim) is empty"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_naming_the_setting(provider, overrides, problem) -> None:
    with pytest.raises(ValueError) as caught:
        config_for(provider, **overrides)
    assert problem in str(caught.value)


def test_a_provider_on_this_machine_may_use_http(provider) -> None:
    assert config_for(provider, issuer="http://127.0.0.1:8080", jwks_url="http://localhost:8080/keys").issuer == "http://127.0.0.1:8080"
