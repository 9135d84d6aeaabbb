"""Bearer tokens: issuing, verifying every failure mode, reading the header, the secret file."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import jwt
import pytest
from starlette.requests import Request

from api.auth import (
    SECRET_FILE_NAME,
    Principal,
    bearer_token_from_header,
    issue_token,
    load_or_create_secret,
    principal_from_request,
    verify_token,
)
from kernel.errors import Unauthenticated

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32


def valid_claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "turnlog",
        "sub": "user_1",
        "org": "org_1",
        "workspaces": ["ws_1"],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return claims


def rejection(token: str, secret: bytes = SECRET) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verify_token(secret, token)
    return caught.value.detail


def test_issued_token_verifies_to_its_principal() -> None:
    token = issue_token(SECRET, user_id="user_1", org_id="org_1", workspace_ids=["ws_1", "ws_2"])

    principal = verify_token(SECRET, token)

    assert principal == Principal(user_id="user_1", org_id="org_1", workspace_ids=("ws_1", "ws_2"))


def test_token_carries_the_documented_claims() -> None:
    token = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"], ttl_s=120, issued_at=1000)

    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})

    assert claims == {"iss": "turnlog", "sub": "u", "org": "o", "workspaces": ["w"], "iat": 1000, "exp": 1120}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_an_admin_token_names_its_role_and_an_unknown_role_is_refused() -> None:
    admin = verify_token(SECRET, issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"], role="admin"))
    member = verify_token(SECRET, issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"]))

    assert admin.is_admin and admin.role == "admin" and not member.is_admin
    forged = jwt.encode(valid_claims(role="root"), SECRET, algorithm="HS256")
    assert rejection(forged) == "token claim 'role' must be one of member, admin"
    with pytest.raises(ValueError, match="role must be one of"):
        issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"], role="owner")


def test_principal_can_use_only_its_workspaces() -> None:
    principal = Principal(user_id="u", org_id="o", workspace_ids=("ws_1",))

    assert principal.can_use("ws_1")
    assert not principal.can_use("ws_2")


def test_expired_token_is_rejected() -> None:
    token = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=[], ttl_s=60, issued_at=int(time.time()) - 3600)

    assert rejection(token) == "bearer token has expired"


def test_token_signed_with_another_secret_is_rejected() -> None:
    token = issue_token(OTHER_SECRET, user_id="u", org_id="o", workspace_ids=[])

    assert rejection(token) == "bearer token signature is invalid"


def test_garbage_is_malformed() -> None:
    assert rejection("not-a-jwt") == "bearer token is malformed (not a JWT)"


def test_unsigned_alg_none_token_is_rejected() -> None:
    token = jwt.encode(valid_claims(), key=None, algorithm="none")

    assert rejection(token) == "bearer token must be signed with HS256"


@pytest.mark.parametrize("claim", ["sub", "org", "workspaces", "iat", "exp", "iss"])
def test_each_missing_claim_is_named(claim: str) -> None:
    claims = valid_claims()
    del claims[claim]

    assert rejection(jwt.encode(claims, SECRET, algorithm="HS256")) == f"bearer token lacks the '{claim}' claim"


def test_foreign_issuer_is_rejected() -> None:
    token = jwt.encode(valid_claims(iss="someone-else"), SECRET, algorithm="HS256")

    assert rejection(token) == "bearer token was not issued by 'turnlog'"


def test_token_from_the_future_is_rejected() -> None:
    now = int(time.time())
    token = jwt.encode(valid_claims(iat=now + 3600, exp=now + 7200), SECRET, algorithm="HS256")

    assert rejection(token) == "bearer token is not valid yet (its nbf or iat is in the future)"


@pytest.mark.parametrize(
    ("overrides", "expected_fragment"),
    [
        ({"org": ""}, "'org'"),
        ({"org": "org/../x"}, "'org'"),
        ({"org": "o" * 65}, "'org'"),
        ({"workspaces": "ws_1"}, "'workspaces' must be a list"),
        ({"workspaces": ["ok", 7]}, "'workspaces'"),
        ({"workspaces": ["has space"]}, "'workspaces'"),
    ],
)
def test_claims_with_unsafe_ids_are_rejected(overrides: dict[str, object], expected_fragment: str) -> None:
    token = jwt.encode(valid_claims(**overrides), SECRET, algorithm="HS256")

    assert expected_fragment in rejection(token)


THIRTY_DAYS_S = 30 * 24 * 3600


@pytest.mark.parametrize(
    "exp_after_iat",
    [THIRTY_DAYS_S + 1, 10**30 * 365 * 24 * 3600, 10**400, 1e30],
    ids=["a second over 30 days", "the year 10^30", "an int no float holds", "a float"],
)
def test_a_token_valid_for_longer_than_the_maximum_is_refused_naming_it(exp_after_iat: float) -> None:
    now = int(time.time())
    token = jwt.encode(valid_claims(iat=now, exp=now + exp_after_iat), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated) as caught:
        verify_token(SECRET, token)

    assert "longer than the 2592000 s (30 days) this server accepts" in caught.value.detail
    assert caught.value.extra == {"maxTokenTtlS": THIRTY_DAYS_S}


def test_a_token_valid_for_exactly_the_maximum_is_accepted() -> None:
    token = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"], ttl_s=THIRTY_DAYS_S)

    assert verify_token(SECRET, token).user_id == "u"


def test_the_maximum_is_the_verifiers_to_set() -> None:
    forty_days = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=[], ttl_s=40 * 86400, max_ttl_s=60 * 86400)
    two_hours = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=[], ttl_s=7200)

    assert verify_token(SECRET, forty_days, max_ttl_s=60 * 86400).user_id == "u"
    with pytest.raises(Unauthenticated, match="3600 s"):
        verify_token(SECRET, two_hours, max_ttl_s=3600)


def test_a_lifetime_stretched_by_an_early_iat_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(valid_claims(iat=-(10**40), exp=now + 60), SECRET, algorithm="HS256")

    assert "longer than the 2592000 s" in rejection(token)


@pytest.mark.parametrize(
    ("claim", "value"), [("exp", "in a minute"), ("iat", "now"), ("iat", True)], ids=["exp a string", "iat a string", "iat true"]
)
def test_iat_and_exp_must_be_numbers(claim: str, value: object) -> None:
    """PyJWT reads "123" and true as integers; a lifetime is only computed from numbers."""
    now = int(time.time())
    claims = valid_claims(iat=now, exp=now + 60)
    claims[claim] = {"in a minute": str(now + 60), "now": str(now)}.get(value, value)  # type: ignore[call-overload]
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    assert rejection(token) == f"token claim '{claim}' must be a number of seconds since 1970"


def test_issue_token_refuses_a_lifetime_over_the_maximum() -> None:
    with pytest.raises(ValueError, match=r"at most 2592000 s \(30 days, --max-token-ttl-s\)"):
        issue_token(SECRET, user_id="u", org_id="o", workspace_ids=[], ttl_s=THIRTY_DAYS_S + 1)


def test_oversized_token_is_rejected_before_decoding() -> None:
    assert "longer than" in rejection("a" * 10_000)


def test_issue_token_refuses_what_verify_would_reject() -> None:
    with pytest.raises(ValueError, match="user_id"):
        issue_token(SECRET, user_id="bad id", org_id="o", workspace_ids=[])
    with pytest.raises(ValueError, match="workspace id"):
        issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["bad/id"])
    with pytest.raises(ValueError, match="single string"):
        issue_token(SECRET, user_id="u", org_id="o", workspace_ids="ws_1")
    with pytest.raises(ValueError, match="ttl_s"):
        issue_token(SECRET, user_id="u", org_id="o", workspace_ids=[], ttl_s=0)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_token(b"short", user_id="u", org_id="o", workspace_ids=[])


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "Authorization header must use the Bearer scheme"),
        ("Bearer", "Authorization header has no bearer token"),
        ("Bearer    ", "Authorization header has no bearer token"),
    ],
)
def test_bad_authorization_headers_are_explained(header: str | None, detail: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_token_from_header(header)

    assert caught.value.detail == detail


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token_from_header("bearer abc.def.ghi") == "abc.def.ghi"


def request_with_headers(headers: dict[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


def test_principal_from_request_reads_the_authorization_header() -> None:
    token = issue_token(SECRET, user_id="u", org_id="o", workspace_ids=["w"])

    principal = principal_from_request(request_with_headers({"Authorization": f"Bearer {token}"}), SECRET)

    assert principal.user_id == "u" and principal.can_use("w")


def test_principal_from_request_without_header_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match="missing Authorization header"):
        principal_from_request(request_with_headers({}), SECRET)


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = load_or_create_secret(data_dir, environ={})
    second = load_or_create_secret(data_dir, environ={})

    assert first == second
    assert len(first) >= 32
    secret_file = data_dir / SECRET_FILE_NAME
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert [path.name for path in data_dir.iterdir()] == [SECRET_FILE_NAME]


def test_token_issued_with_the_file_secret_verifies_in_another_process_view(tmp_path: Path) -> None:
    token = issue_token(load_or_create_secret(tmp_path, environ={}), user_id="u", org_id="o", workspace_ids=[])

    assert verify_token(load_or_create_secret(tmp_path, environ={}), token).user_id == "u"


def test_environment_secret_wins_and_leaves_the_file_alone(tmp_path: Path) -> None:
    from_env = "e" * 40

    secret = load_or_create_secret(tmp_path, environ={"TURNLOG_SECRET": from_env})

    assert secret == from_env.encode()
    assert not (tmp_path / SECRET_FILE_NAME).exists()


def test_environment_secret_equal_to_file_text_signs_the_same_tokens(tmp_path: Path) -> None:
    from_file = load_or_create_secret(tmp_path, environ={})
    file_text = (tmp_path / SECRET_FILE_NAME).read_text()

    assert load_or_create_secret(tmp_path, environ={"TURNLOG_SECRET": file_text.strip()}) == from_file


def test_short_environment_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TURNLOG_SECRET"):
        load_or_create_secret(tmp_path, environ={"TURNLOG_SECRET": "short"})


def test_truncated_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE_NAME).write_text("tiny\n")

    with pytest.raises(ValueError, match="at least 32"):
        load_or_create_secret(tmp_path, environ={})


def test_concurrent_first_use_agrees_on_one_secret(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        results.append(load_or_create_secret(tmp_path, environ={}))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8 and len(set(results)) == 1
    assert [path.name for path in tmp_path.iterdir()] == [SECRET_FILE_NAME]
