"""Single sign-on end to end: a real `turnlog serve` accepting the tokens of a small OIDC issuer running in this test
(a threaded HTTP server publishing `/.well-known/openid-configuration` and `/jwks.json`), over real HTTP.

An issuer's user creates a conversation and streams a turn; its admin-role user reaches an admin endpoint and its
member does not; turnlog's own tokens keep working beside it; the issuer rotating its key is picked up while a flood
of made-up key ids costs it one fetch per cooldown; and while it is unreachable, a token no held key fits is a 503
with `Retry-After`, not a 401.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

import e2e_server as e2e
from api.auth import load_or_create_secret
from tests.conftest import load_test_module

oidc_provider = load_test_module("oidc_provider", beside=Path(__file__))
SigningKey, AUDIENCE = oidc_provider.SigningKey, oidc_provider.AUDIENCE
COOLDOWN_S = 1.0
ADMINS = "turnlog-admins"


class Issuer:
    """The local issuer and the key it signs with now (tests may rotate it)."""

    def __init__(self) -> None:
        self.local = oidc_provider.LocalIssuer()
        self.provider = self.local.provider
        self.key = SigningKey.rsa("k1")
        self.provider.keys = [self.key]

    def token(self, *, key: SigningKey | None = None, kid: str | None = None, **claims: object) -> str:
        return (key or self.key).sign(self.provider.claims(**claims), kid=kid)

    def user(self, **claims: object) -> tuple[dict[str, str], dict[str, object]]:
        """Headers bearing a token of a fresh user, and its claims."""
        values: dict[str, object] = {"sub": e2e.unique("sso"), "org": e2e.unique("org"), "workspaces": [e2e.unique("ws")]}
        values.update(claims)
        return {"Authorization": f"Bearer {self.token(**values)}"}, values


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    issuer.local.start()
    try:
        yield issuer
    finally:
        issuer.local.stop()


@pytest.fixture(scope="module")
def server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    server = e2e.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("oidc") / "data", answer_tokens=8,
        extra_args=[
            "--oidc-issuer", issuer.provider.issuer, "--oidc-audience", AUDIENCE, "--oidc-org-claim", "org",
            "--oidc-workspaces-claim", "workspaces", "--oidc-role-claim", "groups", "--oidc-admin-value", ADMINS,
            "--oidc-jwks-cooldown-s", str(COOLDOWN_S),
        ],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: e2e.TurnlogServer, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=headers or {}, timeout=30)


async def who(server: e2e.TurnlogServer, token: str) -> httpx.Response:
    async with client(server, {"Authorization": f"Bearer {token}"}) as http:
        return await http.get("/v1/sessions/current")


async def until_status(server: e2e.TurnlogServer, token: str, status: int, *, deadline_s: float = 15.0) -> httpx.Response:
    """`GET /v1/sessions/current` with `token`, asked again until it answers `status` (the issuer's cooldown passing)."""
    deadline = time.monotonic() + deadline_s
    response = await who(server, token)
    while response.status_code != status and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await who(server, token)
    return response


async def test_an_sso_user_creates_a_conversation_and_streams_a_turn(server, issuer) -> None:
    headers, claims = issuer.user()
    async with client(server, headers) as http:
        me = await http.get("/v1/sessions/current")
        assert me.status_code == 200, me.text
        assert me.json() == {
            "userId": claims["sub"], "orgId": claims["org"], "workspaceIds": claims["workspaces"], "role": "member",
            "via": "bearer",
        }
        workspace_id = claims["workspaces"][0]  # type: ignore[index]
        conversation_id = await e2e.create_conversation(http, workspace_id)
        accepted = await e2e.submit_turn(http, conversation_id, "hello from single sign on")
        events = await e2e.read_stream(http, accepted["runId"])
        assert events[-1].event == "assistant.completed"
        assert e2e.looks_like_scripted_answer_prefix(e2e.delta_text(events), "hello from single sign on")
        listed = await http.get("/v1/conversations", params={"workspaceId": workspace_id})
        assert [c["conversationId"] for c in listed.json()["conversations"]] == [conversation_id]
        # A workspace the token does not list is not the user's.
        e2e.assert_problem(await http.post("/v1/conversations", json={"workspaceId": e2e.unique("ws")}), 403)


async def test_the_admin_role_claim_opens_admin_endpoints_and_a_member_is_refused(server, issuer) -> None:
    org_id = e2e.unique("org")
    admin_headers, _ = issuer.user(org=org_id, groups=["staff", ADMINS])
    member_headers, _ = issuer.user(org=org_id, groups=["staff"])
    async with client(server, admin_headers) as as_admin, client(server, member_headers) as as_member:
        listing = await as_admin.get("/v1/admin/api-keys")
        assert listing.status_code == 200, listing.text
        assert (await as_admin.get("/v1/sessions/current")).json()["role"] == "admin"
        problem = e2e.assert_problem(await as_member.get("/v1/admin/api-keys"), 403)
        assert "administrators" in problem["detail"]


async def test_turnlogs_own_tokens_work_beside_and_bad_sso_tokens_are_401(server, issuer) -> None:
    own = server.new_user()
    async with own.client() as http:
        assert (await http.get("/v1/sessions/current")).json()["userId"] == own.user_id
    # Signed with the server's own secret but naming the issuer: checked against the issuer's keys alone.
    forged = jwt.encode(issuer.provider.claims(), load_or_create_secret(server.data_dir), algorithm="HS256")
    problem = e2e.assert_problem(await who(server, forged), 401)
    assert "must be signed with one of its public keys" in problem["detail"]
    problem = e2e.assert_problem(await who(server, issuer.token(aud="another-app")), 401)
    assert "audience" in problem["detail"]
    problem = e2e.assert_problem(await who(server, issuer.token(sub="auth0|123")), 401)
    assert problem["detail"].startswith("token claim 'sub' ('auth0|123')")


async def test_a_rotated_key_is_picked_up_and_unknown_kids_cost_one_fetch_per_cooldown(server, issuer) -> None:
    assert (await until_status(server, issuer.token(), 200)).status_code == 200
    stranger = SigningKey.ec()
    before, started = issuer.provider.jwks_fetches, time.monotonic()
    flood = [issuer.token(key=stranger, kid=f"made-up-{number}") for number in range(40)]
    async with client(server) as http:
        answers = await asyncio.gather(
            *(http.get("/v1/sessions/current", headers={"Authorization": f"Bearer {token}"}) for token in flood)
        )
    elapsed_s = time.monotonic() - started
    assert [answer.status_code for answer in answers] == [401] * len(flood)
    assert issuer.provider.jwks_fetches - before <= 1 + math.ceil(elapsed_s / COOLDOWN_S), (elapsed_s, issuer.provider.jwks_fetches)

    retired, rotated = issuer.key, SigningKey.ec("k2")
    issuer.provider.keys = [rotated]  # the issuer rotates to a new key and withdraws the old one
    issuer.key = rotated
    response = await until_status(server, issuer.token(), 200)
    assert response.status_code == 200, response.text
    problem = e2e.assert_problem(await who(server, issuer.token(key=retired)), 401)
    assert problem["detail"].startswith("bearer token is signed with key 'k1', which")


async def test_an_unreachable_issuer_is_a_503_with_retry_after_for_keys_not_held(server, issuer) -> None:
    assert (await until_status(server, issuer.token(), 200)).status_code == 200  # the current key is held
    newer = SigningKey.rsa("k3")
    issuer.provider.keys = [issuer.key, newer]
    issuer.provider.reachable = False
    try:
        response = await until_status(server, issuer.token(key=newer), 503)
        problem = e2e.assert_problem(response, 503)
        assert 1 <= int(response.headers["retry-after"]) <= math.ceil(COOLDOWN_S)
        assert "could not be fetched" in problem["detail"] and issuer.provider.issuer in problem["detail"]
        assert (await who(server, issuer.token())).status_code == 200  # a held key still verifies
    finally:
        issuer.provider.reachable = True
    assert (await until_status(server, issuer.token(key=newer), 200)).status_code == 200
