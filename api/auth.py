"""Bearer tokens: HS256 JWTs naming a user, an org and the workspaces they may use."""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
from starlette.requests import HTTPConnection

from api.bodies import RESOURCE_ID_PATTERN
from kernel.errors import Unauthenticated

__all__ = [
    "DEFAULT_MAX_TOKEN_TTL_S",
    "DEFAULT_TOKEN_TTL_S",
    "ISSUER",
    "MIN_SECRET_BYTES",
    "SECRET_ENV_VAR",
    "SECRET_FILE_NAME",
    "Principal",
    "check_token_lifetime",
    "invalid_id_reason",
    "issue_token",
    "load_or_create_secret",
    "principal_from_request",
    "verify_token",
]

logger = logging.getLogger(__name__)

ISSUER = "turnlog"
ROLES = ("member", "admin")  # the token's optional `role` claim; absent means member
ALGORITHM = "HS256"
DEFAULT_TOKEN_TTL_S = 24 * 3600
# The longest a token may be valid, `exp - iat` (`--max-token-ttl-s`): a leaked token is not a key forever.
DEFAULT_MAX_TOKEN_TTL_S = 30 * 24 * 3600
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
SECRET_ENV_VAR = "TURNLOG_SECRET"
SECRET_FILE_NAME = "secret.key"
# Tolerated clock skew between the machine that issued a token and the one checking it.
CLOCK_SKEW_LEEWAY_S = 30
# A real token is a few hundred bytes; refusing huge ones keeps decoding cheap.
MAX_TOKEN_CHARS = 8192
MAX_WORKSPACES_PER_TOKEN = 1000

_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)
_REQUIRED_CLAIMS = ("sub", "org", "workspaces", "iat", "exp", "iss")


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: the user, their org (the tenant) and the workspaces they may use."""

    user_id: str
    org_id: str
    workspace_ids: tuple[str, ...]
    role: str = "member"  # "admin": one of the org's administrators (its usage, credits, safety decisions)

    def can_use(self, workspace_id: str) -> bool:
        return workspace_id in self.workspace_ids

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")


def invalid_id_reason(value: object) -> str | None:
    """Why `value` cannot be a user, org or workspace id (RESOURCE_ID_PATTERN), or None when it can."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _RESOURCE_ID.fullmatch(value):
        return "must be 1-64 characters of letters, digits, '_' or '-'"
    return None


def _checked_ids(*, user_id: str, org_id: str, workspace_ids: Iterable[str]) -> tuple[str, ...]:
    """Refuse to mint a token the verifier would reject."""
    for name, value in (("user_id", user_id), ("org_id", org_id)):
        if reason := invalid_id_reason(value):
            raise ValueError(f"{name} {value!r} {reason}")
    if isinstance(workspace_ids, str):
        raise ValueError("workspace_ids must be a collection of ids, not a single string")
    workspaces = tuple(dict.fromkeys(workspace_ids))
    if len(workspaces) > MAX_WORKSPACES_PER_TOKEN:
        raise ValueError(f"at most {MAX_WORKSPACES_PER_TOKEN} workspace ids per token")
    for workspace_id in workspaces:
        if reason := invalid_id_reason(workspace_id):
            raise ValueError(f"workspace id {workspace_id!r} {reason}")
    return workspaces


def issue_token(
    secret: bytes,
    *,
    user_id: str,
    org_id: str,
    workspace_ids: Iterable[str],
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    issued_at: int | None = None,
    role: str = "member",
    max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S,
) -> str:
    """Sign a token for this principal; `issued_at` (epoch seconds) defaults to now; `role` "admin" for the org's administrators.

    `max_ttl_s` is the longest lifetime the servers accept (their `--max-token-ttl-s`): a longer `ttl_s` is refused.
    """
    _check_secret(secret)
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if ttl_s > max_ttl_s:
        raise ValueError(
            f"a token valid for {ttl_s} s would be refused: servers accept tokens valid for at most {max_ttl_s} s"
            f" ({_days(max_ttl_s)}, --max-token-ttl-s)"
        )
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    workspaces = _checked_ids(user_id=user_id, org_id=org_id, workspace_ids=workspace_ids)
    iat = int(time.time()) if issued_at is None else issued_at
    claims = {
        "iss": ISSUER,
        "sub": user_id,
        "org": org_id,
        "workspaces": list(workspaces),
        "iat": iat,
        "exp": iat + ttl_s,
    }
    if role != "member":
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _principal_from_claims(claims: Mapping[str, object]) -> Principal:
    for claim in ("sub", "org"):
        if reason := invalid_id_reason(claims[claim]):
            raise Unauthenticated(detail=f"token claim '{claim}' {reason}")
    workspaces = claims["workspaces"]
    if not isinstance(workspaces, list):
        raise Unauthenticated(detail="token claim 'workspaces' must be a list of workspace ids")
    if len(workspaces) > MAX_WORKSPACES_PER_TOKEN:
        raise Unauthenticated(
            detail=f"token claim 'workspaces' lists more than {MAX_WORKSPACES_PER_TOKEN} ids"
        )
    for workspace_id in workspaces:
        if reason := invalid_id_reason(workspace_id):
            raise Unauthenticated(detail=f"token claim 'workspaces' has an id that {reason}")
    role = claims.get("role", "member")
    if role not in ROLES:
        raise Unauthenticated(detail=f"token claim 'role' must be one of {', '.join(ROLES)}")
    return Principal(
        user_id=str(claims["sub"]),
        org_id=str(claims["org"]),
        workspace_ids=tuple(dict.fromkeys(workspaces)),  # type: ignore[arg-type]
        role=str(role),
    )


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days"


