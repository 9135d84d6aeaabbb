"""Session endpoints: sign a browser in (with a bearer token or a one-time link), say who it is, sign it out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.access import authenticate, context_of
from api.auth import Principal
from api.session_cookies import Session, clear_session_cookies, new_session, session_principal, set_session_cookies
from api.sign_in_codes import SignInCodes
from kernel.errors import Unauthenticated


def principal_json(principal: Principal) -> dict:
    return {
        "userId": principal.user_id,
        "orgId": principal.org_id,
        "workspaceIds": list(principal.workspace_ids),
        "role": principal.role,
    }


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _new_session(request: Request, principal: Principal) -> Session:
    context = context_of(request)
    return new_session(context.secret, principal, max_token_ttl_s=context.limits.max_token_ttl_s)


async def create_session(request: Request) -> JSONResponse:
    """`POST /v1/sessions` with a bearer token: a browser session for its principal, set in cookies (201)."""
    if "authorization" not in request.headers:
        raise Unauthenticated(detail="sign in with `Authorization: Bearer <token>` (a token from `turnlog token`)")
    principal = authenticate(request)
    session = _new_session(request, principal)
    response = JSONResponse(
        {**principal_json(principal), "expiresInS": session.max_age_s}, status_code=201, headers={"Location": "/"}
    )
    set_session_cookies(response, session, secure=_secure(request))
    return response


async def current_session(request: Request) -> JSONResponse:
    """`GET /v1/sessions/current`: who the caller is, and whether by its session cookie or a bearer token."""
    principal = authenticate(request)
    via = "bearer" if "authorization" in request.headers else "cookie"
    return JSONResponse({**principal_json(principal), "via": via})


async def delete_session(request: Request) -> Response:
    """`DELETE /v1/sessions/current`: sign out (204). A valid session must send its CSRF header; an expired one is cleared."""
    try:
        context = context_of(request)
        session_principal(request, context.secret, max_token_ttl_s=context.limits.max_token_ttl_s)
    except Unauthenticated:
        pass
    response = Response(status_code=204)
    clear_session_cookies(response)
    return response


_SIGN_IN_FAILED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in link not valid · turnlog</title></head>
<body><main><h1>This sign-in link is not valid</h1>
<p>A sign-in link works once, for a short time. Start <code>turnlog serve</code> again for a new one,
or <a href="/">sign in with a token</a> from <code>turnlog token</code>.</p></main></body></html>
"""


async def sign_in_with_code(request: Request) -> Response:
    """`GET /signin?code=...`: the one-time link `turnlog serve` prints; sets the session cookies, then goes to `/`."""
    codes: SignInCodes | None = getattr(request.app.state, "sign_in_codes", None)
    code = request.query_params.get("code", "")
    principal = codes.redeem(code) if codes is not None and code else None
    if principal is None:
        return HTMLResponse(_SIGN_IN_FAILED_PAGE, status_code=400, headers={"Cache-Control": "no-store"})
    response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
    set_session_cookies(response, _new_session(request, principal), secure=_secure(request))
    return response
