"""Browser sessions in cookies: a signed token in an HttpOnly cookie, and the CSRF check on the writes it signs.

A browser cannot put an `Authorization` header on an `EventSource`, so the web page signs in once and is then
known by its `turnlog_session` cookie (HttpOnly, SameSite=Lax): the same HS256 token as a bearer token, minted
for the session. A request with an `Authorization` header is authenticated by that header alone; the cookie
counts only without one.

Cookies are sent by the browser on its own, so a write authenticated by the cookie must also prove it comes from
the page (signed double submit): it sends `X-Turnlog-CSRF` with the value of the `turnlog_csrf` cookie, which
only a page of this origin can read, and which is an HMAC of the session token under the server's secret, so a
cookie planted by anyone else does not match.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from api.auth import DEFAULT_MAX_TOKEN_TTL_S, Principal, issue_token, verify_token
from kernel.errors import Forbidden, Unauthenticated

SESSION_COOKIE = "turnlog_session"
CSRF_COOKIE = "turnlog_csrf"
CSRF_HEADER = "X-Turnlog-CSRF"
SESSION_TTL_S = 8 * 3600
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CSRF_CONTEXT = b"turnlog csrf v1\0"


@dataclass(frozen=True, kw_only=True)
class Session:
    """A browser session: its token (the HttpOnly cookie) and its CSRF value (the readable one)."""

    token: str
    csrf: str
    max_age_s: int


def csrf_token_for(secret: bytes, session_token: str) -> str:
    """The CSRF value that goes with a session: it cannot be made without the secret, nor reused for another session."""
    return hmac.new(secret, _CSRF_CONTEXT + session_token.encode("utf-8"), hashlib.sha256).hexdigest()


def new_session(
    secret: bytes, principal: Principal, *, ttl_s: int = SESSION_TTL_S, max_token_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S
) -> Session:
    """A session of `ttl_s`, shortened to the longest token lifetime the server accepts (`--max-token-ttl-s`)."""
    ttl_s = min(ttl_s, max_token_ttl_s)
    token = issue_token(
        secret, user_id=principal.user_id, org_id=principal.org_id, workspace_ids=principal.workspace_ids,
        ttl_s=ttl_s, role=principal.role, max_ttl_s=max_token_ttl_s,
    )
    return Session(token=token, csrf=csrf_token_for(secret, token), max_age_s=ttl_s)


def session_principal(
    request: HTTPConnection, secret: bytes, *, max_token_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S
) -> Principal | None:
    """The principal of the request's session cookie; None when it has an `Authorization` header or no cookie.

    An unsafe method (POST, PUT, PATCH, DELETE) authenticated this way must carry the CSRF header (a 403 otherwise).
    """
    if "authorization" in request.headers:
        return None
    session_token = request.cookies.get(SESSION_COOKIE)
    if not session_token:
        return None
    try:
        principal = verify_token(secret, session_token, max_ttl_s=max_token_ttl_s)
    except Unauthenticated as error:
        detail = error.detail.replace("bearer token", "session")
        raise Unauthenticated(detail=f"your browser session is no longer valid ({detail}): sign in again") from None
    method = request.scope.get("method", "GET")
    if method in _UNSAFE_METHODS:
        _check_csrf(request, secret, session_token, method=method)
    return principal


def _check_csrf(request: HTTPConnection, secret: bytes, session_token: str, *, method: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        raise Forbidden(
            detail=f"a {method} signed in by the session cookie must send the {CSRF_HEADER} header with the value"
            f" of the {CSRF_COOKIE} cookie (CSRF protection); programs send a bearer token instead"
        )
    expected = csrf_token_for(secret, session_token)
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("ascii")):
        raise Forbidden(detail=f"the {CSRF_HEADER} header does not match this session's {CSRF_COOKIE} cookie: reload the page")


def set_session_cookies(response: Response, session: Session, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.token, max_age=session.max_age_s, path="/", httponly=True, samesite="lax", secure=secure
    )
    # Readable by the page (not HttpOnly): it echoes this value in the CSRF header.
    response.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=session.max_age_s, path="/", httponly=False, samesite="lax", secure=secure
    )


def clear_session_cookies(response: Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="lax")
