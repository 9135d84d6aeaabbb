"""API keys for programs: their format, the hash kept of them, and the principal a presented key names.

A key reads `tlk_<key id>_<secret>`: `tlk_`, 16 hex characters naming the key (shown in listings, used to revoke
it), and 52 base32 characters of secret (256 random bits). It is accepted wherever a bearer token is: a bearer
starting with `tlk_` is looked up in the instance's key view (projections/api_keys.py); anything else is a JWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import HTTPConnection

from api.auth import Principal
from api.presenters import iso
from kernel.errors import Unauthenticated, Unavailable
from projections.api_keys import ApiKeyView

KEY_PREFIX = "tlk_"
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
_KEY = re.compile(r"tlk_([0-9a-f]{16})_([a-z2-7]{52})")
_SECRET_BYTES = 32

__all__ = [
    "KEY_PREFIX", "ApiKeyFence", "MintedKey", "api_key_of", "is_api_key", "mint_api_key", "parse_api_key",
    "principal_from_api_key", "secret_sha256",
]


@dataclass(frozen=True, kw_only=True)
class MintedKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        """The key as its holder sends it; shown once, never stored."""
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"

    @property
    def secret_sha256(self) -> str:
        return secret_sha256(self.secret)


def mint_api_key() -> MintedKey:
    secret = base64.b32encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii").rstrip("=").lower()
    return MintedKey(key_id=secrets.token_hex(8), secret=secret)


def secret_sha256(secret: str) -> str:
    """The hex SHA-256 of a key's secret: what the log keeps.

    A fast hash is enough here, unlike for passwords: the secret is 256 bits from the OS's CSPRNG, so no guessing
    or precomputed table gets anywhere near it however fast each try is, while a deliberately slow hash (bcrypt,
    scrypt, argon2) would cost its CPU on every request a program makes. What the hash guards against is a copy of
    the log (a backup, a Kafka mirror) being usable to call the API.
    """
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def api_key_of(request: HTTPConnection) -> str | None:
    """The request's bearer token when it is an API key (`Authorization: Bearer tlk_...`), else None."""
    scheme, _, token = (request.headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and is_api_key(token) else None


def parse_api_key(token: str) -> tuple[str, str]:
    """`(key id, secret)`, or Unauthenticated when the token is not shaped like a key (pure)."""
    match = _KEY.fullmatch(token)
    if match is None:
        raise Unauthenticated(detail=f"API key is malformed: expected {KEY_PREFIX}<16 hex characters>_<52 characters>")
    return match.group(1), match.group(2)


def principal_from_api_key(view: ApiKeyView | None, token: str, *, now: datetime) -> Principal:
    """Who a presented key acts as; Unauthenticated if it is unknown, wrong, revoked or expired."""
    key_id, secret = parse_api_key(token)
    if view is None:
        raise Unauthenticated(detail="this server does not accept API keys")
    view.check_fresh()  # 503 rather than trust a view that may have missed a revocation
    key = view.get(key_id)
    # compare_digest: the time taken must not tell how much of a guessed secret's hash matched.
    if key is None or not hmac.compare_digest(key.secret_sha256, secret_sha256(secret)):
        raise Unauthenticated(detail="API key is not valid: no key has this id and secret")
    status = key.status(now)
    if status == "revoked":
        raise Unauthenticated(detail=f"API key {key_id} was revoked at {iso(key.revoked_at)}")
    if status == "expired":
        raise Unauthenticated(detail=f"API key {key_id} expired at {iso(key.expires_at)}")
    return Principal(user_id=key.user_id, org_id=key.org_id, workspace_ids=key.workspace_ids, role=key.role)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ApiKeyFence:
    """ASGI middleware: a request with a key this instance has not seen waits until its view holds the log's end.

    So a key created through another instance a moment ago works at its first use here, while `authenticate`
    stays a plain lookup. Keys already known (and every other request) pass straight through.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key_id = _unknown_key_id(scope)
            if key_id is not None:
                await _catch_up(scope)
        await self.app(scope, receive, send)


def _unknown_key_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            match = _KEY.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
            if match is None:
                return None
            view = _view_of(scope)
            return match.group(1) if view is not None and view.get(match.group(1)) is None else None
    return None


def _view_of(scope: Scope) -> ApiKeyView | None:
    app = scope.get("app")
    context = getattr(getattr(app, "state", None), "context", None)
    return getattr(context, "api_keys", None)


async def _catch_up(scope: Scope) -> None:
    view = _view_of(scope)
    if view is None:
        return
    try:
        await view.catch_up(timeout_s=2.0)
    except Unavailable:
        pass  # authenticate then answers from the view as it is (a 401, or its own 503 when it is stale)
