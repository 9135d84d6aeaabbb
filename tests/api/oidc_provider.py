"""A small OIDC identity provider for tests: signing keys made with `cryptography`, its discovery document and JWKS.

`Provider` holds what the provider publishes and counts what it was asked; it answers in-process through
`transport()` (an httpx MockTransport, for unit tests) or over real HTTP through `LocalIssuer` (a threaded
`http.server` on 127.0.0.1, for a real `turnlog serve`). Tests load it with
`tests.conftest.load_test_module("oidc_provider", beside=Path(__file__))`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "turnlog-tests"


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """A provider's key pair: `jwk()` is what it publishes, `sign()` makes its tokens."""

    kid: str
    algorithm: str  # RS256 or ES256
    private_key: Any

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=kid or f"rsa-{uuid.uuid4().hex[:8]}", algorithm="RS256", private_key=key)

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid=kid or f"ec-{uuid.uuid4().hex[:8]}", algorithm="ES256", private_key=ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        return {**codec.to_jwk(self.private_key.public_key(), as_dict=True), "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": kid or self.kid, **(headers or {})})


@dataclass(kw_only=True)
class Provider:
    """What an OIDC provider publishes (`keys`), whether it answers at all (`reachable`), and what it was asked."""

    issuer: str = "https://id.example.com/realms/acme"
    keys: list[SigningKey] = field(default_factory=list)
    reachable: bool = True
    discovery_issuer: str | None = None  # what its discovery document claims to be (default: `issuer`)
    requests: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": "user_1", "org": "org_1", "workspaces": ["ws_1"],
            "iat": now, "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def answer(self, path: str) -> tuple[int, bytes]:
        """The status and JSON body for a GET of `path`."""
        with self._lock:
            self.requests[path] += 1
            keys = list(self.keys)
        if path == "/.well-known/openid-configuration":
            document = {"issuer": self.discovery_issuer or self.issuer, "jwks_uri": self.jwks_url}
            return 200, json.dumps(document).encode()
        if path == "/jwks.json":
            return 200, json.dumps({"keys": [key.jwk() for key in keys]}).encode()
        return 404, b'{"error": "not found"}'

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/jwks.json"]

    def transport(self) -> httpx.MockTransport:
        """The provider in-process: `reachable = False` makes every request fail to connect."""

        def handle(request: httpx.Request) -> httpx.Response:
            if not self.reachable:
                raise httpx.ConnectError("connection refused", request=request)
            prefix = httpx.URL(self.issuer).path.rstrip("/")
            status, body = self.answer(request.url.path.removeprefix(prefix))
            return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

        return httpx.MockTransport(handle)


class LocalIssuer:
    """A `Provider` served over HTTP on 127.0.0.1 (its issuer is `http://127.0.0.1:<port>`); unreachable, it hangs up."""

    def __init__(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if not issuer.provider.reachable:
                    self.close_connection = True
                    return  # no answer at all: the client sees the connection closed
                status, body = issuer.provider.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.provider = Provider(issuer=f"http://127.0.0.1:{self._server.server_address[1]}")
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True)

    def start(self) -> LocalIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