def _seconds(seconds: float) -> str:
    # A forged exp may be any size: one that cannot be written as a float is not written out.
    return f"{seconds:.0f}" if abs(seconds) < 10**15 else "more than 10^15"


def check_token_lifetime(claims: Mapping[str, object], *, max_ttl_s: int) -> None:
    """`exp - iat` may not exceed `max_ttl_s`; both must be plain numbers (PyJWT also takes "123" and true)."""
    for claim in ("iat", "exp"):
        value = claims[claim]
        finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        if isinstance(value, bool) or not finite:
            raise Unauthenticated(detail=f"token claim '{claim}' must be a number of seconds since 1970")
    lifetime_s = claims["exp"] - claims["iat"]  # type: ignore[operator]
    if lifetime_s > max_ttl_s:
        raise Unauthenticated(
            detail=f"bearer token is valid for {_seconds(lifetime_s)} s (from its iat to its exp), longer than the"
            f" {max_ttl_s} s ({_days(max_ttl_s)}) this server accepts: ask for a token that expires sooner",
            extra={"maxTokenTtlS": max_ttl_s},
        )


@contextmanager
def decoding_refusals(*, issuer: str, algorithm: str | None = None, audience: str | None = None) -> Iterator[None]:
    """PyJWT's refusals as `Unauthenticated` with a detail a person can act on (turnlog's tokens and OIDC ones)."""
    try:
        yield
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(detail="bearer token has expired") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated(detail="bearer token signature is invalid") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthenticated(detail=f"bearer token must be signed with {algorithm}") from None
    except jwt.MissingRequiredClaimError as error:
        raise Unauthenticated(detail=f"bearer token lacks the '{error.claim}' claim") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated(
            detail=f"bearer token is not meant for this server: its audience (aud) does not name {audience!r}"
        ) from None
    except jwt.InvalidIssuerError:
        raise Unauthenticated(detail=f"bearer token was not issued by {issuer!r}") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated(detail="bearer token is not valid yet (its nbf or iat is in the future)") from None
    except jwt.DecodeError:
        raise Unauthenticated(detail="bearer token is malformed (not a JWT)") from None
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(detail=f"bearer token is invalid: {error}") from None


def verify_token(secret: bytes, token: str, *, max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S) -> Principal:
    """Check signature, issuer, expiry, lifetime (at most `max_ttl_s`) and claims; raise Unauthenticated saying which failed."""
    _check_secret(secret)
    if not token:
        raise Unauthenticated(detail="bearer token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(detail=f"bearer token is longer than {MAX_TOKEN_CHARS} characters")
    with decoding_refusals(issuer=ISSUER, algorithm=ALGORITHM):
        claims = jwt.decode(
            token,
            secret,
            # Pinning the algorithm list is what stops "alg": "none" and key-confusion tokens.
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=CLOCK_SKEW_LEEWAY_S,
            options={"require": list(_REQUIRED_CLAIMS)},
        )
    check_token_lifetime(claims, max_ttl_s=max_ttl_s)
    return _principal_from_claims(claims)


def bearer_token_from_header(authorization: str | None) -> str:
    """Extract the token from an Authorization header value (pure, for tests and websockets)."""
    if authorization is None:
        raise Unauthenticated(detail="missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    # RFC 9110 section 11.1: the auth scheme is case-insensitive.
    if scheme.lower() != "bearer":
        raise Unauthenticated(detail="Authorization header must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise Unauthenticated(detail="Authorization header has no bearer token")
    return token


def principal_from_request(
    request: HTTPConnection, secret: bytes, *, max_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S
) -> Principal:
    """Authenticate a request (or websocket) by its `Authorization: Bearer` header."""
    return verify_token(secret, bearer_token_from_header(request.headers.get("authorization")), max_ttl_s=max_ttl_s)


def load_or_create_secret(data_dir: Path, *, environ: Mapping[str, str] | None = None) -> bytes:
    """Return the token-signing secret.

    Precedence: a non-empty `TURNLOG_SECRET` environment variable wins (its UTF-8 bytes are
    the key, at least 32 bytes; the file is then neither read nor created). Otherwise
    `data_dir/secret.key` is used, created on first use with 64 random hex characters and
    mode 0600. The key is the file's text without surrounding whitespace, so
    `TURNLOG_SECRET="$(cat D/secret.key)"` and `--data-dir D` sign identical tokens.
    """
    environment = os.environ if environ is None else environ
    from_env = environment.get(SECRET_ENV_VAR, "")
    if from_env:
        secret = from_env.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV_VAR} must be at least {MIN_SECRET_BYTES} bytes long")
        return secret
    path = Path(data_dir) / SECRET_FILE_NAME
    if not path.exists():
        _create_secret_file(path)
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; at least {MIN_SECRET_BYTES} needed")
    return secret


def _create_secret_file(path: Path) -> None:
    """Write the secret to a private temp file, then hard-link it into place.

    link() fails if the target exists, so when two processes start on the same data dir at
    once exactly one secret wins and nobody ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could only narrow 0600, but be explicit
        os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp_path, path)
    except FileExistsError:
        pass  # another process won the race; its secret is the one to use
    finally:
        temp_path.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the new directory entry itself durable, not just the file contents.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
