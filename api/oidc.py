"""Single sign-on: bearer tokens of an OIDC provider, verified with its published keys and mapped to turnlog principals.

Which verifier a bearer JWT goes to is decided by its (unverified) `iss`: the configured provider's tokens go to
`OidcVerifier`, every other JWT to turnlog's own (api/auth.py); no token is ever tried against both keys. A
provider's token must be signed with one of its public keys (RS*, PS*, ES*; never `none` or HS*), name this server
in `aud`, and carry `iss`, `exp` and `iat`; `nbf` is honoured, and `exp - iat` is held to `--max-token-ttl-s` as
turnlog's tokens are. Its claims are mapped to the user, the org, the workspaces and the role by `OidcConfig`, and
every id must pass the same rules as turnlog's ids (a claim that does not is a 401 naming it).

Keys are fetched asynchronously (api/jwks.py) by the `OidcKeyFetch` middleware before the request reaches its
endpoint, so `authenticate` stays synchronous: when the provider cannot be reached and no key held fits the token,
the answer is 503 with `Retry-After`, not 401.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import (
    CLOCK_SKEW_LEEWAY_S,
    DEFAULT_MAX_TOKEN_TTL_S,
    MAX_TOKEN_CHARS,
    MAX_WORKSPACES_PER_TOKEN,
    Principal,
    bearer_token_from_header,
    check_token_lifetime,
    decoding_refusals,
    invalid_id_reason,
    verify_token,
)
from api.jwks import SIGNING_ALGORITHMS, SigningKeys, provider_url_problem
from kernel.errors import Unauthenticated, Unavailable

__all__ = ["OidcConfig", "OidcKeyFetch", "OidcVerifier", "principal_from_bearer"]

logger = logging.getLogger(__name__)

_REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat")
_MISSING = object()


@dataclass(frozen=True, kw_only=True)
class OidcConfig:
    """The provider whose tokens are accepted, and how their claims map to a principal (docs/deploy.md, SSO).

    Each field is a key of the OIDC file and, for most, a `--oidc-*` option of `turnlog serve`. A claim name is a
    top-level claim, or a dotted path into nested objects (`realm_access.roles`) when no top-level claim has that name.
    """

    issuer: str  # the provider's `iss`, exactly as its tokens carry it
    audience: str  # this server's name at the provider: tokens must carry it in `aud`
    jwks_url: str | None = None  # None: `jwks_uri` of <issuer>/.well-known/openid-configuration
    user_claim: str = "sub"
    org_claim: str | None = None  # the claim naming the user's org ...
    org: str | None = None  # ... or one org for every user (a single-tenant deployment)
    workspaces_claim: str | None = None  # a claim listing the user's workspace ids ...
    default_workspaces: tuple[str, ...] = ()  # ... and the workspaces of a user whose token lacks it (or of every user)
    role_claim: str | None = None  # a claim (a string or a list of strings): the user is an org administrator ...
    admin_values: tuple[str, ...] = ()  # ... when it holds one of these; a member otherwise
    jwks_cooldown_s: float = 30.0  # the keys are fetched at most once per this long, whatever key ids tokens name
    jwks_max_age_s: float = 300.0  # keys held longer are refetched (behind the requests they still verify)
    fetch_timeout_s: float = 5.0  # discovery and key set together

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("OIDC: issuer (--oidc-issuer) is empty")
        if problem := provider_url_problem(self.issuer):
            raise ValueError(f"OIDC: issuer (--oidc-issuer) {problem}")
        if not self.audience:
            raise ValueError(f"OIDC: audience (--oidc-audience) is required: the `aud` {self.issuer}'s tokens carry for this server")
        if self.jwks_url is not None and (problem := provider_url_problem(self.jwks_url)):
            raise ValueError(f"OIDC: jwks_url (--oidc-jwks-url) {problem}")
        for name in ("user_claim", "org_claim", "workspaces_claim", "role_claim"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ValueError(f"OIDC: {name} (--oidc-{name.replace('_', '-')}) is empty")
        if (self.org_claim is None) == (self.org is None):
            raise ValueError(
                "OIDC: name the org of the provider's users: either org_claim (--oidc-org-claim), the claim naming it,"
                " or org (--oidc-org), one org for every user"
            )
        if self.org is not None and (reason := invalid_id_reason(self.org)):
            raise ValueError(f"OIDC: org (--oidc-org) {self.org!r} {reason}")
        for workspace_id in self.default_workspaces:
            if reason := invalid_id_reason(workspace_id):
                raise ValueError(f"OIDC: default_workspaces (--oidc-default-workspace) {workspace_id!r} {reason}")
        if self.workspaces_claim is None and not self.default_workspaces:
            raise ValueError(
                "OIDC: name the workspaces of the provider's users: workspaces_claim (--oidc-workspaces-claim), a claim"
                " listing them, or default_workspaces (--oidc-default-workspace), or both"
            )
        if (self.role_claim is None) != (not self.admin_values):
            raise ValueError(
                "OIDC: role_claim (--oidc-role-claim) and admin_values (--oidc-admin-value) go together: the claim, and"
                " the values in it that make a user an administrator"
            )
        for name in ("jwks_cooldown_s", "jwks_max_age_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"OIDC: {name} must be a number of seconds >= 0")
        if not self.fetch_timeout_s > 0:
            raise ValueError("OIDC: fetch_timeout_s must be a number of seconds > 0")


class OidcVerifier:
    """Verifies the provider's bearer tokens and maps their claims to a `Principal`; `prepare` first fetches keys."""

    def __init__(
        self, config: OidcConfig, *, transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._client = httpx.AsyncClient(transport=transport, timeout=config.fetch_timeout_s, follow_redirects=False)
        self.keys = SigningKeys(
            issuer=config.issuer, client=self._client, jwks_url=config.jwks_url, cooldown_s=config.jwks_cooldown_s,
            max_age_s=config.jwks_max_age_s, fetch_timeout_s=config.fetch_timeout_s, clock=clock,
        )
        logger.info(
            "accepting bearer tokens of the OIDC provider %s for audience %r, besides turnlog's own", config.issuer,
            config.audience,
        )

    async def close(self) -> None:
        await self.keys.close()
        await self._client.aclose()

    def issued(self, token: str) -> bool:
        """Whether `token` claims to come from the provider (its unverified `iss`): the dispatch, not a check."""
        peeked = _unverified(token)
        return peeked is not None and peeked[1].get("iss") == self.config.issuer

    async def prepare(self, token: str) -> None:
        """Fetch the provider's keys when the token names one not held; never raises (`verify` says what is wrong)."""
        peeked = _unverified(token)
        if peeked is None:
            return
        header, claims = peeked
        kid = header.get("kid")
        if claims.get("iss") != self.config.issuer or header.get("alg") not in SIGNING_ALGORITHMS:
            return
        if kid is None or isinstance(kid, str):
            await self.keys.ensure(kid)

    async def principal(self, token: str, *, max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S) -> Principal:
        await self.prepare(token)
        return self.verify(token, max_ttl_s=max_ttl_s)

    def verify(self, token: str, *, max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S) -> Principal:
        """Check the signature with the provider's key, `iss`, `aud`, `exp`, `nbf`, `iat` and the lifetime; map claims.

        Unauthenticated says which check failed; Unavailable (503) when no key held fits and the provider's keys
        could not be fetched.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(detail=f"bearer token is longer than {MAX_TOKEN_CHARS} characters")
        peeked = _unverified(token)
        if peeked is None:
            raise Unauthenticated(detail="bearer token is malformed (not a JWT)")
        header, unverified_claims = peeked
        if unverified_claims.get("iss") != self.config.issuer:  # before any key is looked for, or fetched
            raise Unauthenticated(detail=f"bearer token was not issued by {self.config.issuer!r}")
        algorithm = header.get("alg")
        if algorithm not in SIGNING_ALGORITHMS:
            raise Unauthenticated(
                detail=f"a bearer token of {self.config.issuer} must be signed with one of its public keys"
                f" ({', '.join(SIGNING_ALGORITHMS)}), not {algorithm!r}"
            )
        key = self._key_for(header, algorithm)
        with decoding_refusals(issuer=self.config.issuer, audience=self.config.audience):
            claims = jwt.decode(
                token,
                key.key,
                # The key's own algorithm only: a token cannot pick another one to be checked with.
                algorithms=[key.algorithm_name],
                issuer=self.config.issuer,
                audience=self.config.audience,
                leeway=CLOCK_SKEW_LEEWAY_S,
                options={"require": list(_REQUIRED_CLAIMS)},
            )
        check_token_lifetime(claims, max_ttl_s=max_ttl_s)
        return self._principal(claims)

    def _key_for(self, header: Mapping[str, Any], algorithm: str) -> jwt.PyJWK:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated(detail="bearer token header 'kid' must be a string")
        if kid is None:
            candidates = self.keys.keys_for(algorithm)
            if len(candidates) == 1:
                return candidates[0]
            if candidates:
                raise Unauthenticated(
                    detail=f"bearer token names no key (kid) and {self.config.issuer} has {len(candidates)} {algorithm} keys"
                )
        else:
            key = self.keys.key(kid)
            if key is not None:
                if key.algorithm_name != algorithm:
                    raise Unauthenticated(
                        detail=f"bearer token is signed with {algorithm}, but key {kid!r} of {self.config.issuer} is for"
                        f" {key.algorithm_name}"
                    )
                return key
        if self.keys.failure is not None or not self.keys.fetched:
            raise Unavailable(
                detail=f"the signing keys of the identity provider {self.config.issuer} could not be fetched"
                f" ({self.keys.failure or 'not fetched yet'}): retry shortly",
                retry_after_s=self.keys.retry_after_s(),
            )
        named = f"key {kid!r}" if kid is not None else f"an {algorithm} key"
        raise Unauthenticated(
            detail=f"bearer token is signed with {named}, which {self.config.issuer} does not publish"
            f" (its keys as fetched {self.keys.age_s() or 0:.0f} s ago: {', '.join(map(repr, self.keys.key_ids))})"
        )

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        config = self.config
        user_id = _id_claim(claims, config.user_claim)
        org_id = config.org if config.org is not None else _id_claim(claims, config.org_claim)  # type: ignore[arg-type]
        return Principal(
            user_id=user_id, org_id=org_id, workspace_ids=self._workspaces(claims),
            role="admin" if self._is_admin(claims) else "member",
        )

    def _workspaces(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        name = self.config.workspaces_claim
        value = _MISSING if name is None else _claim(claims, name)
        if value is _MISSING:
            if self.config.default_workspaces:
                return self.config.default_workspaces
            raise Unauthenticated(detail=f"bearer token lacks the '{name}' claim (the user's workspaces)")
        if not isinstance(value, list):
            raise Unauthenticated(detail=f"token claim '{name}' must be a list of workspace ids")
        if len(value) > MAX_WORKSPACES_PER_TOKEN:
            raise Unauthenticated(detail=f"token claim '{name}' lists more than {MAX_WORKSPACES_PER_TOKEN} ids")
        for workspace_id in value:
            if reason := invalid_id_reason(workspace_id):
                raise Unauthenticated(detail=f"token claim '{name}' has an id, {_shown(workspace_id)}, that {reason}")
        return tuple(dict.fromkeys(value))

    def _is_admin(self, claims: Mapping[str, Any]) -> bool:
        name = self.config.role_claim
        if name is None:
            return False
        value = _claim(claims, name)
        if value is _MISSING:
            return False
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            raise Unauthenticated(detail=f"token claim '{name}' must be a string or a list of strings")
        return any(isinstance(item, str) and item in self.config.admin_values for item in values)


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The token's header and claims, unverified (only to choose a verifier), or None when it is no JWT."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return unverified["header"], unverified["payload"]


def _claim(claims: Mapping[str, Any], name: str) -> object:
    """The claim `name`, or the value at its dotted path through nested objects; `_MISSING` when neither exists."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _id_claim(claims: Mapping[str, Any], name: str) -> str:
    value = _claim(claims, name)
    if value is _MISSING:
        raise Unauthenticated(detail=f"bearer token lacks the '{name}' claim")
    if reason := invalid_id_reason(value):
        raise Unauthenticated(detail=f"token claim '{name}' ({_shown(value)}) {reason}")
    return str(value)


def _shown(value: object) -> str:
    # The caller's own claim, named so that the mapping can be fixed; bounded, as a claim may be anything.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def principal_from_bearer(
    request: HTTPConnection, secret: bytes, *, oidc: OidcVerifier | None, max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S
) -> Principal:
    """The principal of the request's bearer JWT: the provider's verifier for a token it issued, turnlog's for any other."""
    token = bearer_token_from_header(request.headers.get("authorization"))
    if oidc is not None and oidc.issued(token):
        return oidc.verify(token, max_ttl_s=max_ttl_s)
    return verify_token(secret, token, max_ttl_s=max_ttl_s)


class OidcKeyFetch:
    """ASGI middleware: a request bearing the provider's token waits, if need be, for its key to be fetched.

    So `authenticate` stays a synchronous check against keys in memory; every other request passes straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            verifier = _verifier_of(scope)
            token = _bearer_of(scope) if verifier is not None else None
            if verifier is not None and token is not None:
                await verifier.prepare(token)
        await self.app(scope, receive, send)


def _verifier_of(scope: Scope) -> OidcVerifier | None:
    context = getattr(getattr(scope.get("app"), "state", None), "context", None)
    return getattr(context, "oidc", None)


def _bearer_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None
