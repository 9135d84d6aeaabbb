"""CORS for pages of other origins: off unless origins are configured (`--cors-origins`); they call with bearer tokens."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from api.session_cookies import CSRF_HEADER

ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", CSRF_HEADER)
# What a script of another origin may read besides the simple headers: where things are, and the rate-limit fields.
EXPOSED_HEADERS = (
    "Location", "Retry-After", "RateLimit", "RateLimit-Policy",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
)
PREFLIGHT_MAX_AGE_S = 600


def checked_origin(text: str) -> str:
    """`scheme://host[:port]` (no path, query or trailing slash) or `*`; a ValueError saying what is wrong otherwise."""
    origin = text.strip()
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{origin!r} is not an origin: expected scheme://host[:port], e.g. https://chat.example.com")
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"{origin!r} is not an origin: no path, query, user or trailing slash")
    try:
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"{origin!r} has an invalid port") from None
    return origin


def enable_cors(app: Starlette, origins: Sequence[str]) -> None:
    """Answer CORS for these origins, outside every other middleware; no credentials: cookies stay with this origin."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[checked_origin(origin) for origin in origins],
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
