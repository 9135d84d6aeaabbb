"""Session cookies: the cookie counts only without an Authorization header, and its writes need the CSRF value."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from api.auth import Principal, issue_token
from api.session_cookies import CSRF_HEADER, SESSION_COOKIE, csrf_token_for, new_session, session_principal
from kernel.errors import Forbidden, Unauthenticated

SECRET = b"s" * 32
ALICE = Principal(user_id="alice", org_id="acme", workspace_ids=("ws_1",), role="admin")


def request(method: str = "GET", *, cookie: str | None = None, headers: dict[str, str] | None = None) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    if cookie is not None:
        raw.append((b"cookie", f"{SESSION_COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": method, "path": "/v1/x", "headers": raw, "query_string": b""})


def test_a_session_is_a_token_for_its_principal_with_a_csrf_value_bound_to_it() -> None:
    session = new_session(SECRET, ALICE, ttl_s=60)
    assert session_principal(request(cookie=session.token), SECRET) == ALICE
    assert session.csrf == csrf_token_for(SECRET, session.token) != csrf_token_for(b"t" * 32, session.token)
    assert session.csrf != new_session(SECRET, ALICE, ttl_s=61).csrf  # another session, another value


def test_without_a_cookie_or_with_an_authorization_header_the_cookie_does_not_count() -> None:
    token = new_session(SECRET, ALICE).token
    assert session_principal(request(), SECRET) is None
    assert session_principal(request(cookie=token, headers={"Authorization": "Bearer other"}), SECRET) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_an_unsafe_method_needs_the_matching_csrf_header(method: str) -> None:
    session = new_session(SECRET, ALICE)
    with pytest.raises(Forbidden, match=f"must send the {CSRF_HEADER} header"):
        session_principal(request(method, cookie=session.token), SECRET)
    with pytest.raises(Forbidden, match="does not match"):
        session_principal(request(method, cookie=session.token, headers={CSRF_HEADER: "x" * 64}), SECRET)
    assert session_principal(request(method, cookie=session.token, headers={CSRF_HEADER: session.csrf}), SECRET) == ALICE


def test_an_expired_or_forged_cookie_is_unauthenticated_and_says_so() -> None:
    expired = issue_token(SECRET, user_id="alice", org_id="acme", workspace_ids=["ws_1"], ttl_s=1, issued_at=1)
    with pytest.raises(Unauthenticated, match="browser session is no longer valid .session has expired"):
        session_principal(request(cookie=expired), SECRET)
    with pytest.raises(Unauthenticated, match="sign in again"):
        session_principal(request(cookie=new_session(b"t" * 32, ALICE).token), SECRET)
