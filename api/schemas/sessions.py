"""Browser sessions: who a session (or a bearer token) is (api/sessions.py, docs/web.md)."""

from __future__ import annotations

from typing import Literal

from api.schemas.base import ResponseModel


class SessionPrincipal(ResponseModel):
    user_id: str
    org_id: str
    workspace_ids: list[str]
    role: Literal["member", "admin"]


class SessionCreated(SessionPrincipal):
    """`POST /v1/sessions` (201): the session is in the `turnlog_session` and `turnlog_csrf` cookies."""

    expires_in_s: int


class CurrentSession(SessionPrincipal):
    """`GET /v1/sessions/current`."""

    via: Literal["bearer", "cookie"]
