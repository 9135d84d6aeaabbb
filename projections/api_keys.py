"""API keys as an API instance sees them: the `api-keys` topic folded per key id, kept current by following it.

Every instance loads the whole topic at start (it is small: one record per key created or revoked) and then
follows it, so a key revoked through one instance is refused by every other as soon as its follower reads the
revocation (milliseconds on the embedded log; a fetch on Kafka). A follower that silently stops would let a
revoked key pass, so the view also confirms, every `confirm_every_s`, that it has applied everything the log held
when it asked; past `max_staleness_s` without a confirmation `check_fresh` refuses (503) rather than trust it.
That bounds how long a revocation may take to reach an instance: `max_staleness_s` once it is readable on the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from events.api_keys import ApiKeyCreated, ApiKeyRevoked
from events.topics import API_KEYS
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.errors import Unavailable
from kernel.log import EventLog

logger = logging.getLogger(__name__)

DEFAULT_MAX_STALENESS_S = 5.0
DEFAULT_CONFIRM_EVERY_S = 1.0


@dataclass(frozen=True, kw_only=True)
class ApiKeyState:
    """One key as its events made it."""

    key_id: str
    secret_sha256: str
    org_id: str
    user_id: str
    workspace_ids: tuple[str, ...]
    role: str
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoked_reason: str = ""

    def status(self, now: datetime) -> str:
        """`active`, `revoked` or `expired` at `now`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def evolve(state: ApiKeyState | None, event: object) -> ApiKeyState | None:
    """One key's state after `event` (pure). The first creation of a key id wins; a revocation needs the key's org."""
    match event:
        case ApiKeyCreated() if state is None:
            return ApiKeyState(
                key_id=event.key_id, secret_sha256=event.secret_sha256, org_id=event.org_id, user_id=event.user_id,
                workspace_ids=tuple(event.workspace_ids), role=event.role, name=event.name, created_by=event.created_by,
                created_at=event.created_at, expires_at=event.expires_at,
            )
        case ApiKeyRevoked() if state is not None and state.revoked_at is None and state.org_id == event.org_id:
            return replace(state, revoked_at=event.revoked_at, revoked_by=event.revoked_by, revoked_reason=event.reason)
    return state


def fold(events: Iterable[object]) -> dict[str, ApiKeyState]:
    """Every key named by `events`, in order (pure)."""
    keys: dict[str, ApiKeyState] = {}
    for event in events:
        key_id = getattr(event, "key_id", None)
        if key_id is None:
            continue
        state = evolve(keys.get(key_id), event)
        if state is not None:
            keys[key_id] = state
    return keys


class ApiKeyView:
    """Every key by id, loaded from `api-keys` at start and then followed; see the module's docstring for the bound."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        max_staleness_s: float = DEFAULT_MAX_STALENESS_S,
        confirm_every_s: float = DEFAULT_CONFIRM_EVERY_S,
    ) -> None:
        self._log = log
        self._codec = codec
        self._max_staleness_s = max_staleness_s
        self._confirm_every_s = confirm_every_s
        self._keys: dict[str, ApiKeyState] = {}
        self._applied = -1  # the offset of the last record folded (the topic has one partition)
        self._progress = asyncio.Event()
        self._confirmed_at = float("-inf")
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Load every key on the log, then keep following; returns once the view holds what was there at start."""
        asked_at = time.monotonic()
        end = await self._log.end_offset(API_KEYS)
        self._tasks = [
            asyncio.create_task(self._follow(), name="api-key-view"),
            asyncio.create_task(self._confirm(), name="api-key-view-confirm"),
        ]
        await self.wait_until_applied(end, timeout_s=60.0)
        self._confirmed_at = max(self._confirmed_at, asked_at)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def get(self, key_id: str) -> ApiKeyState | None:
        return self._keys.get(key_id)

    def of_org(self, org_id: str) -> list[ApiKeyState]:
        """The org's keys, newest first."""
        keys = [key for key in self._keys.values() if key.org_id == org_id]
        return sorted(keys, key=lambda key: (key.created_at, key.key_id), reverse=True)

    @property
    def applied_offset(self) -> int:
        return self._applied

    def check_fresh(self) -> None:
        """Unavailable (503) unless the view confirmed it was current within `max_staleness_s`."""
        following = bool(self._tasks) and not self._tasks[0].done()
        if following and time.monotonic() - self._confirmed_at <= self._max_staleness_s:
            return
        raise Unavailable(
            detail=(
                f"this instance could not confirm within {self._max_staleness_s:g} s that it has every API key revocation"
                " on the log, so API keys are refused for now; retry shortly"
            ),
            retry_after_s=1,
        )

    async def catch_up(self, *, timeout_s: float = 5.0) -> None:
        """Wait until the view holds every record on the log now (for a key created on another instance a moment ago)."""
        await self.wait_until_applied(await self._log.end_offset(API_KEYS), timeout_s=timeout_s)

    async def wait_until_applied(self, offset: int, *, timeout_s: float = 5.0) -> None:
        """Wait until the record at `offset` is folded in; Unavailable after `timeout_s` or if the follower stopped."""
        deadline = time.monotonic() + timeout_s
        while self._applied < offset:
            if self._tasks and self._tasks[0].done():
                raise Unavailable(detail="this instance stopped following API keys; retry shortly", retry_after_s=1)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(detail=f"API keys on the log are not in this instance's view within {timeout_s:g} s; retry shortly", retry_after_s=1)
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that comes as the event is set,
                # and `close()` then waited forever for `_confirm` (a CI run hung 120 s; about 1 start in 90 here).
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
            except TimeoutError:
                pass

    def apply(self, offset: int, event: object) -> None:
        """Fold one record (the follower calls this; tests may too)."""
        key_id = getattr(event, "key_id", None)
        if key_id is not None:
            state = evolve(self._keys.get(key_id), event)
            if state is not None:
                self._keys[key_id] = state
        self._applied = max(self._applied, offset)
        self._progress.set()
        self._progress = asyncio.Event()

    async def _follow(self) -> None:
        async for record in self._log.follow(API_KEYS, after=-1):
            try:
                event = self._codec.decode(record.value).payload
            except UndecodableMessage as error:
                logger.error("undecodable api-keys record at %d: %s", record.offset, error)
                event = None
            self.apply(record.offset, event)

    async def _confirm(self) -> None:
        while True:
            try:
                asked_at = time.monotonic()
                end = await self._log.end_offset(API_KEYS)
                await self.wait_until_applied(end, timeout_s=self._max_staleness_s)
                self._confirmed_at = max(self._confirmed_at, asked_at)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a log that is briefly unreachable: keys are refused once the bound passes
                logger.warning("could not confirm the API key view is current: %s", error)
            await asyncio.sleep(self._confirm_every_s)
