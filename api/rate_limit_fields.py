"""Rate-limit fields on successful `/v1` answers: the caller's limits as the API's view of their org has them.

A 202 that started a run carries its admission's limits (set by the endpoint); every other successful `/v1` answer
of an authenticated caller gets `RateLimit-Policy`, `RateLimit` and `x-ratelimit-*` from the governance view,
nothing debited (`current_limits`). The view is in memory: an org not loaded yet is loaded in the background and
the answer goes without the fields, so no answer ever waits on a log read for them. Without a tiers file the
middleware passes everything through untouched.
"""

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commands.governance.decider import current_limits
from commands.governance.rate_limits import rate_limit_headers
from kernel.envelope import utc_now

logger = logging.getLogger(__name__)


class RateLimitFields:
    """ASGI middleware adding the caller's rate-limit fields to successful `/v1` answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._loading: set[asyncio.Task] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"ratelimit-policy" for name, _ in headers):
                    fields = self._fields(scope)
                    if fields:
                        message = {**message, "headers": [*headers, *((n.encode(), v.encode()) for n, v in fields.items())]}
            await send(message)

        await self.app(scope, receive, send_with_fields)

    def _fields(self, scope: Scope) -> dict[str, str]:
        app = scope.get("app")
        context = getattr(getattr(app, "state", None), "context", None)
        governance = getattr(context, "governance", None)
        principal = scope.get("state", {}).get("principal")
        if governance is None or principal is None:
            return {}
        state = governance.bus.view.cached(principal.org_id)
        if state is None:
            self._load_later(governance.bus.view, principal.org_id)
            return {}
        limits = current_limits(state, governance.config, org_id=principal.org_id, user_id=principal.user_id, now=utc_now())
        return rate_limit_headers(limits)

    def _load_later(self, view, org_id: str) -> None:
        task = asyncio.create_task(view.state_of(org_id), name=f"governance-view-{org_id}")
        self._loading.add(task)
        task.add_done_callback(self._loaded)

    def _loaded(self, task: asyncio.Task) -> None:
        self._loading.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("could not load the governance view of an org: %r", task.exception())
