"""One-time sign-in codes: the link `turnlog serve` prints signs a browser in once, for a short time."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from api.auth import Principal

SIGN_IN_CODE_TTL_S = 15 * 60
# Who the printed link signs in on the embedded defaults: one local user with one workspace.
LOCAL_PRINCIPAL = Principal(user_id="local", org_id="local", workspace_ids=("local",))


class SignInCodes:
    """Codes held in this process's memory: each signs in once, within `ttl_s` of being issued."""

    def __init__(self, *, ttl_s: float = SIGN_IN_CODE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._codes: dict[str, tuple[Principal, float]] = {}

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def issue(self, principal: Principal) -> str:
        now = self._clock()
        self._codes = {code: held for code, held in self._codes.items() if held[1] > now}
        code = secrets.token_urlsafe(24)
        self._codes[code] = (principal, now + self._ttl_s)
        return code

    def redeem(self, code: str) -> Principal | None:
        """The code's principal, once: a code is spent by its first use, in time or not."""
        held = self._codes.pop(code, None)
        if held is None or held[1] <= self._clock():
            return None
        return held[0]
