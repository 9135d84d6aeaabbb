"""An OIDC provider's signing keys (its JWKS): found by discovery, fetched without blocking, cached, refetched on rotation.

The set is fetched when first needed, again when a token names a key id the set does not list (the provider rotated
its keys) and when it is older than `max_age_s`, but never more than once per `cooldown_s`, whatever tokens arrive:
a flood of made-up key ids costs the provider one request per cooldown, and requests waiting for a key share one
fetch. A fetch that fails (the provider is down, or answers nonsense) keeps the keys already held, which still verify
the tokens they signed; `failure` says what went wrong until a fetch succeeds.

PyJWT's `PyJWKClient` caches too, but it fetches with urllib, which blocks the event loop unless run in a thread, under
a lock every verification waits on, with a 30 s default timeout; and its cooldown starts only after a successful
fetch, so while the provider is unreachable every token naming an unknown key id would start another fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.algorithms import has_crypto

__all__ = ["DISCOVERY_PATH", "SIGNING_ALGORITHMS", "SigningKeys", "provider_url_problem"]

logger = logging.getLogger(__name__)

# Public-key signatures only: "none" and the HS* family (a shared secret) never verify a provider's token.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_KEY_TYPES = ("RSA", "EC")
DISCOVERY_PATH = "/.well-known/openid-configuration"
# A discovery document or a JWKS is a few KiB; more is not read.
MAX_DOCUMENT_BYTES = 512 * 1024
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def provider_url_problem(url: object) -> str | None:
    """Why `url` cannot be where a provider's documents are fetched from (https, or http on this machine), or None."""
    if not isinstance(url, str) or not url:
        return "must be a URL"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return None  # a provider on this machine (tests, a sidecar): nothing on the network to tamper with
    return f"must be an https:// URL (http:// only for localhost), got {url!r}"


class _FetchFailed(Exception):
    """The provider's discovery document or key set could not be used; the message says why."""


class SigningKeys:
    """The issuer's public signing keys, as last fetched; `ensure` fetches them when a token needs it."""

    def __init__(
        self,
        *,
        issuer: str,
        client: httpx.AsyncClient,
        jwks_url: str | None = None,
        cooldown_s: float = 30.0,
        max_age_s: float = 300.0,
        fetch_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._jwks_url = jwks_url  # None: discovered from the issuer's openid-configuration
        self._discovered_url: str | None = None
        self._cooldown_s = cooldown_s
        self._max_age_s = max_age_s
        self._fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failure: str | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._requested_url = ""

    @property
    def failure(self) -> str | None:
        """Why the last fetch failed; None once one succeeds (and before any is tried)."""
        return self._failure

    @property
    def fetched(self) -> bool:
        return self._fetched_at is not None

    @property
    def key_ids(self) -> tuple[str | None, ...]:
        return tuple(key.key_id for key in self._keys)

    def key(self, kid: str) -> jwt.PyJWK | None:
        return next((key for key in self._keys if key.key_id == kid), None)

    def keys_for(self, algorithm: str) -> tuple[jwt.PyJWK, ...]:
        return tuple(key for key in self._keys if key.algorithm_name == algorithm)

    def age_s(self) -> float | None:
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    def retry_after_s(self) -> int:
        """Whole seconds until the next fetch may be tried (at least 1)."""
        if self._attempted_at is None:
            return 1
        return max(1, math.ceil(self._cooldown_s - (self._clock() - self._attempted_at)))

    async def ensure(self, kid: str | None) -> None:
        """Fetch the set when it lacks `kid` (None: when it holds no key at all) or has grown old, unless cooling down.

        Waits only when the key is missing: a key already held verifies at once while an old set is refreshed behind it.
        """
        now = self._clock()
        held = self.key(kid) is not None if kid is not None else bool(self._keys)
        stale = self._fetched_at is None or now - self._fetched_at >= self._max_age_s
        if held and not stale:
            return
        fetch = self._fetch
        if fetch is None:
            if self._attempted_at is not None and now - self._attempted_at < self._cooldown_s:
                return
            self._attempted_at = now
            fetch = self._fetch = asyncio.create_task(self._refresh(), name="oidc-jwks-fetch")
        if not held:
            # Shielded: a request that gives up must not cancel the fetch others wait for.
            await asyncio.shield(fetch)

    async def close(self) -> None:
        fetch = self._fetch
        if fetch is not None:
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)

    async def _refresh(self) -> None:
        self._requested_url = ""
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                url = await self._key_set_url()
                document = await self._json(url)
            keys = _signing_keys(document, url=url)
        except TimeoutError:
            self._failed(f"{self._requested_url} did not answer within {self._fetch_timeout_s:g} s")
        except httpx.HTTPError as error:
            self._failed(f"{self._requested_url} could not be reached ({type(error).__name__}: {error or 'no detail'})")
        except _FetchFailed as error:
            self._failed(str(error))
        else:
            self._keys, self._fetched_at, self._failure = keys, self._clock(), None
            logger.info("OIDC signing keys of %s fetched from %s: key ids %s", self.issuer, url, list(self.key_ids))
        finally:
            self._fetch = None

    def _failed(self, failure: str) -> None:
        self._failure = failure
        self._discovered_url = None  # the provider may have moved its keys: discover them again next time
        logger.warning(
            "OIDC signing keys of %s not fetched: %s; still holding %d key(s); next try in %d s",
            self.issuer, failure, len(self._keys), self.retry_after_s(),
        )

    async def _key_set_url(self) -> str:
        if self._jwks_url is not None:
            return self._jwks_url
        if self._discovered_url is None:
            url = self.issuer.rstrip("/") + DISCOVERY_PATH
            document = await self._json(url)
            # OpenID Connect Discovery 1.0, section 4.3: the document must name exactly the issuer it was asked of.
            if document.get("issuer") != self.issuer:
                raise _FetchFailed(f"{url} names the issuer {document.get('issuer')!r}, not {self.issuer!r}")
            jwks_uri = document.get("jwks_uri")
            if problem := provider_url_problem(jwks_uri):
                raise _FetchFailed(f"{url}: jwks_uri {problem}")
            self._discovered_url = str(jwks_uri)
        return self._discovered_url

    async def _json(self, url: str) -> Mapping[str, object]:
        self._requested_url = url  # named by a failure to reach it
        async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise _FetchFailed(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _FetchFailed(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchFailed(f"{url} did not answer JSON") from None
        if not isinstance(document, dict):
            raise _FetchFailed(f"{url} did not answer a JSON object")
        return document


def _signing_keys(document: Mapping[str, object], *, url: str) -> tuple[jwt.PyJWK, ...]:
    """The RSA and EC signature keys of a JWKS (RFC 7517); other entries (encryption keys, shared secrets) are skipped."""
    if not has_crypto:
        raise _FetchFailed("verifying a provider's RS256 or ES256 signatures needs the `cryptography` package: pip install 'turnlog[oidc]'")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _FetchFailed(f"{url} is not a JWKS: it has no 'keys' list")
    keys: list[jwt.PyJWK] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in _KEY_TYPES or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as error:
            logger.warning("OIDC: skipping key %r of %s: %s", entry.get("kid"), url, error)
            continue
        if key.algorithm_name in SIGNING_ALGORITHMS:
            keys.append(key)
    if not keys:
        raise _FetchFailed(f"{url} lists no RSA or EC signing key ({', '.join(SIGNING_ALGORITHMS)})")
    return tuple(keys)
